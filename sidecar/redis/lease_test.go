package redis_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	goredis "github.com/redis/go-redis/v9"
)

// leasesKey is where the stores of prefix keep their leases on the
// invalidation channel: beside it, in its slot.
func leasesKey(prefix string) string { return "{" + prefix + ":invalidate}:leases" }

// A replica holds its lease while Redis holds its subscription. Redis
// dropping the subscription unheard (Silence) ends the lease before any
// writer stops waiting for it: a narrowing write is answered only once
// the silenced replica no longer trusts its caches, having never heard
// the write. Once it subscribes again, it holds a lease again.
func TestSilencedReplicaStopsTrustingBeforeTheWriteIsAnswered(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	px := redistest.StartProxy(t, srv.Addr)
	prefix := freshPrefix()
	open := func(addr string) *redis.Store {
		s, err := redis.New(redis.Config{Addrs: []string{addr}, KeyPrefix: prefix,
			ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	w, b := open(srv.Addr), open(px.Addr)
	t.Cleanup(w.Subscribe(func(string) {}))
	lb := &keyLog{}
	t.Cleanup(b.Subscribe(lb.add))
	raw := srv.Client()
	eventually(t, "both replicas hold a lease", func() bool {
		n, err := raw.ZCard(ctx, leasesKey(prefix)).Result()
		return err == nil && n == 2 && w.Hears() && b.Hears()
	})

	for round := range 3 {
		key := sidecar.GrantKey("acme-" + string(rune('a'+round)))
		px.Silence()
		eventuallyNoSubscriberBut(t, raw, prefix+":invalidate", 1)
		if err := w.Invalidate(ctx, key); err != nil {
			t.Fatalf("round %d: invalidate: %v", round, err)
		}
		if b.Hears() {
			t.Fatalf("round %d: the write was answered while the replica Redis dropped still trusts its caches", round)
		}
		if lb.has(key) {
			t.Fatalf("round %d: the silenced replica heard the write: the test proves nothing", round)
		}
		px.Reset()
		eventually(t, "the replica holds a lease again", b.Hears)
		if err := w.Invalidate(ctx, key); err != nil || !lb.has(key) {
			t.Fatalf("round %d: invalidation with the replica back: %v, heard %t", round, err, lb.has(key))
		}
	}
}

// A replica that stops without closing its store (killed, its host gone)
// holds narrowing writes until its lease has run out by Redis's clock,
// as it may still be serving from its caches until then; past the bound
// the write is refused as unconfirmed, naming the lease. One that closes
// takes its lease out of Redis.
func TestLeaseOfAReplicaGoneHoldsWritesUntilItRunsOut(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	prefix := freshPrefix()
	open := func(ack time.Duration) *redis.Store {
		s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: prefix,
			ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: ack})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	w := open(redistest.AckTimeout)
	t.Cleanup(w.Subscribe(func(string) {}))
	raw := srv.Client()
	eventually(t, "the writer holds a lease", w.Hears)

	redisMillis := func() int64 {
		tm, err := raw.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixMilli()
	}
	// A replica that stopped with 800 ms of its lease left.
	ends := redisMillis() + 800
	if err := raw.ZAdd(ctx, leasesKey(prefix), goredis.Z{Score: float64(ends), Member: "gone"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := w.Invalidate(ctx, sidecar.GrantKey("acme")); err != nil {
		t.Fatalf("invalidate: %v", err)
	}
	if now := redisMillis(); now < ends {
		t.Fatalf("the write was answered at %d, before the lease of the replica gone ran out at %d", now, ends)
	}

	// Past the bound: refused, naming the lease.
	short := open(200 * time.Millisecond)
	t.Cleanup(short.Subscribe(func(string) {}))
	eventually(t, "the second writer holds a lease", short.Hears)
	if err := raw.ZAdd(ctx, leasesKey(prefix), goredis.Z{Score: float64(redisMillis() + 60_000), Member: "gone"}).Err(); err != nil {
		t.Fatal(err)
	}
	err := short.Invalidate(ctx, sidecar.GrantKey("acme"))
	if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE || !strings.Contains(err.Error(), "gone") || !strings.Contains(err.Error(), "lease") {
		t.Fatalf("invalidate with a lease past the bound: %v; want unavailable, naming the lease", err)
	}
	if err := raw.ZRem(ctx, leasesKey(prefix), "gone").Err(); err != nil {
		t.Fatal(err)
	}

	// Closing takes the lease out.
	before, err := raw.ZCard(ctx, leasesKey(prefix)).Result()
	if err != nil || before != 2 {
		t.Fatalf("leases before close: %d, %v; want 2", before, err)
	}
	if err := short.Close(); err != nil {
		t.Fatal(err)
	}
	if short.Hears() {
		t.Fatal("a closed store still holds its lease")
	}
	if after, err := raw.ZCard(ctx, leasesKey(prefix)).Result(); err != nil || after != 1 {
		t.Fatalf("leases after close: %d, %v; want 1", after, err)
	}
}

// In a Cluster, leases are kept in the channel's slot, where replicas
// subscribe and writers publish, so renewals and writes find them.
func TestClusterReplicasHoldLeases(t *testing.T) {
	ctx := context.Background()
	cl := redistest.StartCluster(t, 3)
	prefix := freshPrefix()
	var stores []*redis.Store
	for range 2 {
		s, err := redis.New(redis.Config{Addrs: cl.Addrs, Cluster: true, KeyPrefix: prefix,
			ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		t.Cleanup(s.Subscribe(func(string) {}))
		stores = append(stores, s)
	}
	for i, s := range stores {
		eventually(t, "replica holds a lease", s.Hears)
		if err := s.Invalidate(ctx, sidecar.GrantKey("acme")); err != nil {
			t.Fatalf("replica %d: invalidate: %v", i, err)
		}
	}
}
