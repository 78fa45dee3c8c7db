package delegation_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// stallBeforeScript, armed, stalls Redis (DEBUG SLEEP, longer than the
// client's read timeout) just before the client's next EVAL or EVALSHA,
// alone or in a pipeline, naming a key that contains keyPart, so that
// Redis runs the script after the client gave up on its reply.
type stallBeforeScript struct {
	t       *testing.T
	srv     *redistest.Server
	keyPart string
	armed   atomic.Bool
	stalled chan error
}

func (h *stallBeforeScript) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *stallBeforeScript) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		for _, cmd := range cmds {
			h.stallBefore(cmd)
		}
		return next(ctx, cmds)
	}
}
func (h *stallBeforeScript) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.stallBefore(cmd)
		return next(ctx, cmd)
	}
}

func (h *stallBeforeScript) stallBefore(cmd goredis.Cmder) {
	if strings.HasPrefix(cmd.Name(), "eval") && strings.Contains(fmt.Sprint(cmd.Args()...), h.keyPart) && h.armed.CompareAndSwap(true, false) {
		go func() { h.stalled <- h.srv.Client().Do(context.Background(), "DEBUG", "SLEEP", "1").Err() }()
		probe := goredis.NewClient(&goredis.Options{Addr: h.srv.Addr, MaxRetries: -1, ReadTimeout: 100 * time.Millisecond})
		defer probe.Close()
		partnerEventually(h.t, "Redis to stall", func() bool { return probe.Ping(context.Background()).Err() != nil })
	}
}

// stallingStore is a store under prefix on srv whose client runs hook and
// gives up on a reply after 300 ms.
func stallingStore(t *testing.T, srv *redistest.Server, prefix string, hook goredis.Hook, clock sidecar.Clock) sidecar.Store {
	t.Helper()
	cfg := redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: prefix, MaxRetries: -1, ReadTimeout: 300 * time.Millisecond}
	client, err := redis.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	client.AddHook(hook)
	s := redis.NewFromClient(client, cfg, redis.WithClock(clock))
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// startedRecorder is a running recorder on store, stopped when the test
// ends.
func startedRecorder(t *testing.T, store sidecar.Store) *delegation.Recorder {
	t.Helper()
	rec := delegation.NewRecorder(store, nil)
	if err := rec.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rec.Stop(context.Background()) })
	return rec
}

// wantLostReply checks that the call under test, which answered err, ran
// the write armed to stall (what names it), that Redis stalled, and that
// the call answered an error: the write ran late, its reply lost.
func wantLostReply(t *testing.T, armed *atomic.Bool, stalled <-chan error, what string, err error) {
	t.Helper()
	if armed.Load() {
		t.Fatalf("%s wrote nothing to stall", what)
	}
	if serr := <-stalled; serr != nil {
		t.Fatalf("DEBUG SLEEP: %v", serr)
	}
	if err == nil {
		t.Fatalf("%s answered success though its write's reply never came", what)
	}
}

// Revoke whose script lost its reply (Redis ran it after the client's read
// timeout) answers an error though the grant is revoked, and records
// nothing; a retry by either party finds the grant revoked and records the
// revocation as the revoker's, once however often it is retried.
func TestRevokeRetriedAfterLostReplyIsRecordedOnce(t *testing.T) {
	// The retry may come from either party: the revocation is cora's.
	for _, tc := range []struct {
		name    string
		retries []*sidecar.Identity
	}{
		{"by_the_revoker", []*sidecar.Identity{cora, cora}},
		{"by_the_other_party_first", []*sidecar.Identity{patUser, cora}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t, "--enable-debug-command", "yes")
			stall := &stallBeforeScript{t: t, srv: srv, keyPart: "grants:revoked", stalled: make(chan error, 1)}
			env := newPartnerEnv(t, partnerStore{name: "redis-stalling", open: func(t *testing.T, clock sidecar.Clock) sidecar.Store {
				return stallingStore(t, srv, "lostrevoke", stall, clock)
			}})
			ctx := context.Background()
			rec := startedRecorder(t, env.store)
			p := delegation.NewPartners(env.store, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(env.clock.Now), delegation.WithPartnerRecorder(rec))
			env.grant(t, patUser, orgRequest(sidecar.LevelCreate, 30))
			env.grant(t, patUser, individualRequest(sidecar.LevelLook, 30, "pat", "paul"))
			patG, err := env.store.EffectiveGrants(ctx, "acme", "partnerco", "pat")
			if err != nil || patG.Individual == nil {
				t.Fatalf("pat's grant: %+v %v", patG, err)
			}
			paulG, err := env.store.EffectiveGrants(ctx, "acme", "partnerco", "paul")
			if err != nil || paulG.Individual == nil {
				t.Fatalf("paul's grant: %+v %v", paulG, err)
			}
			// Warm: loads the revoke script, as a running Deputy has it.
			if _, err := p.Revoke(ctx, cora, "acme", paulG.Individual.ID, allowAll); err != nil {
				t.Fatal(err)
			}
			id := patG.Individual.ID
			stall.armed.Store(true)
			_, err = p.Revoke(ctx, cora, "acme", id, allowAll)
			wantLostReply(t, &stall.armed, stall.stalled, "Revoke", err)
			if e, _ := env.store.EffectiveGrants(ctx, "acme", "partnerco", "pat"); e.Individual != nil {
				t.Fatalf("grant still live after the late script: %+v", e.Individual)
			}
			for _, by := range tc.retries {
				if _, err := p.Revoke(ctx, by, "acme", id, allowAll); err != nil {
					t.Fatalf("Revoke retried by %s: %v", by.Subject, err)
				}
			}
			// The late script left its hold with the revocation: the
			// organisation grant, above the revoked look, does not apply
			// to pat.
			if g, err := p.Effective(ctx, "acme", "partnerco", "pat"); err != nil || g != nil {
				t.Fatalf("pat's effective grant after the retried revocation: %+v, %v; want none", g, err)
			}
			partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
			entries := audited(t, env.store, "partner.revoke", id)
			for _, a := range entries {
				if a.Actor != cora.Subject {
					t.Errorf("revocation recorded as by %q, want %q", a.Actor, cora.Subject)
				}
			}
			evs := 0
			for _, e := range events(t, env.store, sidecar.EventGrantRevoked) {
				if e.Data["grant_id"] != id {
					continue
				}
				evs++
				if e.Actor != cora.Subject || e.Data["revoked_by"] != cora.Org {
					t.Errorf("grant.revoked by %q revoked_by=%q, want %q and %q", e.Actor, e.Data["revoked_by"], cora.Subject, cora.Org)
				}
			}
			if len(entries) != 1 || evs != 1 {
				t.Errorf("revocation of %s: %d partner.revoke audit entries, %d grant.revoked events; want 1 and 1 (audit dropped %d, events dropped %d)",
					id, len(entries), evs, rec.AuditDropped(), rec.EventsDropped())
			}
		})
	}
}

// Revoke whose script lost its reply while the client's own retry
// (redis.max_retries, 1 by default) ran it again, finding the grant
// already gone, is recorded as the revocation it made. Before, the
// second run's "nothing to revoke" sent Revoke down the path of a grant
// revoked or replaced by someone else: it answered success and appended
// neither partner.revoke nor grant.revoked, so the revocation was in no
// trail and no mail announced it.
func TestRevokeWhoseClientRetryFindsItRevokedIsRecorded(t *testing.T) {
	srv := redistest.Start(t)
	px := redistest.StartProxy(t, srv.Addr)
	env := newPartnerEnv(t, partnerStore{name: "redis-proxied", open: func(t *testing.T, clock sidecar.Clock) sidecar.Store {
		return newFaultStore(t, redis.Config{Addrs: []string{px.Addr}, KeyPrefix: "retryrevoke", ReadTimeout: redistest.ReplyTimeout,
			WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, clock)
	}})
	ctx := context.Background()
	rec := startedRecorder(t, env.store)
	p := delegation.NewPartners(env.store, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(env.clock.Now), delegation.WithPartnerRecorder(rec))
	env.grant(t, patUser, individualRequest(sidecar.LevelLook, 30, "pat", "paul"))
	grantOf := func(user string) *sidecar.Grant {
		e, err := env.store.EffectiveGrants(ctx, "acme", "partnerco", user)
		if err != nil || e.Individual == nil {
			t.Fatalf("%s's grant: %+v %v", user, e, err)
		}
		return e.Individual
	}
	pat, paul := grantOf("pat"), grantOf("paul")
	// Warm: loads the revoke script, as a running Deputy has it.
	if _, err := p.Revoke(ctx, cora, "acme", paul.ID, allowAll); err != nil {
		t.Fatal(err)
	}
	px.LoseReply("evalsha")
	if _, err := p.Revoke(ctx, cora, "acme", pat.ID, allowAll); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if _, err := env.store.RevokedGrant(ctx, "acme", pat.ID); err != nil {
		t.Fatalf("pat's grant not revoked: %v", err)
	}
	if px.LosingReply() {
		t.Fatal("no reply was lost: this case shows nothing")
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	entries := audited(t, env.store, "partner.revoke", pat.ID)
	evs := 0
	for _, e := range events(t, env.store, sidecar.EventGrantRevoked) {
		if e.Data["grant_id"] == pat.ID {
			evs++
			if e.Actor != cora.Subject {
				t.Errorf("grant.revoked by %q, want %q", e.Actor, cora.Subject)
			}
		}
	}
	if len(entries) != 1 || evs != 1 {
		t.Errorf("revocation of %s: %d partner.revoke audit entries, %d grant.revoked events; want 1 and 1", pat.ID, len(entries), evs)
	}
}

// A revocation is recorded again only while the store remembers whether
// its first record got through: a retry later than sidecar.AppendOnceWindow
// appends no second partner.revoke nor grant.revoked.
func TestRevokeRetriedLateIsNotRecordedAgain(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			env, id := patGranted(t, ps)
			ctx := context.Background()
			for _, wait := range []time.Duration{0, time.Minute, sidecar.AppendOnceWindow} {
				env.clock.Advance(wait)
				if _, err := env.partners.Revoke(ctx, cora, "acme", id, allowAll); err != nil {
					t.Fatalf("Revoke after %v: %v", wait, err)
				}
			}
			revokes := len(audited(t, env.store, "partner.revoke", id))
			if evs := len(events(t, env.store, sidecar.EventGrantRevoked)); revokes != 1 || evs != 1 {
				t.Errorf("%d partner.revoke entries and %d grant.revoked events, want 1 and 1", revokes, evs)
			}
		})
	}
}

// approvalWithLostReply has cora approve pat's request for users on a
// real redis-server whose RecordApproval transaction runs after the
// client's read timeout, and checks the approval answered an error.
func approvalWithLostReply(t *testing.T, prefix string, users ...string) (*partnerEnv, *delegation.Recorder, *delegation.Partners, *sidecar.AccessRequest) {
	t.Helper()
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	stall := &stallBeforeTx{t: t, srv: srv, parts: []string{`"approval_recorded":true`, `"grants_pending":true`}, stalled: make(chan error, 1)}
	env := newPartnerEnv(t, partnerStore{name: "redis-stalling", open: func(t *testing.T, clock sidecar.Clock) sidecar.Store {
		return stallingStore(t, srv, prefix, stall, clock)
	}})
	ctx := context.Background()
	rec := startedRecorder(t, env.store)
	p := delegation.NewPartners(env.store, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(env.clock.Now), delegation.WithPartnerRecorder(rec))
	r, err := p.Request(ctx, patUser, individualRequest(sidecar.LevelFullAdmin, 30, users...), allowAll)
	if err != nil {
		t.Fatal(err)
	}
	stall.armed.Store(true)
	_, _, err = p.Approve(ctx, cora, r.ID, allowAll)
	wantLostReply(t, &stall.armed, stall.stalled, "Approve", err)
	return env, rec, p, r
}

// Approve whose RecordApproval transaction lost its reply (Redis ran it
// after the client's read timeout) answers an error, the request marked
// recorded though nothing was; the retry that completes the approval
// records it, once however often it is retried.
func TestApproveRetriedAfterLostReplyIsRecordedOnce(t *testing.T) {
	ctx := context.Background()
	env, rec, p, r := approvalWithLostReply(t, "lostapprove", "pat")
	// The first retry completes the approval; the second finds it
	// complete.
	if _, _, err := p.Approve(ctx, cora, r.ID, allowAll); err != nil {
		t.Fatalf("Approve retried: %v", err)
	}
	if _, _, err := p.Approve(ctx, cora, r.ID, allowAll); sidecar.ErrorCode(err) != sidecar.ECONFLICT {
		t.Fatalf("Approve retried again: %v, want ECONFLICT", err)
	}
	if e, err := env.store.EffectiveGrants(ctx, "acme", "partnerco", "pat"); err != nil || e.Individual == nil {
		t.Fatalf("pat's grant: %+v, %v; want it live", e, err)
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	wantRecordedOnce(t, env.store, r.ID, cora.Subject)
	if rec.AuditDropped()+rec.EventsDropped() != 0 {
		t.Errorf("the recorder dropped %d audit entries and %d events", rec.AuditDropped(), rec.EventsDropped())
	}
}

// An approval for pat and paul whose RecordApproval transaction lost its
// reply leaves both grants live and nothing recorded; the customer then
// revokes pat's grant before the approval is retried. The revocation,
// which closes the request so that its retries answer ECONFLICT, records
// the approval first: once, naming both users, however often the
// approval is retried.
func TestApprovalLostThenRevokedBeforeRetryIsRecordedOnce(t *testing.T) {
	ctx := context.Background()
	env, rec, p, r := approvalWithLostReply(t, "lostapproverevoked", "pat", "paul")
	if _, err := p.Revoke(ctx, cora, "acme", delegation.GrantID(r.ID, "pat"), allowAll); err != nil {
		t.Fatalf("Revoke pat's grant: %v", err)
	}
	for range 2 {
		if _, _, err := p.Approve(ctx, cora, r.ID, allowAll); sidecar.ErrorCode(err) != sidecar.ECONFLICT {
			t.Fatalf("Approve retried after the revocation: %v, want ECONFLICT", err)
		}
	}
	if e, err := env.store.EffectiveGrants(ctx, "acme", "partnerco", "paul"); err != nil || e.Individual == nil {
		t.Fatalf("paul's grant: %+v, %v; want it live", e, err)
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	wantRecordedOnce(t, env.store, r.ID, cora.Subject)
	for _, e := range events(t, env.store, sidecar.EventGrantApproved) {
		if e.Data["request_id"] == r.ID && e.Data["users"] != "pat,paul" {
			t.Errorf("grant.approved names users %q, want pat,paul", e.Data["users"])
		}
	}
	if rec.AuditDropped()+rec.EventsDropped() != 0 {
		t.Errorf("the recorder dropped %d audit entries and %d events", rec.AuditDropped(), rec.EventsDropped())
	}
}

// A consent withdrawal whose transaction lost its reply (Redis ran it
// after the client's read timeout) answers an error though the consent is
// withdrawn and the customer's live session ended, and records nothing;
// the customer's retry finds the consent withdrawn and records the
// withdrawal and the end of the session it ended, once however often it
// is retried.
func TestConsentWithdrawalRetriedAfterLostReplyIsRecordedOnce(t *testing.T) {
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	clock := storetest.NewClock(storetest.Epoch) // in the past: a start later than Redis's clock moves back to it
	ctx := context.Background()
	direct := directStore(t, srv.Addr, "lostconsent", clock.Now)
	setup := delegation.NewImpersonation(direct, shippedData(t), delegation.WithImpersonationClock(clock.Now))
	for _, c := range []string{"c1", "c2"} {
		if _, err := direct.PutCustomer(ctx, &sidecar.Customer{ID: c, DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
	}
	c1 := &sidecar.Identity{Subject: "c1"}
	if _, _, err := setup.SetConsent(ctx, c1, delegation.ConsentChange{Customer: "c1", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	st, err := setup.Start(ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setup.Redeem(ctx, nil, st.Code, "", "shop.example.com", allowAll); err != nil {
		t.Fatal(err)
	}
	stall := &stallBeforeTx{t: t, srv: srv, stalled: make(chan error, 1)}
	stalling := stallingStore(t, srv, "lostconsent", stall, clock.Now)
	rec := startedRecorder(t, stalling)
	lc := delegation.NewImpersonation(stalling, shippedData(t), delegation.WithImpersonationClock(clock.Now), delegation.WithImpersonationRecorder(rec))
	// Warm the connection and any script (a consent change on c2).
	if _, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: "c2"}, delegation.ConsentChange{Customer: "c2", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}

	stall.armed.Store(true)
	_, _, err = lc.SetConsent(ctx, c1, delegation.ConsentChange{Customer: "c1"}, allowAll)
	wantLostReply(t, &stall.armed, stall.stalled, "the withdrawal", err)
	if s, err := direct.GetSession(ctx, st.Session.ID); err != nil || s.EndedAt.IsZero() {
		t.Fatalf("session after the late write = %+v, %v; want it ended", s, err)
	}
	for range 2 {
		if _, _, err := lc.SetConsent(ctx, c1, delegation.ConsentChange{Customer: "c1"}, allowAll); err != nil {
			t.Fatalf("withdrawal retried: %v", err)
		}
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	audit, _, err := direct.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	withdrawals, ends := 0, 0
	for _, a := range audit {
		if a.Action == "consent.set" && a.Customer == "c1" && a.Data["allowed"] == "false" {
			withdrawals++
		}
		if a.Action == "impersonation.end" && a.Target == st.Session.ID {
			ends++
		}
	}
	changed, ended := 0, 0
	for _, e := range events(t, direct, sidecar.EventConsentChanged) {
		if e.Customer == "c1" && e.Data["allowed"] == "false" {
			changed++
		}
	}
	for _, e := range events(t, direct, sidecar.EventImpersonationEnded) {
		if e.Data["session"] == st.Session.ID {
			ended++
		}
	}
	if withdrawals != 1 || ends != 1 || changed != 1 || ended != 1 {
		t.Errorf("%d consent withdrawals and %d ends of the session it ended in the audit trail, %d consent.changed and %d impersonation.ended events; want 1 of each (dropped: audit %d, events %d)",
			withdrawals, ends, changed, ended, rec.AuditDropped(), rec.EventsDropped())
	}
}

// An approval whose reply was lost, recorded by the revocation that
// closes its request, is recorded as completed by the contact manager who
// decided it, not by the partner user who revokes.
func TestApprovalRecordedByARevocationNamesItsDecider(t *testing.T) {
	ctx := context.Background()
	env, rec, p, r := approvalWithLostReply(t, "decider", "pat", "paul")
	if _, err := p.Revoke(ctx, patUser, "acme", delegation.GrantID(r.ID, "pat"), allowAll); err != nil {
		t.Fatalf("pat revokes his grant: %v", err)
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	as := audited(t, env.store, "partner.approve", r.ID)
	if len(as) != 1 {
		t.Fatalf("%d partner.approve entries, want 1", len(as))
	}
	if as[0].Actor != cora.Subject || as[0].Data["completed_by"] != "" {
		t.Errorf("partner.approve actor %q completed_by %q, want %q and none: pat only revoked", as[0].Actor, as[0].Data["completed_by"], cora.Subject)
	}
}

// A grant revoked by a release that kept no revoker (a rolling upgrade),
// whose revocation lost its reply, is recorded on the retry, as the
// retrying party's, rather than not at all.
func TestRetriedRevocationKeptWithoutRevokerIsRecorded(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			env, id := patGranted(t, ps)
			ctx := context.Background()
			if _, err := env.store.RevokeGrant(ctx, "acme", id, "", ""); err != nil { // old replica's write; reply lost
				t.Fatal(err)
			}
			if _, err := env.partners.Revoke(ctx, cora, "acme", id, allowAll); err != nil {
				t.Fatalf("cora's retry: %v", err)
			}
			revokes := len(audited(t, env.store, "partner.revoke", id))
			evs := len(events(t, env.store, sidecar.EventGrantRevoked))
			if revokes != 1 || evs != 1 {
				t.Errorf("%d partner.revoke entries and %d grant.revoked events after the retry, want 1 and 1 (the revocation is in no audit record)", revokes, evs)
			}
		})
	}
}

// patGranted is a partner environment where cora granted pat full_admin;
// it returns the grant's id.
func patGranted(t *testing.T, ps partnerStore) (*partnerEnv, string) {
	t.Helper()
	env := newPartnerEnv(t, ps)
	env.grant(t, patUser, individualRequest(sidecar.LevelFullAdmin, 30, "pat"))
	g, err := env.store.EffectiveGrants(context.Background(), "acme", "partnerco", "pat")
	if err != nil || g.Individual == nil {
		t.Fatalf("pat's grant: %+v %v", g, err)
	}
	return env, g.Individual.ID
}
