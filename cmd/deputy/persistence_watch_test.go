package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/logtest"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// A Redis with appendonly no is read as without AOF, with one warning
// over many readings naming what a restart undoes; turned on, one info
// line and the figure at 1; Redis gone, the figure is withdrawn, the
// failed readings counted and logged once, and readiness stays at the
// last reading (the store's own condition reports the outage).
func TestPersistenceWatchWarnsOnceOnChange(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "no")
	store, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	var readings atomic.Int64
	read := func(ctx context.Context) (redis.Persistence, error) {
		defer readings.Add(1)
		return store.Persistence(ctx)
	}
	lines := &logtest.Lines{}
	w := newPersistenceWatch(read, 5*time.Millisecond, slog.New(slog.NewJSONHandler(lines, nil)))
	// Readings come every 5 ms so that the test is quick, but each may
	// take longer on a loaded machine: bounded by the interval, a slow
	// one would fail and be logged as unread.
	w.timeout = redistest.ReplyTimeout
	if _, ok := w.aof(); ok {
		t.Fatal("a figure before any reading")
	}
	if w.ready(context.Background()) == nil {
		t.Fatal("ready before any reading")
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = w.Stop(context.Background())
		}
	})
	records := func(msg string) []map[string]any {
		var out []map[string]any
		for _, r := range lines.Records(t) {
			if r["msg"] == msg {
				out = append(out, r)
			}
		}
		return out
	}
	settle := func(what string) {
		t.Helper()
		from := readings.Load()
		eventually(t, what, func() bool { return readings.Load() >= from+10 })
	}

	eventually(t, "the warning", func() bool { return len(records(aofOffMsg)) > 0 })
	settle("readings without AOF")
	if aof, ok := w.aof(); aof || !ok {
		t.Fatalf("aof %v (read %v) with appendonly no", aof, ok)
	}
	if err := w.ready(context.Background()); err == nil {
		t.Fatal("ready with appendonly no")
	}
	warned := records(aofOffMsg)
	if len(warned) != 1 {
		t.Fatalf("%d warnings over %d readings, want 1", len(warned), readings.Load())
	}
	if r := warned[0]; r["level"] != "WARN" || r["at_risk"] != aofAtRiskNote || r["masters_without_aof"].([]any)[0] != srv.Addr {
		t.Fatalf("warning %v", r)
	}

	if err := srv.Client().ConfigSet(context.Background(), "appendonly", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "AOF found on", func() bool { return len(records(aofOnMsg)) > 0 })
	settle("readings with AOF")
	if aof, ok := w.aof(); !aof || !ok {
		t.Fatalf("aof %v (read %v) with appendonly yes", aof, ok)
	}
	if err := w.ready(context.Background()); err != nil {
		t.Fatalf("not ready with appendonly yes: %v", err)
	}
	if a, b := len(records(aofOffMsg)), len(records(aofOnMsg)); a != 1 || b != 1 {
		t.Fatalf("%d warnings and %d lines back on, want 1 each", a, b)
	}

	srv.Stop()
	eventually(t, "the figure withdrawn", func() bool { _, ok := w.aof(); return !ok })
	eventually(t, "failed readings counted", func() bool { return w.readErrors() >= 3 })
	if n := len(records(aofUnreadMsg)); n != 1 {
		t.Fatalf("%d lines for %d failed readings, want 1", n, w.readErrors())
	}
	if err := w.ready(context.Background()); err != nil {
		t.Fatalf("an outage fails the AOF condition: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped = true
	if err := w.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

// readyzChecks is /readyz's status code and conditions, with exclude.
func readyzChecks(t *testing.T, metricsAddr, query string) (int, map[string]string) {
	t.Helper()
	resp, err := readyzClient.Get("http://" + metricsAddr + "/readyz" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Checks map[string]string `json:"checks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body.Checks
}

// A running Deputy exports deputy_redis_aof_enabled from its Redis:
// 0 with appendonly no, 1 with appendonly yes. With redis.require_aof,
// /readyz and the probes' /readyz fail (redis_aof) while AOF is off, and
// hold with it on; without it, readiness ignores persistence.
func TestRedisAOFGaugeAndReadiness(t *testing.T) {
	for _, tc := range []struct {
		appendonly string
		require    bool
	}{{"no", false}, {"no", true}, {"yes", false}, {"yes", true}} {
		name := "appendonly " + tc.appendonly
		if tc.require {
			name += " required"
		}
		t.Run(name, func(t *testing.T) {
			rs := redistest.Start(t, "--appendonly", tc.appendonly)
			dir := t.TempDir()
			copyTree(t, "../../policies", dir)
			cfg := testConfig(t, dir, func(c *Config) {
				c.Redis.Addrs = []string{rs.Addr}
				c.Redis.RequireAOF = tc.require
			})
			runServer(t, &cfg)
			want := 0.0
			if tc.appendonly == "yes" {
				want = 1
			}
			metricsURL := "http://" + cfg.Metrics.Addr + "/metrics"
			var got float64
			eventually(t, "deputy_redis_aof_enabled", func() bool {
				var ok bool
				got, ok = sampled(t, metricsURL, "deputy_redis_aof_enabled")
				return ok
			})
			if got != want {
				t.Fatalf("deputy_redis_aof_enabled = %v with appendonly %s, want %v", got, tc.appendonly, want)
			}
			if n, ok := sampled(t, metricsURL, "deputy_redis_persistence_read_errors_total"); !ok || n != 0 {
				t.Fatalf("deputy_redis_persistence_read_errors_total = %v (present %v), want 0", n, ok)
			}

			failing := tc.require && tc.appendonly == "no"
			wantCode, wantCond := http.StatusOK, "ok"
			if failing {
				wantCode, wantCond = http.StatusServiceUnavailable, "failing"
			}
			for _, q := range []string{"", "?exclude=redis&exclude=identity_namespaced"} {
				var code int
				var checks map[string]string
				// The first reading may come after the first evaluation.
				eventually(t, "readiness at the first reading", func() bool {
					code, checks = readyzChecks(t, cfg.Metrics.Addr, q)
					return code == wantCode
				})
				cond, has := checks[aofCheck]
				if has != tc.require || tc.require && cond != wantCond {
					t.Fatalf("/readyz%s: %d %v; want %s %q only with require_aof", q, code, checks, aofCheck, wantCond)
				}
			}
		})
	}
}
