package redis_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// The scripts keep a user's holds as sidecar.AddHold does: over random
// revocations and shorter replacements of a user's individual grant, at
// random levels and lengths, Redis reads back the holds the memory store
// keeps, in the same order.
func TestHoldsAgreeWithMemory(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	clock := storetest.NewClock(storetest.Epoch)
	rs, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: freshPrefix()}, redis.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Close() })
	ms := memory.New(memory.WithClock(clock.Now))
	t.Cleanup(func() { _ = ms.Close() })
	rnd := rand.New(rand.NewPCG(1, 2))
	const day = 24 * time.Hour
	for i := range 300 {
		level := sidecar.Levels[rnd.IntN(len(sidecar.Levels))]
		g := &sidecar.Grant{ID: fmt.Sprintf("g%d", i), Customer: "acme", PartnerOrg: "p1", User: "pat", Level: level,
			ExpiresAt: clock.Now().Add(time.Duration(1+rnd.IntN(60)) * day), ApprovedBy: "boss", ApprovedAt: clock.Now(), RequestID: fmt.Sprintf("r%d", i),
			Seq: int64(1000 + i)} // above every Seq a revocation takes here
		revoke := rnd.IntN(2) == 0
		for _, s := range []sidecar.Store{ms, rs} {
			if err := s.PutGrant(ctx, g); err != nil {
				t.Fatal(err)
			}
			if revoke {
				if _, err := s.RevokeGrant(ctx, "acme", g.ID, "cora", "acme"); err != nil {
					t.Fatal(err)
				}
			}
		}
		clock.Advance(time.Duration(rnd.IntN(48)) * time.Hour)
		em, err := ms.EffectiveGrants(ctx, "acme", "p1", "pat")
		if err != nil {
			t.Fatal(err)
		}
		er, err := rs.EffectiveGrants(ctx, "acme", "p1", "pat")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(em.Held, er.Held, func(a, b sidecar.Hold) bool { return a.Level == b.Level && a.Until.Equal(b.Until) }) {
			t.Fatalf("step %d: holds on memory %+v, on Redis %+v", i, em.Held, er.Held)
		}
		if len(er.Held) > len(sidecar.Levels) {
			t.Fatalf("step %d: %d holds, more than one per level", i, len(er.Held))
		}
	}
}

// A hold written before holds had a level ([seq, until ms]) keeps its
// user from every organisation grant until it lapses, and a later hold
// keeps it so.
func TestHoldWithoutLevelHoldsBackEveryOrganisationGrant(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	clock := storetest.NewClock(storetest.Epoch)
	prefix := freshPrefix()
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: prefix}, redis.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	const day = 24 * time.Hour
	until := clock.Now().Add(10 * day)
	raw := srv.Client()
	if err := raw.HSet(ctx, prefix+":{cust:acme}:grants:held", "p1\x00pat", fmt.Sprintf("[[7,%d]]", until.UnixMilli())).Err(); err != nil {
		t.Fatal(err)
	}
	put := func(id, user string, level sidecar.Level, ttl time.Duration) {
		t.Helper()
		g := &sidecar.Grant{ID: id, Customer: "acme", PartnerOrg: "p1", User: user, Level: level,
			ExpiresAt: clock.Now().Add(ttl), ApprovedBy: "boss", ApprovedAt: clock.Now(), RequestID: "r-" + id}
		if err := s.PutGrant(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	effective := func(what, want string) {
		t.Helper()
		eg, err := s.EffectiveGrants(ctx, "acme", "p1", "pat")
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if g := eg.At(clock.Now()); g != nil {
			got = g.ID
		}
		if got != want {
			t.Fatalf("%s: pat's effective grant = %q, want %q (holds %+v)", what, got, want, eg.Held)
		}
	}
	put("g-org", "", sidecar.LevelCC, 30*day)
	effective("under a hold without a level", "")
	put("g-pat", "pat", sidecar.LevelLook, 5*day)
	if _, err := s.RevokeGrant(ctx, "acme", "g-pat", "pat", "p1"); err != nil {
		t.Fatal(err)
	}
	effective("after a later revocation", "")
	clock.Advance(10*day - time.Millisecond)
	effective("just before the hold without a level lapses", "")
	clock.Advance(time.Millisecond)
	effective("once it lapsed", "g-org")
}
