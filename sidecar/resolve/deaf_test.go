package resolve_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A replica cut from the invalidation channel while Redis still answers
// its commands is not counted by the narrowing writes of the others and
// cannot hear them. Its caches (an hour's TTL) must not keep honouring
// what another replica took away: its next check reads the store.
func TestReplicaNotListeningHonoursNarrowingOfOthers(t *testing.T) {
	replicaCutHonoursNarrowingOfOthers(t, func(proxy *redistest.Proxy) { proxy.Deafen() }, true)
}

// A replica that Redis dropped from the invalidation channel without it
// hearing of it (paused, or cut by a partition, while Redis closed its
// subscription) still takes itself for listening until its pings go
// unanswered, seconds later. The narrowing writes of the others do not
// count it, and it cannot hear them: meanwhile its caches must not keep
// honouring what another replica took away, nor the others answer the
// write as holding everywhere while it does.
func TestReplicaSilencedHonoursNarrowingOfOthers(t *testing.T) {
	replicaCutHonoursNarrowingOfOthers(t, func(proxy *redistest.Proxy) { proxy.Silence() }, false)
}

// replicaCutHonoursNarrowingOfOthers caches access on a replica b that
// reaches Redis through a proxy, cuts b from the invalidation channel
// with cut (noticed: b knows it at once), narrows each access on replica
// a, and checks that b no longer grants it, then nor once listening
// again.
func replicaCutHonoursNarrowingOfOthers(t *testing.T, cut func(*redistest.Proxy), noticed bool) {
	ctx := context.Background()
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	open := func(addr string) *redis.Store {
		s, err := redis.New(redis.Config{Addrs: []string{addr}, KeyPrefix: "deaf",
			ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	a, b := open(srv.Addr), open(proxy.Addr) // only b goes through the proxy
	cb := resolve.NewCachedState(b, resolve.CacheConfig{TTL: time.Hour, NegativeTTL: time.Minute}, nil, nil)
	defer cb.Close()
	sr := resolve.NewSessionResolver(b, delegation.ImpersonationConfig{CacheTTL: time.Hour})
	defer sr.Close()

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	must(a.PutGrant(ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "p1", User: "pat",
		Level: sidecar.LevelUpdate, ExpiresAt: now.Add(24 * time.Hour)}))
	must(storetest.ErrOf(a.PutShare(ctx, &sidecar.Share{Customer: "acme", Resource: "SR-1", User: "pat", PartnerOrg: "p1"})))
	must(a.PutAssignment(ctx, &sidecar.Assignment{Customer: "acme", Reseller: "r1", Domain: "eu.r1"}))
	ended := startSession(t, a, "imp_ended")
	withdrawn := startSession(t, a, "imp_withdrawn")

	checks := []struct {
		name   string
		access func() bool
		narrow func() error
	}{
		{"grant_revoked", func() bool {
			eg, err := cb.EffectiveGrants(ctx, "acme", "p1", "pat")
			return err == nil && eg.Effective() != nil
		}, func() error { _, err := a.RevokeGrant(ctx, "acme", "g1", "cora", "acme"); return err }},
		{"share_removed", func() bool {
			v, err := cb.SharesFor(ctx, "acme", "p1", "pat")
			return err == nil && len(v) == 1
		}, func() error { _, err := a.DeleteShare(ctx, "acme", "SR-1", "p1", "pat", "cora"); return err }},
		{"assignment_removed", func() bool {
			as, err := cb.GetAssignment(ctx, "acme")
			return err == nil && as.Domain == "eu.r1"
		}, func() error {
			_, err := a.ChangeAssignments(ctx, []sidecar.AssignmentChange{{Customer: "acme", From: "eu.r1"}})
			return err
		}},
		{"session_ended", func() bool {
			d, err := sr.Resolve(ctx, sessionRequest(ended), nil)
			return err == nil && d != nil
		}, func() error {
			_, err := a.EndSession(ctx, "imp_ended", "lee", sidecar.EndRevoked, time.Now(), sidecar.SessionLimits{})
			return err
		}},
		{"consent_withdrawn", func() bool {
			d, err := sr.Resolve(ctx, sessionRequest(withdrawn), nil)
			return err == nil && d != nil
		}, func() error {
			_, err := a.SetConsent(ctx, &sidecar.Consent{Customer: "c-imp_withdrawn", SetBy: "c-imp_withdrawn", SetAt: time.Now()})
			return err
		}},
	}
	for _, c := range checks {
		if !c.access() {
			t.Fatalf("%s: access not visible on replica b", c.name)
		}
	}

	cut(proxy) // b's subscription is cut; its commands still reach Redis
	if noticed {
		eventually(t, "replica b not listening", func() bool { return !listening(b) })
	}
	eventually(t, "only replica a subscribed", func() bool {
		m, err := srv.Client().PubSubNumSub(ctx, "deaf:invalidate").Result()
		return err == nil && m["deaf:invalidate"] == 1
	})
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			must(c.narrow())
			unaware := listening(b)
			if c.access() {
				t.Fatalf("replica b, not listening (aware of it: %t), still grants from its cache what replica a took away", !unaware)
			}
			t.Logf("replica b took itself for listening: %t", unaware)
		})
	}

	proxy.Reset()
	eventually(t, "replica b listening again", func() bool { return listening(b) })
	for _, c := range checks {
		if c.access() {
			t.Errorf("%s: replica b grants the narrowed access once listening again", c.name)
		}
	}
}

// listening reports whether s hears invalidations: a subscriber that
// joins while it does not is told so at once. Subscribe waits for any
// delivery in progress, so every earlier subscriber has been told too.
func listening(s *redis.Store) bool {
	lost := false
	s.Subscribe(func(k string) { lost = lost || k == sidecar.InvalidationsLost })()
	return !lost
}

// Many checks run on replica b while replica a revokes, round after
// round, with b's subscription dropped unheard in every other round: no
// check that starts after a revocation was answered grants it, whether
// b heard it or its lease ran out meanwhile (run under -race).
func TestRevocationAnsweredHoldsForConcurrentChecksOnAReplicaDroppedUnheard(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	open := func(addr string) *redis.Store {
		s, err := redis.New(redis.Config{Addrs: []string{addr}, KeyPrefix: "race",
			ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	a, b := open(srv.Addr), open(proxy.Addr)
	t.Cleanup(a.Subscribe(func(string) {}))
	cb := resolve.NewCachedState(b, resolve.CacheConfig{TTL: time.Hour, NegativeTTL: time.Hour}, nil, nil)
	defer cb.Close()
	customer := func(round int64) string { return "acme-" + strconv.FormatInt(round, 10) }
	granted := func(round int64) bool {
		eg, err := cb.EffectiveGrants(ctx, customer(round), "p1", "pat")
		return err == nil && eg.Effective() != nil
	}

	var revoked atomic.Int64 // the last round whose revocation was answered
	var violations, checks atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if r := revoked.Load(); r > 0 {
					if granted(r) {
						violations.Add(1)
					}
					checks.Add(1)
				}
			}
		})
	}
	const rounds = 4
	for round := int64(1); round <= rounds; round++ {
		g := &sidecar.Grant{ID: "g", Customer: customer(round), PartnerOrg: "p1", User: "pat",
			Level: sidecar.LevelLook, ExpiresAt: time.Now().Add(time.Hour)}
		if err := a.PutGrant(ctx, g); err != nil {
			t.Fatal(err)
		}
		eventually(t, "replica b caches the grant", func() bool { return granted(round) })
		silenced := round%2 == 0
		if silenced {
			proxy.Silence()
			eventually(t, "only replica a subscribed", func() bool {
				m, err := srv.Client().PubSubNumSub(ctx, "race:invalidate").Result()
				return err == nil && m["race:invalidate"] == 1
			})
		}
		if _, err := a.RevokeGrant(ctx, customer(round), "g", "cora", customer(round)); err != nil {
			t.Fatalf("round %d: revoke: %v", round, err)
		}
		revoked.Store(round)
		before := checks.Load()
		eventually(t, "checks ran after the revocation", func() bool { return checks.Load() > before+100 })
		if silenced {
			proxy.Reset()
		}
	}
	close(stop)
	wg.Wait()
	if n := violations.Load(); n > 0 {
		t.Fatalf("%d of %d checks granted a revocation already answered", n, checks.Load())
	}
}
