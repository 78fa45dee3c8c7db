package resolve_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// countingObserver records cache traffic per kind.
type countingObserver struct {
	mu                 sync.Mutex
	hits, miss, evicts map[string]int
}

func newCountingObserver() *countingObserver {
	return &countingObserver{hits: map[string]int{}, miss: map[string]int{}, evicts: map[string]int{}}
}

func (o *countingObserver) Hit(k string)   { o.mu.Lock(); o.hits[k]++; o.mu.Unlock() }
func (o *countingObserver) Miss(k string)  { o.mu.Lock(); o.miss[k]++; o.mu.Unlock() }
func (o *countingObserver) Evict(k string) { o.mu.Lock(); o.evicts[k]++; o.mu.Unlock() }

var cacheCfg = resolve.CacheConfig{TTL: 10 * time.Second, NegativeTTL: time.Second, Size: 1000}

func TestCacheConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		cfg   resolve.CacheConfig
		field string
	}{
		{"defaults", resolve.CacheConfig{}, ""},
		{"negative_ttl_longer_than_ttl", resolve.CacheConfig{TTL: time.Second, NegativeTTL: time.Minute}, "state_cache.negative_ttl"},
		{"negative_ttl_below_zero", resolve.CacheConfig{NegativeTTL: -time.Second}, "state_cache.negative_ttl"},
		{"ttl_below_zero", resolve.CacheConfig{TTL: -time.Second}, "state_cache.ttl"},
		{"size_below_zero", resolve.CacheConfig{Size: -1}, "state_cache.size"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Defaults().Validate()
			if got := sidecar.ErrorField(err); got != tc.field || (tc.field == "") != (err == nil) {
				t.Fatalf("err = %v, want field %q", err, tc.field)
			}
		})
	}
}

func TestCacheLoad(t *testing.T) {
	ctx := context.Background()
	type step struct {
		advance   time.Duration
		evict     string // an invalidation key handled before the lookup
		answer    string // what the store says; "" = nothing there
		storeErr  bool
		failsElse bool // the store fails other than unavailable
		want      string
		wantErr   bool
		wantCalls int // store calls so far
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"hit_within_ttl", []step{
			{answer: "v1", want: "v1", wantCalls: 1},
			{advance: 9 * time.Second, answer: "v2", want: "v1", wantCalls: 1},
		}},
		{"reload_after_ttl", []step{
			{answer: "v1", want: "v1", wantCalls: 1},
			{advance: 10 * time.Second, answer: "v2", want: "v2", wantCalls: 2},
		}},
		{"negative_entries_are_short", []step{
			{answer: "", want: "", wantCalls: 1},
			{advance: 500 * time.Millisecond, answer: "v1", want: "", wantCalls: 1},
			{advance: 500 * time.Millisecond, answer: "v1", want: "v1", wantCalls: 2},
		}},
		{"fresh_entry_served_while_store_fails", []step{
			{answer: "v1", want: "v1", wantCalls: 1},
			{advance: 5 * time.Second, storeErr: true, want: "v1", wantCalls: 1},
			{advance: 5 * time.Second, storeErr: true, wantErr: true, wantCalls: 2},
		}},
		{"errors_are_not_cached", []step{
			{storeErr: true, wantErr: true, wantCalls: 1},
			{answer: "v1", want: "v1", wantCalls: 2},
		}},
		// Invalidations not heard: a hit is read through and replaced.
		{"not_listening_reads_hits_through", []step{
			{answer: "v1", want: "v1", wantCalls: 1},
			{evict: sidecar.InvalidationsLost, answer: "", want: "", wantCalls: 2},
			{answer: "v2", want: "v2", wantCalls: 3},
			{answer: "v3", want: "v3", wantCalls: 4},
		}},
		{"not_listening_fresh_entry_decides_while_store_unavailable", []step{
			{answer: "v1", want: "v1", wantCalls: 1},
			{evict: sidecar.InvalidationsLost, storeErr: true, want: "v1", wantCalls: 2},
			{advance: 10 * time.Second, storeErr: true, wantErr: true, wantCalls: 3},
		}},
		{"not_listening_other_failure_refused", []step{
			{answer: "v1", want: "v1", wantCalls: 1},
			{evict: sidecar.InvalidationsLost, failsElse: true, wantErr: true, wantCalls: 2},
		}},
		{"listening_again_hits_without_store", []step{
			{answer: "v1", want: "v1", wantCalls: 1},
			{evict: sidecar.InvalidationsLost, answer: "v2", want: "v2", wantCalls: 2},
			{evict: sidecar.InvalidateAll, answer: "v3", want: "v3", wantCalls: 3},
			{answer: "v4", want: "v3", wantCalls: 3},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := storetest.NewClock(storetest.Epoch)
			c := resolve.NewCache[string, string]("test", "t:", cacheCfg, clock.Now, nil)
			calls := 0
			for i, st := range tc.steps {
				clock.Advance(st.advance)
				if st.evict != "" {
					c.Evict(st.evict)
				}
				v, _, err := c.Load(ctx, "acme", "k", func(context.Context) (string, bool, error) {
					calls++
					if st.storeErr {
						return "", false, sidecar.Unavailable("down", errors.New("connection refused"))
					}
					if st.failsElse {
						return "", false, errors.New("corrupt record")
					}
					return st.answer, st.answer != "", nil
				})
				if (err != nil) != st.wantErr || v != st.want || calls != st.wantCalls {
					t.Fatalf("step %d: got %q, %v after %d calls; want %q, err %v, %d calls", i, v, err, calls, st.want, st.wantErr, st.wantCalls)
				}
			}
		})
	}
}

func TestCacheEvict(t *testing.T) {
	ctx := context.Background()
	fill := func(c *resolve.Cache[string, string]) {
		for _, tag := range []string{"acme", "globex"} {
			for _, k := range []string{"a", "b"} {
				_, _, _ = c.Load(ctx, tag, k, func(context.Context) (string, bool, error) { return tag + k, true, nil })
			}
		}
	}
	cases := []struct {
		name       string
		key        string
		wantLeft   map[string]bool // tag → still cached
		wantEvicts int             // as counted by the observer
	}{
		{"tag_evicts_all_its_entries", "t:acme", map[string]bool{"acme": false, "globex": true}, 1},
		{"other_prefix_ignored", "x:acme", map[string]bool{"acme": true, "globex": true}, 0},
		{"unknown_tag_harmless", "t:initech", map[string]bool{"acme": true, "globex": true}, 0},
		{"invalidate_all", sidecar.InvalidateAll, map[string]bool{"acme": false, "globex": false}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obs := newCountingObserver()
			c := resolve.NewCache[string, string]("test", "t:", cacheCfg, storetest.NewClock(storetest.Epoch).Now, obs)
			fill(c)
			c.Evict(tc.key)
			for tag, want := range tc.wantLeft {
				for _, k := range []string{"a", "b"} {
					if _, _, hit := c.Get(tag, k); hit != want {
						t.Fatalf("%s/%s cached = %v, want %v", tag, k, hit, want)
					}
				}
			}
		})
	}
	t.Run("eviction_during_load_wins", func(t *testing.T) {
		c := resolve.NewCache[string, string]("test", "t:", cacheCfg, storetest.NewClock(storetest.Epoch).Now, nil)
		_, _, _ = c.Load(ctx, "acme", "k", func(context.Context) (string, bool, error) {
			c.Evict("t:acme") // the revocation lands while the old answer is in flight
			return "stale", true, nil
		})
		if _, _, hit := c.Get("acme", "k"); hit {
			t.Fatal("an answer read before an eviction was cached after it")
		}
	})
}

func TestCacheBounded(t *testing.T) {
	ctx := context.Background()
	cfg := resolve.CacheConfig{Size: 64}
	c := resolve.NewCache[int, int]("test", "t:", cfg, nil, nil)
	for i := range 10_000 {
		_, _, _ = c.Load(ctx, "tag"+string(rune('a'+i%26)), i, func(context.Context) (int, bool, error) { return i, true, nil })
	}
	if n := c.Len(); n > 64 || n == 0 {
		t.Fatalf("cache holds %d entries, bound 64", n)
	}
}

// An entry the size bound dropped leaves no trace in the tag index, and
// one that stayed is still dropped by its tag's invalidation: a revoked
// grant must not survive because its customer's entries were reshuffled.
func TestCacheBoundKeepsInvalidationExact(t *testing.T) {
	ctx := context.Background()
	obs := newCountingObserver()
	c := resolve.NewCache[int, int]("test", "t:", resolve.CacheConfig{Size: 64}, storetest.NewClock(storetest.Epoch).Now, obs)
	load := func(tag string, i int) {
		_, _, _ = c.Load(ctx, tag, i, func(context.Context) (int, bool, error) { return i, true, nil })
	}
	for i := range 1000 { // one tag, one shard: the shard keeps its newest two
		load("acme", i)
	}
	if n := c.Len(); n != 2 {
		t.Fatalf("one shard holds %d entries, want its bound 2", n)
	}
	for _, i := range []int{998, 999} {
		if _, _, hit := c.Get("acme", i); !hit {
			t.Fatalf("entry %d, among the newest, was dropped", i)
		}
	}
	c.Evict("t:acme")
	if n := c.Len(); n != 0 {
		t.Fatalf("%d entries survived their tag's invalidation", n)
	}
	if got := obs.evicts["test"]; got != 1 {
		t.Fatalf("evictions counted %d, want 1", got)
	}
	load("acme", 5)
	c.Evict("t:acme")
	if _, _, hit := c.Get("acme", 5); hit {
		t.Fatal("an entry loaded after a full shard's invalidation survived the next one")
	}
}

// twoReplicas is two Deputy replicas' stores and caches on one Redis.
func twoReplicas(t *testing.T, srv *redistest.Server, clock *storetest.Clock) (a, b *redis.Store, ca, cb *resolve.CachedState) {
	t.Helper()
	mk := func() (*redis.Store, *resolve.CachedState) {
		s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "replicas",
			ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		cs := resolve.NewCachedState(s, resolve.CacheConfig{TTL: time.Hour, NegativeTTL: time.Minute}, clock.Now, nil)
		t.Cleanup(func() { _ = cs.Close(); _ = s.Close() })
		return s, cs
	}
	a, ca = mk()
	b, cb = mk()
	return a, b, ca, cb
}

// eventually polls cond, bounded.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s never happened", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCachedStateEvictsOnEveryReplica(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	clock := storetest.NewClock(storetest.Epoch)
	a, _, ca, cb := twoReplicas(t, srv, clock)
	day := 24 * time.Hour
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.PutGrant(ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "p1", User: "pat", Level: sidecar.LevelUpdate, ExpiresAt: clock.Now().Add(day)}))
	must(storetest.ErrOf(a.PutShare(ctx, &sidecar.Share{Customer: "acme", Resource: "SR-1", User: "pat", PartnerOrg: "p1"})))
	must(a.PutAssignment(ctx, &sidecar.Assignment{Customer: "acme", Reseller: "r1", Domain: "eu.r1"}))
	must(a.PutAssignment(ctx, &sidecar.Assignment{Customer: "initech", Reseller: "r1", Domain: "eu.r1"}))

	cases := []struct {
		name   string
		warm   func(cs *resolve.CachedState) bool // true when access is there
		narrow func() error
	}{
		{"grant_revoked", func(cs *resolve.CachedState) bool {
			eg, err := cs.EffectiveGrants(ctx, "acme", "p1", "pat")
			return err == nil && eg.Effective() != nil
		}, func() error { _, err := a.RevokeGrant(ctx, "acme", "g1", "cora", "acme"); return err }},
		{"share_removed", func(cs *resolve.CachedState) bool {
			v, err := cs.SharesFor(ctx, "acme", "p1", "pat")
			return err == nil && len(v) == 1
		}, func() error { _, err := a.DeleteShare(ctx, "acme", "SR-1", "p1", "pat", "cora"); return err }},
		{"assignment_removed", func(cs *resolve.CachedState) bool {
			as, err := cs.GetAssignment(ctx, "acme")
			return err == nil && as.Domain == "eu.r1"
		}, func() error { return a.DeleteAssignment(ctx, "acme") }},
		// Cached under one spelling, removed under another: one entry,
		// under the folded id, is evicted.
		{"assignment_removed_under_a_variant", func(cs *resolve.CachedState) bool {
			as, err := cs.GetAssignment(ctx, "INITECH")
			return err == nil && as.Domain == "eu.r1"
		}, func() error { return a.DeleteAssignment(ctx, "Initech") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.warm(ca) || !tc.warm(cb) {
				t.Fatal("access not visible before the change")
			}
			must(tc.narrow())
			// The writing replica evicted before the write returned.
			if tc.warm(ca) {
				t.Fatal("the writing replica still grants access after the narrowing write returned")
			}
			// The cache TTL is an hour: only the invalidation can make
			// replica b see the change.
			eventually(t, "eviction on the other replica", func() bool { return !tc.warm(cb) })
		})
	}
}

func TestCachedStateRedisDown(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	clock := storetest.NewClock(storetest.Epoch)
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, DialTimeout: 200 * time.Millisecond}, redis.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cs := resolve.NewCachedState(s, cacheCfg, clock.Now, nil)
	defer cs.Close()
	published := make(chan string, 16)
	defer s.Subscribe(func(k string) { published <- k })()
	if err := s.PutGrant(ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelLook,
		ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	// Warm only after the write's own invalidation went by, or it would
	// evict the warmed entry: it comes twice, handed over before the write
	// returned and again from the pub/sub channel.
	for seen := 0; seen < 2; {
		select {
		case k := <-published:
			if k == sidecar.GrantKey("acme") {
				seen++
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the grant write's invalidation did not come back over pub/sub")
		}
	}
	if eg, err := cs.EffectiveGrants(ctx, "acme", "p1", "pat"); err != nil || eg.Effective() == nil {
		t.Fatalf("warm: %+v %v", eg, err)
	}
	srv.Stop()
	t.Run("fresh_entry_served", func(t *testing.T) {
		clock.Advance(cacheCfg.TTL - time.Second)
		eg, err := cs.EffectiveGrants(ctx, "acme", "p1", "pat")
		if err != nil || eg.Effective() == nil || eg.Effective().ID != "g1" {
			t.Fatalf("got %+v %v", eg, err)
		}
	})
	t.Run("uncached_lookup_fails_closed", func(t *testing.T) {
		_, err := cs.EffectiveGrants(ctx, "globex", "p1", "pat")
		if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
			t.Fatalf("err = %v, want unavailable", err)
		}
	})
	t.Run("stale_entry_fails_closed", func(t *testing.T) {
		clock.Advance(time.Second)
		_, err := cs.EffectiveGrants(ctx, "acme", "p1", "pat")
		if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
			t.Fatalf("err = %v, want unavailable", err)
		}
	})
	t.Run("recovers_when_redis_returns", func(t *testing.T) {
		srv.Restart() // empty: the grant is gone with the old process
		eventually(t, "store reachable again", func() bool {
			_, err := cs.EffectiveGrants(ctx, "acme", "p1", "pat")
			return err == nil
		})
	})
}

func TestCachedStateExpiryAtRead(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock(storetest.Epoch)
	s := memory.New(memory.WithClock(clock.Now))
	cs := resolve.NewCachedState(s, resolve.CacheConfig{TTL: time.Hour}, clock.Now, nil)
	defer cs.Close()
	for _, g := range []*sidecar.Grant{
		{ID: "org", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelFullAdmin, ExpiresAt: clock.Now().Add(2 * time.Minute)},
		{ID: "pat", Customer: "acme", PartnerOrg: "p1", User: "pat", Level: sidecar.LevelCC, ExpiresAt: clock.Now().Add(time.Minute)},
	} {
		if err := s.PutGrant(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name    string
		advance time.Duration
		want    string
	}{
		{"individual_first", 0, "pat"},
		{"individual_expired_in_cache", time.Minute, "org"},
		{"all_expired_in_cache", time.Minute, ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.Advance(st.advance)
			eg, err := cs.EffectiveGrants(ctx, "acme", "p1", "pat")
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if g := eg.Effective(); g != nil {
				got = g.ID
			}
			if got != st.want {
				t.Fatalf("effective = %q, want %q", got, st.want)
			}
		})
	}
}

func TestCachedStateHitDoesNotAllocate(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	obs := newCountingObserver()
	cs := resolve.NewCachedState(s, resolve.CacheConfig{TTL: time.Hour}, nil, obs)
	defer cs.Close()
	_ = s.PutGrant(ctx, &sidecar.Grant{ID: "g", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelLook, ExpiresAt: time.Now().Add(time.Hour)})
	_ = s.PutAssignment(ctx, &sidecar.Assignment{Customer: "acme", Reseller: "r", Domain: "d"})
	_, _ = cs.EffectiveGrants(ctx, "acme", "p1", "pat")
	_, _ = cs.GetAssignment(ctx, "acme")
	_, _ = cs.GetAssignment(ctx, "nobody")
	cases := []struct {
		name string
		fn   func()
	}{
		{"grant", func() { _, _ = cs.EffectiveGrants(ctx, "acme", "p1", "pat") }},
		{"assignment", func() { _, _ = cs.GetAssignment(ctx, "acme") }},
		{"negative_assignment", func() { _, _ = cs.GetAssignment(ctx, "nobody") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tc.fn); n != 0 {
				t.Fatalf("%v allocations per cached lookup", n)
			}
		})
	}
	if obs.hits[resolve.CacheGrants] < 100 || obs.miss[resolve.CacheGrants] != 1 {
		t.Fatalf("observer saw %d hits, %d misses", obs.hits[resolve.CacheGrants], obs.miss[resolve.CacheGrants])
	}
}

func BenchmarkCachedEffectiveGrants(b *testing.B) {
	ctx := context.Background()
	s := memory.New()
	cs := resolve.NewCachedState(s, resolve.CacheConfig{TTL: time.Hour}, nil, nil)
	defer cs.Close()
	_ = s.PutGrant(ctx, &sidecar.Grant{ID: "g", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelLook, ExpiresAt: time.Now().Add(time.Hour)})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _ = cs.EffectiveGrants(ctx, "acme", "p1", "pat")
		}
	})
}

func BenchmarkCachedEffectiveGrantsSerial(b *testing.B) {
	ctx := context.Background()
	s := memory.New()
	cs := resolve.NewCachedState(s, resolve.CacheConfig{TTL: time.Hour}, nil, nil)
	defer cs.Close()
	_ = s.PutGrant(ctx, &sidecar.Grant{ID: "g", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelLook, ExpiresAt: time.Now().Add(time.Hour)})
	b.ReportAllocs()
	for b.Loop() {
		_, _ = cs.EffectiveGrants(ctx, "acme", "p1", "pat")
	}
}
