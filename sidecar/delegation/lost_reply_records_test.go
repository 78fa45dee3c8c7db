package delegation_test

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// lostReplyWorld is Login as Customer on a real redis-server: customers
// with consent given, written directly (setup), and a lifecycle (lc)
// recording through a started recorder on a store whose client stalls
// Redis before the transaction stall is armed for, so that Redis runs it
// after the client gave up on its reply.
type lostReplyWorld struct {
	ctx    context.Context
	clock  *storetest.Clock
	direct sidecar.Store
	setup  *delegation.Impersonation
	stall  *stallBeforeTx
	rec    *delegation.Recorder
	lc     *delegation.Impersonation
}

func newLostReplyWorld(t *testing.T, prefix string, customers ...string) *lostReplyWorld {
	t.Helper()
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	w := &lostReplyWorld{ctx: context.Background(), clock: storetest.NewClock(storetest.Epoch)}
	w.direct = directStore(t, srv.Addr, prefix, w.clock.Now)
	w.setup = delegation.NewImpersonation(w.direct, shippedData(t), delegation.WithImpersonationClock(w.clock.Now))
	for _, c := range customers {
		if _, err := w.direct.PutCustomer(w.ctx, &sidecar.Customer{ID: c, DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := w.setup.SetConsent(w.ctx, &sidecar.Identity{Subject: c}, delegation.ConsentChange{Customer: c, Allowed: true}, allowAll); err != nil {
			t.Fatal(err)
		}
	}
	w.stall = &stallBeforeTx{t: t, srv: srv, stalled: make(chan error, 1)}
	stalling := stallingStore(t, srv, prefix, w.stall, w.clock.Now)
	w.rec = startedRecorder(t, stalling)
	w.lc = delegation.NewImpersonation(stalling, shippedData(t), delegation.WithImpersonationClock(w.clock.Now), delegation.WithImpersonationRecorder(w.rec))
	return w
}

// start starts staff's session on customer, directly.
func (w *lostReplyWorld) start(t *testing.T, staff *sidecar.Identity, customer string) *delegation.Started {
	t.Helper()
	st, err := w.setup.Start(w.ctx, staff, delegation.StartRequest{Customer: customer}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// wantEnded checks that the write Redis ran late ended session id.
func (w *lostReplyWorld) wantEnded(t *testing.T, id string) {
	t.Helper()
	if s, err := w.direct.GetSession(w.ctx, id); err != nil || s.EndedAt.IsZero() {
		t.Fatalf("session after the stall = %+v, %v; want it ended by the late write", s, err)
	}
}

// wantEndRecordedOnce checks, once the recorder appended what waited,
// that the session log holds one end of session id, by by.
func (w *lostReplyWorld) wantEndRecordedOnce(t *testing.T, id, by string) {
	t.Helper()
	partnerEventually(t, "the recorder to append what waited", func() bool { return w.rec.Pending() == 0 })
	audit, _, err := w.direct.ReadAudit(w.ctx, sidecar.StreamFilter{Type: "impersonation.end", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range audit {
		if a.Target == id {
			n++
			if a.Actor != by {
				t.Errorf("end recorded as by %q, want %q", a.Actor, by)
			}
		}
	}
	if n != 1 {
		t.Errorf("session %s ended; the session log holds %d ends of it, want 1", id, n)
	}
}

// A customer delete whose transaction lost its reply (Redis ran it after
// the client's read timeout: profile gone, consent withdrawn, alice's
// session ended as customer_deleted) answers an error and records
// nothing; the sync's retry finds no profile, answers success, and records
// the deletion, the withdrawal and the session's end as the sync's, once
// however often it is retried.
func TestDeleteCustomerRetriedAfterLostReplyIsRecordedOnce(t *testing.T) {
	w := newLostReplyWorld(t, "lostdelete", "c1", "warm")
	sync := &sidecar.Identity{Subject: "sync"}
	st := w.start(t, alice, "c1")
	if err := w.lc.DeleteCustomer(w.ctx, sync, "warm", allowAll); err != nil {
		t.Fatal(err)
	}
	w.stall.armed.Store(true)
	err := w.lc.DeleteCustomer(w.ctx, sync, "c1", allowAll)
	wantLostReply(t, &w.stall.armed, w.stall.stalled, "DeleteCustomer", err)
	w.wantEnded(t, st.Session.ID)
	if _, err := w.direct.GetCustomer(w.ctx, "c1"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
		t.Fatalf("customer after the stall: %v, want deleted", err)
	}
	for range 2 {
		if err := w.lc.DeleteCustomer(w.ctx, sync, "c1", allowAll); err != nil {
			t.Fatalf("DeleteCustomer retried: %v", err)
		}
	}
	w.wantEndRecordedOnce(t, st.Session.ID, sync.Subject)
	audit, _, err := w.direct.ReadAudit(w.ctx, sidecar.StreamFilter{Customer: "c1", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, a := range audit {
		count[a.Action]++
		switch {
		case a.Action == "customer.delete" && a.Actor != sync.Subject:
			t.Errorf("customer.delete recorded by %q, want %q", a.Actor, sync.Subject)
		case a.Action == "consent.set" && a.Data["allowed"] == "false" && (a.Actor != sync.Subject || a.Data["reason"] != sidecar.EndCustomerDeleted):
			t.Errorf("withdrawal recorded by %q with %v, want by %q with reason customer_deleted", a.Actor, a.Data, sync.Subject)
		}
	}
	if count["customer.delete"] != 1 || count["consent.set"] != 2 {
		t.Errorf("c1 deleted and its consent withdrawn; audit of c1 holds %v, want customer.delete 1, consent.set 2 (given, withdrawn)", count)
	}
}

// A customer delete of c1, who has no consent in force and no live
// session, loses its transaction's reply (Redis ran it late: the profile
// gone) and answers an error; the deletion withdrew nothing, so the
// consent history holds no trace of it. The sync's retry finds no profile,
// answers success, and records the deletion as the sync's, once however
// often it is retried: the store keeps who deleted the profile and when.
func TestDeleteCustomerWithoutConsentRetriedAfterLostReplyIsRecordedOnce(t *testing.T) {
	w := newLostReplyWorld(t, "lostdeletebare", "warm")
	sync := &sidecar.Identity{Subject: "sync"}
	if _, err := w.direct.PutCustomer(w.ctx, &sidecar.Customer{ID: "c1", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if err := w.lc.DeleteCustomer(w.ctx, sync, "warm", allowAll); err != nil {
		t.Fatal(err)
	}
	w.stall.armed.Store(true)
	err := w.lc.DeleteCustomer(w.ctx, sync, "c1", allowAll)
	wantLostReply(t, &w.stall.armed, w.stall.stalled, "DeleteCustomer", err)
	if _, err := w.direct.GetCustomer(w.ctx, "c1"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
		t.Fatalf("customer after the stall: %v, want deleted", err)
	}
	for range 2 {
		if err := w.lc.DeleteCustomer(w.ctx, sync, "c1", allowAll); err != nil {
			t.Fatalf("DeleteCustomer retried: %v", err)
		}
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return w.rec.Pending() == 0 })
	audit, _, err := w.direct.ReadAudit(w.ctx, sidecar.StreamFilter{Customer: "c1", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, a := range audit {
		count[a.Action]++
		if a.Action == "customer.delete" && a.Actor != sync.Subject {
			t.Errorf("customer.delete recorded by %q, want %q", a.Actor, sync.Subject)
		}
	}
	if !maps.Equal(count, map[string]int{"customer.delete": 1}) {
		t.Errorf("c1 deleted; audit of c1 holds %v, want customer.delete 1 and nothing else", count)
	}
}

// c1's consent lapses; the sweep's take of the lapsing index runs in
// Redis but loses its reply, and the sweep fails. The next sweeps find
// nothing lapsing and record the lapse (consent.expired, its event and its
// audit entry), once.
func TestSweepAfterLostLapseReplyRecordsExpiry(t *testing.T) {
	w := newLostReplyWorld(t, "lostlapse", "warm")
	if _, err := w.direct.PutCustomer(w.ctx, &sidecar.Customer{ID: "c1", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	until := w.clock.Now().Add(10 * time.Minute)
	if _, _, err := w.setup.SetConsent(w.ctx, &sidecar.Identity{Subject: "c1"},
		delegation.ConsentChange{Customer: "c1", Allowed: true, ExpiresAt: new(until)}, allowAll); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(10 * time.Minute)
	w.stall.parts = []string{"lapsing"}
	w.stall.armed.Store(true)
	err := w.lc.Sweep(w.ctx)
	wantLostReply(t, &w.stall.armed, w.stall.stalled, "Sweep", err)
	if again, err := w.direct.TakeLapsedConsents(w.ctx, w.clock.Now()); err != nil || len(again) != 0 {
		t.Fatalf("lapsing after the stall: %+v, %v; want c1 taken by the late write", again, err)
	}
	for range 2 {
		if err := w.lc.Sweep(w.ctx); err != nil {
			t.Fatalf("Sweep again: %v", err)
		}
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return w.rec.Pending() == 0 })
	audit, _, err := w.direct.ReadAudit(w.ctx, sidecar.StreamFilter{Type: "consent.expired", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	events, _, err := w.direct.ReadEvents(w.ctx, sidecar.StreamFilter{Type: sidecar.EventConsentExpired, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range audit {
		if a.Customer != "c1" || a.Actor != sidecar.SweepActor || a.Data["expires_at"] != until.UTC().Format(time.RFC3339) {
			t.Errorf("consent.expired recorded as %+v, want c1's lapse at %v, by %s", a, until, sidecar.SweepActor)
		}
	}
	for _, e := range events {
		if e.Customer != "c1" || e.Data["expires_at"] != until.UTC().Format(time.RFC3339) {
			t.Errorf("consent.expired event %+v, want c1's lapse at %v", e, until)
		}
	}
	if len(audit) != 1 || len(events) != 1 {
		t.Errorf("c1's consent lapsed; %d consent.expired audit entries and %d events, want 1 and 1", len(audit), len(events))
	}
}

// A profile put marking c1 protected while alice impersonates it loses
// its transaction's reply (Redis ran it late, ending alice's session as
// customer_protected) and answers an error; the retry stores the same
// profile, finds nothing left to end, and records the session's end, once.
func TestPutCustomerRetriedAfterLostReplyRecordsSessionEnd(t *testing.T) {
	w := newLostReplyWorld(t, "lostput", "c1")
	sync := &sidecar.Identity{Subject: "sync"}
	st := w.start(t, alice, "c1")
	if err := w.lc.PutCustomer(w.ctx, sync, &sidecar.Customer{ID: "warm", DefaultStoreView: "en", Protected: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	w.stall.armed.Store(true)
	err := w.lc.PutCustomer(w.ctx, sync, &sidecar.Customer{ID: "c1", DefaultStoreView: "en", Protected: true}, allowAll)
	wantLostReply(t, &w.stall.armed, w.stall.stalled, "PutCustomer", err)
	w.wantEnded(t, st.Session.ID)
	if err := w.lc.PutCustomer(w.ctx, sync, &sidecar.Customer{ID: "c1", DefaultStoreView: "en", Protected: true}, allowAll); err != nil {
		t.Fatalf("PutCustomer retried: %v", err)
	}
	w.wantEndRecordedOnce(t, st.Session.ID, sync.Subject)
}

// bob impersonates customer c1; c1 then acts as staff (RecordStaff), and
// the staff mark's transaction loses its reply (Redis ran it late, ending
// bob's session as customer_protected by deputy). The next staff action
// writes the mark again, finds nothing left to end, and records the
// session's end, once.
func TestStaffMarkRetriedAfterLostReplyRecordsSessionEnd(t *testing.T) {
	w := newLostReplyWorld(t, "loststaff", "c1")
	st := w.start(t, bob, "c1")
	w.lc.RecordStaff(w.ctx, "warm")
	w.stall.armed.Store(true)
	w.lc.RecordStaff(w.ctx, "c1") // logs the lost reply: RecordStaff answers nothing
	wantLostReply(t, &w.stall.armed, w.stall.stalled, "RecordStaff", context.DeadlineExceeded)
	w.wantEnded(t, st.Session.ID)
	w.lc.RecordStaff(w.ctx, "c1")
	w.wantEndRecordedOnce(t, st.Session.ID, sidecar.SweepActor)
}

// alice impersonates c1 (S1) and starts again; the start's transaction
// loses its reply (Redis ran it late: S2 stored live, its code never
// handed out, S1 ended as replaced) and answers an error. Whatever ends
// S2 records its start with its end: the session log never holds an end
// without its start.
func TestStartAfterLostReplyRecordsEverySession(t *testing.T) {
	for _, tc := range []struct {
		name string
		// then ends S2 after the lost start, and returns the session
		// started instead, if any.
		then func(t *testing.T, w *lostReplyWorld) *delegation.Started
		// retried: S1's end is recorded too, by the start's retry.
		retried bool
	}{
		{"retried", func(t *testing.T, w *lostReplyWorld) *delegation.Started {
			s3, err := w.lc.Start(w.ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
			if err != nil {
				t.Fatalf("Start retried: %v", err)
			}
			return s3
		}, true},
		{"consent_withdrawn", func(t *testing.T, w *lostReplyWorld) *delegation.Started {
			if _, _, err := w.lc.SetConsent(w.ctx, &sidecar.Identity{Subject: "c1"}, delegation.ConsentChange{Customer: "c1"}, allowAll); err != nil {
				t.Fatalf("SetConsent: %v", err)
			}
			return nil
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newLostReplyWorld(t, "loststart"+tc.name, "c1")
			s1 := w.start(t, alice, "c1")
			if _, err := w.setup.Redeem(w.ctx, nil, s1.Code, "", "shop.example.com", allowAll); err != nil {
				t.Fatal(err)
			}
			w.stall.parts = []string{"imp_"}
			w.lc.RecordStaff(w.ctx, alice.Subject)
			w.stall.armed.Store(true)
			_, err := w.lc.Start(w.ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
			wantLostReply(t, &w.stall.armed, w.stall.stalled, "Start", err)
			if s, err := w.direct.GetSession(w.ctx, s1.Session.ID); err != nil || s.EndReason != sidecar.EndReplaced {
				t.Fatalf("S1 after the stall = %+v, %v; want it replaced by the late write", s, err)
			}
			s3 := tc.then(t, w)
			partnerEventually(t, "the recorder to append what waited", func() bool { return w.rec.Pending() == 0 })
			all, _, err := w.direct.ListSessions(w.ctx, sidecar.SessionFilter{Actor: alice.Subject, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
			if err != nil {
				t.Fatal(err)
			}
			audit, _, err := w.direct.ReadAudit(w.ctx, sidecar.StreamFilter{Customer: "c1", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
			if err != nil {
				t.Fatal(err)
			}
			starts, ends := map[string]int{}, map[string]int{}
			for _, a := range audit {
				switch a.Action {
				case "impersonation.start":
					starts[a.Target]++
				case "impersonation.end":
					ends[a.Target]++
				}
			}
			stored := 2 // S1 and S2
			if s3 != nil {
				stored++
			}
			if len(all) != stored {
				t.Fatalf("alice's sessions: %+v; want S1, the one the lost start stored, and the retry's", all)
			}
			for _, s := range all {
				switch {
				case s.ID == s1.Session.ID && !tc.retried:
					// Nobody retried the start: its end of S1 is lost with
					// its reply, as any write's records are when a 503 is
					// never retried.
					if starts[s.ID] != 1 {
						t.Errorf("session %s: the session log holds %d starts of it, want 1", s.ID, starts[s.ID])
					}
				case s3 != nil && s.ID == s3.Session.ID:
					if starts[s.ID] != 1 || ends[s.ID] != 0 {
						t.Errorf("live session %s: the session log holds %d starts and %d ends of it, want 1 and 0", s.ID, starts[s.ID], ends[s.ID])
					}
				default:
					if starts[s.ID] != 1 || ends[s.ID] != 1 {
						t.Errorf("session %s (ended as %q): the session log holds %d starts and %d ends of it, want 1 and 1", s.ID, s.EndReason, starts[s.ID], ends[s.ID])
					}
				}
			}
		})
	}
}

// alice's session lapses; the sweep's transaction ends it in Redis but
// loses its reply, and the sweep fails. The next sweeps find nothing
// lapsed and record the session's end (expired, by deputy), once.
func TestSweepAfterLostReplyRecordsSessionEnd(t *testing.T) {
	w := newLostReplyWorld(t, "lostsweep", "c1")
	st := w.start(t, alice, "c1")
	w.stall.parts = []string{st.Session.ID}
	w.clock.Advance(2 * time.Hour)
	w.stall.armed.Store(true)
	err := w.lc.Sweep(w.ctx)
	wantLostReply(t, &w.stall.armed, w.stall.stalled, "Sweep", err)
	w.wantEnded(t, st.Session.ID)
	for range 2 {
		if err := w.lc.Sweep(w.ctx); err != nil {
			t.Fatalf("Sweep again: %v", err)
		}
	}
	w.wantEndRecordedOnce(t, st.Session.ID, sidecar.SweepActor)
}

// Writes repeated after they went through record nothing more: a delete
// finding the profile gone (c1's, which withdrew a consent and ended a
// session, and c4's, which did neither), a protected profile put again and a staff
// mark written again find the changes made and record them again under
// their first records' Once within sidecar.AppendOnceWindow, and not at
// all later.
func TestRepeatedWritesAreRecordedOnce(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			clock := storetest.NewClock(storetest.Epoch)
			ctx := context.Background()
			sync := &sidecar.Identity{Subject: "sync"}
			store := ps.open(t, clock.Now)
			lc := delegation.NewImpersonation(store, shippedData(t), delegation.WithImpersonationClock(clock.Now))
			sessions := map[string]string{} // customer: session
			for _, c := range []string{"c1", "c2", "c3"} {
				if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: c, DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
					t.Fatal(err)
				}
				if _, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: c}, delegation.ConsentChange{Customer: c, Allowed: true}, allowAll); err != nil {
					t.Fatal(err)
				}
				st, err := lc.Start(ctx, &sidecar.Identity{Subject: "staff-" + c}, delegation.StartRequest{Customer: c}, allowAll)
				if err != nil {
					t.Fatal(err)
				}
				sessions[c] = st.Session.ID
			}
			if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: "c4", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
				t.Fatal(err)
			}
			for _, wait := range []time.Duration{0, time.Minute, sidecar.AppendOnceWindow} {
				clock.Advance(wait)
				if err := lc.DeleteCustomer(ctx, sync, "c1", allowAll); err != nil {
					t.Fatalf("DeleteCustomer after %v: %v", wait, err)
				}
				if err := lc.DeleteCustomer(ctx, sync, "c4", allowAll); err != nil {
					t.Fatalf("DeleteCustomer of c4 after %v: %v", wait, err)
				}
				if err := lc.PutCustomer(ctx, sync, &sidecar.Customer{ID: "c2", DefaultStoreView: "en", Protected: true}, allowAll); err != nil {
					t.Fatalf("PutCustomer after %v: %v", wait, err)
				}
				// A lifecycle of its own each time, remembering no mark
				// written: each writes it.
				delegation.NewImpersonation(store, shippedData(t), delegation.WithImpersonationClock(clock.Now)).RecordStaff(ctx, "c3")
			}
			audit, _, err := store.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
			if err != nil {
				t.Fatal(err)
			}
			count := map[string]int{}
			for _, a := range audit {
				switch {
				case a.Action == "customer.delete":
					count["customer.delete "+a.Customer]++
				case a.Action == "consent.set" && a.Customer == "c1" && a.Data["allowed"] == "false":
					count["consent.set withdrawn"]++
				case a.Action == "impersonation.end":
					count["impersonation.end "+a.Customer]++
					if a.Target != sessions[a.Customer] {
						t.Errorf("end of %s recorded for %s, whose session is %s", a.Target, a.Customer, sessions[a.Customer])
					}
				}
			}
			want := map[string]int{"customer.delete c1": 1, "customer.delete c4": 1, "consent.set withdrawn": 1, "impersonation.end c1": 1, "impersonation.end c2": 1, "impersonation.end c3": 1}
			if !maps.Equal(count, want) {
				t.Errorf("records %v, want %v", count, want)
			}
		})
	}
}

// countRecords counts customer's audit entries and events of type typ.
func (w *lostReplyWorld) countRecords(t *testing.T, typ, customer string) (audit, events int) {
	t.Helper()
	f := sidecar.StreamFilter{Type: typ, Customer: customer, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}}
	as, _, err := w.direct.ReadAudit(w.ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	es, _, err := w.direct.ReadEvents(w.ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	return len(as), len(es)
}

// lapseLost gives c1 a consent until ten minutes on, lets it lapse, and
// has lc's sweep take it with the take's reply lost.
func (w *lostReplyWorld) lapseLost(t *testing.T) {
	t.Helper()
	if _, err := w.direct.PutCustomer(w.ctx, &sidecar.Customer{ID: "c1", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.setup.SetConsent(w.ctx, &sidecar.Identity{Subject: "c1"},
		delegation.ConsentChange{Customer: "c1", Allowed: true, ExpiresAt: new(w.clock.Now().Add(10 * time.Minute))}, allowAll); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(10 * time.Minute)
	w.stall.parts = []string{"lapsing"}
	w.stall.armed.Store(true)
	err := w.lc.Sweep(w.ctx)
	wantLostReply(t, &w.stall.armed, w.stall.stalled, "Sweep", err)
}

// A sweep's take of c1's lapsed consent loses its reply and its replica
// is gone (restarted, or scaled down): a replica that never failed sweeps
// next, twice, and records the lapse, once. Replicas are stateless: which
// takes are still to record is the store's to know.
func TestLostLapseTakeRecordedByAnotherReplica(t *testing.T) {
	for _, swept := range []bool{false, true} {
		name := map[bool]string{false: "fresh", true: "swept_before"}[swept]
		t.Run(name, func(t *testing.T) {
			w := newLostReplyWorld(t, "lapseother"+name, "warm")
			rec := startedRecorder(t, w.direct)
			other := delegation.NewImpersonation(w.direct, shippedData(t), delegation.WithImpersonationClock(w.clock.Now), delegation.WithImpersonationRecorder(rec))
			if swept {
				if err := other.Sweep(w.ctx); err != nil {
					t.Fatal(err)
				}
			}
			w.lapseLost(t)
			for range 2 {
				w.clock.Advance(time.Minute)
				if err := other.Sweep(w.ctx); err != nil {
					t.Fatalf("Sweep on the other replica: %v", err)
				}
			}
			partnerEventually(t, "the recorders to append what waited", func() bool { return rec.Pending() == 0 && w.rec.Pending() == 0 })
			if a, e := w.countRecords(t, "consent.expired", "c1"); a != 1 || e != 1 {
				t.Errorf("c1's consent lapsed, its take's reply lost; %d consent.expired audit entries and %d events, want 1 and 1", a, e)
			}
		})
	}
}

// A sweep ending alice's session loses its reply and its replica
// restarts: the successor's sweep records the end, once.
func TestLostSweepEndRecordedAfterRestart(t *testing.T) {
	w := newLostReplyWorld(t, "sweepend", "c1")
	st := w.start(t, alice, "c1")
	w.stall.parts = []string{st.Session.ID}
	w.clock.Advance(2 * time.Hour)
	w.stall.armed.Store(true)
	err := w.lc.Sweep(w.ctx)
	wantLostReply(t, &w.stall.armed, w.stall.stalled, "Sweep", err)
	w.wantEnded(t, st.Session.ID)
	w.lc = delegation.NewImpersonation(w.direct, shippedData(t), delegation.WithImpersonationClock(w.clock.Now), delegation.WithImpersonationRecorder(w.rec))
	for range 2 {
		w.clock.Advance(time.Minute)
		if err := w.lc.Sweep(w.ctx); err != nil {
			t.Fatalf("Sweep after restart: %v", err)
		}
	}
	w.wantEndRecordedOnce(t, st.Session.ID, sidecar.SweepActor)
}

// ops' delete of c1 loses its reply (the profile gone, nothing recorded);
// the customer sync puts c1 again (a new sign-up under the same id) and
// deletes it a minute later. Both deletions are recorded, once each: the
// second delete finds the first kept and records it.
func TestLostDeleteThenRecreateThenDeleteRecordsBoth(t *testing.T) {
	w := newLostReplyWorld(t, "delrecreate", "c1", "warm")
	ops := &sidecar.Identity{Subject: "ops"}
	sync := &sidecar.Identity{Subject: "sync"}
	if err := w.lc.DeleteCustomer(w.ctx, sync, "warm", allowAll); err != nil {
		t.Fatal(err)
	}
	w.stall.armed.Store(true)
	err := w.lc.DeleteCustomer(w.ctx, ops, "c1", allowAll)
	wantLostReply(t, &w.stall.armed, w.stall.stalled, "DeleteCustomer", err)
	w.clock.Advance(time.Minute)
	if err := w.lc.PutCustomer(w.ctx, sync, &sidecar.Customer{ID: "c1", DefaultStoreView: "en"}, allowAll); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(time.Minute)
	for range 2 { // the second finds the profile gone
		if err := w.lc.DeleteCustomer(w.ctx, sync, "c1", allowAll); err != nil {
			t.Fatalf("delete after the put: %v", err)
		}
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return w.rec.Pending() == 0 })
	as, _, err := w.direct.ReadAudit(w.ctx, sidecar.StreamFilter{Type: "customer.delete", Customer: "c1", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	var by []string
	for _, a := range as {
		by = append(by, a.Actor)
	}
	slices.Sort(by)
	if !slices.Equal(by, []string{"ops", "sync"}) {
		t.Errorf("c1 deleted by ops, then by sync; customer.delete entries by %v, want [ops sync]", by)
	}
}
