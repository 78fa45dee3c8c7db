package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/logtest"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// A replica whose clock runs 5 minutes ahead of Redis's shows about -5
// minutes in deputy_redis_clock_offset_seconds and logs one warning when
// it crosses 1 s, not one per measurement, and one info line once its
// clock is back within; the loop stops with the component.
func TestClockWatchWarnsOnceOnCrossing(t *testing.T) {
	const skew = 5 * time.Minute
	srv := redistest.Start(t)
	var ahead atomic.Int64
	ahead.Store(int64(skew))
	store, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout},
		redis.WithClock(func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	var measured atomic.Int64
	measure := func(ctx context.Context) (time.Duration, error) {
		defer measured.Add(1)
		return store.ClockOffset(ctx)
	}
	lines := &logtest.Lines{}
	w := newClockWatch(measure, 5*time.Millisecond, slog.New(slog.NewJSONHandler(lines, nil)))
	if _, ok := w.get(); ok {
		t.Fatal("an offset before any measurement")
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
	count := func(msg string) int {
		n := 0
		for _, r := range lines.Records(t) {
			if r["msg"] == msg {
				n++
			}
		}
		return n
	}
	// settle waits for 10 more measurements than now, all of them past
	// whatever line the crossing logged.
	settle := func(what string) {
		t.Helper()
		from := measured.Load()
		eventually(t, what, func() bool { return measured.Load() >= from+10 })
	}

	eventually(t, "the warning", func() bool { return count(clockApartMsg) > 0 })
	if d, ok := w.get(); !ok || d > -skew+2*time.Second || d < -skew-2*time.Second {
		t.Fatalf("offset %v (measured %v) for a clock %v ahead, want about %v", d, ok, skew, -skew)
	}
	settle("measurements while apart")
	if n := count(clockApartMsg); n != 1 {
		t.Fatalf("%d warnings over %d measurements apart, want 1", n, measured.Load())
	}

	ahead.Store(0)
	eventually(t, "the clock back within", func() bool { return count(clockBackMsg) > 0 })
	settle("measurements within")
	if a, b := count(clockApartMsg), count(clockBackMsg); a != 1 || b != 1 {
		t.Fatalf("%d warnings and %d lines back within, want 1 each", a, b)
	}
	if d, ok := w.get(); !ok || d > 2*time.Second || d < -2*time.Second {
		t.Fatalf("offset %v (measured %v) once the clock agrees, want about 0", d, ok)
	}
	for _, r := range lines.Records(t) {
		if r["msg"] == clockApartMsg && r["level"] != "WARN" || r["msg"] == clockBackMsg && r["level"] != "INFO" {
			t.Errorf("logged %v", r)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped = true
	if err := w.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
