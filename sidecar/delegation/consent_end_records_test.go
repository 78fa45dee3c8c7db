package delegation_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// consentRecords counts, once the recorder appended what waited, the
// records of session id's end and of c1's consent settings until until
// (the narrowing's expiry).
type consentRecords struct {
	ends, ended         int // impersonation.end audit entries, impersonation.ended events
	narrowings, changed int // consent.set audit entries, consent.changed events
}

func countConsentRecords(t *testing.T, store sidecar.Store, id string, until time.Time) consentRecords {
	t.Helper()
	ctx := context.Background()
	exp := until.UTC().Format(time.RFC3339)
	audit, _, err := store.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	var n consentRecords
	for _, a := range audit {
		switch {
		case a.Action == "impersonation.end" && a.Target == id:
			n.ends++
			if a.Actor != "c1" || a.Data["end_reason"] != sidecar.EndConsentWithdrawn {
				t.Errorf("end of %s recorded by %q as %q, want by c1 as consent_withdrawn", id, a.Actor, a.Data["end_reason"])
			}
		case a.Action == "consent.set" && a.Customer == "c1" && a.Data["expires_at"] == exp:
			n.narrowings++
		}
	}
	for _, e := range events(t, store, sidecar.EventImpersonationEnded) {
		if e.Data["session"] == id {
			n.ended++
		}
	}
	for _, e := range events(t, store, sidecar.EventConsentChanged) {
		if e.Customer == "c1" && e.Data["expires_at"] == exp {
			n.changed++
		}
	}
	return n
}

// nextWrites are what may follow a consent narrowing that answered an
// error: the customer, told it failed, withdraws instead, or gives
// consent without an expiry, or does nothing more.
var nextWrites = []struct {
	name string
	// write is the customer's next consent change (nil: none).
	write *delegation.ConsentChange
}{
	{"withdrawal", &delegation.ConsentChange{Customer: "c1"}},
	{"grant_without_expiry", &delegation.ConsentChange{Customer: "c1", Allowed: true}},
	{"nothing", nil},
}

// A consent narrowing whose transaction lost its reply (Redis ran it after
// the client's read timeout) ends alice's live session and answers an
// error, recording nothing. The customer does not repeat it; whatever
// comes next, the sweeps of both replicas record the session's end, once,
// and a consent change that follows records the narrowing too, once.
func TestLostConsentChangeEndRecordedWhateverFollows(t *testing.T) {
	for _, next := range nextWrites {
		t.Run(next.name, func(t *testing.T) {
			w := newLostReplyWorld(t, "lostnarrow"+next.name, "c1", "c2")
			c1 := &sidecar.Identity{Subject: "c1"}
			st := w.start(t, alice, "c1")
			if _, err := w.setup.Redeem(w.ctx, nil, st.Code, "", "shop.example.com", allowAll); err != nil {
				t.Fatal(err)
			}
			// Warm the connection (a consent change on c2).
			if _, _, err := w.lc.SetConsent(w.ctx, &sidecar.Identity{Subject: "c2"}, delegation.ConsentChange{Customer: "c2"}, allowAll); err != nil {
				t.Fatal(err)
			}
			until := w.clock.Now().Add(10 * time.Minute)
			w.stall.armed.Store(true)
			_, _, err := w.lc.SetConsent(w.ctx, c1, delegation.ConsentChange{Customer: "c1", Allowed: true, ExpiresAt: new(until)}, allowAll)
			wantLostReply(t, &w.stall.armed, w.stall.stalled, "the narrowing", err)
			w.wantEnded(t, st.Session.ID)
			w.clock.Advance(5 * time.Second)
			if next.write != nil {
				if _, ended, err := w.lc.SetConsent(w.ctx, c1, *next.write, allowAll); err != nil || len(ended) != 0 {
					t.Fatalf("next consent change: ended %d, %v; want none ended, no error", len(ended), err)
				}
			}
			for range 2 {
				w.clock.Advance(30 * time.Second)
				if err := w.lc.Sweep(w.ctx); err != nil {
					t.Fatal(err)
				}
				if err := w.setup.Sweep(w.ctx); err != nil {
					t.Fatal(err)
				}
			}
			partnerEventually(t, "the recorder to append what waited", func() bool { return w.rec.Pending() == 0 })
			n := countConsentRecords(t, w.direct, st.Session.ID, until)
			if n.ends != 1 || n.ended != 1 {
				t.Errorf("the session the lost narrowing ended: %d impersonation.end audit entries, %d impersonation.ended events; want 1 and 1", n.ends, n.ended)
			}
			if next.write != nil && (n.narrowings != 1 || n.changed != 1) {
				t.Errorf("the lost narrowing: %d consent.set audit entries, %d consent.changed events after the next change; want 1 and 1", n.narrowings, n.changed)
			}
		})
	}
}

// The same on both stores, the lost reply being the store's own write
// made without the lifecycle (which answered an error and recorded
// nothing), and the narrowing recorded as usual for contrast: the
// session's end is recorded once either way, and no later sweep, on a
// replica started since, records it again, within the hour or after it.
func TestConsentChangeEndRecordedOnceOnEveryStore(t *testing.T) {
	for _, ps := range partnerStores(t) {
		for _, lost := range []bool{true, false} {
			name := ps.name + map[bool]string{true: "/lost_reply", false: "/recorded"}[lost]
			t.Run(name, func(t *testing.T) {
				clock := newPartnerClock()
				ctx := context.Background()
				store := ps.open(t, clock.Now)
				lc := delegation.NewImpersonation(store, shippedData(t), delegation.WithImpersonationClock(clock.Now))
				c1 := &sidecar.Identity{Subject: "c1"}
				if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: "c1", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
					t.Fatal(err)
				}
				if _, _, err := lc.SetConsent(ctx, c1, delegation.ConsentChange{Customer: "c1", Allowed: true}, allowAll); err != nil {
					t.Fatal(err)
				}
				st, err := lc.Start(ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
				if err != nil {
					t.Fatal(err)
				}
				clock.Advance(time.Minute)
				until := clock.Now().Add(10 * time.Minute)
				narrowing := &sidecar.Consent{Customer: "c1", Allowed: true, ExpiresAt: until, SetBy: "c1", SetAt: clock.Now()}
				if lost {
					if ended, err := store.SetConsent(ctx, narrowing); err != nil || len(ended) != 1 {
						t.Fatalf("narrowing written: ended %d, %v; want alice's session", len(ended), err)
					}
				} else if _, ended, err := lc.SetConsent(ctx, c1, delegation.ConsentChange{Customer: "c1", Allowed: true, ExpiresAt: new(until)}, allowAll); err != nil || len(ended) != 1 {
					t.Fatalf("narrowing: ended %d, %v; want alice's session", len(ended), err)
				}
				clock.Advance(5 * time.Second)
				if _, _, err := lc.SetConsent(ctx, c1, delegation.ConsentChange{Customer: "c1"}, allowAll); err != nil {
					t.Fatalf("withdrawal: %v", err)
				}
				for range 2 {
					clock.Advance(30 * time.Second)
					if err := lc.Sweep(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if n := countConsentRecords(t, store, st.Session.ID, until); n != (consentRecords{1, 1, 1, 1}) {
					t.Errorf("after the withdrawal and two sweeps: %+v; want one of each", n)
				}
				// Replicas started since sweep the whole hour back, and
				// past it.
				for _, wait := range []time.Duration{time.Minute, sidecar.AppendOnceWindow} {
					clock.Advance(wait)
					fresh := delegation.NewImpersonation(store, shippedData(t), delegation.WithImpersonationClock(clock.Now))
					if err := fresh.Sweep(ctx); err != nil {
						t.Fatal(err)
					}
					if n := countConsentRecords(t, store, st.Session.ID, until); n != (consentRecords{1, 1, 1, 1}) {
						t.Errorf("after a new replica's sweep %v later: %+v; want one of each", wait, n)
					}
				}
			})
		}
	}
}
