package resolve_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
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
func guardOnRedis(t *testing.T, cfg resolve.LookupConfig) (*redistest.Server, *resolve.StateGuard, *lookupCounter) {
	t.Helper()
	srv := redistest.Start(t)
	store, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "guard"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	src := &lookupCounter{GuardedSource: store}
	guard := resolve.NewStateGuard(src, store.Ping, cfg, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = guard.Close() })
	return srv, guard, src
}

// TestStateGuardOnAFrozenRedis freezes a real redis-server (SIGSTOP: the
// connections stay open, nothing answers). Lookups fail closed at the
// budget; after breaker_failures of them the breaker opens and lookups
// fail without reaching the store; once Redis answers a probe, lookups
// reach it again.
func TestStateGuardOnAFrozenRedis(t *testing.T) {
	cfg := resolve.LookupConfig{Budget: 50 * time.Millisecond, BreakerFailures: 3, ProbeInterval: 10 * time.Millisecond}
	srv, guard, src := guardOnRedis(t, cfg)
	ctx := context.Background()

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
