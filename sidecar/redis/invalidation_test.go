package redis_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
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
	eventuallyWithin(t, what, 10*time.Second, cond)
}

// eventuallyWithin is eventually with its own bound.
func eventuallyWithin(t *testing.T, what string, bound time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(bound); !cond(); time.Sleep(10 * time.Millisecond) {
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

// count is how many times the subscriber was handed k.
func (l *keyLog) count(k string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, x := range l.keys {
		if x == k {
			n++
		}
	}
	return n
}

// listeningReplicas opens n stores with open, each with a subscriber
// logging what it is handed.
func listeningReplicas(t *testing.T, n int, open func() *redis.Store) ([]*redis.Store, []*keyLog) {
	t.Helper()
	var stores []*redis.Store
	var logs []*keyLog
	for range n {
		s := open()
		t.Cleanup(func() { _ = s.Close() })
		l := &keyLog{}
		t.Cleanup(s.Subscribe(l.add))
		stores, logs = append(stores, s), append(logs, l)
	}
	return stores, logs
}

// invalidateEverywhere checks that a narrowing write from each store
// returns only once every replica has the key.
func invalidateEverywhere(t *testing.T, stores []*redis.Store, logs []*keyLog, round string) {
	t.Helper()
	for w, s := range stores {
		key := sidecar.GrantKey(fmt.Sprintf("%s-%d", round, w))
		if err := s.Invalidate(context.Background(), key); err != nil {
			t.Fatalf("%s: invalidation from replica %d: %v", round, w, err)
		}
		for r, l := range logs {
			if !l.has(key) {
				t.Fatalf("%s: Invalidate from replica %d returned before replica %d had the key", round, w, r)
			}
		}
	}
}

// In a Cluster, PUBLISH counts only the subscriptions of the node it runs
// on, the master of the invalidation channel's slot; so every replica
// subscribes there, also when its connection closed and it subscribed
// again (CLIENT KILL here; a node restart or an output-buffer kill
// alike). Subscribed on another node, a replica would hear the keys late
// through the cluster bus without being counted, and a narrowing write
// could return before it applied them.
func TestClusterResubscribesWherePublishCounts(t *testing.T) {
	ctx := context.Background()
	cl := redistest.StartCluster(t, 3)
	prefix := freshPrefix()
	cfg := redis.Config{Addrs: cl.Addrs, Cluster: true, KeyPrefix: prefix, ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout}
	stores, logs := listeningReplicas(t, 3, func() *redis.Store {
		s, err := redis.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
	channel := prefix + ":invalidate"
	master, err := cl.Client(t).MasterForKey(ctx, channel)
	if err != nil {
		t.Fatal(err)
	}
	eventuallyNoSubscriberBut(t, master, channel, int64(len(stores)))
	for round := range 8 {
		before := make([]int, len(logs))
		for i, l := range logs {
			before[i] = l.count(sidecar.InvalidateAll)
		}
		for _, n := range cl.Nodes {
			if err := n.Client().Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, "every replica subscribed again", func() bool {
			for i, l := range logs {
				if l.count(sidecar.InvalidateAll) <= before[i] {
					return false
				}
			}
			return true
		})
		eventuallyNoSubscriberBut(t, master, channel, int64(len(stores)))
		invalidateEverywhere(t, stores, logs, fmt.Sprintf("round%d", round))
	}
}

// When the invalidation channel's slot moves to another master (reshard,
// rebalance), a writer publishes there as soon as its slot map says so,
// and PUBLISH there counts only the subscriptions on that node. Each
// replica notices, at its next ping, that its node no longer owns the
// slot and subscribes on the new owner, even before its own slot map is
// reloaded; until then, a narrowing write does not answer success (the
// writer listens elsewhere than it publishes, or PUBLISH counts nobody).
func TestClusterSlotMoveResubscribes(t *testing.T) {
	ctx := context.Background()
	cl := redistest.StartCluster(t, 3)
	prefix := freshPrefix()
	// The shipped timeouts: they bound how long after the move a narrowing
	// write is refused.
	cfg := redis.Config{Addrs: cl.Addrs, Cluster: true, KeyPrefix: prefix}
	// Each replica its own cluster client (its own slot map), so that the
	// test can reload the writer's map alone.
	var clients []*goredis.ClusterClient
	stores, logs := listeningReplicas(t, 3, func() *redis.Store {
		c := cl.Client(t)
		clients = append(clients, c)
		return redis.NewFromClient(c, cfg)
	})
	channel := prefix + ":invalidate"
	probe := cl.Client(t)
	slot, err := probe.ClusterKeySlot(ctx, channel).Result()
	if err != nil {
		t.Fatal(err)
	}
	old, err := probe.MasterForKey(ctx, channel)
	if err != nil {
		t.Fatal(err)
	}
	eventuallyNoSubscriberBut(t, old, channel, int64(len(stores)))
	invalidateEverywhere(t, stores, logs, "before")

	// Move the slot to another master with its keys (the replicas'
	// leases), as a reshard does, and tell every node.
	var target *goredis.Client
	ids := map[string]string{}
	for _, n := range cl.Nodes {
		id, err := n.Client().Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatal(err)
		}
		ids[n.Addr] = id
		if n.Addr != old.Options().Addr && target == nil {
			target = n.Client()
		}
	}
	if err := target.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[old.Options().Addr]).Err(); err != nil {
		t.Fatal(err)
	}
	if err := old.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.Options().Addr]).Err(); err != nil {
		t.Fatal(err)
	}
	keys, err := old.ClusterGetKeysInSlot(ctx, int(slot), 100).Result()
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(target.Options().Addr, ":")
	for _, k := range keys {
		if err := old.Migrate(ctx, host, port, k, 0, 5*time.Second).Err(); err != nil {
			t.Fatalf("migrate %s: %v", k, err)
		}
	}
	for _, n := range cl.Nodes {
		if err := n.Client().Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", ids[target.Options().Addr]).Err(); err != nil {
			t.Fatalf("setslot on %s: %v", n.Addr, err)
		}
	}
	// The writer's slot map learns the new owner (go-redis would reload it
	// within a minute by itself: PUBLISH is never answered MOVED).
	eventually(t, "the writer's slot map reloaded", func() bool {
		clients[0].ReloadState(ctx)
		m, err := clients[0].MasterForKey(ctx, channel)
		return err == nil && m.Options().Addr == target.Options().Addr
	})
	round := 0
	eventually(t, "every replica subscribed on the new owner", func() bool {
		round++
		key := sidecar.GrantKey(fmt.Sprintf("moving%d", round))
		if err := stores[0].Invalidate(ctx, key); err == nil {
			for r, l := range logs {
				if !l.has(key) {
					t.Fatalf("Invalidate answered success before replica %d had the key", r)
				}
			}
		}
		m, err := target.PubSubNumSub(ctx, channel).Result()
		return err == nil && m[channel] == int64(len(stores))
	})
	// Once replicas left behind would have stopped listening, narrowing
	// writes are confirmed again.
	eventually(t, "narrowing writes confirmed again", func() bool {
		for _, s := range stores {
			if s.Invalidate(ctx, sidecar.GrantKey("settled")) != nil {
				return false
			}
		}
		return true
	})
	invalidateEverywhere(t, stores, logs, "after")
}

// A replica whose subscription connection closes stops trusting its
// caches at once, not once a new connection is dialled and subscribed:
// Redis dropped its subscription, so a writer's PUBLISH no longer counts
// it, and a narrowing write is confirmed without it. Here its first
// redial hangs (Redis busy, SYNs dropped), for up to dial_timeout +
// read_timeout, while its other connections work.
func TestClosedSubscriptionReadsThroughAtOnce(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	prefix := freshPrefix()
	direct := redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: prefix, ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout}
	open := func(cfg redis.Config) *redis.Store {
		s, err := redis.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	w, a := open(direct), open(direct)
	t.Cleanup(w.Subscribe(func(string) {}))
	t.Cleanup(a.Subscribe(func(string) {}))
	px := redistest.StartProxy(t, srv.Addr)
	// Replica c with the shipped timeouts, through the proxy.
	c := open(redis.Config{Addrs: []string{px.Addr}, KeyPrefix: prefix})
	cached := resolve.NewCachedState(c, resolve.CacheConfig{}, nil, nil)
	defer cached.Close()
	raw := srv.Client()
	eventuallyNoSubscriberBut(t, raw, prefix+":invalidate", 3)

	g := &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelFullAdmin, ExpiresAt: time.Now().Add(time.Hour)}
	if err := w.PutGrant(ctx, g); err != nil {
		t.Fatal(err)
	}
	eventually(t, "replica c caches the grant", func() bool {
		eg, err := cached.EffectiveGrants(ctx, "acme", "p1", "pete")
		return err == nil && eg.Organisation != nil
	})

	lc := &keyLog{}
	t.Cleanup(c.Subscribe(lc.add))
	px.Hold(1) // c's subscription closes; a redial hangs; its other connections work
	eventuallyNoSubscriberBut(t, raw, prefix+":invalidate", 2)
	if _, err := w.RevokeGrant(ctx, "acme", "g1", "cora", "acme"); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if eg, err := cached.EffectiveGrants(ctx, "acme", "p1", "pete"); err != nil || eg.Organisation != nil {
		t.Fatalf("replica c right after the confirmed revocation: grant %+v, err %v; want none", eg.Organisation, err)
	}
	// Once c subscribes again, it listens and confirms again.
	px.Reset()
	eventuallyNoSubscriberBut(t, raw, prefix+":invalidate", 3)
	if err := w.Invalidate(ctx, sidecar.GrantKey("acme")); err != nil {
		t.Fatalf("invalidation with every replica back: %v", err)
	}
}
