package resolve_test

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/logtest"
	"github.com/deputyhq/deputy/sidecar/metrics"
	"github.com/deputyhq/deputy/sidecar/metrics/metricstest"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// lookupCounter counts the lookups that reach the real store.
type lookupCounter struct {
	resolve.GuardedSource
	calls atomic.Int64
}

func (c *lookupCounter) GetAssignment(ctx context.Context, customer string) (*sidecar.Assignment, error) {
	c.calls.Add(1)
	return c.GuardedSource.GetAssignment(ctx, customer)
}

// guardOnRedis guards a store on a real redis-server, counting the
// lookups that reach it.
func guardOnRedis(t *testing.T, cfg resolve.LookupConfig, opts ...resolve.GuardOption) (*redistest.Server, *resolve.StateGuard, *lookupCounter) {
	t.Helper()
	return guardLogged(t, cfg, slog.New(slog.DiscardHandler), opts...)
}

func guardLogged(t *testing.T, cfg resolve.LookupConfig, log *slog.Logger, opts ...resolve.GuardOption) (*redistest.Server, *resolve.StateGuard, *lookupCounter) {
	t.Helper()
	srv := redistest.Start(t)
	store, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "guard"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	src := &lookupCounter{GuardedSource: store}
	guard := resolve.NewStateGuard(src, store.Ping, cfg, log, opts...)
	t.Cleanup(func() { _ = guard.Close() })
	return srv, guard, src
}

// TestStateGuardOnAFrozenRedis freezes a real redis-server (SIGSTOP: the
// connections stay open, nothing answers). Lookups fail closed at the
// budget; after breaker_failures of them the breaker opens and lookups
// fail without reaching the store; once Redis answers a probe, lookups
// reach it again.
func TestStateGuardOnAFrozenRedis(t *testing.T) {
	// A budget a loaded machine meets with Redis up: every frozen lookup
	// waits it out, three of them.
	cfg := resolve.LookupConfig{Budget: 500 * time.Millisecond, BreakerFailures: 3, ProbeInterval: 10 * time.Millisecond}
	m, reg := guardMetrics(t)
	srv, guard, src := guardOnRedis(t, cfg, resolve.WithGuardObserver(m))
	ctx := context.Background()
	// The first connection is opened outside the guard, so the guard's
	// first lookup is not also the one that dials.
	if _, err := src.GuardedSource.GetAssignment(ctx, "acme"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
		t.Fatalf("lookup with Redis up, outside the guard = %v, want not found", err)
	}

	if _, err := guard.GetAssignment(ctx, "acme"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
		t.Fatalf("lookup with Redis up = %v, want not found", err)
	}

	srv.Freeze()
	for i := range cfg.BreakerFailures {
		if guard.Open() {
			t.Fatalf("breaker open after %d failures, want %d", i, cfg.BreakerFailures)
		}
		_, err := guard.GetAssignment(ctx, "acme")
		if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
			t.Fatalf("lookup %d on a frozen Redis = %v, want unavailable", i, err)
		}
	}
	if !guard.Open() {
		t.Fatal("breaker still closed after breaker_failures failed lookups")
	}
	if v := metricValue(t, reg, "deputy_state_lookup_failures_total", "reason=over_budget"); v != float64(cfg.BreakerFailures) {
		t.Errorf("failures{reason=over_budget} = %v after %d lookups past the budget", v, cfg.BreakerFailures)
	}
	before := src.calls.Load()
	for range 10 {
		if _, err := guard.GetAssignment(ctx, "acme"); sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
			t.Fatalf("lookup with the breaker open = %v, want unavailable", err)
		}
	}
	if got := src.calls.Load() - before; got != 0 {
		t.Fatalf("%d lookups reached the store with the breaker open", got)
	}
	if guard.Rejected() != 10 {
		t.Errorf("Rejected = %d, want 10", guard.Rejected())
	}

	srv.Thaw()
	eventually(t, "a probe to close the breaker", func() bool { return !guard.Open() })
	if _, err := guard.GetAssignment(ctx, "acme"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
		t.Fatalf("lookup after Redis answers again = %v, want not found", err)
	}
	if src.calls.Load() == before {
		t.Fatal("the lookup after recovery did not reach the store")
	}
}

// A lookup the check's own caller abandoned says nothing about the store:
// it does not count towards the breaker.
func TestStateGuardIgnoresCancelledChecks(t *testing.T) {
	_, guard, _ := guardOnRedis(t, resolve.LookupConfig{Budget: time.Second, BreakerFailures: 1, ProbeInterval: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := guard.GetAssignment(ctx, "acme"); err == nil {
		t.Fatalf("lookup with a cancelled context = %v, want an error", err)
	}
	if guard.Open() {
		t.Fatal("a cancelled check opened the breaker")
	}
}

func TestLookupConfigValidate(t *testing.T) {
	for name, c := range map[string]resolve.LookupConfig{
		"state_lookup.budget":           {Budget: -1, BreakerFailures: 1, ProbeInterval: 1},
		"state_lookup.breaker_failures": {Budget: 1, BreakerFailures: -1, ProbeInterval: 1},
		"state_lookup.probe_interval":   {Budget: 1, BreakerFailures: 1, ProbeInterval: -1},
	} {
		t.Run(name, func(t *testing.T) {
			if err := c.Validate(); sidecar.ErrorField(err) != name {
				t.Fatalf("Validate = %v, want %s named", err, name)
			}
		})
	}
	var c resolve.LookupConfig
	c.SetDefaults()
	if err := c.Validate(); err != nil || c.Budget != resolve.DefaultStateBudget {
		t.Fatalf("defaults: %+v %v", c, err)
	}
}

// guardMetrics are Deputy's metrics on a registry of their own, with the
// lookup failure reasons exported at zero as the server does.
func guardMetrics(t *testing.T) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.WithoutRuntime())
	if err != nil {
		t.Fatal(err)
	}
	m.InitStateLookups(resolve.LookupFailures()...)
	return m, reg
}

// metricValue reads one series from reg; label is "name=value" or empty.
// A series the registry lacks fails the test: absent is not zero.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	want := map[string]string{}
	if k, v, ok := strings.Cut(label, "="); ok {
		want[k] = v
	}
	v, ok := metricstest.Series(t, reg, name, want)
	if !ok {
		t.Fatalf("no series %s{%s}", name, label)
	}
	return v
}

// TestStateGuardMetricsOnAStoppedRedis kills a real redis-server: what ops
// watch (deputy_state_breaker_open, the trip counter, lookups refused) and
// read (one line when state becomes unavailable, one when it is back)
// follows the outage and its end.
func TestStateGuardMetricsOnAStoppedRedis(t *testing.T) {
	cfg := resolve.LookupConfig{Budget: time.Second, BreakerFailures: 2, ProbeInterval: 10 * time.Millisecond}
	m, reg := guardMetrics(t)
	var logs logtest.Lines
	srv, guard, _ := guardLogged(t, cfg, slog.New(slog.NewJSONHandler(&logs, nil)), resolve.WithGuardObserver(m))
	ctx := context.Background()
	failures := func(reason string) float64 {
		return metricValue(t, reg, "deputy_state_lookup_failures_total", "reason="+reason)
	}

	if _, err := guard.GetAssignment(ctx, "acme"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
		t.Fatalf("lookup with Redis up = %v, want not found", err)
	}
	for _, r := range resolve.LookupFailures() {
		if v := failures(r); v != 0 {
			t.Errorf("failures{reason=%s} = %v on a healthy store, want 0", r, v)
		}
	}
	if v := metricValue(t, reg, "deputy_state_breaker_open", ""); v != 0 {
		t.Fatalf("deputy_state_breaker_open = %v on a healthy store, want 0", v)
	}

	srv.Stop()
	for i := range cfg.BreakerFailures {
		if _, err := guard.GetAssignment(ctx, "acme"); sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
			t.Fatalf("lookup %d on a stopped Redis = %v, want unavailable", i, err)
		}
	}
	if !guard.Open() {
		t.Fatal("breaker still closed after breaker_failures failed lookups")
	}
	if v := metricValue(t, reg, "deputy_state_breaker_open", ""); v != 1 {
		t.Errorf("deputy_state_breaker_open = %v with the breaker open, want 1", v)
	}
	if v := metricValue(t, reg, "deputy_state_breaker_trips_total", ""); v != 1 {
		t.Errorf("deputy_state_breaker_trips_total = %v after one trip, want 1", v)
	}
	if v := failures(resolve.LookupUnavailable); v != float64(cfg.BreakerFailures) {
		t.Errorf("failures{reason=unavailable} = %v, want %d", v, cfg.BreakerFailures)
	}
	for range 7 {
		_, _ = guard.GetAssignment(ctx, "acme")
	}
	if v := failures(resolve.LookupBreakerOpen); v != 7 || guard.Rejected() != 7 {
		t.Errorf("failures{reason=breaker_open} = %v, Rejected = %d, want 7 and 7", v, guard.Rejected())
	}

	srv.Restart()
	eventually(t, "deputy_state_breaker_open back to 0 once Redis answers", func() bool {
		return metricValue(t, reg, "deputy_state_breaker_open", "") == 0
	})
	if guard.Open() {
		t.Error("the gauge reads 0 but the breaker is open")
	}
	if v := metricValue(t, reg, "deputy_state_breaker_trips_total", ""); v != 1 {
		t.Errorf("deputy_state_breaker_trips_total = %v after recovery, want still 1", v)
	}

	var down, up int
	for _, rec := range logs.Records(t) {
		msg, _ := rec["msg"].(string)
		switch {
		case strings.HasPrefix(msg, "state unavailable"):
			down++
			if rec["level"] != "WARN" || rec["error"] == nil {
				t.Errorf("outage line %v: want level WARN with the error", rec)
			}
		case strings.HasPrefix(msg, "state available again"):
			up++
			if rec["refused_total"] != 7.0 {
				t.Errorf("recovery line %v: want refused_total 7", rec)
			}
		}
	}
	if down != 1 || up != 1 {
		t.Errorf("logged the outage %d times and the recovery %d times, want once each:\n%v", down, up, logs.Records(t))
	}
}
