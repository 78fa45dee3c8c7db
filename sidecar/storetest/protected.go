package storetest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// LostSessionEvictions is a store whose subscribers never receive the
// session keys it publishes, as when those messages are lost: a resolver on
// it keeps sessions cached as live, so only what it reads on every request
// (consent, protection) can stop them.
type LostSessionEvictions struct{ sidecar.Store }

// Subscribe passes fn every key but the session keys.
func (l LostSessionEvictions) Subscribe(fn func(string)) func() {
	return l.Store.Subscribe(func(key string) {
		if !strings.HasPrefix(key, sidecar.SessionKey("")) {
			fn(key)
		}
	})
}

// testCustomerState: the check path's one read of a customer's consent,
// profile and staff mark.
func testCustomerState(t *testing.T, newEnv func(*testing.T) *env) {
	t.Run("nothing_stored", func(t *testing.T) {
		e := newEnv(t)
		st, err := e.s.GetCustomerState(e.ctx, "c1")
		must(t, err)
		if st.Customer != nil || st.Consent != nil || st.Staff {
			t.Fatalf("got %+v, want nothing", st)
		}
	})
	t.Run("profile_consent_and_staff", func(t *testing.T) {
		e := newEnv(t)
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1", Name: "Ada", Roles: []string{"customer", "admin"}}, sidecar.Protection{})))
		until := e.now().Add(time.Hour)
		mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c1", Allowed: true, ExpiresAt: until, SetBy: "c1", SetAt: e.now()}))
		mustEnd(t)(e.s.MarkStaff(e.ctx, "c1"))
		mustEnd(t)(e.s.MarkStaff(e.ctx, "c2")) // someone else
		st, err := e.s.GetCustomerState(e.ctx, "c1")
		must(t, err)
		if st.Customer == nil || st.Customer.Name != "Ada" || !slices.Equal(st.Customer.Roles, []string{"customer", "admin"}) {
			t.Fatalf("profile %+v", st.Customer)
		}
		if st.Consent == nil || !st.Consent.Allowed || !st.Consent.ExpiresAt.Equal(until) {
			t.Fatalf("consent %+v", st.Consent)
		}
		if !st.Staff {
			t.Fatal("staff mark not read")
		}
		e.clock.Advance(time.Hour) // the consent lapses; the rest stays
		st, err = e.s.GetCustomerState(e.ctx, "c1")
		must(t, err)
		if st.Consent != nil || st.Customer == nil || !st.Staff {
			t.Fatalf("after the consent's expiry: %+v", st)
		}
	})
	// The other spellings of the id (FoldID) with a profile or a staff
	// mark come with it, so that what protects one protects all; the id
	// itself and ids that fold elsewhere do not.
	t.Run("other_spellings", func(t *testing.T) {
		e := newEnv(t)
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "ACME", Name: "Ada", Protected: true, Roles: []string{"admin"}}, sidecar.Protection{})))
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "acme"}, sidecar.Protection{})))
		mustEnd(t)(e.s.MarkStaff(e.ctx, "Acme"))
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "acme2", Protected: true}, sidecar.Protection{})))
		spellings := func(id string) []sidecar.Spelling {
			t.Helper()
			st, err := e.s.GetCustomerState(e.ctx, id)
			must(t, err)
			return st.Spellings
		}
		same := func(got []sidecar.Spelling, want ...sidecar.Spelling) {
			t.Helper()
			ok := len(got) == len(want)
			for k := 0; ok && k < len(got); k++ {
				g, w := got[k], want[k]
				ok = g.ID == w.ID && g.Staff == w.Staff && (g.Customer == nil) == (w.Customer == nil) &&
					(g.Customer == nil || g.Customer.Protected == w.Customer.Protected && slices.Equal(g.Customer.Roles, w.Customer.Roles))
			}
			if !ok {
				t.Fatalf("spellings %+v, want %+v", got, want)
			}
		}
		same(spellings("aCmE"),
			sidecar.Spelling{ID: "ACME", Customer: &sidecar.Customer{Protected: true, Roles: []string{"admin"}}},
			sidecar.Spelling{ID: "Acme", Staff: true},
			sidecar.Spelling{ID: "acme", Customer: &sidecar.Customer{}})
		same(spellings("acme"),
			sidecar.Spelling{ID: "ACME", Customer: &sidecar.Customer{Protected: true, Roles: []string{"admin"}}},
			sidecar.Spelling{ID: "Acme", Staff: true})
		// A profile rewritten is read as rewritten; one deleted is gone,
		// a staff mark stays with its deleted profile.
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "ACME", Roles: []string{"customer"}}, sidecar.Protection{})))
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "Acme"}, sidecar.Protection{})))
		same(spellings("acme"),
			sidecar.Spelling{ID: "ACME", Customer: &sidecar.Customer{Roles: []string{"customer"}}},
			sidecar.Spelling{ID: "Acme", Customer: &sidecar.Customer{}, Staff: true})
		must(t, ignore(e.s.DeleteCustomer(e.ctx, "ACME", "shop")))
		must(t, ignore(e.s.DeleteCustomer(e.ctx, "Acme", "shop")))
		same(spellings("acme"), sidecar.Spelling{ID: "Acme", Staff: true})
		same(spellings("nobody"))
		st, err := e.s.GetCustomerState(e.ctx, "ACME2")
		must(t, err)
		same(st.Spellings, sidecar.Spelling{ID: "acme2", Customer: &sidecar.Customer{Protected: true}})
		if !(sidecar.Protection{}).ProtectsState("ACME2", st) {
			t.Fatal("ACME2 not protected by acme2's profile")
		}
	})
}

// testProtectionEndsSessions: a profile written protected, or a subject
// recorded as staff, ends the live sessions that impersonate it in the
// same step, with the customer_protected reason.
func testProtectionEndsSessions(t *testing.T, newEnv func(*testing.T) *env) {
	setup := func(t *testing.T) *env {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1")))
		must(t, ignore(redeem(e, "s1", "h1")))
		must(t, begin(e, newSession(e, "s2", "bob", "c2")))
		e.clock.Advance(time.Minute)
		return e
	}
	data := sidecar.Protection{Roles: []string{"staff", "admin"}, Customers: []string{"c9"}}
	cases := []struct {
		name    string
		profile sidecar.Customer
		p       sidecar.Protection
		ended   bool
	}{
		{"protected_flag", sidecar.Customer{Protected: true}, data, true},
		{"protected_role", sidecar.Customer{Roles: []string{"customer", "admin"}}, data, true},
		{"listed_in_data", sidecar.Customer{}, sidecar.Protection{Customers: []string{"c1"}}, true},
		{"role_not_protected", sidecar.Customer{Roles: []string{"customer", "vip"}}, data, false},
		{"plain_update", sidecar.Customer{Name: "Ada"}, data, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t)
			c := tc.profile
			c.ID, c.UpdatedBy = "c1", "sync"
			ended, err := e.s.PutCustomer(e.ctx, &c, tc.p)
			must(t, err)
			want := []string(nil)
			if tc.ended {
				want = []string{"s1"}
			}
			if !slices.Equal(sessionIDs(ended), want) {
				t.Fatalf("ended %v, want %v", sessionIDs(ended), want)
			}
			s1, err := e.s.SessionByToken(e.ctx, "h1")
			must(t, err)
			if s1.Live(e.now()) == tc.ended {
				t.Fatalf("s1 live = %v, want %v", s1.Live(e.now()), !tc.ended)
			}
			if tc.ended && (s1.EndReason != sidecar.EndCustomerProtected || s1.EndedBy != "sync" || !s1.EndedAt.Equal(e.now())) {
				t.Fatalf("s1 ended as %q by %q at %v", s1.EndReason, s1.EndedBy, s1.EndedAt)
			}
			if got, err := e.s.GetCustomer(e.ctx, "c1"); err != nil || got.UpdatedBy != "sync" {
				t.Fatalf("profile not stored with the end: %+v, %v", got, err)
			}
			s2, err := e.s.GetSession(e.ctx, "s2")
			must(t, err)
			if !s2.Live(e.now()) {
				t.Fatal("another customer's session ended")
			}
			live, _, err := e.s.ListSessions(e.ctx, sidecar.SessionFilter{Customer: "c1", LiveOnly: true})
			must(t, err)
			if tc.ended != (len(live) == 0) {
				t.Fatalf("live sessions of c1: %v", sessionIDs(live))
			}
		})
	}
	t.Run("staff_mark", func(t *testing.T) {
		e := setup(t)
		ended, err := e.s.MarkStaff(e.ctx, "c1")
		must(t, err)
		if !slices.Equal(sessionIDs(ended), []string{"s1"}) {
			t.Fatalf("ended %v, want s1", sessionIDs(ended))
		}
		s1, err := e.s.SessionByToken(e.ctx, "h1")
		must(t, err)
		if s1.EndReason != sidecar.EndCustomerProtected || s1.EndedBy != sidecar.SweepActor {
			t.Fatalf("s1 ended as %q by %q", s1.EndReason, s1.EndedBy)
		}
		if s2, err := e.s.GetSession(e.ctx, "s2"); err != nil || !s2.Live(e.now()) {
			t.Fatalf("another customer's session: %+v, %v", s2, err)
		}
		again, err := e.s.MarkStaff(e.ctx, "c1") // idempotent: nothing left to end
		must(t, err)
		if len(again) != 0 {
			t.Fatalf("second mark ended %v", sessionIDs(again))
		}
		// The actor being marked ends nothing of theirs: alice acts, c1 is acted for.
		mustEnd(t)(e.s.MarkStaff(e.ctx, "bob"))
		if s2, err := e.s.GetSession(e.ctx, "s2"); err != nil || !s2.Live(e.now()) {
			t.Fatalf("marking the actor ended their session: %+v, %v", s2, err)
		}
	})
	t.Run("policy_data_sweep", func(t *testing.T) {
		e := setup(t)
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1", Roles: []string{"vip"}}, data))) // not protected yet
		keys := subscribeKeys(t, e)
		none, err := e.s.EndProtectedSessions(e.ctx, data, e.now())
		must(t, err)
		if len(none) != 0 {
			t.Fatalf("ended %v with nothing protected", sessionIDs(none))
		}
		// The data now lists the role: of concurrent sweepers, one ends s1.
		vip := sidecar.Protection{Roles: []string{"vip"}}
		all := sweepConcurrently(t, func() ([]sidecar.Session, error) { return e.s.EndProtectedSessions(e.ctx, vip, e.now()) })
		if len(all) != 1 || all[0].ID != "s1" || all[0].EndReason != sidecar.EndCustomerProtected || all[0].EndedBy != sidecar.SweepActor {
			t.Fatalf("six sweepers ended %+v, want s1 once", all)
		}
		waitKey(t, keys, sidecar.SessionKey("h1"))
		if s2, err := e.s.GetSession(e.ctx, "s2"); err != nil || !s2.Live(e.now()) {
			t.Fatalf("another customer's session: %+v, %v", s2, err)
		}
		// A customer listed, with no profile role at all.
		got, err := e.s.EndProtectedSessions(e.ctx, sidecar.Protection{Customers: []string{"c2"}}, e.now())
		must(t, err)
		if !slices.Equal(sessionIDs(got), []string{"s2"}) {
			t.Fatalf("listing c2 ended %v", sessionIDs(got))
		}
	})
	t.Run("empty_subject", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.s.MarkStaff(e.ctx, "")
		wantCode(t, err, sidecar.EINVALID)
	})
}

// testUnpermittedActorsEnd: the sweep ends, once across concurrent
// sweepers, the live sessions none of whose recorded actor roles is among
// the roles policy data grants login_as_customer, and those recorded
// without roles (which policy denies); sessions whose actor still holds
// one run on.
func testUnpermittedActorsEnd(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	agent := newSession(e, "s1", "alice", "c1") // support_agent
	must(t, begin(e, agent))
	must(t, ignore(redeem(e, "s1", "h1")))
	lead := newSession(e, "s2", "bob", "c2")
	lead.ActorRoles = []string{"auditor", "support_lead"}
	must(t, begin(e, lead))
	legacy := newSession(e, "s3", "carol", "c3")
	legacy.ActorRoles = nil
	must(t, begin(e, legacy))
	e.clock.Advance(time.Minute)
	keys := subscribeKeys(t, e)
	// Every recorded role grants it: only the session recorded without
	// roles ends.
	legacyEnded, err := e.s.EndUnpermittedSessions(e.ctx, []string{"admin", "support_agent", "support_lead"}, e.now())
	must(t, err)
	if !slices.Equal(sessionIDs(legacyEnded), []string{"s3"}) || legacyEnded[0].EndReason != sidecar.EndActorNotPermitted {
		t.Fatalf("with every recorded role permitted, ended %+v, want s3 (no roles recorded)", legacyEnded)
	}
	// support_agent no longer grants it: of concurrent sweepers, one ends s1.
	all := sweepConcurrently(t, func() ([]sidecar.Session, error) {
		return e.s.EndUnpermittedSessions(e.ctx, []string{"admin", "support_lead"}, e.now())
	})
	if len(all) != 1 || all[0].ID != "s1" || all[0].EndReason != sidecar.EndActorNotPermitted ||
		all[0].EndedBy != sidecar.SweepActor || !all[0].EndedAt.Equal(e.now()) {
		t.Fatalf("six sweepers ended %+v, want s1 once", all)
	}
	waitKey(t, keys, sidecar.SessionKey("h1"))
	s1, err := e.s.SessionByToken(e.ctx, "h1")
	must(t, err)
	if s1.Live(e.now()) || s1.EndReason != sidecar.EndActorNotPermitted {
		t.Fatalf("s1 in the store: live %v, ended as %q", s1.Live(e.now()), s1.EndReason)
	}
	live, _, err := e.s.ListSessions(e.ctx, sidecar.SessionFilter{LiveOnly: true})
	must(t, err)
	if ids := slices.Sorted(slices.Values(sessionIDs(live))); !slices.Equal(ids, []string{"s2"}) {
		t.Fatalf("live sessions %v, want s2", ids)
	}
	// No role grants it any more.
	got, err := e.s.EndUnpermittedSessions(e.ctx, nil, e.now())
	must(t, err)
	if !slices.Equal(sessionIDs(got), []string{"s2"}) {
		t.Fatalf("with no role granting it, ended %v, want s2", sessionIDs(got))
	}
}

// subscribeKeys collects the invalidations e's store publishes until the
// test ends (dropping them once 64 are unread).
func subscribeKeys(t *testing.T, e *env) <-chan string {
	keys := make(chan string, 64)
	t.Cleanup(e.s.Subscribe(func(k string) {
		select {
		case keys <- k:
		default:
		}
	}))
	return keys
}
