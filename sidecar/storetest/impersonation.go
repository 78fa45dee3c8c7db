package storetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// codeOf is the redeem code hash begin gives session id.
func codeOf(id string) string { return "code-" + id }

// begin starts s with StartSession after putting a profile and a consent
// in place when the customer has none; its redeem code is codeOf(s.ID).
func begin(e *env, s *sidecar.Session) error {
	if _, err := e.s.GetCustomer(e.ctx, s.Customer); sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		if _, err := e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: s.Customer}, sidecar.Protection{}); err != nil {
			return err
		}
	}
	if c, err := e.s.GetConsent(e.ctx, s.Customer); !c.Granted(e.now()) || err != nil {
		if _, err := e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: s.Customer, Allowed: true, SetBy: s.Customer, SetAt: e.now()}); err != nil {
			return err
		}
	}
	_, err := e.s.StartSession(e.ctx, sidecar.SessionStart{Session: s, CodeHash: codeOf(s.ID), CodeExpiresAt: e.now().Add(30 * time.Second)})
	return err
}

// redeem uses the redeem code begin gave session id, with token hash h.
func redeem(e *env, id, h string) (*sidecar.Session, error) {
	return e.s.RedeemSession(e.ctx, codeOf(id), h, "shop.example.com", "", sidecar.SessionLimits{})
}

func ignore[T any](v T, err error) error { return ErrOf(v, err) }

// ErrOf is the error of a call whose other result the caller does not
// need: must(ErrOf(store.PutShare(ctx, sh))).
func ErrOf[T any](_ T, err error) error { return err }

// mustEnd fails on the error of a call that also returns ended sessions.
func mustEnd(t *testing.T) func([]sidecar.Session, error) {
	return func(_ []sidecar.Session, err error) {
		t.Helper()
		must(t, err)
	}
}

func testStartRules(t *testing.T, newEnv func(*testing.T) *env) {
	allowed := func(e *env, c string) *sidecar.Consent {
		return &sidecar.Consent{Customer: c, Allowed: true, SetBy: c, SetAt: e.now()}
	}
	cases := []struct {
		name    string
		setup   func(e *env)
		start   func(st *sidecar.SessionStart)
		code    string
		message string
	}{
		{"unknown_customer", func(e *env) {}, nil, sidecar.ENOTFOUND, ""},
		{"protected_profile", func(e *env) {
			must(e.t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1", Protected: true}, sidecar.Protection{})))
			mustEnd(e.t)(e.s.SetConsent(e.ctx, allowed(e, "c1")))
		}, nil, sidecar.EFORBIDDEN, "customer_protected"},
		{"protected_role", func(e *env) {
			must(e.t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1", Roles: []string{"shopper", "admin"}}, sidecar.Protection{})))
			mustEnd(e.t)(e.s.SetConsent(e.ctx, allowed(e, "c1")))
		}, func(st *sidecar.SessionStart) { st.ProtectedRoles = []string{"staff", "admin"} }, sidecar.EFORBIDDEN, "customer_protected"},
		{"protected_customer_in_data", func(e *env) {
			must(e.t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1"}, sidecar.Protection{})))
			mustEnd(e.t)(e.s.SetConsent(e.ctx, allowed(e, "c1")))
		}, func(st *sidecar.SessionStart) { st.ProtectedCustomers = []string{"c1"} }, sidecar.EFORBIDDEN, "customer_protected"},
		{"known_staff", func(e *env) {
			must(e.t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1"}, sidecar.Protection{})))
			mustEnd(e.t)(e.s.SetConsent(e.ctx, allowed(e, "c1")))
			mustEnd(e.t)(e.s.MarkStaff(e.ctx, "c1"))
		}, nil, sidecar.EFORBIDDEN, "customer_protected"},
		{"no_consent", func(e *env) {
			must(e.t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1"}, sidecar.Protection{})))
		}, nil, sidecar.EFORBIDDEN, "consent_required"},
		{"consent_withdrawn", func(e *env) {
			must(e.t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1"}, sidecar.Protection{})))
			mustEnd(e.t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c1", SetBy: "c1", SetAt: e.now()}))
		}, nil, sidecar.EFORBIDDEN, "consent_required"},
		{"consent_narrowed_since_read", func(e *env) {
			must(e.t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1"}, sidecar.Protection{})))
			c := allowed(e, "c1")
			c.ExpiresAt = e.now().Add(10 * time.Minute)
			mustEnd(e.t)(e.s.SetConsent(e.ctx, c))
		}, nil, sidecar.ECONFLICT, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.setup(e)
			st := sidecar.SessionStart{Session: newSession(e, "s1", "alice", "c1"), CodeHash: codeOf("s1"),
				CodeExpiresAt: e.now().Add(30 * time.Second)}
			if tc.start != nil {
				tc.start(&st)
			}
			_, err := e.s.StartSession(e.ctx, st)
			wantCode(t, err, tc.code)
			if tc.message != "" && err.(*sidecar.Error).Message != tc.message {
				t.Fatalf("refused with %v, want %s", err, tc.message)
			}
			_, err = e.s.GetSession(e.ctx, "s1")
			wantCode(t, err, sidecar.ENOTFOUND)
			_, err = redeem(e, "s1", "h1")
			wantCode(t, err, sidecar.ENOTFOUND) // no code left behind either
		})
	}
	t.Run("replace_live_ends_the_actors_other_sessions", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1")))
		must(t, ignore(redeem(e, "s1", "h1")))
		must(t, begin(e, newSession(e, "s2", "bob", "c1")))
		must(t, begin(e, newSession(e, "s3", "alice", "c2"))) // not replacing: two live
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c3"}, sidecar.Protection{})))
		mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c3", Allowed: true, SetBy: "c3", SetAt: e.now()}))
		e.clock.Advance(time.Minute)
		replaced, err := e.s.StartSession(e.ctx, sidecar.SessionStart{Session: newSession(e, "s4", "alice", "c3"),
			CodeHash: codeOf("s4"), CodeExpiresAt: e.now().Add(30 * time.Second), ReplaceLive: true})
		must(t, err)
		slices.SortFunc(replaced, func(a, b sidecar.Session) int { return strings.Compare(a.ID, b.ID) })
		if !slices.Equal(sessionIDs(replaced), []string{"s1", "s3"}) {
			t.Fatalf("replaced %v, want s1 s3", sessionIDs(replaced))
		}
		for _, r := range replaced {
			if r.EndReason != sidecar.EndReplaced || r.EndedBy != "alice" || !r.EndedAt.Equal(e.now()) {
				t.Fatalf("replaced session %+v", r)
			}
		}
		live, _, err := e.s.ListSessions(e.ctx, sidecar.SessionFilter{LiveOnly: true})
		must(t, err)
		if !slices.Equal(sessionIDs(live), []string{"s4", "s2"}) {
			t.Fatalf("live %v, want s4 s2", sessionIDs(live))
		}
		byTok, err := e.s.SessionByToken(e.ctx, "h1")
		must(t, err)
		if byTok.EndState(e.now()) != sidecar.EndReplaced {
			t.Fatalf("replaced cookie reads %q", byTok.EndState(e.now()))
		}
	})
	// A session that lapsed without anyone ending it is ended by the start
	// too, with its lapse, as the sweep would: passed over, it would be one
	// last-seen write away from a second live session of the actor.
	t.Run("replace_live_ends_the_actors_lapsed_sessions_too", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "idle", "alice", "c1"))) // idle after 15 minutes
		must(t, ignore(redeem(e, "idle", "h-idle")))
		short := newSession(e, "short", "alice", "c2")
		short.ExpiresAt, short.IdleTimeout = e.now().Add(5*time.Minute), 0
		must(t, begin(e, short))
		must(t, ignore(redeem(e, "short", "h-short")))
		must(t, begin(e, newSession(e, "done", "alice", "c3")))
		_, err := e.s.EndSession(e.ctx, "done", "alice", sidecar.EndEnded, e.now(), sidecar.SessionLimits{})
		must(t, err)
		must(t, begin(e, newSession(e, "bobs", "bob", "c1"))) // idle too, but not alice's
		e.clock.Advance(10 * time.Minute)
		must(t, begin(e, newSession(e, "recent", "alice", "c2")))
		must(t, ignore(redeem(e, "recent", "h-recent")))
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c4"}, sidecar.Protection{})))
		mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c4", Allowed: true, SetBy: "c4", SetAt: e.now()}))
		e.clock.Advance(6 * time.Minute)
		keys := subscribeKeys(t, e)
		ended, err := e.s.StartSession(e.ctx, sidecar.SessionStart{Session: newSession(e, "new", "alice", "c4"),
			CodeHash: codeOf("new"), CodeExpiresAt: e.now().Add(30 * time.Second), ReplaceLive: true})
		must(t, err)
		slices.SortFunc(ended, func(a, b sidecar.Session) int { return strings.Compare(a.ID, b.ID) })
		want := []struct{ id, by, reason string }{
			{"idle", sidecar.SweepActor, sidecar.EndIdle},
			{"recent", "alice", sidecar.EndReplaced},
			{"short", sidecar.SweepActor, sidecar.EndExpired},
		}
		if len(ended) != len(want) {
			t.Fatalf("the start ended %v, want idle recent short", sessionIDs(ended))
		}
		for i, w := range want {
			got := ended[i]
			if got.ID != w.id || got.EndedBy != w.by || got.EndReason != w.reason || !got.EndedAt.Equal(e.now()) {
				t.Fatalf("ended %+v, want %s ended by %s as %s", got, w.id, w.by, w.reason)
			}
			stored, err := e.s.GetSession(e.ctx, w.id)
			must(t, err)
			if stored.EndReason != w.reason || stored.EndedBy != w.by {
				t.Fatalf("stored %s: %+v", w.id, stored)
			}
		}
		waitKey(t, keys, sidecar.SessionKey("h-idle"), sidecar.SessionKey("h-short"), sidecar.SessionKey("h-recent"))
		if done, _ := e.s.GetSession(e.ctx, "done"); done.EndReason != sidecar.EndEnded || done.EndedBy != "alice" {
			t.Fatalf("an ended session was ended again: %+v", done)
		}
		// Nothing of alice's is left for the sweep, and nothing comes back.
		swept, err := e.s.EndLapsedSessions(e.ctx, e.now(), sidecar.SessionLimits{})
		must(t, err)
		if !slices.Equal(sessionIDs(swept), []string{"bobs"}) {
			t.Fatalf("the sweep after the start ended %v, want only bob's", sessionIDs(swept))
		}
		if state, _ := sidecar.SessionOverState(e.s.TouchSession(e.ctx, "idle", e.now())); state != sidecar.EndIdle {
			t.Fatalf("touch of the lapsed session after the start: state %q, want refused as idle", state)
		}
		live, _, err := e.s.ListSessions(e.ctx, sidecar.SessionFilter{Actor: "alice", LiveOnly: true})
		must(t, err)
		if !slices.Equal(sessionIDs(live), []string{"new"}) {
			t.Fatalf("alice's live sessions %v, want only new", sessionIDs(live))
		}
	})
}

func testConsentEndsSessions(t *testing.T, newEnv func(*testing.T) *env) {
	setup := func(t *testing.T) *env {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1"))) // ends in 1h
		must(t, ignore(redeem(e, "s1", "h1")))
		must(t, begin(e, newSession(e, "s2", "bob", "c2")))
		e.clock.Advance(time.Minute)
		return e
	}
	cases := []struct {
		name    string
		consent func(e *env) *sidecar.Consent
		ended   []string
	}{
		{"withdrawn", func(e *env) *sidecar.Consent { return &sidecar.Consent{Allowed: false} }, []string{"s1"}},
		{"narrowed_before_the_session_end", func(e *env) *sidecar.Consent {
			return &sidecar.Consent{Allowed: true, ExpiresAt: e.now().Add(4 * time.Second)}
		}, []string{"s1"}},
		{"expiry_after_the_session_end", func(e *env) *sidecar.Consent {
			return &sidecar.Consent{Allowed: true, ExpiresAt: e.now().Add(2 * time.Hour)}
		}, nil},
		{"granted_again", func(e *env) *sidecar.Consent { return &sidecar.Consent{Allowed: true} }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t)
			c := tc.consent(e)
			c.Customer, c.SetBy, c.SetAt = "c1", "c1", e.now()
			ended, err := e.s.SetConsent(e.ctx, c)
			must(t, err)
			if !slices.Equal(sessionIDs(ended), tc.ended) {
				t.Fatalf("ended %v, want %v", sessionIDs(ended), tc.ended)
			}
			s1, err := e.s.SessionByToken(e.ctx, "h1")
			must(t, err)
			if want := len(tc.ended) == 0; s1.Live(e.now()) != want {
				t.Fatalf("s1 live = %v, want %v (%+v)", !want, want, s1)
			}
			if len(tc.ended) > 0 && (s1.EndReason != sidecar.EndConsentWithdrawn || s1.EndedBy != "c1") {
				t.Fatalf("s1 ended as %q by %q", s1.EndReason, s1.EndedBy)
			}
			s2, err := e.s.GetSession(e.ctx, "s2")
			must(t, err)
			if !s2.Live(e.now()) {
				t.Fatal("another customer's session ended")
			}
		})
	}
	// A session capped at the expiry of the consent it started under
	// keeps its expiry when a later consent still covers it, and then
	// reaches it as expired, not as consent_expired: only a consent that
	// ends with it ends it as consent_expired.
	for _, tc := range []struct {
		name  string
		until time.Duration // the later consent's expiry, from the start (0: none)
		want  string
	}{
		{"consent_extended_without_expiry", 0, sidecar.EndExpired},
		{"consent_extended_past_the_session", 3 * time.Hour, sidecar.EndExpired},
		{"consent_set_again_to_the_session_end", 20 * time.Minute, sidecar.EndConsentExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			start := e.now()
			capped := start.Add(20 * time.Minute)
			mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c1", Allowed: true, ExpiresAt: capped, SetBy: "c1", SetAt: start}))
			s := newSession(e, "s1", "alice", "c1")
			s.ExpiresAt, s.ConsentExpiresAt, s.IdleTimeout = capped, capped, 0
			must(t, begin(e, s))
			e.clock.Advance(time.Minute)
			later := &sidecar.Consent{Customer: "c1", Allowed: true, SetBy: "c1", SetAt: e.now()}
			if tc.until != 0 {
				later.ExpiresAt = start.Add(tc.until)
			}
			ended, err := e.s.SetConsent(e.ctx, later)
			must(t, err)
			if len(ended) != 0 {
				t.Fatalf("the later consent ended %v; it covers s1", sessionIDs(ended))
			}
			e.clock.Advance(20 * time.Minute)
			got, err := e.s.GetSession(e.ctx, "s1")
			must(t, err)
			if !got.ExpiresAt.Equal(capped) || got.EndState(e.now()) != tc.want {
				t.Fatalf("past its expiry s1 = %+v reads %q; want its expiry kept and %q", got, got.EndState(e.now()), tc.want)
			}
			swept, err := e.s.EndLapsedSessions(e.ctx, e.now(), sidecar.SessionLimits{})
			must(t, err)
			if len(swept) != 1 || swept[0].EndReason != tc.want {
				t.Fatalf("swept %+v, want s1 ended as %q", swept, tc.want)
			}
		})
	}
}

// Race test sizes: rounds × goroutines per test.
const (
	raceRounds     = 20
	raceMaxRounds  = 200
	raceGoroutines = 12
)

func testImpersonationRaces(t *testing.T, newEnv func(*testing.T) *env) {
	t.Run("concurrent_starts_by_one_staff_member_leave_one_live", func(t *testing.T) {
		e := newEnv(t)
		for i := range 4 {
			c := fmt.Sprintf("c%d", i)
			must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: c}, sidecar.Protection{})))
			mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: c, Allowed: true, SetBy: c, SetAt: e.now()}))
		}
		maxLive, started := 0, 0
		for round := range raceRounds {
			var wg sync.WaitGroup
			var mu sync.Mutex
			stop := make(chan struct{})
			observed := make(chan int, 1)
			go func() { // watches the invariant while the starts run
				most := 0
				for {
					// One page holds every session of the test, so the store
					// reads them in one snapshot rather than page by page.
					live, _, err := e.s.ListSessions(e.ctx, sidecar.SessionFilter{Actor: "alice", LiveOnly: true,
						Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
					if err == nil {
						most = max(most, len(live))
					}
					select {
					case <-stop:
						observed <- most
						return
					default:
					}
				}
			}()
			for g := range raceGoroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					id := fmt.Sprintf("r%d-g%d", round, g)
					s := newSession(e, id, "alice", fmt.Sprintf("c%d", g%4))
					_, err := e.s.StartSession(e.ctx, sidecar.SessionStart{Session: s, CodeHash: codeOf(id),
						CodeExpiresAt: e.now().Add(30 * time.Second), ReplaceLive: true})
					switch sidecar.ErrorCode(err) {
					case "":
						mu.Lock()
						started++
						mu.Unlock()
					case sidecar.ECONFLICT: // gave up under contention: refused, never half-done
					default:
						t.Errorf("start: %v", err)
					}
				}()
			}
			wg.Wait()
			close(stop)
			maxLive = max(maxLive, <-observed)
			live, _, err := e.s.ListSessions(e.ctx, sidecar.SessionFilter{Actor: "alice", LiveOnly: true})
			must(t, err)
			if len(live) != 1 {
				t.Fatalf("round %d: %d live sessions of one staff member after concurrent starts: %v", round, len(live), sessionIDs(live))
			}
			maxLive = max(maxLive, len(live))
		}
		if maxLive > 1 {
			t.Fatalf("observed %d live sessions of one staff member", maxLive)
		}
		t.Logf("%d rounds × %d goroutines: %d starts succeeded, at most %d live session observed", raceRounds, raceGoroutines, started, maxLive)
	})
	// Starts race a change that narrows access to their customer: after
	// each round no live session is left, and every start that won was
	// ended by the change.
	narrowings := []struct {
		name   string
		narrow func(e *env, customer string) error
		reason string
	}{
		{"withdrawal", func(e *env, c string) error {
			return ignore(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: c, SetBy: c, SetAt: e.now()}))
		}, sidecar.EndConsentWithdrawn},
		{"profile_protected", func(e *env, c string) error {
			return ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: c, Protected: true}, sidecar.Protection{}))
		}, sidecar.EndCustomerProtected},
		{"protected_role", func(e *env, c string) error {
			return ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: c, Roles: []string{"admin"}}, sidecar.Protection{Roles: []string{"admin"}}))
		}, sidecar.EndCustomerProtected},
		{"staff_mark", func(e *env, c string) error { return ignore(e.s.MarkStaff(e.ctx, c)) }, sidecar.EndCustomerProtected},
		{"profile_deleted", func(e *env, c string) error { return ignore(e.s.DeleteCustomer(e.ctx, c, "sync")) }, sidecar.EndCustomerDeleted},
	}
	for _, n := range narrowings {
		t.Run("starts_racing_a_"+n.name+"_leave_none_live", func(t *testing.T) {
			e := newEnv(t)
			// Which side wins a round is up to the scheduler: on a loaded
			// machine the change can run before every start. Rounds go on
			// past raceRounds until both outcomes were seen, so the invariant
			// is checked under a real interleaving; never seeing one fails.
			startedBefore, refusedAfter, rounds := 0, 0, 0
			for round := 0; round < raceRounds || (startedBefore == 0 || refusedAfter == 0) && round < raceMaxRounds; round++ {
				rounds++
				c := fmt.Sprintf("c%d", round) // a fresh customer: a staff mark cannot be undone
				must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: c}, sidecar.Protection{})))
				mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: c, Allowed: true, SetBy: c, SetAt: e.now()}))
				var wg sync.WaitGroup
				var mu sync.Mutex
				var started []string
				for g := range raceGoroutines {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if g == raceGoroutines/2 {
							if err := n.narrow(e, c); err != nil {
								t.Errorf("%s: %v", n.name, err)
							}
							return
						}
						id := fmt.Sprintf("r%d-g%d", round, g)
						_, err := e.s.StartSession(e.ctx, sidecar.SessionStart{Session: newSession(e, id, fmt.Sprintf("staff%d", g), c),
							CodeHash: codeOf(id), CodeExpiresAt: e.now().Add(30 * time.Second), ReplaceLive: true,
							ProtectedRoles: []string{"admin"}})
						mu.Lock()
						defer mu.Unlock()
						switch sidecar.ErrorCode(err) {
						case "":
							started = append(started, id)
						case sidecar.EFORBIDDEN, sidecar.ECONFLICT, sidecar.ENOTFOUND: // ENOTFOUND: no profile
							refusedAfter++
						default:
							t.Errorf("start: %v", err)
						}
					}()
				}
				wg.Wait()
				live, _, err := e.s.ListSessions(e.ctx, sidecar.SessionFilter{Customer: c, LiveOnly: true})
				must(t, err)
				if len(live) != 0 {
					t.Fatalf("round %d: live sessions after the %s: %v", round, n.name, sessionIDs(live))
				}
				for _, id := range started { // every start that won ended with the change
					s, err := e.s.GetSession(e.ctx, id)
					must(t, err)
					if s.EndReason != n.reason {
						t.Fatalf("round %d: %s ended as %q, want %q", round, id, s.EndReason, n.reason)
					}
				}
				startedBefore += len(started)
			}
			if startedBefore == 0 || refusedAfter == 0 {
				t.Fatalf("no interleaving exercised in %d rounds: %d starts won, %d refused", rounds, startedBefore, refusedAfter)
			}
			t.Logf("%d rounds × %d goroutines: %d starts before the %s (all ended by it), %d refused", rounds, raceGoroutines, startedBefore, n.name, refusedAfter)
		})
	}
}

// sweepConcurrently runs six sweepers at once and returns all they ended.
func sweepConcurrently(t *testing.T, sweep func() ([]sidecar.Session, error)) []sidecar.Session {
	t.Helper()
	var mu sync.Mutex
	var all []sidecar.Session
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := sweep()
			if err != nil {
				t.Errorf("sweep: %v", err)
			}
			mu.Lock()
			all = append(all, got...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all
}

// SessionSetup is what StartRedeemed needs of a store.
type SessionSetup interface {
	sidecar.CustomerStore
	sidecar.ConsentStore
	sidecar.SessionStore
}

// StartRedeemed stores ss as a live session redeemed with tokenHash, the
// way the lifecycle does: it puts a profile and a lasting consent in place
// when the customer has none, starts ss and redeems its code.
func StartRedeemed(ctx context.Context, s SessionSetup, ss *sidecar.Session, tokenHash string) error {
	if _, err := s.GetCustomer(ctx, ss.Customer); sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		if _, err := s.PutCustomer(ctx, &sidecar.Customer{ID: ss.Customer, Name: ss.CustomerName}, sidecar.Protection{}); err != nil {
			return err
		}
	}
	if _, err := s.GetConsent(ctx, ss.Customer); sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		c := &sidecar.Consent{Customer: ss.Customer, Allowed: true, ExpiresAt: ss.ConsentExpiresAt, SetBy: ss.Customer, SetAt: ss.StartedAt}
		if _, err := s.SetConsent(ctx, c); err != nil {
			return err
		}
	}
	code := "code-" + ss.ID
	if _, err := s.StartSession(ctx, sidecar.SessionStart{Session: ss, CodeHash: code, CodeExpiresAt: ss.StartedAt.Add(30 * time.Second)}); err != nil {
		return err
	}
	_, err := s.RedeemSession(ctx, code, tokenHash, ss.Host, "", sidecar.SessionLimits{})
	return err
}

func testSweep(t *testing.T, newEnv func(*testing.T) *env) {
	t.Run("lapsed_sessions_end_once_across_sweepers", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "idle", "alice", "c1"))) // idle after 15 minutes
		must(t, begin(e, newSession(e, "busy", "bob", "c2")))
		must(t, begin(e, newSession(e, "done", "carol", "c3")))
		_, err := e.s.EndSession(e.ctx, "done", "carol", sidecar.EndEnded, e.now(), sidecar.SessionLimits{})
		must(t, err)
		e.clock.Advance(10 * time.Minute)
		must(t, e.s.TouchSession(e.ctx, "busy", e.now()))
		none, err := e.s.EndLapsedSessions(e.ctx, e.now(), sidecar.SessionLimits{})
		must(t, err)
		if len(none) != 0 {
			t.Fatalf("ended before anything lapsed: %v", sessionIDs(none))
		}
		e.clock.Advance(6 * time.Minute)
		all := sweepConcurrently(t, func() ([]sidecar.Session, error) {
			return e.s.EndLapsedSessions(e.ctx, e.now(), sidecar.SessionLimits{})
		})
		if len(all) != 1 || all[0].ID != "idle" || all[0].EndReason != sidecar.EndIdle || all[0].EndedBy != sidecar.SweepActor {
			t.Fatalf("six sweepers ended %+v, want idle once", all)
		}
		s, err := e.s.GetSession(e.ctx, "idle")
		must(t, err)
		if s.EndReason != sidecar.EndIdle || s.EndedAt.IsZero() {
			t.Fatalf("stored %+v", s)
		}
	})
	t.Run("lapsed_consents_are_taken_once", func(t *testing.T) {
		e := newEnv(t)
		until := e.now().Add(time.Hour)
		mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c1", Allowed: true, ExpiresAt: until, SetBy: "c1", SetAt: e.now()}))
		mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c2", Allowed: true, ExpiresAt: until, SetBy: "c2", SetAt: e.now()}))
		mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c2", Allowed: true, SetBy: "c2", SetAt: e.now()})) // now without expiry
		got, err := e.s.TakeLapsedConsents(e.ctx, e.now())
		must(t, err)
		if len(got) != 0 {
			t.Fatalf("lapsed before the expiry: %+v", got)
		}
		e.clock.Advance(time.Hour)
		got, err = e.s.TakeLapsedConsents(e.ctx, e.now())
		must(t, err)
		if len(got) != 1 || got[0].Customer != "c1" || !got[0].ExpiresAt.Equal(until) {
			t.Fatalf("lapsed %+v, want c1 at %v", got, until)
		}
		again, err := e.s.TakeLapsedConsents(e.ctx, e.now())
		must(t, err)
		if len(again) != 0 {
			t.Fatalf("taken twice: %+v", again)
		}
	})
	// What a take took is kept, as taken at its now, for
	// sidecar.AppendOnceWindow: a sweep whose take lost its reply finds
	// there the lapses it took and never recorded.
	t.Run("lapsed_consents_taken_are_kept_for_the_once_window", func(t *testing.T) {
		e := newEnv(t)
		start := e.now()
		for _, c := range []string{"c1", "c2"} {
			mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: c, Allowed: true, ExpiresAt: start.Add(10 * time.Minute), SetBy: c, SetAt: start}))
		}
		mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c3", Allowed: true, ExpiresAt: start.Add(40 * time.Minute), SetBy: "c3", SetAt: start}))
		kept, err := e.s.LapsedConsentsTaken(e.ctx, start)
		must(t, err)
		if len(kept) != 0 {
			t.Fatalf("nothing taken; kept %+v", kept)
		}
		e.clock.Advance(10 * time.Minute)
		first := e.now()
		took, err := e.s.TakeLapsedConsents(e.ctx, first)
		must(t, err)
		byCustomer := func(cs []sidecar.Consent) []sidecar.Consent {
			return slices.SortedFunc(slices.Values(cs), func(a, b sidecar.Consent) int { return strings.Compare(a.Customer, b.Customer) })
		}
		took = byCustomer(took)
		kept, err = e.s.LapsedConsentsTaken(e.ctx, first)
		must(t, err)
		if len(took) != 2 || !slices.EqualFunc(byCustomer(kept), took, sameLapse) {
			t.Fatalf("took %+v, kept %+v; want c1 and c2, kept as taken", took, kept)
		}
		if later, err := e.s.LapsedConsentsTaken(e.ctx, first.Add(time.Millisecond)); err != nil || len(later) != 0 {
			t.Fatalf("taken since after the take: %+v, %v; want none", later, err)
		}
		e.clock.Advance(30 * time.Minute)
		second := e.now()
		took3, err := e.s.TakeLapsedConsents(e.ctx, second)
		must(t, err)
		if len(took3) != 1 || took3[0].Customer != "c3" {
			t.Fatalf("took %+v, want c3", took3)
		}
		kept, err = e.s.LapsedConsentsTaken(e.ctx, start)
		must(t, err)
		if want := append(slices.Clone(took), took3[0]); len(kept) != 3 || !slices.EqualFunc(byCustomer(kept[:2]), want[:2], sameLapse) || !sameLapse(kept[2], want[2]) {
			t.Fatalf("kept %+v, want c1 and c2, then c3", kept)
		}
		if since, err := e.s.LapsedConsentsTaken(e.ctx, second); err != nil || len(since) != 1 || !sameLapse(since[0], took3[0]) {
			t.Fatalf("taken since the second take: %+v, %v; want c3", since, err)
		}
		// An hour after the first take, it is forgotten.
		e.clock.Advance(sidecar.AppendOnceWindow - 30*time.Minute)
		kept, err = e.s.LapsedConsentsTaken(e.ctx, start)
		must(t, err)
		if len(kept) != 1 || !sameLapse(kept[0], took3[0]) {
			t.Fatalf("an hour after the first take, kept %+v; want only c3", kept)
		}
	})
	// A consent that lapsed is replaced (given again, withdrawn, deleted
	// with its customer) before any sweep took its lapse: the write that
	// replaces it takes the lapse, kept as a take at its now, in the same
	// step, so the next sweep reads it back and it is recorded; no later
	// take returns it again. A consent replaced before it lapsed leaves
	// nothing.
	t.Run("a_lapse_is_taken_by_the_write_that_replaces_its_consent", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			replace func(e *env) error
		}{
			{"given_again_until_later", func(e *env) error {
				return ignore(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c1", Allowed: true, ExpiresAt: e.now().Add(time.Hour), SetBy: "c1", SetAt: e.now()}))
			}},
			{"given_again_without_expiry", func(e *env) error {
				return ignore(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c1", Allowed: true, SetBy: "c1", SetAt: e.now()}))
			}},
			{"withdrawn", func(e *env) error {
				return ignore(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c1", SetBy: "c1", SetAt: e.now()}))
			}},
			{"customer_deleted", func(e *env) error {
				_, err := e.s.DeleteCustomer(e.ctx, "c1", "sync")
				return err
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t)
				start := e.now()
				must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1"}, sidecar.Protection{})))
				until := start.Add(10 * time.Minute)
				mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c1", Allowed: true, ExpiresAt: until, SetBy: "c1", SetAt: start}))
				e.clock.Advance(5 * time.Minute)
				must(t, tc.replace(e)) // before the lapse: none
				mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c1", Allowed: true, ExpiresAt: until, SetBy: "c1", SetAt: e.now()}))
				e.clock.Advance(6 * time.Minute) // lapsed a minute ago
				if tc.name == "customer_deleted" {
					must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1"}, sidecar.Protection{})))
				}
				replaced := e.now()
				must(t, tc.replace(e))
				kept, err := e.peer.LapsedConsentsTaken(e.ctx, start)
				must(t, err)
				want := sidecar.Consent{Customer: "c1", Allowed: true, ExpiresAt: until}
				if len(kept) != 1 || !sameLapse(kept[0], want) {
					t.Fatalf("kept %+v, want the lapse at %v once", kept, until)
				}
				if since, err := e.peer.LapsedConsentsTaken(e.ctx, replaced); err != nil || len(since) != 1 {
					t.Fatalf("taken since the write that replaced it: %+v, %v; want it, as taken then", since, err)
				}
				took, err := e.s.TakeLapsedConsents(e.ctx, e.now())
				must(t, err)
				if len(took) != 0 {
					t.Fatalf("taken again by a sweep: %+v", took)
				}
				if tc.name != "given_again_until_later" {
					return
				}
				// The consent given again lapses in its turn.
				e.clock.Advance(time.Hour)
				took, err = e.s.TakeLapsedConsents(e.ctx, e.now())
				must(t, err)
				if len(took) != 1 || !took[0].ExpiresAt.Equal(replaced.Add(time.Hour)) {
					t.Fatalf("took %+v, want the consent given again, at its expiry", took)
				}
			})
		}
	})
}

// testConsentsSet: every consent setting is kept, as set, for
// sidecar.AppendOnceWindow past its setting, in the same atomic step that
// stores it, where any replica reads it back: its consent.changed event
// and audit entry are appended after it, and a process that stops (or a
// store that goes away) before they are leaves the customer untold.
func testConsentsSet(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	start := e.now()
	kept, err := e.peer.ConsentsSet(e.ctx, start)
	must(t, err)
	if len(kept) != 0 {
		t.Fatalf("nothing set; kept %+v", kept)
	}
	given := sidecar.Consent{Customer: "c1", Allowed: true, ExpiresAt: start.Add(2 * time.Hour), SetBy: "c1", SetAt: start}
	mustEnd(t)(e.s.SetConsent(e.ctx, &given))
	e.clock.Advance(10 * time.Minute)
	second := e.now()
	onBehalf := sidecar.Consent{Customer: "c2", Allowed: true, SetBy: "ops", SetAt: second}
	mustEnd(t)(e.s.SetConsent(e.ctx, &onBehalf))
	e.clock.Advance(time.Second)
	withdrawn := sidecar.Consent{Customer: "c1", SetBy: "c1", SetAt: e.now()}
	mustEnd(t)(e.s.SetConsent(e.ctx, &withdrawn))
	same := func(got []sidecar.Consent, want ...sidecar.Consent) bool {
		return slices.EqualFunc(got, want, func(a, b sidecar.Consent) bool {
			return a.Customer == b.Customer && a.Allowed == b.Allowed && a.ExpiresAt.Equal(b.ExpiresAt) && a.SetBy == b.SetBy && a.SetAt.Equal(b.SetAt)
		})
	}
	kept, err = e.peer.ConsentsSet(e.ctx, start)
	must(t, err)
	if !same(kept, given, onBehalf, withdrawn) {
		t.Fatalf("kept %+v, want c1's, c2's, then c1's withdrawal, as set", kept)
	}
	kept, err = e.peer.ConsentsSet(e.ctx, second)
	must(t, err)
	if !same(kept, onBehalf, withdrawn) {
		t.Fatalf("set since the second setting: %+v, want c2's, then c1's withdrawal", kept)
	}
	// An hour after the first setting it is forgotten.
	e.clock.Advance(sidecar.AppendOnceWindow - 10*time.Minute - time.Second)
	kept, err = e.peer.ConsentsSet(e.ctx, start)
	must(t, err)
	if !same(kept, onBehalf, withdrawn) {
		t.Fatalf("an hour after c1's first setting, kept %+v; want c2's, then c1's withdrawal", kept)
	}
}

// testSessionsEnded: every write that ends a session keeps its end, as
// ended, for sidecar.AppendOnceWindow, where any replica reads it back:
// a write whose reply was lost ended sessions and recorded nothing, and
// its caller may do something else than retry it.
func testSessionsEnded(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	start := e.now()
	for _, s := range [][2]string{{"s1", "c1"}, {"s2", "c2"}, {"s3", "c3"}, {"s4", "c4"}, {"s5", "c5"}} {
		must(t, begin(e, newSession(e, s[0], "staff-"+s[1], s[1]))) // expires in an hour
	}
	kept, err := e.peer.SessionsEnded(e.ctx, start)
	must(t, err)
	if len(kept) != 0 {
		t.Fatalf("nothing ended; kept %v", sessionIDs(kept))
	}
	_, err = e.s.EndSession(e.ctx, "s1", "staff-c1", sidecar.EndEnded, e.now(), sidecar.SessionLimits{})
	must(t, err)
	e.clock.Advance(10 * time.Minute)
	second := e.now()
	mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c2", SetBy: "c2", SetAt: second}))
	e.clock.Advance(time.Second)
	mustEnd(t)(e.s.MarkStaff(e.ctx, "c3"))
	type end struct{ id, by, reason string }
	ends := func(ss []sidecar.Session) []end {
		out := make([]end, len(ss))
		for i, s := range ss {
			out[i] = end{s.ID, s.EndedBy, s.EndReason}
		}
		return out
	}
	kept, err = e.peer.SessionsEnded(e.ctx, start)
	must(t, err)
	want := []end{{"s1", "staff-c1", sidecar.EndEnded}, {"s2", "c2", sidecar.EndConsentWithdrawn}, {"s3", sidecar.SweepActor, sidecar.EndCustomerProtected}}
	if !slices.Equal(ends(kept), want) {
		t.Fatalf("kept %+v, want %+v, in the order ended", ends(kept), want)
	}
	kept, err = e.peer.SessionsEnded(e.ctx, second)
	must(t, err)
	if !slices.Equal(ends(kept), want[1:]) {
		t.Fatalf("ended since the withdrawal: %+v, want %+v", ends(kept), want[1:])
	}
	// An hour after the first end it is forgotten; the sweep's ends are
	// kept as the others.
	e.clock.Advance(sidecar.AppendOnceWindow - 10*time.Minute - time.Second)
	swept, err := e.s.EndLapsedSessions(e.ctx, e.now(), sidecar.SessionLimits{})
	must(t, err)
	if ids := slices.Sorted(slices.Values(sessionIDs(swept))); !slices.Equal(ids, []string{"s4", "s5"}) {
		t.Fatalf("swept %v, want s4 and s5", ids)
	}
	kept, err = e.peer.SessionsEnded(e.ctx, start)
	must(t, err)
	if ids := sessionIDs(kept); len(ids) != 4 || !slices.Equal(ids[:2], []string{"s2", "s3"}) || !slices.Equal(slices.Sorted(slices.Values(ids[2:])), []string{"s4", "s5"}) {
		t.Fatalf("an hour after s1 ended, kept %v; want s2, s3, then s4 and s5", ids)
	}
	for _, s := range kept[2:] {
		if s.EndReason != sidecar.EndExpired || s.EndedBy != sidecar.SweepActor {
			t.Fatalf("kept %s as ended %q by %q, want expired by deputy", s.ID, s.EndReason, s.EndedBy)
		}
	}
}

// testSessionsStarted: every session start is kept, as the session now
// stands (ended or not), for sidecar.AppendOnceWindow past its start, in
// the same atomic step that stores the session, where any replica reads
// it back: the start's records are appended after it, and a process that
// stops (or a store that goes away) before they are leaves the session
// live with no record of its start; a sweep of any replica finds it
// there.
func testSessionsStarted(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	start := e.now()
	kept, err := e.peer.SessionsStarted(e.ctx, start)
	must(t, err)
	if len(kept) != 0 {
		t.Fatalf("nothing started; kept %v", sessionIDs(kept))
	}
	s1 := newSession(e, "s1", "staff-c1", "c1")
	must(t, begin(e, s1))
	e.clock.Advance(10 * time.Minute)
	second := e.now()
	must(t, begin(e, newSession(e, "s2", "staff-c2", "c2")))
	// A start refused (no consent) stores nothing and keeps nothing.
	_, err = e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c3"}, sidecar.Protection{})
	must(t, err)
	refused := newSession(e, "s3", "staff-c3", "c3")
	if _, err := e.s.StartSession(e.ctx, sidecar.SessionStart{Session: refused, CodeHash: codeOf("s3"), CodeExpiresAt: e.now().Add(30 * time.Second)}); err == nil {
		t.Fatal("a start without consent was stored")
	}
	_, err = e.s.EndSession(e.ctx, "s1", "staff-c1", sidecar.EndEnded, e.now(), sidecar.SessionLimits{})
	must(t, err)
	kept, err = e.peer.SessionsStarted(e.ctx, start)
	must(t, err)
	if ids := sessionIDs(kept); !slices.Equal(ids, []string{"s1", "s2"}) {
		t.Fatalf("kept %v, want s1 then s2, in the order started", ids)
	}
	if got := kept[0]; got.Actor != s1.Actor || got.Customer != s1.Customer || got.Reason != s1.Reason || got.Ticket != s1.Ticket ||
		!got.StartedAt.Equal(s1.StartedAt) || !got.ExpiresAt.Equal(s1.ExpiresAt) || got.EndReason != sidecar.EndEnded {
		t.Fatalf("kept s1 as %+v; want it as stored, ended since", got)
	}
	kept, err = e.peer.SessionsStarted(e.ctx, second)
	must(t, err)
	if ids := sessionIDs(kept); !slices.Equal(ids, []string{"s2"}) {
		t.Fatalf("started since the second start: %v, want s2", ids)
	}
	// An hour after the first start it is forgotten.
	e.clock.Advance(sidecar.AppendOnceWindow - 10*time.Minute)
	kept, err = e.peer.SessionsStarted(e.ctx, start)
	must(t, err)
	if ids := sessionIDs(kept); !slices.Equal(ids, []string{"s2"}) {
		t.Fatalf("an hour after s1 started, kept %v; want s2", ids)
	}
}

// testSessionsEndedAll: every start and end kept is returned, however
// many there are. A sweep reads back the starts and ends since its last
// one, and moves on: one left out of a read that stopped at a limit would
// never be recorded.
func testSessionsEndedAll(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	start := e.now()
	const n = 10*sidecar.MaxPageLimit + 1 // past a store's scan limit
	for i := range n {
		must(t, begin(e, newSession(e, fmt.Sprintf("s%05d", i), fmt.Sprintf("staff-%05d", i), "c1")))
	}
	started, err := e.peer.SessionsStarted(e.ctx, start)
	must(t, err)
	if len(started) != n {
		t.Fatalf("kept %d starts, want all %d", len(started), n)
	}
	e.clock.Advance(time.Hour) // every session has expired
	ended := 0
	for range 3 {
		swept, err := e.s.EndLapsedSessions(e.ctx, e.now(), sidecar.SessionLimits{})
		must(t, err)
		if ended += len(swept); len(swept) == 0 {
			break
		}
	}
	if ended != n {
		t.Fatalf("swept %d sessions, want %d", ended, n)
	}
	kept, err := e.peer.SessionsEnded(e.ctx, start)
	must(t, err)
	if len(kept) != n {
		t.Fatalf("kept %d ends, want all %d", len(kept), n)
	}
	seen := map[string]bool{}
	for _, s := range kept {
		seen[s.ID] = true
	}
	if len(seen) != n {
		t.Fatalf("kept %d distinct sessions of %d ends, want %d", len(seen), len(kept), n)
	}
}

// sameLapse reports whether a and b are the same consent lapse.
func sameLapse(a, b sidecar.Consent) bool {
	return a.Customer == b.Customer && a.Allowed == b.Allowed && a.ExpiresAt.Equal(b.ExpiresAt)
}
