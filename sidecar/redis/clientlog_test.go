package redis_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar/logtest"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// countingLogger counts what go-redis logs, by format, before passing it on.
type countingLogger struct {
	next     *redis.ClientLogger
	mu       sync.Mutex
	byFormat map[string]int
}

func (c *countingLogger) Printf(ctx context.Context, format string, v ...any) {
	c.mu.Lock()
	c.byFormat[format]++
	c.mu.Unlock()
	c.next.Printf(ctx, format, v...)
}

func (c *countingLogger) counts() (total int, kinds map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kinds = make(map[string]int, len(c.byFormat))
	for f, n := range c.byFormat {
		total += n
		kinds[f] = n
	}
	return total, kinds
}

// TestClientLoggerBoundsAnOutage stops a real redis-server and sends a few
// hundred commands at it: go-redis reports each failed dial, and Deputy's
// JSON log gets one line per kind of message, until the interval has
// passed; the next line then says how many were held back.
func TestClientLoggerBoundsAnOutage(t *testing.T) {
	clock := storetest.NewClock(storetest.Epoch)
	var logs logtest.Lines
	counting := &countingLogger{
		next:     redis.NewClientLogger(slog.New(slog.NewJSONHandler(&logs, nil)), time.Minute, clock.Now),
		byFormat: map[string]int{},
	}
	goredis.SetLogger(counting)
	t.Cleanup(func() {
		goredis.SetLogger(redis.NewClientLogger(slog.Default(), redis.DefaultClientLogInterval, time.Now))
	})

	srv := redistest.Start(t)
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = client.Close() })
	ctx := context.Background()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()

	const commands = 200
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range commands / 4 {
				if client.Ping(ctx).Err() == nil {
					t.Error("a ping to a stopped Redis succeeded")
				}
			}
		})
	}
	wg.Wait()

	total, kinds := counting.counts()
	if total < 20 {
		t.Fatalf("go-redis logged %d messages for %d failed commands: the outage did not reach its logger", total, commands)
	}
	recs := logs.Records(t)
	t.Logf("%d failed commands: go-redis logged %d messages of %d kinds, Deputy's log got %d lines", commands, total, len(kinds), len(recs))
	if len(recs) != len(kinds) {
		t.Errorf("%d go-redis messages of %d kinds became %d log lines, want one per kind:\n%v", total, len(kinds), len(recs), recs)
	}
	dial := ""
	for f := range kinds {
		if strings.Contains(f, "failed to dial") {
			dial = f
		}
	}
	if dial == "" {
		t.Fatalf("no failed dial among go-redis's messages: %v", kinds)
	}
	for _, rec := range recs {
		if rec["level"] != "WARN" || rec["msg"] != "redis client" || rec["detail"] == "" {
			t.Errorf("line %v: want level WARN, msg \"redis client\" and the detail", rec)
		}
		if d, _ := rec["detail"].(string); strings.HasPrefix(d, "redis: ") {
			t.Errorf("detail %q repeats the redis prefix", d)
		}
	}

	// A minute later the next failed dial is logged, with the count of
	// those held back in between. (A fresh client dials at once: the first
	// one now answers from its last dial error.)
	_ = client.Close()
	clock.Advance(time.Minute)
	fresh := goredis.NewClient(&goredis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: time.Second})
	defer fresh.Close()
	if fresh.Ping(ctx).Err() == nil {
		t.Fatal("a ping to a stopped Redis succeeded")
	}
	_, after := counting.counts()
	if after[dial] == kinds[dial] {
		t.Fatal("the ping after a minute did not dial")
	}
	recs = logs.Records(t)
	last := recs[len(recs)-1]
	// All but the first and the last dial failure were held back.
	if got, want := last["held_back"], float64(after[dial]-2); got != want || !strings.Contains(last["detail"].(string), "failed to dial") {
		t.Errorf("line after the interval = %v, want the failed dial with held_back %v", last, want)
	}
}
