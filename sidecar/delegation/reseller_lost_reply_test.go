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

// A reseller super admin deletes an assignment; the delete's write runs
// in Redis but its reply is lost (503). The retry finds nothing assigned,
// answers success, and records the removal as the admin's, once however
// often it is retried: one reseller.assignment.delete audit entry and one
// assignment.changed event.
func TestResellerDeleteRetriedAfterLostReplyIsRecordedOnce(t *testing.T) {
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	clock := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	ctx := context.Background()
	admin := &sidecar.Identity{Subject: "sa", Domain: "shop-a.example", Org: "resellerA"}
	direct := directStore(t, srv.Addr, "lostunassign", clock.Now)
	setup := delegation.NewResellers(direct, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now))
	for _, c := range []string{"acme", "warm"} {
		if _, err := setup.Put(ctx, admin, c, "shop-a.example", allowAll); err != nil {
			t.Fatal(err)
		}
	}
	stall := &stallBeforeScript{t: t, srv: srv, keyPart: "acme", stalled: make(chan error, 1)}
	stalling := stallingStore(t, srv, "lostunassign", stall, clock.Now)
	rec := startedRecorder(t, stalling)
	r := delegation.NewResellers(stalling, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now), delegation.WithResellerRecorder(rec))
	// Loads the change's script, as any running Deputy has.
	if err := r.Delete(ctx, admin, "warm", allowAll); err != nil {
		t.Fatal(err)
	}
	stall.armed.Store(true)
	err := r.Delete(ctx, admin, "acme", allowAll)
	wantLostReply(t, &stall.armed, stall.stalled, "Delete", err)
	if _, gerr := direct.GetAssignment(ctx, "acme"); sidecar.ErrorCode(gerr) != sidecar.ENOTFOUND {
		t.Fatalf("acme after the stall: %v; want it deleted by the late write", gerr)
	}
	clock.Advance(time.Minute)
	for range 2 {
		if err := r.Delete(ctx, admin, "acme", allowAll); err != nil {
			t.Fatalf("Delete retried: %v", err)
		}
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	audit, _, err := direct.ReadAudit(ctx, sidecar.StreamFilter{Type: "reseller.assignment.delete", Customer: "acme", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range audit {
		if a.Actor != admin.Subject || a.Data["domain"] != "shop-a.example" {
			t.Errorf("removal recorded as %+v", a)
		}
	}
	dels := 0
	for _, e := range events(t, direct, sidecar.EventAssignmentChanged) {
		if e.Customer == "acme" && e.Data["change"] == "delete" {
			dels++
		}
	}
	if len(audit) != 1 || dels != 1 {
		t.Errorf("acme's assignment was deleted; audit holds %d reseller.assignment.delete entries and events %d delete events, want 1 and 1", len(audit), dels)
	}
}

// A delete retried after the store stopped telling whether its records
// got through (sidecar.AppendOnceWindow) records nothing: it could only
// record the removal twice.
func TestResellerDeleteRetriedLateIsNotRecordedAgain(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			clock := newPartnerClock()
			s := ps.open(t, clock.Now)
			ctx := context.Background()
			admin := &sidecar.Identity{Subject: "sa", Domain: "shop-a.example", Org: "resellerA"}
			r := delegation.NewResellers(s, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now))
			if _, err := r.Put(ctx, admin, "acme", "shop-a.example", allowAll); err != nil {
				t.Fatal(err)
			}
			if err := r.Delete(ctx, admin, "acme", allowAll); err != nil {
				t.Fatal(err)
			}
			clock.Advance(sidecar.AppendOnceWindow)
			if err := r.Delete(ctx, admin, "acme", allowAll); err != nil {
				t.Fatal(err)
			}
			audit, _, err := s.ReadAudit(ctx, sidecar.StreamFilter{Type: "reseller.assignment.delete", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
			if err != nil {
				t.Fatal(err)
			}
			if len(audit) != 1 {
				t.Errorf("one delete, retried late; audit holds %d reseller.assignment.delete entries, want 1", len(audit))
			}
		})
	}
}
