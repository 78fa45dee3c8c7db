package redis_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
	goredis "github.com/redis/go-redis/v9"
)

// keyLog records the keys a store hands to one subscriber.
type keyLog struct {
	mu   sync.Mutex
	keys []string
}

func (l *keyLog) add(k string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys = append(l.keys, k)
}

func (l *keyLog) has(k string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.keys, k)
}

// Invalidate returns only once every replica listening has handed the
// keys to its subscribers: on a single node and on a Cluster, where
// PUBLISH counts only the subscribers of the node it runs on, for three
// replicas, many times over.
func TestInvalidateReturnsOnceEveryReplicaApplied(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(t *testing.T) redis.Config
	}{
		{"single_node", func(t *testing.T) redis.Config {
			return redis.Config{Addrs: []string{redistest.Start(t).Addr}}
		}},
		{"cluster", func(t *testing.T) redis.Config {
			return redis.Config{Addrs: redistest.StartCluster(t, 3).Addrs, Cluster: true}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg(t)
			cfg.KeyPrefix, cfg.ReadTimeout, cfg.WriteTimeout = freshPrefix(), redistest.ReplyTimeout, redistest.ReplyTimeout
			var stores []*redis.Store
			var logs []*keyLog
			for range 3 {
				s, err := redis.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
				l := &keyLog{}
				t.Cleanup(s.Subscribe(l.add))
				stores, logs = append(stores, s), append(logs, l)
			}
			ctx := context.Background()
			const rounds = 100
			for i := range rounds {
				key := fmt.Sprintf("grant:c%d", i)
				if err := stores[i%len(stores)].Invalidate(ctx, key); err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				for r, l := range logs {
					if !l.has(key) {
						t.Fatalf("round %d: Invalidate returned before replica %d had %q", i, r, key)
					}
				}
			}
		})
	}
}

// A replica that receives invalidations but never confirms them (here a
// bare subscription, as a replica that hangs, or one of a version that
// does not confirm) makes a narrowing write answer Unpublished once the
// bound has passed: the write stands, and its retry publishes again.
// Counted. Once that replica is gone, the retry succeeds.
func TestNarrowingWriteUnconfirmedIsUnpublished(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	clock := storetest.NewClock(storetest.Epoch)
	prefix := freshPrefix()
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: prefix, ReadTimeout: redistest.ReplyTimeout,
		WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: 200 * time.Millisecond}, redis.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw := srv.Client()
	silent := raw.Subscribe(ctx, prefix+":invalidate")
	if _, err := silent.Receive(ctx); err != nil { // the confirmation; nothing is read after it
		t.Fatal(err)
	}
	if err := s.PutGrant(ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelLook,
		ExpiresAt: clock.Now().Add(time.Hour)}); err != nil && !sidecar.IsUnpublished(err) {
		t.Fatal(err)
	}
	before := s.InvalidationsUnconfirmed()
	_, err = s.RevokeGrant(ctx, "acme", "g1", "cora", "acme")
	if !sidecar.IsUnpublished(err) {
		t.Fatalf("revocation with a replica that never confirms: %v, want Unpublished", err)
	}
	if got := s.InvalidationsUnconfirmed(); got != before+1 {
		t.Fatalf("unconfirmed invalidations counted %d, want %d", got, before+1)
	}
	if _, err := s.GetGrant(ctx, "acme", "g1"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
		t.Fatalf("the revocation does not stand: %v", err)
	}
	// The retry's eviction, once the silent replica is gone.
	if err := silent.Close(); err != nil {
		t.Fatal(err)
	}
	eventuallyNoSubscriberBut(t, raw, prefix+":invalidate", 1)
	if err := s.Invalidate(ctx, sidecar.GrantKey("acme")); err != nil {
		t.Fatalf("eviction with every replica confirming: %v", err)
	}
}

// eventuallyNoSubscriberBut waits until channel has n subscribers.
func eventuallyNoSubscriberBut(t *testing.T, raw interface {
	PubSubNumSub(ctx context.Context, channels ...string) *goredis.MapStringIntCmd
}, channel string, n int64) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s with %d subscribers", channel, n), func() bool {
		m, err := raw.PubSubNumSub(context.Background(), channel).Result()
		return err == nil && m[channel] == n
	})
}

// eventually polls cond until it holds, and fails the test when it has
// not within 10 seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never happened", what)
		}
	}
}

// While a replica's subscription is down, its subscribers are told that
// invalidations are not heard; messages published meanwhile are lost, so
// they are told to drop everything once it is back. Down: Redis restarted
// (the connection closes), or Redis hangs (the connection stays silent; so
// does one whose peer vanished without closing it).
func TestLostSubscriptionIsReported(t *testing.T) {
	for _, tc := range []struct {
		name       string
		lose, heal func(srv *redistest.Server)
	}{
		{"redis_restarted", (*redistest.Server).Restart, func(*redistest.Server) {}},
		{"redis_silent", (*redistest.Server).Freeze, (*redistest.Server).Thaw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: freshPrefix(), DialTimeout: 200 * time.Millisecond,
				ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got := make(chan string, 64)
			defer s.Subscribe(func(k string) {
				select {
				case got <- k:
				default:
				}
			})()
			defer srv.Thaw()
			tc.lose(srv)
			deadline := time.After(30 * time.Second)
			for _, want := range []string{sidecar.InvalidationsLost, sidecar.InvalidateAll} {
			wait:
				for {
					select {
					case k := <-got:
						if k == want {
							break wait
						}
					case <-deadline:
						t.Fatalf("no %q", want)
					}
				}
				tc.heal(srv)
			}
		})
	}
}
