package api_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

func redisStore(t *testing.T, now sidecar.Clock) sidecar.Store {
	return redisStoreOn(t, redistest.Start(t), now)
}

func redisStoreOn(t *testing.T, srv *redistest.Server, now sidecar.Clock) sidecar.Store {
	t.Helper()
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr},
		ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// With Redis down, management writes answer 503; a storefront request in a
// session keeps working while its cached entry is fresh and is refused
// (fail closed) after; all recover when Redis is back.
func TestRedisDown(t *testing.T) {
	// Durable like a production Redis, so the restart loses nothing.
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	e := newEnv(t, func(t *testing.T, now sidecar.Clock) sidecar.Store { return redisStoreOn(t, srv, now) })
	subscribed(t, e.store)
	e.seed()
	id, cookie := e.live(e.agent())
	// The session's writes come back over pub/sub after they returned, and
	// would evict the entry warmed below: messages arrive in order, so once
	// a probe published after them is back, they went by.
	subscribed(t, e.store)
	if _, err := e.check(cookie); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	writes := []struct {
		name, method, path string
		token              func(*env) string
		body               any
	}{
		{"set consent", "PUT", "/deputy/v1/customers/c42/consent", (*env).customer, map[string]any{"allowed": false}},
		{"start", "POST", "/deputy/v1/impersonation/sessions", (*env).agent, map[string]any{"customer_id": "c42"}},
		{"end", "DELETE", "/deputy/v1/impersonation/sessions/" + id, (*env).agent, nil},
		{"sync customer", "PUT", "/deputy/v1/customers/c9", (*env).admin, map[string]any{"name": "x"}},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			r := e.do(w.method, w.path, w.token(e), w.body)
			if r.Status != 503 || r.errCode() != sidecar.EUNAVAILABLE {
				t.Fatalf("got %d %s, want 503", r.Status, r.Raw)
			}
		})
	}
	if d, err := e.check(cookie); err != nil || d.Subject != "c42" {
		t.Fatalf("fresh cached session refused while Redis is down: %v", err)
	}
	e.clock.Advance(31 * time.Second) // past the cache TTL
	if d, err := e.check(cookie); d != nil || sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
		t.Fatalf("stale session while Redis is down: %+v, %v; want unavailable", d, err)
	}

	srv.Restart()
	eventually(t, 10*time.Second, func() string {
		if err := e.store.Ping(context.Background()); err != nil {
			return "store did not come back after Redis restarted: " + err.Error()
		}
		return ""
	})
	if _, err := e.check(cookie); err != nil {
		t.Fatalf("after Redis came back: %v", err)
	}
	e.must(e.do("DELETE", "/deputy/v1/impersonation/sessions/"+id, e.agent(), nil), 200)
	e.denied(cookie, "session_ended")
}

// Two replicas share one Redis: a session ended through one is refused by
// the other, whose cache held it, as soon as the eviction arrives.
func TestEvictionReachesOtherReplica(t *testing.T) {
	srv := redistest.Start(t)
	e := newEnv(t, func(t *testing.T, now sidecar.Clock) sidecar.Store { return redisStoreOn(t, srv, now) })
	other := redisStoreOn(t, srv, e.clock.Now)
	replica := resolve.NewSessionResolver(other, delegation.ImpersonationConfig{}, resolve.WithSessionClock(e.clock.Now))
	t.Cleanup(func() { replica.Close() })
	e.seed()
	id, cookie := e.live(e.agent())
	req := &sidecar.Request{Method: "GET", Host: "example.com", Path: "/", Headers: map[string]string{"cookie": delegation.DefaultSessionCookie + "=" + cookie}}
	if d, err := replica.Resolve(context.Background(), req, nil); err != nil || d.Subject != "c42" {
		t.Fatalf("other replica: %+v, %v", d, err)
	}

	e.must(e.do("DELETE", "/deputy/v1/impersonation/sessions/"+id, e.agent(), nil), 200)
	// A bounded wait for pub/sub, not a latency assertion.
	eventually(t, 5*time.Second, func() string {
		if _, err := replica.Resolve(context.Background(), req, nil); sidecar.ErrorMessage(err) != "session_ended" {
			return fmt.Sprintf("other replica still resolves the ended session: %v", err)
		}
		return ""
	})
}

// subscribed waits until st's invalidation subscription delivers: Redis
// confirms a subscription before any message on it, and on that
// confirmation every cache is flushed (messages may have been missed). On
// a loaded machine the confirmation can come after the subscribe call
// returned, and the flush then drops what a test cached since. A key
// published and received after it means the flush is behind.
func subscribed(t *testing.T, st sidecar.Store) {
	t.Helper()
	const probe = "test:subscribed"
	got := make(chan struct{}, 1)
	cancel := st.Subscribe(func(key string) {
		if key == probe {
			select {
			case got <- struct{}{}:
			default:
			}
		}
	})
	defer cancel()
	for range 100 {
		if err := st.Invalidate(context.Background(), probe); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatal("the invalidation subscription delivered nothing in 10 s")
}
