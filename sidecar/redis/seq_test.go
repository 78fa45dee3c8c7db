package redis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	goredis "github.com/redis/go-redis/v9"
)

// A customer's Seq counter is kept 2×retention past its last change, but an
// organisation grant may live longer (max_grant_days, 365 by default, against
// 180 days of 2×90). Had the counter expired while that grant was live, the
// next approval and revocation would take Seqs from 1 again, at or below the
// grant's: the grant of the organisation's next approval would be refused as
// older than the one it follows, and a grant approved before a revocation
// could be written after it. The counter must outlive every Seq still stored.
// Retention is shrunk to 300ms so the 2×retention elapses in real time.
func TestSeqCounterOutlivesLiveGrants(t *testing.T) {
	t.Run("single_node", func(t *testing.T) {
		srv := redistest.Start(t)
		seqCounterOutlivesLiveGrants(t, redis.Config{Addrs: []string{srv.Addr}}, srv.Client())
	})
	t.Run("cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t, 3)
		seqCounterOutlivesLiveGrants(t, redis.Config{Addrs: cl.Addrs, Cluster: true}, cl.Client(t))
	})
}

func seqCounterOutlivesLiveGrants(t *testing.T, cfg redis.Config, raw goredis.UniversalClient) {
	ctx := context.Background()
	cfg.KeyPrefix, cfg.Retention = freshPrefix(), 300*time.Millisecond
	cfg.ReadTimeout, cfg.WriteTimeout = redistest.ReplyTimeout, redistest.ReplyTimeout
	cfg.InvalidationAckTimeout = redistest.AckTimeout
	s, err := redis.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	const day = 24 * time.Hour
	n := 0
	approve := func(scope string, users []string) int64 {
		t.Helper()
		n++
		now := time.Now()
		id := fmt.Sprintf("seq-%d", n)
		r := &sidecar.AccessRequest{ID: id, PartnerOrg: "p1", RequestedBy: "pat", Customer: "acme",
			ContactEmail: "boss@acme", Level: sidecar.LevelLook, ExpiryDays: 30, Scope: scope, Users: users,
			Status: sidecar.RequestPending, CreatedAt: now, PendingExpiresAt: now.Add(30 * day)}
		if err := s.CreateRequest(ctx, r); err != nil {
			t.Fatal(err)
		}
		d, err := s.DecideRequest(ctx, id, sidecar.RequestApproved, "boss", now)
		if err != nil {
			t.Fatal(err)
		}
		return d.Seq
	}
	put := func(id, user string, level sidecar.Level, ttl time.Duration, seq int64) {
		t.Helper()
		now := time.Now()
		g := &sidecar.Grant{ID: id, Customer: "acme", PartnerOrg: "p1", User: user, Level: level,
			ExpiresAt: now.Add(ttl), ApprovedBy: "boss", ApprovedAt: now, RequestID: "rq-" + id, Seq: seq}
		if err := s.PutGrant(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	// The organisation asked twice; the second approval's grant (Seq 2)
	// lives a year.
	approve(sidecar.ScopeOrganisation, nil)
	put("g-org", "", sidecar.LevelUpdate, 365*day, approve(sidecar.ScopeOrganisation, nil))
	// Nothing changes at acme for p1 for 2×retention: a key given that TTL
	// now, in the counter's slot, lapses no earlier than a counter kept
	// only that long would.
	idle := cfg.KeyPrefix + ":{cust:acme}:idle"
	if err := raw.Set(ctx, idle, "1", 2*cfg.Retention).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2×retention idle", func() bool { return raw.Exists(ctx, idle).Val() == 0 })

	if ttl := raw.PTTL(ctx, cfg.KeyPrefix+":{cust:acme}:grants:seq").Val(); ttl < 365*day-time.Minute {
		t.Errorf("Seq counter TTL = %v with a grant live for a year", ttl)
	}
	// pat is approved individually at look, then pat's grant is revoked:
	// pat must stay off the organisation grant approved before.
	seq := approve(sidecar.ScopeIndividual, []string{"pat"})
	put("g-pat", "pat", sidecar.LevelLook, 30*day, seq)
	if _, err := s.RevokeGrant(ctx, "acme", "g-pat", "pat", "p1"); err != nil {
		t.Fatal(err)
	}
	eg, err := s.EffectiveGrants(ctx, "acme", "p1", "pat")
	if err != nil {
		t.Fatal(err)
	}
	if g := eg.At(time.Now()); g != nil {
		t.Errorf("after revoking pat's look grant pat is at %s (organisation %+v, holds %+v): the revocation widened", g.Level, eg.Organisation, eg.Held)
	}
}
