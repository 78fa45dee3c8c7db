package delegation_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// offsetClock is the real clock moved by an offset that can be changed:
// a replica whose clock runs ahead, or a later instant for the one that
// does not.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) Now() time.Time      { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) Set(d time.Duration) { c.off.Store(int64(d)) }

// A session started through a replica whose clock runs 5 minutes ahead
// is honoured by the others for max_session from its start by Redis's
// clock, and its redeem link for the redeem TTL: stamped at the replica's
// clock, it outlived both by 5 minutes on every honest replica.
func TestWriterAheadStartIsHonouredNoLongerThanMaxSession(t *testing.T) {
	const skew, maxSession = 5 * time.Minute, 10 * time.Minute
	ctx := context.Background()
	w := newWriterAhead(t, skew, maxSession)
	honestLC, aheadLC, res, honestClock, aheadClock := w.honestLC, w.aheadLC, w.res, &w.honestClock, &w.aheadClock
	st, err := aheadLC.Start(ctx, &sidecar.Identity{Subject: "alice", Roles: []string{"support_agent"}, ExpiresAt: aheadClock.Now().Add(8 * time.Hour)},
		delegation.StartRequest{Customer: "c42"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	if st.Session.StartedAt.After(started) || st.CodeUntil.After(started.Add(delegation.DefaultRedeemTTL)) ||
		st.Session.ExpiresAt.After(started.Add(maxSession)) {
		t.Fatalf("started through the replica ahead by %v: answered as started %v, expiring %v, link until %v, at %v by Redis's clock",
			skew, st.Session.StartedAt, st.Session.ExpiresAt, st.CodeUntil, started)
	}
	red, err := honestLC.Redeem(ctx, nil, st.Code, "", "shop.example.com", allowAll)
	if err != nil {
		t.Fatal(err)
	}
	req := &sidecar.Request{Host: "shop.example.com", Headers: map[string]string{"cookie": "deputy_session=" + red.Token}}
	if d, err := res.Resolve(ctx, req, nil); err != nil || d == nil {
		t.Fatalf("the honest replica right after the start: %+v, %v; want the session honoured", d, err)
	}
	honestClock.Set(time.Since(started) + maxSession)
	if d, err := res.Resolve(ctx, req, nil); d != nil || sidecar.ErrorReason(err) != "session_"+sidecar.EndExpired {
		t.Fatalf("the honest replica max_session (%v) after the start: %+v, %v; want denied as expired", maxSession, d, err)
	}
}

// writerAhead is two replicas on one redis-server, each with its
// Impersonation, the honest one with its check path's session resolver:
// the other's clock runs skew ahead. Customer c42 consents.
type writerAhead struct {
	honestClock, aheadClock offsetClock
	honestLC, aheadLC       *delegation.Impersonation
	res                     *resolve.SessionResolver
}

func newWriterAhead(t *testing.T, skew, maxSession time.Duration) *writerAhead {
	t.Helper()
	ctx := context.Background()
	srv := redistest.Start(t)
	raw, err := json.Marshal(shippedData(t)())
	if err != nil {
		t.Fatal(err)
	}
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatal(err)
	}
	sw := data["deputy"].(map[string]any)["impersonation"].(map[string]any)
	sw["max_session"], sw["idle_timeout"] = maxSession.String(), "1h"
	policyData := func() map[string]any { return data }
	w := &writerAhead{}
	w.aheadClock.Set(skew)
	open := func(clock *offsetClock) (sidecar.Store, *delegation.Impersonation) {
		s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "ahead",
			ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout},
			redis.WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		lc := delegation.NewImpersonation(s, policyData, delegation.WithImpersonationClock(clock.Now))
		t.Cleanup(func() { _ = lc.Close(); _ = s.Close() })
		return s, lc
	}
	var honest sidecar.Store
	honest, w.honestLC = open(&w.honestClock)
	_, w.aheadLC = open(&w.aheadClock)
	w.res = resolve.NewSessionResolver(honest, delegation.ImpersonationConfig{}, resolve.WithSessionClock(w.honestClock.Now),
		resolve.WithSessionPolicyData(policyData))
	t.Cleanup(func() { _ = w.res.Close() })
	if _, err := honest.PutCustomer(ctx, &sidecar.Customer{ID: "c42", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.honestLC.SetConsent(ctx, &sidecar.Identity{Subject: "c42"}, delegation.ConsentChange{Customer: "c42", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	return w
}

// An End through a replica whose clock runs past the session's
// max_session ends it for every replica: judged at that replica's clock,
// the session was answered as over already, and the honest replicas went
// on honouring it for what was left of it by their clocks.
func TestWriterAheadEndIsHonouredByEveryReplica(t *testing.T) {
	const maxSession = 10 * time.Minute
	ctx := context.Background()
	w := newWriterAhead(t, 0, maxSession)
	alice := &sidecar.Identity{Subject: "alice", Roles: []string{"support_agent"}, ExpiresAt: time.Now().Add(8 * time.Hour)}
	st, err := w.honestLC.Start(ctx, alice, delegation.StartRequest{Customer: "c42"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	red, err := w.honestLC.Redeem(ctx, nil, st.Code, "", "shop.example.com", allowAll)
	if err != nil {
		t.Fatal(err)
	}
	req := &sidecar.Request{Host: "shop.example.com", Headers: map[string]string{"cookie": "deputy_session=" + red.Token}}
	if d, err := w.res.Resolve(ctx, req, nil); err != nil || d == nil {
		t.Fatalf("the honest replica before the end: %+v, %v; want the session honoured", d, err)
	}
	w.aheadClock.Set(maxSession + time.Minute) // past max_session by this replica's clock alone
	ended, err := w.aheadLC.End(ctx, alice, st.Session.ID, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	if ended == nil || ended.EndedBy != "alice" || ended.EndReason != sidecar.EndEnded {
		t.Fatalf("ended through the replica %v ahead: %+v, want ended by alice", maxSession+time.Minute, ended)
	}
	if d, err := w.res.Resolve(ctx, req, nil); d != nil || sidecar.ErrorReason(err) != "session_"+sidecar.EndEnded {
		t.Fatalf("the honest replica after the end was answered: %+v, %v; want denied as ended", d, err)
	}
}

// An approval through a replica whose clock runs 5 minutes ahead issues
// grants that expire their days after the approval by Redis's clock:
// counted from that replica's clock, they outlived their days by 5
// minutes on every replica.
func TestWriterAheadApprovalGrantsOutliveNoDays(t *testing.T) {
	const skew, days = 5 * time.Minute, 30
	ctx := context.Background()
	srv := redistest.Start(t)
	var aheadClock offsetClock
	aheadClock.Set(skew)
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "approve",
		ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout},
		redis.WithClock(aheadClock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	p := delegation.NewPartners(s, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(aheadClock.Now))
	r, err := p.Request(ctx, patUser, individualRequest(sidecar.LevelLook, days, "pat"), allowAll)
	if err != nil {
		t.Fatal(err)
	}
	_, gs, err := p.Approve(ctx, cora, r.ID, allowAll)
	approved := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 || gs[0].ExpiresAt.After(approved.Add(days*24*time.Hour)) || gs[0].ApprovedAt.After(approved) {
		t.Fatalf("approved through the replica %v ahead at %v by Redis's clock: grants %+v, want one expiring no later than %d days on",
			skew, approved, gs, days)
	}
	stored, err := s.EffectiveGrants(ctx, "acme", "partnerco", "pat")
	if err != nil {
		t.Fatal(err)
	}
	if g := stored.At(approved); g == nil || g.ExpiresAt.After(approved.Add(days*24*time.Hour)) {
		t.Fatalf("the grant as stored: %+v, want it expiring no later than %d days after %v", g, days, approved)
	}
}
