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
	clock := storetest.NewClock(storetest.Epoch)
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

// A reseller super admin puts acme into shop-a; the put's write runs in
// Redis but its reply is lost (503). The admin retries the same put, which
// succeeds, and another replica's sweep reads the first write back. One
// put was asked for: it is recorded once, with one
// reseller.assignment.put entry and one assignment.changed event, as the
// retry carries the first write's time and so its Once.
func TestResellerPutRetriedAfterLostReplyIsRecordedOnce(t *testing.T) {
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	clock := storetest.NewClock(storetest.Epoch)
	ctx := context.Background()
	admin := &sidecar.Identity{Subject: "sa", Domain: "shop-a.example", Org: "resellerA"}
	direct := directStore(t, srv.Addr, "lostassign", clock.Now)
	stall := &stallBeforeScript{t: t, srv: srv, keyPart: "{cust:acme}:assign:kept", stalled: make(chan error, 1)}
	stalling := stallingStore(t, srv, "lostassign", stall, clock.Now)
	rec := startedRecorder(t, stalling)
	r := delegation.NewResellers(stalling, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now), delegation.WithResellerRecorder(rec))
	// Loads the change's script, as any running Deputy has.
	if _, err := r.Put(ctx, admin, "warm", "shop-a.example", allowAll); err != nil {
		t.Fatal(err)
	}
	stall.armed.Store(true)
	_, err := r.Put(ctx, admin, "acme", "shop-a.example", allowAll)
	wantLostReply(t, &stall.armed, stall.stalled, "Put", err)
	clock.Advance(time.Second)
	if _, err := r.Put(ctx, admin, "acme", "shop-a.example", allowAll); err != nil {
		t.Fatalf("Put retried: %v", err)
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	other := delegation.NewResellers(direct, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now))
	must(t, other.RecordAgain(ctx))
	if got := assignmentRecordsOf(t, direct, "acme", ""); got.put != 1 || got.putEvents != 1 {
		t.Errorf("one put of acme, retried after a lost reply; audit holds %d reseller.assignment.put entries and events %d put events, want 1 and 1", got.put, got.putEvents)
	}
}

// A put that is not the same write as the one stored is a new write,
// recorded as one: by another admin, into another domain, after a delete,
// or once the store no longer tells whether the first was recorded
// (sidecar.AppendOnceWindow). A put of the same write by the same admin
// within the window is recorded once, and the store keeps nothing new.
func TestResellerPutAgainIsANewWriteUnlessTheSame(t *testing.T) {
	sa := &sidecar.Identity{Subject: "sa", Domain: "shop-a.example", Org: "resellerA"}
	sb := &sidecar.Identity{Subject: "sb", Domain: "shop-a.example", Org: "resellerA"}
	for _, ps := range partnerStores(t) {
		for _, tc := range []struct {
			name  string
			again func(ctx context.Context, t *testing.T, r *delegation.Resellers, clock *partnerClock)
			want  int // reseller.assignment.put entries and put events
			kept  int // put writes the store keeps
		}{
			{"same admin and domain", func(ctx context.Context, t *testing.T, r *delegation.Resellers, clock *partnerClock) {
				clock.Advance(time.Minute)
				if _, err := r.Put(ctx, sa, "acme", "shop-a.example", allowAll); err != nil {
					t.Fatal(err)
				}
			}, 1, 1},
			{"another admin", func(ctx context.Context, t *testing.T, r *delegation.Resellers, clock *partnerClock) {
				clock.Advance(time.Minute)
				if _, err := r.Put(ctx, sb, "acme", "shop-a.example", allowAll); err != nil {
					t.Fatal(err)
				}
			}, 2, 2},
			{"another domain", func(ctx context.Context, t *testing.T, r *delegation.Resellers, clock *partnerClock) {
				clock.Advance(time.Minute)
				if _, err := r.Put(ctx, sa, "acme", "shop-b.example", allowAll); err != nil {
					t.Fatal(err)
				}
			}, 2, 2},
			{"after a delete", func(ctx context.Context, t *testing.T, r *delegation.Resellers, clock *partnerClock) {
				clock.Advance(time.Minute)
				must(t, r.Delete(ctx, sa, "acme", allowAll))
				clock.Advance(time.Minute)
				if _, err := r.Put(ctx, sa, "acme", "shop-a.example", allowAll); err != nil {
					t.Fatal(err)
				}
			}, 2, 2},
			{"past the window", func(ctx context.Context, t *testing.T, r *delegation.Resellers, clock *partnerClock) {
				clock.Advance(sidecar.AppendOnceWindow)
				if _, err := r.Put(ctx, sa, "acme", "shop-a.example", allowAll); err != nil {
					t.Fatal(err)
				}
			}, 2, 1}, // the first is past the window
		} {
			t.Run(ps.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				clock := newPartnerClock()
				s := ps.open(t, clock.Now)
				r := delegation.NewResellers(s, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now))
				start := clock.Now()
				if _, err := r.Put(ctx, sa, "acme", "shop-a.example", allowAll); err != nil {
					t.Fatal(err)
				}
				tc.again(ctx, t, r, clock)
				must(t, delegation.NewResellers(s, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now)).RecordAgain(ctx))
				got := assignmentRecordsOf(t, s, "acme", "")
				if got.put != tc.want || got.putEvents != tc.want {
					t.Errorf("audit holds %d reseller.assignment.put entries and events %d put events, want %d and %d", got.put, got.putEvents, tc.want, tc.want)
				}
				ws, err := s.AssignmentsChanged(ctx, start)
				must(t, err)
				puts := 0
				for _, w := range ws {
					if w.Change == sidecar.ChangePut {
						puts++
					}
				}
				if puts != tc.kept {
					t.Errorf("store keeps %d put writes, want %d", puts, tc.kept)
				}
			})
		}
	}
}
