package delegation_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A customer delete whose transaction lost its reply (Redis ran it after
// the client's read timeout: profile gone, consent withdrawn, alice's
// session ended as customer_deleted) answers an error and records
// nothing; the sync's retry finds no profile, answers success, and records
// the deletion, the withdrawal and the session's end as the sync's, once
// however often it is retried.
func TestDeleteCustomerRetriedAfterLostReplyIsRecordedOnce(t *testing.T) {
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	clock := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	ctx := context.Background()
	sync := &sidecar.Identity{Subject: "sync"}
	direct := directStore(t, srv.Addr, "lostdelete", clock.Now)
	setup := delegation.NewImpersonation(direct, shippedData(t), delegation.WithImpersonationClock(clock.Now))
	for _, c := range []string{"c1", "warm"} {
		if _, err := direct.PutCustomer(ctx, &sidecar.Customer{ID: c, DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := setup.SetConsent(ctx, &sidecar.Identity{Subject: c}, delegation.ConsentChange{Customer: c, Allowed: true}, allowAll); err != nil {
			t.Fatal(err)
		}
	}
	st, err := setup.Start(ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	stall := &stallBeforeTx{t: t, srv: srv, stalled: make(chan error, 1)}
	stalling := stallingStore(t, srv, "lostdelete", stall, clock.Now)
	rec := startedRecorder(t, stalling)
	lc := delegation.NewImpersonation(stalling, shippedData(t), delegation.WithImpersonationClock(clock.Now), delegation.WithImpersonationRecorder(rec))
	if err := lc.DeleteCustomer(ctx, sync, "warm", allowAll); err != nil {
		t.Fatal(err)
	}
	stall.armed.Store(true)
	err = lc.DeleteCustomer(ctx, sync, "c1", allowAll)
	wantLostReply(t, &stall.armed, stall.stalled, "DeleteCustomer", err)
	if s, err := direct.GetSession(ctx, st.Session.ID); err != nil || s.EndedAt.IsZero() {
		t.Fatalf("session after the stall = %+v, %v; want it ended by the late write", s, err)
	}
	if _, err := direct.GetCustomer(ctx, "c1"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
		t.Fatalf("customer after the stall: %v, want deleted", err)
	}
	for range 2 {
		if err := lc.DeleteCustomer(ctx, sync, "c1", allowAll); err != nil {
			t.Fatalf("DeleteCustomer retried: %v", err)
		}
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	audit, _, err := direct.ReadAudit(ctx, sidecar.StreamFilter{Customer: "c1", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, a := range audit {
		count[a.Action]++
		switch {
		case a.Action == "customer.delete" && a.Actor != sync.Subject,
			a.Action == "impersonation.end" && (a.Actor != sync.Subject || a.Data["end_reason"] != sidecar.EndCustomerDeleted):
			t.Errorf("%s recorded by %q (%v), want by %q as customer_deleted", a.Action, a.Actor, a.Data, sync.Subject)
		case a.Action == "consent.set" && a.Data["allowed"] == "false" && (a.Actor != sync.Subject || a.Data["reason"] != sidecar.EndCustomerDeleted):
			t.Errorf("withdrawal recorded by %q with %v, want by %q with reason customer_deleted", a.Actor, a.Data, sync.Subject)
		}
	}
	if count["customer.delete"] != 1 || count["impersonation.end"] != 1 || count["consent.set"] != 2 {
		t.Errorf("c1 deleted, its consent withdrawn, alice's session ended; audit of c1 holds %v, want customer.delete 1, impersonation.end 1, consent.set 2 (given, withdrawn)", count)
	}
}

// A profile put marking c1 protected while alice impersonates it loses
// its transaction's reply (Redis ran it late, ending alice's session as
// customer_protected) and answers an error; the retry stores the same
// profile, finds nothing left to end, and records the session's end, once.
func TestPutCustomerRetriedAfterLostReplyRecordsSessionEnd(t *testing.T) {
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	clock := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	ctx := context.Background()
	sync := &sidecar.Identity{Subject: "sync"}
	direct := directStore(t, srv.Addr, "lostput", clock.Now)
	setup := delegation.NewImpersonation(direct, shippedData(t), delegation.WithImpersonationClock(clock.Now))
	if _, err := direct.PutCustomer(ctx, &sidecar.Customer{ID: "c1", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := setup.SetConsent(ctx, &sidecar.Identity{Subject: "c1"}, delegation.ConsentChange{Customer: "c1", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	st, err := setup.Start(ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	stall := &stallBeforeTx{t: t, srv: srv, stalled: make(chan error, 1)}
	stalling := stallingStore(t, srv, "lostput", stall, clock.Now)
	rec := startedRecorder(t, stalling)
	lc := delegation.NewImpersonation(stalling, shippedData(t), delegation.WithImpersonationClock(clock.Now), delegation.WithImpersonationRecorder(rec))
	if err := lc.PutCustomer(ctx, sync, &sidecar.Customer{ID: "warm", DefaultStoreView: "en", Protected: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	stall.armed.Store(true)
	err = lc.PutCustomer(ctx, sync, &sidecar.Customer{ID: "c1", DefaultStoreView: "en", Protected: true}, allowAll)
	wantLostReply(t, &stall.armed, stall.stalled, "PutCustomer", err)
	if s, err := direct.GetSession(ctx, st.Session.ID); err != nil || s.EndedAt.IsZero() {
		t.Fatalf("session after the stall = %+v, %v; want it ended by the late write", s, err)
	}
	if err := lc.PutCustomer(ctx, sync, &sidecar.Customer{ID: "c1", DefaultStoreView: "en", Protected: true}, allowAll); err != nil {
		t.Fatalf("PutCustomer retried: %v", err)
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	audit, _, err := direct.ReadAudit(ctx, sidecar.StreamFilter{Type: "impersonation.end", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range audit {
		if a.Target == st.Session.ID {
			n++
			if a.Actor != sync.Subject {
				t.Errorf("end recorded as by %q, want %q", a.Actor, sync.Subject)
			}
		}
	}
	if n != 1 {
		t.Errorf("alice's session ended as customer_protected; the session log holds %d ends of it, want 1", n)
	}
}

// bob impersonates customer c1; c1 then acts as staff (RecordStaff), and
// the staff mark's transaction loses its reply (Redis ran it late, ending
// bob's session as customer_protected by deputy). The next staff action
// writes the mark again, finds nothing left to end, and records the
// session's end, once.
func TestStaffMarkRetriedAfterLostReplyRecordsSessionEnd(t *testing.T) {
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	clock := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	ctx := context.Background()
	direct := directStore(t, srv.Addr, "loststaff", clock.Now)
	setup := delegation.NewImpersonation(direct, shippedData(t), delegation.WithImpersonationClock(clock.Now))
	if _, err := direct.PutCustomer(ctx, &sidecar.Customer{ID: "c1", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := setup.SetConsent(ctx, &sidecar.Identity{Subject: "c1"}, delegation.ConsentChange{Customer: "c1", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	st, err := setup.Start(ctx, bob, delegation.StartRequest{Customer: "c1"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	stall := &stallBeforeTx{t: t, srv: srv, stalled: make(chan error, 1)}
	stalling := stallingStore(t, srv, "loststaff", stall, clock.Now)
	rec := startedRecorder(t, stalling)
	lc := delegation.NewImpersonation(stalling, shippedData(t), delegation.WithImpersonationClock(clock.Now), delegation.WithImpersonationRecorder(rec))
	lc.RecordStaff(ctx, "warm")
	stall.armed.Store(true)
	lc.RecordStaff(ctx, "c1")
	wantLostReply(t, &stall.armed, stall.stalled, "RecordStaff", context.DeadlineExceeded)
	if s, err := direct.GetSession(ctx, st.Session.ID); err != nil || s.EndedAt.IsZero() {
		t.Fatalf("session after the stall = %+v, %v; want it ended by the late write", s, err)
	}
	lc.RecordStaff(ctx, "c1")
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	audit, _, err := direct.ReadAudit(ctx, sidecar.StreamFilter{Type: "impersonation.end", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range audit {
		if a.Target == st.Session.ID {
			n++
			if a.Actor != sidecar.SweepActor {
				t.Errorf("end recorded as by %q, want %q", a.Actor, sidecar.SweepActor)
			}
		}
	}
	if n != 1 {
		t.Errorf("bob's session ended as customer_protected; the session log holds %d ends of it, want 1", n)
	}
}

// alice impersonates c1 (S1) and starts again; the start's transaction
// loses its reply (Redis ran it late: S2 stored live, its code never
// handed out, S1 ended as replaced) and answers an error. Her retry stores
// S3, which replaces S2. The session log holds every session stored, and
// the end of every one that ended, once each: S1's end, S2's start and end.
func TestStartRetriedAfterLostReplyRecordsEverySession(t *testing.T) {
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	clock := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	ctx := context.Background()
	direct := directStore(t, srv.Addr, "loststart", clock.Now)
	setup := delegation.NewImpersonation(direct, shippedData(t), delegation.WithImpersonationClock(clock.Now))
	if _, err := direct.PutCustomer(ctx, &sidecar.Customer{ID: "c1", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := setup.SetConsent(ctx, &sidecar.Identity{Subject: "c1"}, delegation.ConsentChange{Customer: "c1", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	s1, err := setup.Start(ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setup.Redeem(ctx, s1.Code, "", "shop.example.com", allowAll); err != nil {
		t.Fatal(err)
	}
	stall := &stallBeforeTx{t: t, srv: srv, parts: []string{"imp_"}, stalled: make(chan error, 1)}
	stalling := stallingStore(t, srv, "loststart", stall, clock.Now)
	rec := startedRecorder(t, stalling)
	lc := delegation.NewImpersonation(stalling, shippedData(t), delegation.WithImpersonationClock(clock.Now), delegation.WithImpersonationRecorder(rec))
	lc.RecordStaff(ctx, alice.Subject)
	stall.armed.Store(true)
	_, err = lc.Start(ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
	wantLostReply(t, &stall.armed, stall.stalled, "Start", err)
	if s, err := direct.GetSession(ctx, s1.Session.ID); err != nil || s.EndReason != sidecar.EndReplaced {
		t.Fatalf("S1 after the stall = %+v, %v; want it replaced by the late write", s, err)
	}
	s3, err := lc.Start(ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
	if err != nil {
		t.Fatalf("Start retried: %v", err)
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	all, _, err := direct.ListSessions(ctx, sidecar.SessionFilter{Actor: alice.Subject, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	audit, _, err := direct.ReadAudit(ctx, sidecar.StreamFilter{Customer: "c1", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
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
	for _, s := range all {
		if s.ID == s3.Session.ID {
			continue
		}
		t.Logf("session %s ended=%v reason=%s: %d start, %d end records", s.ID, !s.EndedAt.IsZero(), s.EndReason, starts[s.ID], ends[s.ID])
		if !s.EndedAt.IsZero() && ends[s.ID] != 1 {
			t.Errorf("session %s ended (%s) but the session log holds %d ends of it", s.ID, s.EndReason, ends[s.ID])
		}
		if starts[s.ID] != 1 {
			t.Errorf("session %s was stored (%s) but the session log holds %d starts of it", s.ID, s.EndReason, starts[s.ID])
		}
	}
}

// alice's session lapses; the sweep's transaction ends it in Redis but
// loses its reply, and the sweep fails. The next sweeps find nothing
// lapsed and record the session's end (expired, by deputy), once.
func TestSweepAfterLostReplyRecordsSessionEnd(t *testing.T) {
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	clock := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	ctx := context.Background()
	direct := directStore(t, srv.Addr, "lostsweep", clock.Now)
	setup := delegation.NewImpersonation(direct, shippedData(t), delegation.WithImpersonationClock(clock.Now))
	if _, err := direct.PutCustomer(ctx, &sidecar.Customer{ID: "c1", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := setup.SetConsent(ctx, &sidecar.Identity{Subject: "c1"}, delegation.ConsentChange{Customer: "c1", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	st, err := setup.Start(ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	stall := &stallBeforeTx{t: t, srv: srv, parts: []string{st.Session.ID}, stalled: make(chan error, 1)}
	stalling := stallingStore(t, srv, "lostsweep", stall, clock.Now)
	rec := startedRecorder(t, stalling)
	lc := delegation.NewImpersonation(stalling, shippedData(t), delegation.WithImpersonationClock(clock.Now), delegation.WithImpersonationRecorder(rec))
	clock.Advance(2 * time.Hour)
	stall.armed.Store(true)
	err = lc.Sweep(ctx)
	wantLostReply(t, &stall.armed, stall.stalled, "Sweep", err)
	if s, err := direct.GetSession(ctx, st.Session.ID); err != nil || s.EndedAt.IsZero() {
		t.Fatalf("session after the stall = %+v, %v; want it ended by the late write", s, err)
	}
	for range 2 {
		if err := lc.Sweep(ctx); err != nil {
			t.Fatalf("Sweep again: %v", err)
		}
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	audit, _, err := direct.ReadAudit(ctx, sidecar.StreamFilter{Type: "impersonation.end", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range audit {
		if a.Target == st.Session.ID {
			n++
			if a.Actor != sidecar.SweepActor {
				t.Errorf("end recorded as by %q, want %q", a.Actor, sidecar.SweepActor)
			}
		}
	}
	if n != 1 {
		t.Errorf("alice's session was ended by the sweep; the session log holds %d ends of it, want 1", n)
	}
}

// Writes repeated after they went through record nothing more: a delete
// finding the profile gone, a protected profile put again and a staff
// mark written again find the changes made and record them again under
// their first records' Once within sidecar.AppendOnceWindow, and not at
// all later.
func TestRepeatedWritesAreRecordedOnce(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			clock := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
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
			for _, wait := range []time.Duration{0, time.Minute, sidecar.AppendOnceWindow} {
				clock.Advance(wait)
				if err := lc.DeleteCustomer(ctx, sync, "c1", allowAll); err != nil {
					t.Fatalf("DeleteCustomer after %v: %v", wait, err)
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
				case a.Action == "customer.delete" && a.Customer == "c1":
					count["customer.delete"]++
				case a.Action == "consent.set" && a.Customer == "c1" && a.Data["allowed"] == "false":
					count["consent.set withdrawn"]++
				case a.Action == "impersonation.end":
					count["impersonation.end "+a.Customer]++
					if a.Target != sessions[a.Customer] {
						t.Errorf("end of %s recorded for %s, whose session is %s", a.Target, a.Customer, sessions[a.Customer])
					}
				}
			}
			want := map[string]int{"customer.delete": 1, "consent.set withdrawn": 1, "impersonation.end c1": 1, "impersonation.end c2": 1, "impersonation.end c3": 1}
			if !maps.Equal(count, want) {
				t.Errorf("records %v, want %v", count, want)
			}
		})
	}
}
