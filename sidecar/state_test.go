package sidecar_test

import (
	"slices"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

const day = 24 * time.Hour

// The one rule for which accounts cannot be impersonated, as the stores
// apply it when a session starts and when a profile is written.
func TestProtectionProtects(t *testing.T) {
	data := sidecar.Protection{Roles: []string{"staff", "admin"}, Customers: []string{"c9"}}
	cases := []struct {
		name    string
		id      string
		profile *sidecar.Customer
		staff   bool
		want    bool
	}{
		{"plain_customer", "c1", &sidecar.Customer{ID: "c1", Roles: []string{"customer"}}, false, false},
		{"profile_flag", "c1", &sidecar.Customer{ID: "c1", Protected: true}, false, true},
		{"protected_role_among_others", "c1", &sidecar.Customer{ID: "c1", Roles: []string{"customer", "admin"}}, false, true},
		{"role_names_compare_exactly", "c1", &sidecar.Customer{ID: "c1", Roles: []string{"Admin"}}, false, false},
		{"listed_customer", "c9", &sidecar.Customer{ID: "c9"}, false, true},
		{"known_staff", "c1", &sidecar.Customer{ID: "c1"}, true, true},
		{"no_profile", "c1", nil, false, false},
		{"no_profile_but_listed", "c9", nil, false, true},
		{"no_profile_but_staff", "c1", nil, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := data.Protects(tc.id, tc.profile, tc.staff); got != tc.want {
				t.Fatalf("Protects = %v, want %v", got, tc.want)
			}
		})
	}
	if (sidecar.Protection{}).Protects("c1", &sidecar.Customer{ID: "c1", Roles: []string{"admin"}}, false) {
		t.Fatal("a role protects only when policy data lists it")
	}
}

// Precedence at an instant, as the check path applies it to a cached pair
// of grants and the holds read with them.
func TestEffectiveGrantsAt(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	org := &sidecar.Grant{ID: "org", PartnerOrg: "p", Level: sidecar.LevelUpdate, ExpiresAt: now.Add(30 * day), Seq: 1}
	lower := &sidecar.Grant{ID: "lower", PartnerOrg: "p", Level: sidecar.LevelLook, ExpiresAt: now.Add(30 * day), Seq: 3}
	own := &sidecar.Grant{ID: "own", PartnerOrg: "p", User: "pat", Level: sidecar.LevelLook, ExpiresAt: now.Add(10 * day), Seq: 4}
	lapsed := &sidecar.Grant{ID: "lapsed", PartnerOrg: "p", User: "pat", Level: sidecar.LevelLook, ExpiresAt: now, Seq: 4}
	hold := []sidecar.Hold{{Level: sidecar.LevelLook, Until: now.Add(10 * day)}}
	cases := []struct {
		name string
		e    sidecar.EffectiveGrants
		at   time.Time
		want string
		held bool
	}{
		{"individual_even_when_lower", sidecar.EffectiveGrants{Individual: own, Organisation: org}, now, "own", false},
		{"lapsed_individual_lets_the_organisation_apply", sidecar.EffectiveGrants{Individual: lapsed, Organisation: org}, now, "org", false},
		{"held_back_from_an_organisation_grant_above_the_hold", sidecar.EffectiveGrants{Organisation: org, Held: hold}, now, "", true},
		{"held_back_until_the_hold_ends", sidecar.EffectiveGrants{Organisation: org, Held: hold}, now.Add(10*day - time.Nanosecond), "", true},
		{"hold_lapsed", sidecar.EffectiveGrants{Organisation: org, Held: hold}, now.Add(10 * day), "org", false},
		{"organisation_grant_at_the_hold_level", sidecar.EffectiveGrants{Organisation: lower, Held: hold}, now, "lower", false},
		{"hold_of_no_known_level", sidecar.EffectiveGrants{Organisation: lower, Held: []sidecar.Hold{{Until: now.Add(day)}}}, now, "", true},
		{"new_individual_grant", sidecar.EffectiveGrants{Individual: own, Organisation: org, Held: hold}, now, "own", false},
		{"held_and_the_individual_lapsed", sidecar.EffectiveGrants{Individual: lapsed, Organisation: org, Held: hold}, now, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if g := tc.e.At(tc.at); g != nil {
				got = g.ID
			}
			if got != tc.want || tc.e.HeldBack(tc.at) != tc.held {
				t.Fatalf("At = %q, HeldBack = %v; want %q, %v", got, tc.e.HeldBack(tc.at), tc.want, tc.held)
			}
		})
	}
}

// A user's holds: a hold another one covers (ending no later, at a level
// no lower) goes, whichever came first; lapsed ones go; so a user keeps
// at most one hold per level.
func TestAddHold(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	hold := func(l sidecar.Level, d time.Duration) sidecar.Hold { return sidecar.Hold{Level: l, Until: now.Add(d)} }
	holds := sidecar.AddHold(nil, hold(sidecar.LevelLook, 30*day), now)
	holds = sidecar.AddHold(holds, hold(sidecar.LevelLook, 10*day), now)
	if !slices.Equal(holds, []sidecar.Hold{hold(sidecar.LevelLook, 30*day)}) {
		t.Fatalf("holds = %+v, want look for 30 days alone (it covers look for 10)", holds)
	}
	holds = sidecar.AddHold(holds, hold(sidecar.LevelCC, 10*day), now)
	holds = sidecar.AddHold(holds, hold(sidecar.LevelUpdate, 40*day), now)
	want := []sidecar.Hold{hold(sidecar.LevelLook, 30*day), hold(sidecar.LevelCC, 10*day), hold(sidecar.LevelUpdate, 40*day)}
	if !slices.Equal(holds, want) {
		t.Fatalf("holds = %+v, want %+v", holds, want)
	}
	holds = sidecar.AddHold(holds, hold(sidecar.LevelCC, 30*day), now.Add(day))
	want = []sidecar.Hold{hold(sidecar.LevelUpdate, 40*day), hold(sidecar.LevelCC, 30*day)}
	if !slices.Equal(holds, want) {
		t.Fatalf("holds = %+v, want %+v", holds, want)
	}
	holds = sidecar.AddHold(holds, hold(sidecar.LevelLook, 20*day), now.Add(31*day))
	if !slices.Equal(holds, []sidecar.Hold{hold(sidecar.LevelUpdate, 40*day)}) {
		t.Fatalf("holds = %+v, want update for 40 days alone (the rest lapsed)", holds)
	}
	if holds = sidecar.AddHold(holds, sidecar.Hold{Until: now.Add(50 * day)}, now.Add(31*day)); len(holds) != 1 || holds[0].Level != "" {
		t.Fatalf("holds = %+v, want the hold of no known level alone", holds)
	}
}

// A user's grant replaced by one that ends earlier leaves a hold at the
// replaced grant's level until its end; nothing else does.
func TestReplacementHold(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	g := func(user string, l sidecar.Level, d time.Duration) *sidecar.Grant {
		return &sidecar.Grant{ID: "g", PartnerOrg: "p", User: user, Level: l, ExpiresAt: now.Add(d)}
	}
	cases := []struct {
		name      string
		old, next *sidecar.Grant
		want      sidecar.Hold
		ok        bool
	}{
		{"shorter", g("pat", sidecar.LevelLook, 300*day), g("pat", sidecar.LevelLook, day), sidecar.Hold{Level: sidecar.LevelLook, Until: now.Add(300 * day)}, true},
		{"shorter_and_higher", g("pat", sidecar.LevelCC, 300*day), g("pat", sidecar.LevelFullAdmin, day), sidecar.Hold{Level: sidecar.LevelCC, Until: now.Add(300 * day)}, true},
		{"as_long", g("pat", sidecar.LevelLook, day), g("pat", sidecar.LevelCC, day), sidecar.Hold{}, false},
		{"longer", g("pat", sidecar.LevelLook, day), g("pat", sidecar.LevelLook, 2*day), sidecar.Hold{}, false},
		{"none_before", nil, g("pat", sidecar.LevelLook, day), sidecar.Hold{}, false},
		{"replaced_lapsed", g("pat", sidecar.LevelLook, 0), g("pat", sidecar.LevelLook, -time.Hour), sidecar.Hold{}, false},
		{"organisation", g("", sidecar.LevelLook, 300*day), g("", sidecar.LevelLook, day), sidecar.Hold{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if h, ok := sidecar.ReplacementHold(tc.old, tc.next, now); h != tc.want || ok != tc.ok {
				t.Fatalf("ReplacementHold = %+v, %v; want %+v, %v", h, ok, tc.want, tc.ok)
			}
		})
	}
}

// A session is bounded by the session limits in force now as well as by
// what it stored at its start: the shorter of each wins, so lowering a
// limit cuts sessions already started and raising one extends none.
func TestSessionWithinLimits(t *testing.T) {
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	stored := sidecar.Session{ID: "s1", StartedAt: start, ExpiresAt: start.Add(time.Hour), IdleTimeout: 15 * time.Minute}
	consentCapped := stored
	consentCapped.ExpiresAt, consentCapped.ConsentExpiresAt = start.Add(30*time.Minute), start.Add(30*time.Minute)
	ended := stored
	ended.EndedAt, ended.EndedBy, ended.EndReason = start.Add(time.Minute), "alice", sidecar.EndEnded
	noIdle := sidecar.Session{ID: "s2", StartedAt: start, ExpiresAt: start.Add(time.Hour)}
	const m = time.Minute
	cases := []struct {
		name     string
		s        sidecar.Session
		l        sidecar.SessionLimits
		seen, at time.Duration // last used, and now, after the start
		expires  time.Duration
		idle     time.Duration
		endState string
	}{
		{"no_limits", stored, sidecar.SessionLimits{}, 0, 20 * m, time.Hour, 15 * m, sidecar.EndIdle},
		{"lowered_max_session", stored, sidecar.SessionLimits{MaxSession: 10 * m}, 10 * m, 11 * m, 10 * m, 15 * m, sidecar.EndExpired},
		{"within_lowered_max_session", stored, sidecar.SessionLimits{MaxSession: 10 * m}, 8 * m, 9 * m, 10 * m, 15 * m, ""},
		{"raised_limits", stored, sidecar.SessionLimits{MaxSession: 8 * time.Hour, IdleTimeout: 8 * time.Hour}, 50 * m, 61 * m, time.Hour, 15 * m, sidecar.EndExpired},
		{"raised_idle_timeout", stored, sidecar.SessionLimits{MaxSession: time.Hour, IdleTimeout: 8 * time.Hour}, 0, 16 * m, time.Hour, 15 * m, sidecar.EndIdle},
		{"lowered_idle_timeout", stored, sidecar.SessionLimits{MaxSession: time.Hour, IdleTimeout: 5 * m}, 0, 6 * m, time.Hour, 5 * m, sidecar.EndIdle},
		{"idle_timeout_now_none", stored, sidecar.SessionLimits{MaxSession: time.Hour}, 0, 16 * m, time.Hour, 15 * m, sidecar.EndIdle},
		{"idle_timeout_stored_none", noIdle, sidecar.SessionLimits{IdleTimeout: 5 * m}, 0, 6 * m, time.Hour, 5 * m, sidecar.EndIdle},
		{"limit_before_consent", consentCapped, sidecar.SessionLimits{MaxSession: 10 * m}, 9 * m, 10 * m, 10 * m, 15 * m, sidecar.EndExpired},
		{"consent_before_limit", consentCapped, sidecar.SessionLimits{MaxSession: 40 * m}, 29 * m, 30 * m, 30 * m, 15 * m, sidecar.EndConsentExpired},
		{"ended_as_it_ended", ended, sidecar.SessionLimits{MaxSession: time.Second, IdleTimeout: time.Second}, 0, 2 * m, time.Hour, 15 * m, sidecar.EndEnded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			s.LastSeen = start.Add(tc.seen)
			b := s.Within(tc.l)
			now := start.Add(tc.at)
			if !b.ExpiresAt.Equal(start.Add(tc.expires)) || b.IdleTimeout != tc.idle || b.EndState(now) != tc.endState ||
				s.LiveWithin(now, tc.l) != (tc.endState == "") {
				t.Fatalf("within %+v: expires %s, idle %s, state %q; want %s, %s, %q",
					tc.l, b.ExpiresAt.Sub(start), b.IdleTimeout, b.EndState(now), tc.expires, tc.idle, tc.endState)
			}
		})
	}
}
