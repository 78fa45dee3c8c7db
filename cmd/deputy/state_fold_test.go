package main

import (
	"context"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/deputyhq/deputy/sidecar/metrics"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// A start on Redis moves the assignments an earlier version wrote under
// an unfolded customer id, so they act again, and only as spelled.
func TestStateStartFoldsLegacyAssignments(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t)
	cfg := testConfig(t, "../../policies", func(c *Config) { c.Redis.Addrs = []string{rs.Addr} })
	legacy := cfg.Redis.KeyPrefix + ":{cust:Globex}:assign"
	if err := rs.Client().Set(ctx, legacy, `{"customer":"Globex","reseller":"resellerco","domain":"shop-b.example"}`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	state, err := newStatePart(&cfg, slog.New(slog.DiscardHandler), m)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = state.Stop(ctx) }()
	if _, err := state.store.GetAssignment(ctx, "Globex"); err == nil {
		t.Fatal("a record under an unfolded id was read before the start moved it")
	}
	if err := state.Start(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := state.store.GetAssignment(ctx, "GLOBEX")
	if err != nil || a.Customer != "Globex" || a.Domain != "shop-b.example" {
		t.Fatalf("after start: %+v, %v; want Globex in shop-b.example", a, err)
	}
	if n, _ := rs.Client().Exists(ctx, legacy).Result(); n != 0 {
		t.Fatal("the record is still under its unfolded id")
	}
}
