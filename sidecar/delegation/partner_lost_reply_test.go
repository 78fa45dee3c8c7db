package delegation_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A contact manager rejects a partner's access request; the decision's
// transaction runs in Redis but its reply is lost (503). The retry answers
// as the first rejection would have, and the rejection is recorded once: a
// partner.reject audit entry and a grant.rejected event for the partner's
// mailer.
func TestRejectRetriedAfterLostReplyIsRecordedOnce(t *testing.T) {
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	clock := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	ctx := context.Background()
	pat := &sidecar.Identity{Subject: "pat", Org: "globex"}
	mgr := &sidecar.Identity{Subject: "mgr", Org: "acme"}
	direct := directStore(t, srv.Addr, "lostreject", clock.Now)
	setup := delegation.NewPartners(direct, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))
	in := delegation.AccessRequestInput{Customer: "acme", ContactEmail: "mgr@acme.example", ExpiryDays: 30, Level: sidecar.LevelLook, Scope: sidecar.ScopeOrganisation}
	warm, err := setup.Request(ctx, pat, in, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	r, err := setup.Request(ctx, pat, in, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	stall := &stallBeforeTx{t: t, srv: srv, stalled: make(chan error, 1)}
	stalling := stallingStore(t, srv, "lostreject", stall, clock.Now)
	rec := startedRecorder(t, stalling)
	p := delegation.NewPartners(stalling, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now), delegation.WithPartnerRecorder(rec))
	// Loads the decision's script, as any running Deputy has.
	if _, err := p.Reject(ctx, mgr, warm.ID, allowAll); err != nil {
		t.Fatal(err)
	}
	stall.armed.Store(true)
	_, err = p.Reject(ctx, mgr, r.ID, allowAll)
	wantLostReply(t, &stall.armed, stall.stalled, "Reject", err)
	if got, err := direct.GetRequest(ctx, r.ID); err != nil || got.Status != sidecar.RequestRejected {
		t.Fatalf("request after the stall = %+v, %v; want rejected by the late write", got, err)
	}
	for range 2 {
		got, err := p.Reject(ctx, mgr, r.ID, allowAll)
		if err != nil || got.ID != r.ID || got.Status != sidecar.RequestRejected {
			t.Fatalf("Reject retried = %+v, %v; want the rejected request, as the first would have answered", got, err)
		}
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	audit, _, err := direct.ReadAudit(ctx, sidecar.StreamFilter{Type: "partner.reject", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range audit {
		if a.Target == r.ID {
			n++
			if a.Actor != mgr.Subject {
				t.Errorf("rejection recorded as %s's, want %s's", a.Actor, mgr.Subject)
			}
		}
	}
	e := 0
	for _, ev := range events(t, direct, sidecar.EventGrantRejected) {
		if ev.Data["request_id"] == r.ID {
			e++
		}
	}
	if n != 1 || e != 1 {
		t.Errorf("request %s rejected; audit holds %d partner.reject entries and events %d grant.rejected, want 1 and 1", r.ID, n, e)
	}
}

// A rejection is answered again as a retry only to the manager who made
// it, and only while the store can still tell whether its records got
// through: another manager, or the same one much later, is told the
// request was rejected already.
func TestRejectOfARejectedRequestConflicts(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			env := newPartnerEnv(t, ps)
			ctx := context.Background()
			r, err := env.partners.Request(ctx, patUser, orgRequest(sidecar.LevelLook, 30), allowAll)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := env.partners.Reject(ctx, cora, r.ID, allowAll); err != nil {
				t.Fatal(err)
			}
			other := &sidecar.Identity{Subject: "carl", Org: cora.Org}
			_, err = env.partners.Reject(ctx, other, r.ID, allowAll)
			wantCode(t, err, sidecar.ECONFLICT, "request_already_rejected")
			env.clock.Advance(sidecar.AppendOnceWindow)
			_, err = env.partners.Reject(ctx, cora, r.ID, allowAll)
			wantCode(t, err, sidecar.ECONFLICT, "request_already_rejected")
			if got := len(events(t, env.store, sidecar.EventGrantRejected)); got != 1 {
				t.Errorf("one rejection; events hold %d grant.rejected, want 1", got)
			}
		})
	}
}
