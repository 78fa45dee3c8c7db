package delegation_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// appendsLost is a store that takes no audit entry or event: Redis went
// away between the transaction that stored a change and its records.
type appendsLost struct{ sidecar.Store }

func (appendsLost) AppendAudit(context.Context, *sidecar.AuditEntry) error {
	return sidecar.Unavailable("store unreachable", nil)
}

func (appendsLost) AppendEvent(context.Context, *sidecar.Event) error {
	return sidecar.Unavailable("store unreachable", nil)
}

// startRecords reads what the session log and the events stream hold of
// session id: its starts and ends, in the order appended.
func startRecords(t *testing.T, store sidecar.Store, customer, id string) (audit, events []string) {
	t.Helper()
	ctx := context.Background()
	f := sidecar.StreamFilter{Customer: customer, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}}
	as, _, err := store.ReadAudit(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if a.Target == id && a.Action != "impersonation.redeem" {
			audit = append(audit, a.Action)
		}
	}
	es, _, err := store.ReadEvents(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Data["session"] == id {
			events = append(events, e.Type)
		}
	}
	return audit, events
}

// A start is stored and answered, but its records never reach the store:
// the replica stops (or loses Redis) before the recorder appends them.
// The session is live. The next sweep of a replica that swept before, or
// of a fresh one (the stopped replica restarted), records the start once
// — the event the customer is told by, and the audit entry the session
// log is read from — however many replicas sweep, however often. A start
// whose records got through is not recorded twice; neither is one ended
// before any sweep, whose end records its start first.
func TestStartRecordsLostAtCommitAreRecordedBySweeps(t *testing.T) {
	for _, ps := range partnerStores(t) {
		for _, other := range []string{"fresh", "swept_before"} {
			t.Run(ps.name+"/"+other, func(t *testing.T) {
				ctx := context.Background()
				clock := storetest.NewClock(storetest.Epoch) // in the past: a start later than Redis's clock moves back to it
				store := ps.open(t, clock.Now)
				replica := func(rs delegation.RecordStore) *delegation.Impersonation {
					return delegation.NewImpersonation(store, shippedData(t), delegation.WithImpersonationClock(clock.Now),
						delegation.WithImpersonationRecorder(delegation.NewRecorder(rs, nil)))
				}
				for _, c := range []string{"c1", "c2", "c3"} {
					if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: c, DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
						t.Fatal(err)
					}
					if _, err := store.SetConsent(ctx, &sidecar.Consent{Customer: c, Allowed: true, SetBy: c, SetAt: clock.Now()}); err != nil {
						t.Fatal(err)
					}
				}
				agent := []string{"support_agent"}
				b := replica(store)
				if other == "swept_before" {
					if err := b.Sweep(ctx); err != nil {
						t.Fatal(err)
					}
				}
				// a records nothing: its appends fail, and no relay is left
				// to retry them.
				a := replica(appendsLost{store})
				lost, err := a.Start(ctx, &sidecar.Identity{Subject: "alice", Roles: agent}, delegation.StartRequest{Customer: "c1", Reason: "help"}, allowAll)
				if err != nil {
					t.Fatal(err)
				}
				endedFirst, err := a.Start(ctx, &sidecar.Identity{Subject: "bob", Roles: agent}, delegation.StartRequest{Customer: "c2"}, allowAll)
				if err != nil {
					t.Fatal(err)
				}
				kept, err := b.Start(ctx, &sidecar.Identity{Subject: "carol", Roles: agent}, delegation.StartRequest{Customer: "c3"}, allowAll)
				if err != nil {
					t.Fatal(err)
				}
				// Each is redeemed: a session whose code is never used ends
				// when the code expires.
				for _, st := range []*delegation.Started{lost, endedFirst, kept} {
					if _, err := b.Redeem(ctx, nil, st.Code, "", "shop.example.com", allowAll); err != nil {
						t.Fatal(err)
					}
				}
				if au, ev := startRecords(t, store, "c1", lost.Session.ID); len(au)+len(ev) != 0 {
					t.Fatalf("records of a start whose appends failed: %v, %v", au, ev)
				}
				clock.Advance(time.Second)
				if _, err := b.End(ctx, &sidecar.Identity{Subject: "bob"}, endedFirst.Session.ID, allowAll); err != nil {
					t.Fatal(err)
				}
				clock.Advance(time.Minute)
				if err := b.Sweep(ctx); err != nil {
					t.Fatal(err)
				}
				for range 2 {
					clock.Advance(time.Minute)
					for _, r := range []*delegation.Impersonation{b, replica(store)} {
						if err := r.Sweep(ctx); err != nil {
							t.Fatal(err)
						}
					}
				}
				for _, s := range []struct {
					customer, id string
					want         []string
				}{
					{"c1", lost.Session.ID, []string{"impersonation.start"}},
					{"c2", endedFirst.Session.ID, []string{"impersonation.start", "impersonation.end"}},
					{"c3", kept.Session.ID, []string{"impersonation.start"}},
				} {
					au, ev := startRecords(t, store, s.customer, s.id)
					wantEv := []string{sidecar.EventImpersonationStarted}
					if len(s.want) == 2 {
						wantEv = append(wantEv, sidecar.EventImpersonationEnded)
					}
					if !slices.Equal(au, s.want) || !slices.Equal(ev, wantEv) {
						t.Errorf("session of %s: audit %v and events %v, want %v and %v", s.customer, au, ev, s.want, wantEv)
					}
				}
				log, _, err := b.Log(ctx, nil, sidecar.SessionFilter{Actor: "alice"}, allowAll)
				if err != nil {
					t.Fatal(err)
				}
				if len(log) != 1 || log[0].ID != lost.Session.ID {
					t.Errorf("alice's session log: %+v, want the live session whose records were lost", log)
				}
			})
		}
	}
}

// A consent change is stored and answered, but its records never reach
// the store: the replica stops (or loses Redis) before the recorder
// appends them. The next sweep of a replica that swept before, or of a
// fresh one, records the change once: the consent.changed event the
// customer is told by and the consent.set audit entry, with the end of
// the session the withdrawal ended, its start first. A change whose
// records got through is not recorded twice.
func TestConsentRecordsLostAtCommitAreRecordedBySweeps(t *testing.T) {
	for _, ps := range partnerStores(t) {
		for _, other := range []string{"fresh", "swept_before"} {
			t.Run(ps.name+"/"+other, func(t *testing.T) {
				ctx := context.Background()
				clock := storetest.NewClock(storetest.Epoch) // in the past: a start later than Redis's clock moves back to it
				store := ps.open(t, clock.Now)
				replica := func(rs delegation.RecordStore) *delegation.Impersonation {
					return delegation.NewImpersonation(store, shippedData(t), delegation.WithImpersonationClock(clock.Now),
						delegation.WithImpersonationRecorder(delegation.NewRecorder(rs, nil)))
				}
				for _, c := range []string{"c1", "c2"} {
					if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: c, DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
						t.Fatal(err)
					}
				}
				b := replica(store)
				if other == "swept_before" {
					if err := b.Sweep(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if _, _, err := b.SetConsent(ctx, &sidecar.Identity{Subject: "c1"}, delegation.ConsentChange{Customer: "c1", Allowed: true}, allowAll); err != nil {
					t.Fatal(err)
				}
				st, err := b.Start(ctx, &sidecar.Identity{Subject: "alice", Roles: []string{"support_agent"}}, delegation.StartRequest{Customer: "c1"}, allowAll)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := b.Redeem(ctx, nil, st.Code, "", "shop.example.com", allowAll); err != nil {
					t.Fatal(err)
				}
				clock.Advance(time.Second)
				// a records nothing: its appends fail, and no relay is left
				// to retry them.
				a := replica(appendsLost{store})
				if _, _, err := a.SetConsent(ctx, &sidecar.Identity{Subject: "c1"}, delegation.ConsentChange{Customer: "c1"}, allowAll); err != nil {
					t.Fatal(err)
				}
				if _, _, err := a.SetConsent(ctx, &sidecar.Identity{Subject: "ops"}, delegation.ConsentChange{Customer: "c2", Allowed: true}, allowAll); err != nil {
					t.Fatal(err)
				}
				for range 3 {
					clock.Advance(time.Minute)
					for _, r := range []*delegation.Impersonation{b, replica(store)} {
						if err := r.Sweep(ctx); err != nil {
							t.Fatal(err)
						}
					}
				}
				type change struct{ customer, allowed, by string }
				f := sidecar.StreamFilter{Page: sidecar.Page{Limit: sidecar.MaxPageLimit}}
				var audited, told []change
				as, _, err := store.ReadAudit(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range as {
					if e.Action == "consent.set" {
						audited = append(audited, change{e.Customer, e.Data["allowed"], e.Actor})
					}
				}
				es, _, err := store.ReadEvents(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range es {
					if e.Type == sidecar.EventConsentChanged {
						told = append(told, change{e.Customer, e.Data["allowed"], e.Actor})
					}
				}
				slices.SortFunc(audited, func(x, y change) int { return strings.Compare(x.customer+x.allowed, y.customer+y.allowed) })
				slices.SortFunc(told, func(x, y change) int { return strings.Compare(x.customer+x.allowed, y.customer+y.allowed) })
				want := []change{{"c1", "false", "c1"}, {"c1", "true", "c1"}, {"c2", "true", "ops"}}
				if !slices.Equal(audited, want) || !slices.Equal(told, want) {
					t.Errorf("consent.set entries %v and consent.changed events %v, want %v each", audited, told, want)
				}
				if au, ev := startRecords(t, store, "c1", st.Session.ID); !slices.Equal(au, []string{"impersonation.start", "impersonation.end"}) ||
					!slices.Equal(ev, []string{sidecar.EventImpersonationStarted, sidecar.EventImpersonationEnded}) {
					t.Errorf("session the lost withdrawal ended: audit %v and events %v, want its start then its end", au, ev)
				}
			})
		}
	}
}
