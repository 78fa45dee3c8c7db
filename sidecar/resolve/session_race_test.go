package resolve_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// endingStore is the store a session is ended on: the resolver's own
// (memory) or another replica's (Redis).
type endingStore interface {
	resolve.SessionState
	storetest.SessionSetup
	Invalidate(ctx context.Context, keys ...string) error
}

// watchedState is the resolver's store. It tells when the resolver has
// processed a marker published after a session end (so the end's own
// eviction, published before it, has been processed too; the redeem's
// eviction may arrive late, so the session's key cannot tell), and can run
// a hook right after a session read, before the resolver uses the answer.
type watchedState struct {
	resolve.SessionState
	key       string
	evicted   chan struct{}
	once      sync.Once
	afterRead func(*sidecar.Session)
}

func (w *watchedState) Subscribe(fn func(string)) func() {
	return w.SessionState.Subscribe(func(key string) {
		fn(key)
		if key == w.key {
			w.once.Do(func() { close(w.evicted) })
		}
	})
}

func (w *watchedState) SessionByToken(ctx context.Context, h string) (*sidecar.Session, error) {
	s, err := w.SessionState.SessionByToken(ctx, h)
	if err == nil && w.afterRead != nil {
		w.afterRead(s)
	}
	return s, err
}

// raceStores are the stores a session end races a resolver on: the
// memory store (the end publishes in the same process) and two replicas
// on a real Redis (the end is made on a, the resolver runs on b).
func raceStores() map[string]func(t *testing.T) (resolverSide resolve.SessionState, ender endingStore) {
	return map[string]func(t *testing.T) (resolve.SessionState, endingStore){
		"memory": func(t *testing.T) (resolve.SessionState, endingStore) {
			m := memory.New()
			return m, m
		},
		"redis": func(t *testing.T) (resolve.SessionState, endingStore) {
			srv := redistest.Start(t)
			mk := func() *redis.Store {
				s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "race",
					ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
				return s
			}
			a, b := mk(), mk()
			return b, a
		},
	}
}

// endAndMark ends the session on ender, then publishes the marker w waits for.
func endAndMark(ctx context.Context, ender endingStore, w *watchedState, id string) error {
	if _, err := ender.EndSession(ctx, id, "lee", sidecar.EndRevoked, time.Now(), sidecar.SessionLimits{}); err != nil {
		return err
	}
	return ender.Invalidate(ctx, w.key)
}

// startSession stores a live, redeemed session and returns its cookie.
func startSession(t *testing.T, st storetest.SessionSetup, id string) string {
	t.Helper()
	now := time.Now()
	cookie := fmt.Sprintf("%-43s", id)
	cookie = strings.ReplaceAll(cookie, " ", "c")
	s := &sidecar.Session{ID: id, Actor: "alice", Customer: "c-" + id, CustomerName: "C", StartedAt: now,
		ExpiresAt: now.Add(time.Hour), IdleTimeout: 15 * time.Minute, Host: "shop.example.com"}
	if err := storetest.StartRedeemed(context.Background(), st, s, delegation.HashSecret(cookie)); err != nil {
		t.Fatal(err)
	}
	return cookie
}

func sessionRequest(cookie string) *sidecar.Request {
	return &sidecar.Request{Method: "GET", Host: "shop.example.com", Path: "/", Headers: map[string]string{"cookie": "deputy_session=" + cookie}}
}

// A session ended while a replica is reading it: the eviction arrives
// between the store's answer and the resolver caching it. The replica's
// next request must be refused, not served from its cache as live until
// cache_ttl passes.
func TestSessionEndedDuringFetchIsNotCached(t *testing.T) {
	for name, stores := range raceStores() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			local, ender := stores(t)
			cookie := startSession(t, ender, "imp_fetch")
			w := &watchedState{SessionState: local, key: "test:ended-imp_fetch", evicted: make(chan struct{})}
			var ended atomic.Bool
			w.afterRead = func(s *sidecar.Session) {
				if ended.Swap(true) {
					return
				}
				if err := endAndMark(ctx, ender, w, s.ID); err != nil {
					t.Error(err)
				}
				select {
				case <-w.evicted:
				case <-time.After(10 * time.Second):
					t.Error("the end's eviction never reached the resolver")
				}
			}
			r := resolve.NewSessionResolver(w, delegation.ImpersonationConfig{})
			defer r.Close()
			// The first request read the session before it ended: it may go
			// through as live. The ones after the eviction may not.
			_, _ = r.Resolve(ctx, sessionRequest(cookie), nil)
			if !ended.Load() {
				t.Fatal("the session was never read")
			}
			for i := range 3 {
				if d, err := r.Resolve(ctx, sessionRequest(cookie), nil); d != nil || sidecar.ErrorReason(err) != "session_revoked" {
					t.Fatalf("request %d after the revoke: delegation %+v, err %v; want session_revoked", i+2, d, err)
				}
			}
		})
	}
}

// Many requests resolve a session while it is ended: once the resolver has
// processed the eviction, no request that starts afterwards resolves it,
// however the reads and caching interleave with the eviction. Run with
// -race.
func TestSessionEndRacingResolvers(t *testing.T) {
	rounds := map[string]int{"memory": 40, "redis": 10}
	for name, stores := range raceStores() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			local, ender := stores(t)
			for round := range rounds[name] {
				cookie := startSession(t, ender, fmt.Sprintf("imp_%d", round))
				id := fmt.Sprintf("imp_%d", round)
				w := &watchedState{SessionState: local, key: "test:ended-" + id, evicted: make(chan struct{})}
				r := resolve.NewSessionResolver(w, delegation.ImpersonationConfig{})
				var wg sync.WaitGroup
				var after, live atomic.Int64
				for range 8 {
					wg.Go(func() {
						deadline := time.Now().Add(10 * time.Second)
						for n := 0; n < 20 && time.Now().Before(deadline); {
							var evicted bool
							select {
							case <-w.evicted:
								evicted = true
								n++
							default:
							}
							d, _ := r.Resolve(ctx, sessionRequest(cookie), nil)
							if evicted {
								after.Add(1)
								if d != nil {
									live.Add(1)
								}
							}
						}
					})
				}
				if err := endAndMark(ctx, ender, w, id); err != nil {
					t.Fatal(err)
				}
				wg.Wait()
				r.Close()
				if after.Load() == 0 {
					t.Fatalf("round %d: no request after the eviction", round)
				}
				if n := live.Load(); n > 0 {
					t.Fatalf("round %d: %d of %d requests after the eviction resolved the ended session", round, n, after.Load())
				}
			}
		})
	}
}
