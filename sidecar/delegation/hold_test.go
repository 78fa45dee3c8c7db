package delegation_test

import (
	"context"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// myLevel is what "My Customers" lists for caller at acme: the level, or
// "none" when acme is not listed.
func myLevel(t *testing.T, env *partnerEnv, caller *sidecar.Identity) string {
	t.Helper()
	mine, err := env.partners.MyCustomers(context.Background(), caller, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range mine {
		if c.Customer == "acme" {
			return string(c.Level)
		}
	}
	return "none"
}

// wantPat checks pat's level at acme on the check path, through a cache
// warmed before the last change (every change answered has evicted it),
// and in "My Customers".
func wantPat(t *testing.T, env *partnerEnv, what string, r *resolve.OnBehalfResolver, check, listed string) {
	t.Helper()
	if got := resolvedLevel(r, patUser, "acme"); got != check {
		t.Fatalf("%s: pat resolves %s at acme, want %s", what, got, check)
	}
	if got := myLevel(t, env, patUser); got != listed {
		t.Fatalf("%s: pat's \"My Customers\" level at acme = %s, want %s", what, got, listed)
	}
}

// TestApprovalAfterRevocationNeverWidens: pat is held to cc by his own
// grant while his organisation has full_admin. His grant is revoked; then
// the organisation asks again at update and the customer approves what
// reads as a narrowing. Had the cc grant never been revoked, pat would be
// at cc: so until it would have expired, pat gets nothing through an
// organisation grant above cc, and an organisation grant at cc applies.
func TestApprovalAfterRevocationNeverWidens(t *testing.T) {
	ctx := context.Background()
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			env := newPartnerEnv(t, ps)
			r := cachedResolver(t, env, env.store)
			env.grant(t, patUser, orgRequest(sidecar.LevelFullAdmin, 60))
			env.grant(t, patUser, individualRequest(sidecar.LevelCC, 60, "pat"))
			wantPat(t, env, "pat's own cc grant", r, "cc", "cc")
			own, err := env.partners.Effective(ctx, "acme", "partnerco", "pat")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := env.partners.Revoke(ctx, cora, "acme", own.ID, allowAll); err != nil {
				t.Fatal(err)
			}
			wantPat(t, env, "after the revocation", r, "no_live_grant", "none")

			env.grant(t, paulUser, orgRequest(sidecar.LevelUpdate, 30))
			wantPat(t, env, "the organisation lowered to update", r, "no_live_grant", "none")
			if got := resolvedLevel(r, paulUser, "acme"); got != "update" {
				t.Fatalf("paul's level = %s, want the organisation's update", got)
			}
			env.grant(t, patUser, orgRequest(sidecar.LevelCC, 30))
			wantPat(t, env, "the organisation lowered to cc", r, "cc", "cc")

			env.grant(t, patUser, orgRequest(sidecar.LevelCreate, 90))
			wantPat(t, env, "the organisation raised to create", r, "no_live_grant", "none")
			env.clock.Advance(60 * day)
			wantPat(t, env, "once the revoked grant would have expired", r, "create", "create")
		})
	}
}

// TestShorterIndividualReapprovalNeverWidens: the organisation has update
// for 365 days and pat, individually, look for 300. pat asks again for
// himself at look for 1 day and the customer approves what reads as
// narrower. It replaces the 300-day grant; once it ends pat must not be
// at update through the organisation before the replaced grant's end.
func TestShorterIndividualReapprovalNeverWidens(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			env := newPartnerEnv(t, ps)
			r := cachedResolver(t, env, env.store)
			env.grant(t, patUser, orgRequest(sidecar.LevelUpdate, 365))
			env.grant(t, patUser, individualRequest(sidecar.LevelLook, 300, "pat"))
			wantPat(t, env, "pat's own look grant", r, "look", "look")
			env.grant(t, patUser, individualRequest(sidecar.LevelLook, 1, "pat"))
			wantPat(t, env, "the 1-day grant", r, "look", "look")
			env.clock.Advance(day)
			wantPat(t, env, "once the 1-day grant ended", r, "no_live_grant", "none")
			if got := resolvedLevel(r, paulUser, "acme"); got != "update" {
				t.Fatalf("paul's level = %s, want the organisation's update", got)
			}
			env.clock.Advance(299 * day)
			wantPat(t, env, "once the replaced grant would have ended", r, "update", "update")
		})
	}
}

// TestShorterIndividualReapprovalReachesEveryReplica: a replica whose
// cache holds pat's 300-day grant must see the hold the shorter grant's
// approval on another replica left, at its next request.
func TestShorterIndividualReapprovalReachesEveryReplica(t *testing.T) {
	_, a, b, clock := twoReplicas(t)
	env := &partnerEnv{store: a, clock: clock, partners: delegation.NewPartners(a, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))}
	env.grant(t, patUser, orgRequest(sidecar.LevelUpdate, 365))
	env.grant(t, patUser, individualRequest(sidecar.LevelLook, 300, "pat"))
	resolverB := settledResolver(t, a, b, clock)
	if got := resolvedLevel(resolverB, patUser, "acme"); got != "look" {
		t.Fatalf("replica b resolves %q before the reapproval, want look", got)
	}
	env.grant(t, patUser, individualRequest(sidecar.LevelLook, 1, "pat"))
	// The approval answered: the eviction has reached b (the store waits
	// for it), so b's next read is the store's.
	clock.Advance(day)
	if got := resolvedLevel(resolverB, patUser, "acme"); got != "no_live_grant" {
		t.Fatalf("replica b resolves %q once the 1-day grant ended, want no_live_grant", got)
	}
}

// The shorter grant's approval whose write lost its reply (Redis ran the
// script after the client's read timeout) answers an error; its retry
// completes it. The hold the late write left stands, once: pat gets
// nothing through the organisation from the shorter grant's end to the
// replaced grant's, and then the organisation's update.
func TestShorterIndividualReapprovalRetriedAfterLostReplyHolds(t *testing.T) {
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	stall := &stallBeforeScript{t: t, srv: srv, keyPart: "grants:closed", stalled: make(chan error, 1)}
	env := newPartnerEnv(t, partnerStore{name: "redis-stalling", open: func(t *testing.T, clock sidecar.Clock) sidecar.Store {
		return stallingStore(t, srv, "lostreapprove", stall, clock)
	}})
	ctx := context.Background()
	env.grant(t, patUser, orgRequest(sidecar.LevelUpdate, 365))
	env.grant(t, patUser, individualRequest(sidecar.LevelLook, 300, "pat"))
	r, err := env.partners.Request(ctx, patUser, individualRequest(sidecar.LevelLook, 1, "pat"), allowAll)
	if err != nil {
		t.Fatal(err)
	}
	stall.armed.Store(true)
	_, _, err = env.partners.Approve(ctx, cora, r.ID, allowAll)
	wantLostReply(t, &stall.armed, stall.stalled, "Approve", err)
	if _, _, err := env.partners.Approve(ctx, cora, r.ID, allowAll); err != nil {
		t.Fatalf("Approve retried: %v", err)
	}
	e, err := env.store.EffectiveGrants(ctx, "acme", "partnerco", "pat")
	if err != nil {
		t.Fatal(err)
	}
	if e.Individual == nil || e.Individual.RequestID != r.ID || len(e.Held) != 1 || e.Held[0].Level != sidecar.LevelLook ||
		!e.Held[0].Until.Equal(env.clock.Now().Add(300*day)) {
		t.Fatalf("pat's grants after the retried approval: %+v, want the 1-day grant and one hold at look until the 300-day grant's end", e)
	}
	env.clock.Advance(day)
	if g, err := env.partners.Effective(ctx, "acme", "partnerco", "pat"); err != nil || g != nil {
		t.Fatalf("once the 1-day grant ended: pat's effective grant = %+v, %v; want none", g, err)
	}
	env.clock.Advance(299 * day)
	if g, err := env.partners.Effective(ctx, "acme", "partnerco", "pat"); err != nil || g == nil || g.Level != sidecar.LevelUpdate {
		t.Fatalf("once the replaced grant would have ended: pat's effective grant = %+v, %v; want the organisation's update", g, err)
	}
}
