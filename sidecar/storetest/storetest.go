// Package storetest is the contract every sidecar.Store implementation
// meets. Run it from an implementation's tests:
//
//	storetest.Run(t, func(t *testing.T, now sidecar.Clock) sidecar.Store {
//		return memory.New(memory.WithClock(now))
//	})
//
// Each case gets a fresh store wired to a clock the suite controls, so
// expiry is tested by moving the clock, not by waiting.
package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// Epoch is where every case's clock starts. It lies in the past: the
// Redis store takes and drops what is due at the earlier of its clock and
// Redis's own (real) clock, so behind the real clock a case's clock is
// the one that decides, as it does in the memory store.
var Epoch = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// Clock is a settable clock.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time; pass it as a sidecar.Clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// NewStore builds a fresh, empty store using now as its clock. The store
// is closed by the suite.
type NewStore func(t *testing.T, now sidecar.Clock) sidecar.Store

// NewReplicas builds two replicas of one fresh, empty state, both using
// now as their clock; an in-process store is its own only replica, and
// returns itself twice. The suite closes them.
type NewReplicas func(t *testing.T, now sidecar.Clock) (a, b sidecar.Store)

type env struct {
	t     *testing.T
	ctx   context.Context
	clock *Clock
	s     sidecar.Store
	peer  sidecar.Store // another replica on s's state, or s
}

func (e *env) now() time.Time { return e.clock.Now() }

// Run runs the whole contract on one replica.
func Run(t *testing.T, newStore NewStore) {
	RunReplicated(t, func(t *testing.T, now sidecar.Clock) (a, b sidecar.Store) {
		s := newStore(t, now)
		return s, s
	})
}

// RunReplicated runs the whole contract on replica a, and checks that a
// narrowing write on a holds on b too when it returns.
func RunReplicated(t *testing.T, newReplicas NewReplicas) {
	groups := []struct {
		name string
		fn   func(*testing.T, func(*testing.T) *env)
	}{
		{"customers", testCustomers},
		{"consent", testConsent},
		{"consent_budget", testConsentBudget},
		{"sessions", testSessions},
		{"session_log", testSessionLog},
		{"long_lists", testLongLists},
		{"cursors", testCursors},
		{"redeem_codes", testRedeemCodes},
		{"start_rules", testStartRules},
		{"consent_ends_sessions", testConsentEndsSessions},
		{"customer_state", testCustomerState},
		{"protection_ends_sessions", testProtectionEndsSessions},
		{"unpermitted_actors_end", testUnpermittedActorsEnd},
		{"impersonation_races", testImpersonationRaces},
		{"sweep", testSweep},
		{"sessions_started", testSessionsStarted},
		{"consents_set", testConsentsSet},
		{"sessions_ended", testSessionsEnded},
		{"sessions_ended_all", testSessionsEndedAll},
		{"session_limits", testSessionLimits},
		{"writer_ahead", testWriterAhead},
		{"access_requests", testRequests},
		{"grants", testGrants},
		{"partner_changes_kept", testPartnerChangesKept},
		{"requests_and_shares_kept", testRequestsAndSharesKept},
		{"shares", testShares},
		{"subscriptions", testSubscriptions},
		{"assignments", testAssignments},
		{"assignment_changes", testAssignmentChanges},
		{"assignment_writes_kept", testAssignmentWritesKept},
		{"assignment_bounds", testAssignmentBounds},
		{"events", testEvents},
		{"audit", testAudit},
		{"audit_trail", testAuditTrail},
		{"append_once", testAppendOnce},
		{"invalid_records", testInvalidRecords},
		{"invalidation", testInvalidation},
		{"ping", testPing},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			g.fn(t, func(t *testing.T) *env {
				t.Helper()
				c := NewClock(Epoch)
				s, peer := newReplicas(t, c.Now)
				t.Cleanup(func() {
					_ = s.Close()
					if peer != s {
						_ = peer.Close()
					}
				})
				return &env{t: t, ctx: context.Background(), clock: c, s: s, peer: peer}
			})
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := sidecar.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (%v), want %q", got, err, code)
	}
}

// ---- customers -------------------------------------------------------------

func testCustomers(t *testing.T, newEnv func(*testing.T) *env) {
	t.Run("put_get_update_delete", func(t *testing.T) {
		e := newEnv(t)
		c := &sidecar.Customer{ID: "c1", Name: "Ada Lovelace", Org: "acme", DefaultStoreView: "en",
			StoreViews: []string{"en", "fr"}, Protected: false, UpdatedAt: e.now()}
		must(t, ignore(e.s.PutCustomer(e.ctx, c, sidecar.Protection{})))
		got, err := e.s.GetCustomer(e.ctx, "c1")
		must(t, err)
		if got.Name != "Ada Lovelace" || got.Org != "acme" || !slices.Equal(got.StoreViews, []string{"en", "fr"}) ||
			!got.UpdatedAt.Equal(c.UpdatedAt) {
			t.Fatalf("got %+v", got)
		}
		c.Protected = true
		must(t, ignore(e.s.PutCustomer(e.ctx, c, sidecar.Protection{})))
		got, err = e.s.GetCustomer(e.ctx, "c1")
		must(t, err)
		if !got.Protected {
			t.Fatal("update did not replace the profile")
		}
		must(t, ignore(e.s.DeleteCustomer(e.ctx, "c1", "sync")))
		_, err = e.s.GetCustomer(e.ctx, "c1")
		wantCode(t, err, sidecar.ENOTFOUND)
		wantCode(t, ignore(e.s.DeleteCustomer(e.ctx, "c1", "sync")), sidecar.ENOTFOUND)
	})
	// A deleted profile no longer says whether the account is protected,
	// so its live sessions end with it, in the same step, and the
	// session log says why.
	t.Run("delete_ends_live_sessions", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, &sidecar.Session{ID: "s1", Actor: "alice", Customer: "c1", StartedAt: e.now(), ExpiresAt: e.now().Add(time.Hour)}))
		must(t, ignore(redeem(e, "s1", "h1")))
		must(t, begin(e, &sidecar.Session{ID: "s2", Actor: "bob", Customer: "c2", StartedAt: e.now(), ExpiresAt: e.now().Add(time.Hour)}))
		del, err := e.s.DeleteCustomer(e.ctx, "c1", "sync")
		must(t, err)
		if ended := del.Ended; len(ended) != 1 || ended[0].ID != "s1" || ended[0].EndReason != sidecar.EndCustomerDeleted || ended[0].EndedBy != "sync" {
			t.Fatalf("ended %+v, want s1 ended by sync as %s", del.Ended, sidecar.EndCustomerDeleted)
		}
		got, err := e.s.SessionByToken(e.ctx, "h1")
		must(t, err)
		if got.Live(e.now()) || got.EndReason != sidecar.EndCustomerDeleted || got.EndedBy != "sync" {
			t.Fatalf("session of the deleted customer: live %v, end reason %q by %q", got.Live(e.now()), got.EndReason, got.EndedBy)
		}
		if live, _, err := e.s.ListSessions(e.ctx, sidecar.SessionFilter{Customer: "c1", LiveOnly: true}); err != nil || len(live) != 0 {
			t.Fatalf("live sessions of the deleted customer: %v %v", live, err)
		}
		other, err := e.s.GetSession(e.ctx, "s2")
		must(t, err)
		if !other.Live(e.now()) {
			t.Fatal("another customer's session ended")
		}
	})
	// The consent belongs to the account deleted: it is withdrawn with the
	// profile, in the same step, so a profile synced later under the same
	// id starts without it. History keeps what the customer set and says
	// who withdrew it; the lapsing index forgets it, so its expiry is not
	// reported for an account that is gone.
	t.Run("delete_withdraws_consent", func(t *testing.T) {
		e := newEnv(t)
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1"}, sidecar.Protection{})))
		given := sidecar.Consent{Customer: "c1", Allowed: true, ExpiresAt: e.now().Add(time.Hour), SetBy: "c1", SetAt: e.now()}
		mustEnd(t)(e.s.SetConsent(e.ctx, &given))
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c2"}, sidecar.Protection{})))
		e.clock.Advance(time.Minute)
		deletedAt := e.now()
		// The withdrawal is returned, so the caller reports it as every
		// consent change is reported; nothing was given for c2.
		del, err := e.s.DeleteCustomer(e.ctx, "c1", "sync")
		must(t, err)
		if w := del.Withdrawn; w == nil || w.Customer != "c1" || w.Allowed || w.SetBy != "sync" || !w.SetAt.Equal(deletedAt) || w.Reason != sidecar.EndCustomerDeleted {
			t.Fatalf("withdrawn %+v, want c1's consent withdrawn by sync at %v", w, deletedAt)
		}
		del, err = e.s.DeleteCustomer(e.ctx, "c2", "sync")
		must(t, err)
		if del.Withdrawn != nil {
			t.Fatalf("withdrawn %+v for a customer who never consented", del.Withdrawn)
		}

		_, err = e.s.GetConsent(e.ctx, "c1")
		wantCode(t, err, sidecar.ENOTFOUND)
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1"}, sidecar.Protection{})))
		st, err := e.s.GetCustomerState(e.ctx, "c1")
		must(t, err)
		if st.Consent != nil {
			t.Fatalf("the re-created c1 has the deleted account's consent: %+v", st.Consent)
		}
		_, err = e.s.StartSession(e.ctx, sidecar.SessionStart{Session: newSession(e, "s1", "alice", "c1"),
			CodeHash: codeOf("s1"), CodeExpiresAt: e.now().Add(30 * time.Second)})
		wantCode(t, err, sidecar.EFORBIDDEN)

		h, _, err := e.s.ConsentHistory(e.ctx, "c1", sidecar.Page{})
		must(t, err)
		if len(h) != 2 || h[0].Allowed || h[0].SetBy != "sync" || !h[0].SetAt.Equal(deletedAt) || h[0].Reason != sidecar.EndCustomerDeleted ||
			!h[1].Allowed || h[1].Reason != "" || h[1].SetBy != "c1" || !h[1].ExpiresAt.Equal(given.ExpiresAt) {
			t.Fatalf("history %+v, want the withdrawal by sync at %v over c1's consent", h, deletedAt)
		}
		// Nothing was given for c2: nothing to withdraw.
		if h, _, err := e.s.ConsentHistory(e.ctx, "c2", sidecar.Page{}); err != nil || len(h) != 0 {
			t.Fatalf("history of a customer who never consented: %+v %v", h, err)
		}
		e.clock.Advance(2 * time.Hour)
		lapsed, err := e.s.TakeLapsedConsents(e.ctx, e.now())
		must(t, err)
		if len(lapsed) != 0 {
			t.Fatalf("lapsed %+v: the deleted account's consent reported as lapsing", lapsed)
		}
	})
	// A consent not in force when the profile goes (withdrawn, or past its
	// expiry) is not withdrawn again: no withdrawal to report, none added
	// to history.
	t.Run("delete_withdraws_only_consent_in_force", func(t *testing.T) {
		e := newEnv(t)
		for _, c := range []sidecar.Consent{
			{Customer: "c-withdrawn", SetBy: "c-withdrawn", SetAt: e.now()},
			{Customer: "c-expired", Allowed: true, ExpiresAt: e.now().Add(time.Minute), SetBy: "c-expired", SetAt: e.now()},
		} {
			must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: c.Customer}, sidecar.Protection{})))
			mustEnd(t)(e.s.SetConsent(e.ctx, &c))
		}
		e.clock.Advance(time.Minute)
		for _, id := range []string{"c-withdrawn", "c-expired"} {
			del, err := e.s.DeleteCustomer(e.ctx, id, "sync")
			must(t, err)
			if del.Withdrawn != nil {
				t.Fatalf("%s: withdrawn %+v, but no consent was in force", id, del.Withdrawn)
			}
			if h, _, err := e.s.ConsentHistory(e.ctx, id, sidecar.Page{}); err != nil || len(h) != 1 {
				t.Fatalf("%s: history %+v (%v), want only what the customer set", id, h, err)
			}
		}
	})
	// A deletion is kept, with who made it, when, and the withdrawal it
	// made, for sidecar.AppendOnceWindow: a retried delete finds there
	// the deletion its lost reply hid, which, having withdrawn no
	// consent, left nothing in the consent history.
	t.Run("deletion_kept_for_the_once_window", func(t *testing.T) {
		e := newEnv(t)
		kept := func(id string) []sidecar.CustomerDeletion {
			t.Helper()
			dels, err := e.s.CustomerDeletions(e.ctx, id)
			must(t, err)
			return dels
		}
		if dels := kept("c1"); len(dels) != 0 {
			t.Fatalf("c1 never deleted; kept %+v", dels)
		}
		for _, id := range []string{"c1", "c2"} {
			must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: id}, sidecar.Protection{})))
		}
		mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c2", Allowed: true, SetBy: "c2", SetAt: e.now()}))
		e.clock.Advance(time.Minute)
		first := e.now()
		del, err := e.s.DeleteCustomer(e.ctx, "c1", "sync")
		must(t, err)
		if del.By != "sync" || !del.At.Equal(first) || del.Withdrawn != nil {
			t.Fatalf("deletion %+v, want by sync at %v, nothing withdrawn", del, first)
		}
		e.clock.Advance(sidecar.AppendOnceWindow / 2)
		second := e.now()
		del, err = e.s.DeleteCustomer(e.ctx, "c2", "ops")
		must(t, err)
		if del.By != "ops" || !del.At.Equal(second) || del.Withdrawn == nil || !del.Withdrawn.SetAt.Equal(second) {
			t.Fatalf("deletion %+v, want by ops at %v, c2's consent withdrawn then", del, second)
		}
		if got := kept("c1"); len(got) != 1 || got[0].By != "sync" || !got[0].At.Equal(first) || got[0].Withdrawn != nil || len(got[0].Ended) != 0 {
			t.Fatalf("c1's deletions kept as %+v, want one by sync at %v, nothing withdrawn", got, first)
		}
		got := kept("c2")
		if len(got) != 1 {
			t.Fatalf("c2's deletions kept as %+v, want one", got)
		}
		if w := got[0].Withdrawn; got[0].By != "ops" || !got[0].At.Equal(second) || w == nil || w.Customer != "c2" || w.Allowed || w.SetBy != "ops" ||
			!w.SetAt.Equal(second) || w.Reason != sidecar.EndCustomerDeleted {
			t.Fatalf("c2's deletion kept as %+v (withdrawn %+v), want by ops at %v withdrawing c2's consent", got[0], got[0].Withdrawn, second)
		}
		// Still there when the profile is put again, and deleted again:
		// every deletion is kept, not only the last.
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c2"}, sidecar.Protection{})))
		if got := kept("c2"); len(got) != 1 {
			t.Fatalf("c2's deletions after c2 was put again: %+v, want one", got)
		}
		e.clock.Advance(time.Minute)
		third := e.now()
		must(t, ignore(e.s.DeleteCustomer(e.ctx, "c2", "sync")))
		if got := kept("c2"); len(got) != 2 || got[0].By != "ops" || !got[0].At.Equal(second) || got[1].By != "sync" || !got[1].At.Equal(third) || got[1].Withdrawn != nil {
			t.Fatalf("c2's deletions kept as %+v, want by ops at %v, then by sync at %v", got, second, third)
		}
		e.clock.Advance(sidecar.AppendOnceWindow/2 - time.Minute)
		if got := kept("c1"); len(got) != 0 {
			t.Fatalf("c1's deletion an hour after it: %+v, want none", got)
		}
		if got := kept("c2"); len(got) != 2 {
			t.Fatalf("c2's deletions half an hour after the first: %+v, want both", got)
		}
		e.clock.Advance(sidecar.AppendOnceWindow / 2)
		if got := kept("c2"); len(got) != 1 || !got[0].At.Equal(third) {
			t.Fatalf("c2's deletions an hour after the first: %+v, want the one at %v", got, third)
		}
	})
	t.Run("missing_id_rejected", func(t *testing.T) {
		e := newEnv(t)
		err := ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{Name: "x"}, sidecar.Protection{}))
		wantCode(t, err, sidecar.EINVALID)
		if sidecar.ErrorField(err) != "id" {
			t.Fatalf("field = %q", sidecar.ErrorField(err))
		}
	})
	t.Run("unknown_is_not_found", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.s.GetCustomer(e.ctx, "nobody")
		wantCode(t, err, sidecar.ENOTFOUND)
	})
}

// ---- consent ---------------------------------------------------------------

func testConsent(t *testing.T, newEnv func(*testing.T) *env) {
	t.Run("never_set_is_not_found", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.s.GetConsent(e.ctx, "c1")
		wantCode(t, err, sidecar.ENOTFOUND)
	})
	t.Run("set_replace_and_history_newest_first", func(t *testing.T) {
		e := newEnv(t)
		for i, allowed := range []bool{true, false, true} {
			mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c1", Allowed: allowed,
				SetBy: fmt.Sprintf("by%d", i), SetAt: e.now()}))
			e.clock.Advance(time.Minute)
		}
		got, err := e.s.GetConsent(e.ctx, "c1")
		must(t, err)
		if !got.Allowed || got.SetBy != "by2" {
			t.Fatalf("current = %+v", got)
		}
		page1, next, err := e.s.ConsentHistory(e.ctx, "c1", sidecar.Page{Limit: 2})
		must(t, err)
		if len(page1) != 2 || page1[0].SetBy != "by2" || page1[1].SetBy != "by1" || next == "" {
			t.Fatalf("page1 = %+v next %q", page1, next)
		}
		page2, next, err := e.s.ConsentHistory(e.ctx, "c1", sidecar.Page{Limit: 2, Cursor: next})
		must(t, err)
		if len(page2) != 1 || page2[0].SetBy != "by0" || page2[0].Allowed != true || next != "" {
			t.Fatalf("page2 = %+v next %q", page2, next)
		}
	})
	t.Run("expired_consent_reads_as_absent", func(t *testing.T) {
		e := newEnv(t)
		mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c1", Allowed: true, SetBy: "c1",
			SetAt: e.now(), ExpiresAt: e.now().Add(time.Hour)}))
		got, err := e.s.GetConsent(e.ctx, "c1")
		must(t, err)
		if !got.Granted(e.now()) {
			t.Fatal("consent not granted before expiry")
		}
		e.clock.Advance(time.Hour)
		_, err = e.s.GetConsent(e.ctx, "c1")
		wantCode(t, err, sidecar.ENOTFOUND)
	})
	t.Run("malformed_cursor", func(t *testing.T) {
		e := newEnv(t)
		_, _, err := e.s.ConsentHistory(e.ctx, "c1", sidecar.Page{Cursor: "not-a-cursor"})
		wantCode(t, err, sidecar.EINVALID)
	})
}

// ---- sessions --------------------------------------------------------------

func newSession(e *env, id, actor, customer string) *sidecar.Session {
	return &sidecar.Session{ID: id, Actor: actor, ActorName: "Staff " + actor, ActorRoles: []string{"support_agent"}, Customer: customer,
		CustomerName: "Customer " + customer, StoreView: "en", Reason: "call", Ticket: "T-1",
		StartedAt: e.now(), ExpiresAt: e.now().Add(time.Hour), IdleTimeout: 15 * time.Minute}
}

func testSessions(t *testing.T, newEnv func(*testing.T) *env) {
	t.Run("start_get_and_conflict", func(t *testing.T) {
		e := newEnv(t)
		s := newSession(e, "s1", "alice", "c1")
		must(t, begin(e, s))
		got, err := e.s.GetSession(e.ctx, "s1")
		must(t, err)
		// The actor's roles are kept: policy judges them on every request.
		if got.Actor != "alice" || got.Customer != "c1" || got.Ticket != "T-1" || got.IdleTimeout != 15*time.Minute ||
			!slices.Equal(got.ActorRoles, []string{"support_agent"}) || !got.ExpiresAt.Equal(s.ExpiresAt) || !got.Live(e.now()) {
			t.Fatalf("got %+v", got)
		}
		wantCode(t, begin(e, s), sidecar.ECONFLICT)
		_, err = e.s.GetSession(e.ctx, "nope")
		wantCode(t, err, sidecar.ENOTFOUND)
	})
	t.Run("token_attached_once_and_looked_up_by_hash", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1")))
		_, err := e.s.SessionByToken(e.ctx, "h1")
		wantCode(t, err, sidecar.ENOTFOUND)
		got, err := redeem(e, "s1", "h1")
		must(t, err)
		if got.ID != "s1" || got.TokenHash != "h1" {
			t.Fatalf("redeemed %+v", got)
		}
		_, err = redeem(e, "s1", "h2")
		wantCode(t, err, sidecar.ENOTFOUND) // the code is used up
		got, err = e.s.SessionByToken(e.ctx, "h1")
		must(t, err)
		if got.ID != "s1" || got.TokenHash != "h1" {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("ended_session_cannot_be_redeemed", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1")))
		_, err := e.s.EndSession(e.ctx, "s1", "alice", sidecar.EndEnded, e.now(), sidecar.SessionLimits{})
		must(t, err)
		_, err = redeem(e, "s1", "h1")
		wantCode(t, err, sidecar.ECONFLICT)
		_, err = redeem(e, "s1", "h1")
		wantCode(t, err, sidecar.ENOTFOUND) // refused, and the code used up
	})
	t.Run("end_is_recorded_once", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1")))
		must(t, ignore(redeem(e, "s1", "h1")))
		e.clock.Advance(time.Minute)
		end := e.now()
		got, err := e.s.EndSession(e.ctx, "s1", "bob", sidecar.EndRevoked, end, sidecar.SessionLimits{})
		must(t, err)
		if got.EndReason != sidecar.EndRevoked || got.EndedBy != "bob" || !got.EndedAt.Equal(end) || got.Live(e.now()) {
			t.Fatalf("ended = %+v", got)
		}
		e.clock.Advance(time.Minute)
		again, err := e.s.EndSession(e.ctx, "s1", "carol", sidecar.EndEnded, e.now(), sidecar.SessionLimits{})
		must(t, err)
		if again.EndReason != sidecar.EndRevoked || again.EndedBy != "bob" {
			t.Fatalf("second end overwrote the first: %+v", again)
		}
		byTok, err := e.s.SessionByToken(e.ctx, "h1")
		must(t, err)
		if byTok.Live(e.now()) || byTok.EndState(e.now()) != sidecar.EndRevoked {
			t.Fatalf("cookie still live after end: %+v", byTok)
		}
		_, err = e.s.EndSession(e.ctx, "missing", "bob", sidecar.EndEnded, e.now(), sidecar.SessionLimits{})
		wantCode(t, err, sidecar.ENOTFOUND)
	})
	t.Run("expiry_and_idle_timeout_follow_the_clock", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1")))
		e.clock.Advance(10 * time.Minute)
		must(t, e.s.TouchSession(e.ctx, "s1", e.now()))
		e.clock.Advance(10 * time.Minute) // 20 min since start, 10 since touch
		got, err := e.s.GetSession(e.ctx, "s1")
		must(t, err)
		if !got.Live(e.now()) {
			t.Fatalf("touched session went idle: %+v", got)
		}
		e.clock.Advance(5 * time.Minute)
		got, _ = e.s.GetSession(e.ctx, "s1")
		if got.EndState(e.now()) != sidecar.EndIdle {
			t.Fatalf("state = %q, want idle", got.EndState(e.now()))
		}
		must(t, begin(e, newSession(e, "s2", "bob", "c2")))
		for range 4 {
			e.clock.Advance(12 * time.Minute)
			must(t, e.s.TouchSession(e.ctx, "s2", e.now()))
		}
		e.clock.Advance(12 * time.Minute)
		got, _ = e.s.GetSession(e.ctx, "s2")
		if got.EndState(e.now()) != sidecar.EndExpired {
			t.Fatalf("state = %q, want expired after max length", got.EndState(e.now()))
		}
		wantCode(t, e.s.TouchSession(e.ctx, "missing", e.now()), sidecar.ENOTFOUND)
	})
	// The store alone judges idleness: a replica that still honours a
	// session (it counted requests whose last-seen it never wrote) cannot
	// make one the store holds lapsed or ended live again.
	t.Run("touch_refuses_a_session_the_store_holds_over", func(t *testing.T) {
		e := newEnv(t)
		for _, id := range []string{"idle", "ended", "expired", "live"} {
			must(t, begin(e, newSession(e, id, "staff-"+id, "c1")))
		}
		e.clock.Advance(10 * time.Minute)
		must(t, e.s.TouchSession(e.ctx, "expired", e.now()))
		must(t, e.s.TouchSession(e.ctx, "live", e.now()))
		_, err := e.s.EndSession(e.ctx, "ended", "bob", sidecar.EndRevoked, e.now(), sidecar.SessionLimits{})
		must(t, err)
		e.clock.Advance(5 * time.Minute) // "idle": 15 min since start
		cases := []struct{ id, state string }{{"idle", sidecar.EndIdle}, {"ended", sidecar.EndRevoked}}
		for _, tc := range cases {
			before, err := e.s.GetSession(e.ctx, tc.id)
			must(t, err)
			err = e.s.TouchSession(e.ctx, tc.id, e.now())
			if state, over := sidecar.SessionOverState(err); !over || state != tc.state {
				t.Fatalf("touch of %s: %v, want refused as %s", tc.id, err, tc.state)
			}
			after, err := e.s.GetSession(e.ctx, tc.id)
			must(t, err)
			if !after.LastSeen.Equal(before.LastSeen) || after.Live(e.now()) {
				t.Fatalf("refused touch of %s wrote last-seen %v (was %v), live %v", tc.id, after.LastSeen, before.LastSeen, after.Live(e.now()))
			}
		}
		// A touch stamped before the store's now is judged at the store's
		// now: a replica whose clock is behind revives nothing.
		err = e.s.TouchSession(e.ctx, "idle", e.now().Add(-time.Minute))
		if state, _ := sidecar.SessionOverState(err); state != sidecar.EndIdle {
			t.Fatalf("touch stamped a minute back: %v, want refused as idle", err)
		}
		must(t, e.s.TouchSession(e.ctx, "live", e.now().Add(-time.Minute)))
		if got, _ := e.s.GetSession(e.ctx, "live"); !got.LastSeen.Equal(e.now().Add(-time.Minute)) {
			t.Fatalf("live session's last-seen %v, want the touch's", got.LastSeen)
		}
		e.clock.Advance(50 * time.Minute) // past max length
		err = e.s.TouchSession(e.ctx, "expired", e.now())
		if state, _ := sidecar.SessionOverState(err); state != sidecar.EndExpired {
			t.Fatalf("touch past max length: %v, want refused as expired", err)
		}
	})
}

func sessionIDs(ss []sidecar.Session) []string {
	var ids []string
	for _, s := range ss {
		ids = append(ids, s.ID)
	}
	return ids
}

func testSessionLog(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	type start struct{ id, actor, customer string }
	starts := []start{{"s1", "alice", "c1"}, {"s2", "bob", "c1"}, {"s3", "alice", "c2"}, {"s4", "alice", "c3"}, {"s5", "bob", "c2"}}
	times := map[string]time.Time{}
	for _, st := range starts {
		times[st.id] = e.now()
		must(t, begin(e, newSession(e, st.id, st.actor, st.customer)))
		e.clock.Advance(time.Minute)
	}
	_, err := e.s.EndSession(e.ctx, "s3", "alice", sidecar.EndReplaced, e.now(), sidecar.SessionLimits{})
	must(t, err)

	cases := []struct {
		name string
		f    sidecar.SessionFilter
		want []string
	}{
		{"all_newest_first", sidecar.SessionFilter{}, []string{"s5", "s4", "s3", "s2", "s1"}},
		{"by_actor", sidecar.SessionFilter{Actor: "alice"}, []string{"s4", "s3", "s1"}},
		{"by_customer", sidecar.SessionFilter{Customer: "c2"}, []string{"s5", "s3"}},
		{"actor_and_customer", sidecar.SessionFilter{Actor: "bob", Customer: "c1"}, []string{"s2"}},
		{"live_only", sidecar.SessionFilter{Actor: "alice", LiveOnly: true}, []string{"s4", "s1"}},
		{"time_window", sidecar.SessionFilter{From: times["s2"], To: times["s4"]}, []string{"s3", "s2"}},
		{"no_match", sidecar.SessionFilter{Actor: "mallory"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, next, err := e.s.ListSessions(e.ctx, tc.f)
			must(t, err)
			if !slices.Equal(sessionIDs(got), tc.want) || next != "" {
				t.Fatalf("got %v next %q, want %v", sessionIDs(got), next, tc.want)
			}
		})
	}
	t.Run("pages_follow_the_cursor", func(t *testing.T) {
		var all []string
		p := sidecar.SessionFilter{Page: sidecar.Page{Limit: 2}}
		for i := 0; ; i++ {
			got, next, err := e.s.ListSessions(e.ctx, p)
			must(t, err)
			all = append(all, sessionIDs(got)...)
			if next == "" {
				break
			}
			if i > 5 {
				t.Fatal("cursor does not advance")
			}
			p.Cursor = next
		}
		if !slices.Equal(all, []string{"s5", "s4", "s3", "s2", "s1"}) {
			t.Fatalf("paged = %v", all)
		}
	})
	t.Run("everything_expires_out_of_live", func(t *testing.T) {
		e.clock.Advance(2 * time.Hour)
		got, _, err := e.s.ListSessions(e.ctx, sidecar.SessionFilter{LiveOnly: true})
		must(t, err)
		if len(got) != 0 {
			t.Fatalf("live after expiry: %v", sessionIDs(got))
		}
		got, _, err = e.s.ListSessions(e.ctx, sidecar.SessionFilter{})
		must(t, err)
		if len(got) != 5 {
			t.Fatalf("log lost expired sessions: %v", sessionIDs(got))
		}
	})
}

func testRedeemCodes(t *testing.T, newEnv func(*testing.T) *env) {
	t.Run("late_code_refused", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1")))
		e.clock.Advance(30 * time.Second)
		_, err := redeem(e, "s1", "h1")
		wantCode(t, err, sidecar.ENOTFOUND)
	})
	t.Run("unknown_code_refused", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.s.RedeemSession(e.ctx, "nope", "h1", "shop.example.com", "", sidecar.SessionLimits{})
		wantCode(t, err, sidecar.ENOTFOUND)
	})
	t.Run("concurrent_redeemers_one_wins", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1")))
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := redeem(e, "s1", fmt.Sprintf("h%d", i)); err == nil {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d redeemers got the session", wins.Load())
		}
	})
	t.Run("burned_code_is_never_redeemed", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1")))
		s, err := e.s.BurnRedeemCode(e.ctx, codeOf("s1"))
		must(t, err)
		if s.ID != "s1" || s.TokenHash != "" {
			t.Fatalf("burn answered %+v, want s1 unredeemed", s)
		}
		_, err = redeem(e, "s1", "h1")
		wantCode(t, err, sidecar.ENOTFOUND)
		_, err = e.peer.RedeemSession(e.ctx, codeOf("s1"), "h2", "shop.example.com", "", sidecar.SessionLimits{})
		wantCode(t, err, sidecar.ENOTFOUND)
		got, err := e.s.GetSession(e.ctx, "s1")
		must(t, err)
		if got.TokenHash != "" || got.Host != "" || !got.EndedAt.IsZero() {
			t.Fatalf("session after burn = %+v, want it unredeemed and not ended", got)
		}
		_, err = e.s.SessionByToken(e.ctx, "h1")
		wantCode(t, err, sidecar.ENOTFOUND)
	})
	t.Run("redeemer_other_than_the_actor_uses_the_code_up", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1")))
		s, err := e.s.RedeemSession(e.ctx, codeOf("s1"), "h1", "shop.example.com", "mallory", sidecar.SessionLimits{})
		wantCode(t, err, sidecar.EFORBIDDEN)
		if sidecar.ErrorReason(err) != sidecar.ReasonRedeemActorMismatch {
			t.Fatalf("reason %q, want %q", sidecar.ErrorReason(err), sidecar.ReasonRedeemActorMismatch)
		}
		if s == nil || s.ID != "s1" || s.Actor != "alice" || s.TokenHash != "" {
			t.Fatalf("refusal answered %+v, want s1 of alice, unredeemed", s)
		}
		// Used up, on every replica, for its own actor too.
		_, err = e.peer.RedeemSession(e.ctx, codeOf("s1"), "h2", "shop.example.com", "alice", sidecar.SessionLimits{})
		wantCode(t, err, sidecar.ENOTFOUND)
		got, err := e.s.GetSession(e.ctx, "s1")
		must(t, err)
		if got.TokenHash != "" || got.Host != "" || !got.EndedAt.IsZero() {
			t.Fatalf("session after the refusal = %+v, want it unredeemed and not ended", got)
		}
		for _, h := range []string{"h1", "h2"} {
			_, err = e.s.SessionByToken(e.ctx, h)
			wantCode(t, err, sidecar.ENOTFOUND)
		}
		// Its own actor, or nobody verified, redeems.
		for i, by := range []string{"alice", ""} {
			id := fmt.Sprintf("s%d", i+2)
			must(t, begin(e, newSession(e, id, "alice", "c1")))
			s, err := e.s.RedeemSession(e.ctx, codeOf(id), "h"+id, "shop.example.com", by, sidecar.SessionLimits{})
			must(t, err)
			if s.ID != id || s.TokenHash != "h"+id {
				t.Fatalf("redeem by %q answered %+v", by, s)
			}
		}
	})
	t.Run("burn_of_an_unknown_used_or_late_code_not_found", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.s.BurnRedeemCode(e.ctx, "nope")
		wantCode(t, err, sidecar.ENOTFOUND)
		_, err = e.s.BurnRedeemCode(e.ctx, "")
		wantCode(t, err, sidecar.ENOTFOUND)
		must(t, begin(e, newSession(e, "s1", "alice", "c1")))
		_, err = redeem(e, "s1", "h1")
		must(t, err)
		_, err = e.s.BurnRedeemCode(e.ctx, codeOf("s1"))
		wantCode(t, err, sidecar.ENOTFOUND)
		if got, err := e.s.SessionByToken(e.ctx, "h1"); err != nil || got.ID != "s1" {
			t.Fatalf("burning a used code touched its session: %+v, %v", got, err)
		}
		must(t, begin(e, newSession(e, "s2", "bob", "c1")))
		e.clock.Advance(30 * time.Second)
		_, err = e.s.BurnRedeemCode(e.ctx, codeOf("s2"))
		wantCode(t, err, sidecar.ENOTFOUND)
	})
	t.Run("burn_and_redeem_racing_one_takes_the_code", func(t *testing.T) {
		for round := range 8 {
			e := newEnv(t)
			id := fmt.Sprintf("s%d", round)
			must(t, begin(e, newSession(e, id, "alice", "c1")))
			var redeemed, burned atomic.Int32
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if i%2 == 0 {
						if _, err := redeem(e, id, fmt.Sprintf("h%d", i)); err == nil {
							redeemed.Add(1)
						}
						return
					}
					if _, err := e.peer.BurnRedeemCode(e.ctx, codeOf(id)); err == nil {
						burned.Add(1)
					}
				}()
			}
			wg.Wait()
			if redeemed.Load()+burned.Load() != 1 {
				t.Fatalf("round %d: %d redeemed and %d burned the one code", round, redeemed.Load(), burned.Load())
			}
			got, err := e.s.GetSession(e.ctx, id)
			must(t, err)
			if (got.TokenHash != "") != (redeemed.Load() == 1) {
				t.Fatalf("round %d: session %+v after %d redeems", round, got, redeemed.Load())
			}
		}
	})
}

// ---- partner requests and grants --------------------------------------------

func newRequest(e *env, id, partner, customer string) *sidecar.AccessRequest {
	return &sidecar.AccessRequest{ID: id, PartnerOrg: partner, RequestedBy: "pat", Customer: customer,
		ContactEmail: "boss@" + customer, Level: sidecar.LevelLook, ExpiryDays: 30, Scope: sidecar.ScopeIndividual,
		Users: []string{"pat", "sam"}, Status: sidecar.RequestPending, CreatedAt: e.now(),
		PendingExpiresAt: e.now().Add(30 * 24 * time.Hour)}
}

func testRequests(t *testing.T, newEnv func(*testing.T) *env) {
	t.Run("create_get_conflict", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "r1", "p1", "acme")))
		got, err := e.s.GetRequest(e.ctx, "r1")
		must(t, err)
		if got.Status != sidecar.RequestPending || !slices.Equal(got.Users, []string{"pat", "sam"}) || got.Level != sidecar.LevelLook {
			t.Fatalf("got %+v", got)
		}
		wantCode(t, e.s.CreateRequest(e.ctx, newRequest(e, "r1", "p1", "acme")), sidecar.ECONFLICT)
		_, err = e.s.GetRequest(e.ctx, "nope")
		wantCode(t, err, sidecar.ENOTFOUND)
	})
	t.Run("decided_once", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "r1", "p1", "acme")))
		got, err := e.s.DecideRequest(e.ctx, "r1", sidecar.RequestApproved, "boss", e.now())
		must(t, err)
		if got.Status != sidecar.RequestApproved || got.DecidedBy != "boss" {
			t.Fatalf("got %+v", got)
		}
		_, err = e.s.DecideRequest(e.ctx, "r1", sidecar.RequestRejected, "boss", e.now())
		wantCode(t, err, sidecar.ECONFLICT)
		_, err = e.s.DecideRequest(e.ctx, "nope", sidecar.RequestRejected, "boss", e.now())
		wantCode(t, err, sidecar.ENOTFOUND)
	})
	// Approvals of one request completing at once, or retried, record it
	// once: exactly one of them is told to write its audit record and
	// event. The mark survives closing the request's grants, which a
	// revocation may do first.
	t.Run("approval_recorded_once", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "r1", "p1", "acme")))
		_, err := e.s.RecordApproval(e.ctx, "r1")
		wantCode(t, err, sidecar.ECONFLICT) // pending: nothing to record
		_, err = e.s.RecordApproval(e.ctx, "nope")
		wantCode(t, err, sidecar.ENOTFOUND)
		_, err = e.s.DecideRequest(e.ctx, "r1", sidecar.RequestApproved, "boss", e.now())
		must(t, err)
		must(t, e.s.GrantsIssued(e.ctx, "r1"))
		var firsts atomic.Int32
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				first, err := e.s.RecordApproval(e.ctx, "r1")
				if err != nil {
					t.Error(err)
				}
				if first {
					firsts.Add(1)
				}
			})
		}
		wg.Wait()
		if firsts.Load() != 1 {
			t.Fatalf("%d of 16 calls were told they recorded the approval, want 1", firsts.Load())
		}
		r, err := e.s.GetRequest(e.ctx, "r1")
		must(t, err)
		if !r.ApprovalRecorded || r.GrantsPending || r.Status != sidecar.RequestApproved {
			t.Fatalf("r1 after its approval was recorded: %+v", r)
		}
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "r2", "p1", "acme")))
		_, err = e.s.DecideRequest(e.ctx, "r2", sidecar.RequestRejected, "boss", e.now())
		must(t, err)
		_, err = e.s.RecordApproval(e.ctx, "r2")
		wantCode(t, err, sidecar.ECONFLICT)
	})
	t.Run("bad_decision_status", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "r1", "p1", "acme")))
		_, err := e.s.DecideRequest(e.ctx, "r1", sidecar.RequestPending, "boss", e.now())
		wantCode(t, err, sidecar.EINVALID)
	})
	t.Run("pending_expiry", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "r1", "p1", "acme")))
		e.clock.Advance(30 * 24 * time.Hour)
		got, err := e.s.GetRequest(e.ctx, "r1")
		must(t, err)
		if got.Status != sidecar.RequestExpired {
			t.Fatalf("status = %q", got.Status)
		}
		_, err = e.s.DecideRequest(e.ctx, "r1", sidecar.RequestApproved, "boss", e.now())
		wantCode(t, err, sidecar.ECONFLICT)
	})
	t.Run("lists", func(t *testing.T) {
		e := newEnv(t)
		for _, r := range []struct{ id, partner, customer string }{
			{"r1", "p1", "acme"}, {"r2", "p2", "acme"}, {"r3", "p1", "globex"}, {"r4", "p1", "acme"},
		} {
			must(t, e.s.CreateRequest(e.ctx, newRequest(e, r.id, r.partner, r.customer)))
			e.clock.Advance(time.Minute)
		}
		_, err := e.s.DecideRequest(e.ctx, "r4", sidecar.RequestRejected, "boss", e.now())
		must(t, err)
		cases := []struct {
			name string
			f    sidecar.RequestFilter
			want []string
		}{
			{"by_customer", sidecar.RequestFilter{Customer: "acme"}, []string{"r4", "r2", "r1"}},
			{"by_partner", sidecar.RequestFilter{PartnerOrg: "p1"}, []string{"r4", "r3", "r1"}},
			{"both", sidecar.RequestFilter{Customer: "acme", PartnerOrg: "p1"}, []string{"r4", "r1"}},
			{"pending", sidecar.RequestFilter{Customer: "acme", Status: sidecar.RequestPending}, []string{"r2", "r1"}},
			{"rejected", sidecar.RequestFilter{PartnerOrg: "p1", Status: sidecar.RequestRejected}, []string{"r4"}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				var ids []string
				f := tc.f
				f.Limit = 1
				for i := 0; ; i++ {
					got, next, err := e.s.ListRequests(e.ctx, f)
					must(t, err)
					for _, r := range got {
						ids = append(ids, r.ID)
					}
					if next == "" {
						break
					}
					if i > 10 {
						t.Fatal("cursor does not advance")
					}
					f.Cursor = next
				}
				if !slices.Equal(ids, tc.want) {
					t.Fatalf("got %v, want %v", ids, tc.want)
				}
			})
		}
		t.Run("no_owner_rejected", func(t *testing.T) {
			_, _, err := e.s.ListRequests(e.ctx, sidecar.RequestFilter{})
			wantCode(t, err, sidecar.EINVALID)
		})
	})
}

func grant(e *env, id, customer, org, user string, level sidecar.Level, ttl time.Duration) *sidecar.Grant {
	return &sidecar.Grant{ID: id, Customer: customer, PartnerOrg: org, User: user, Level: level,
		ExpiresAt: e.now().Add(ttl), ApprovedBy: "boss", ApprovedAt: e.now(), RequestID: "r-" + id}
}

func grantIDs(gs []sidecar.Grant) []string {
	var ids []string
	for _, g := range gs {
		ids = append(ids, g.ID)
	}
	slices.Sort(ids)
	return ids
}

// grantSteps approves requests of p1 at acme in order, writes grants
// with their Seqs, and checks the grant that applies to a user on both
// replicas.
type grantSteps struct {
	t *testing.T
	e *env
	n int
}

// approve records the approval of a new request and returns its Seq.
func (s *grantSteps) approve() int64 {
	s.t.Helper()
	s.n++
	id := fmt.Sprintf("r%d", s.n)
	must(s.t, s.e.s.CreateRequest(s.e.ctx, newRequest(s.e, id, "p1", "acme")))
	r, err := s.e.s.DecideRequest(s.e.ctx, id, sidecar.RequestApproved, "boss", s.e.now())
	must(s.t, err)
	return r.Seq
}

func (s *grantSteps) put(id, user string, level sidecar.Level, ttl time.Duration, seq int64) {
	s.t.Helper()
	g := grant(s.e, id, "acme", "p1", user, level, ttl)
	g.Seq = seq
	must(s.t, s.e.s.PutGrant(s.e.ctx, g))
}

// want checks the id of the grant that applies to user, "" for none.
func (s *grantSteps) want(what, user, id string) {
	s.t.Helper()
	for _, st := range []sidecar.Store{s.e.s, s.e.peer} {
		eg, err := st.EffectiveGrants(s.e.ctx, "acme", "p1", user)
		must(s.t, err)
		got := ""
		if g := eg.At(s.e.now()); g != nil {
			got = g.ID
		}
		if got != id {
			s.t.Fatalf("%s: %s's effective grant = %q, want %q", what, user, got, id)
		}
	}
}

func testGrants(t *testing.T, newEnv func(*testing.T) *env) {
	day := 24 * time.Hour
	// Once an approval's grants are issued or closed (a grant of it was
	// revoked), a retry of it cannot write one again: the check is part of
	// the write, so no retry caught between its checks and its write
	// brings a revoked grant back.
	t.Run("closed_approval_issues_no_grant", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "r1", "p1", "acme")))
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "r2", "p1", "acme")))
		for _, id := range []string{"r1", "r2"} {
			_, err := e.s.DecideRequest(e.ctx, id, sidecar.RequestApproved, "boss", e.now())
			must(t, err)
		}
		issued := func(id, req, user string) *sidecar.Grant {
			g := grant(e, id, "acme", "p1", user, sidecar.LevelLook, 30*day)
			g.RequestID = req
			return g
		}
		must(t, e.s.PutGrant(e.ctx, issued("g1", "r1", "pat")))
		must(t, e.s.GrantsIssued(e.ctx, "r1"))
		if r, err := e.s.GetRequest(e.ctx, "r1"); err != nil || r.GrantsPending {
			t.Fatalf("r1 after GrantsIssued: %+v %v", r, err)
		}
		wantCode(t, e.s.PutGrant(e.ctx, issued("g2", "r1", "pat")), sidecar.ECONFLICT)
		wantCode(t, e.s.PutGrant(e.ctx, issued("g3", "r1", "sam")), sidecar.ECONFLICT)
		for user, want := range map[string]string{"pat": "g1", "sam": ""} {
			eg, err := e.s.EffectiveGrants(e.ctx, "acme", "p1", user)
			must(t, err)
			if got := eg.Individual; (got == nil) != (want == "") || got != nil && got.ID != want {
				t.Fatalf("%s's grant after the refused writes: %+v, want %q", user, got, want)
			}
		}
		// Another approval still issuing is not affected.
		must(t, e.s.PutGrant(e.ctx, issued("g4", "r2", "sam")))
	})
	// Approvals of one partner organisation's access to a customer take
	// rising Seqs, and a revocation takes the next: a grant written for
	// an approval older than the last grant written or revoked for the
	// same user is refused, whichever write comes last, so a slow or
	// retried approval neither replaces a later one nor undoes a
	// revocation. The same approval may write its grant again.
	t.Run("older_approval_superseded", func(t *testing.T) {
		e := newEnv(t)
		approved := map[string]int64{}
		for _, id := range []string{"r1", "r2", "r3", "r4"} {
			must(t, e.s.CreateRequest(e.ctx, newRequest(e, id, "p1", "acme")))
			r, err := e.s.DecideRequest(e.ctx, id, sidecar.RequestApproved, "boss", e.now())
			must(t, err)
			approved[id] = r.Seq
		}
		if !(approved["r1"] < approved["r2"] && approved["r2"] < approved["r3"] && approved["r3"] < approved["r4"]) {
			t.Fatalf("Seqs of approvals decided in turn: %v, want rising", approved)
		}
		issued := func(id, req, user string) *sidecar.Grant {
			g := grant(e, id, "acme", "p1", user, sidecar.LevelLook, 30*day)
			g.RequestID, g.Seq = req, approved[req]
			return g
		}
		must(t, e.s.PutGrant(e.ctx, issued("g2", "r2", "pat")))
		err := e.s.PutGrant(e.ctx, issued("g1", "r1", "pat"))
		if sidecar.ErrorReason(err) != sidecar.ReasonGrantSuperseded {
			t.Fatalf("older approval's grant after a later one: %v, want %s", err, sidecar.ReasonGrantSuperseded)
		}
		must(t, e.s.PutGrant(e.ctx, issued("g2b", "r2", "pat"))) // the same approval again
		must(t, e.s.PutGrant(e.ctx, issued("g1s", "r1", "sam"))) // another user's access is its own
		_, err = e.s.RevokeGrant(e.ctx, "acme", "g2b", "cora", "acme")
		must(t, err)
		err = e.s.PutGrant(e.ctx, issued("g3", "r3", "pat")) // decided before the revocation
		if sidecar.ErrorReason(err) != sidecar.ReasonGrantSuperseded {
			t.Fatalf("grant of an approval decided before the revocation: %v, want %s", err, sidecar.ReasonGrantSuperseded)
		}
		eg, err := e.s.EffectiveGrants(e.ctx, "acme", "p1", "pat")
		must(t, err)
		if eg.Individual != nil {
			t.Fatalf("pat's grant after the revocation and the refused write: %+v", eg.Individual)
		}
		// An approval decided after the revocation is a new decision.
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "r5", "p1", "acme")))
		r5, err := e.s.DecideRequest(e.ctx, "r5", sidecar.RequestApproved, "boss", e.now())
		must(t, err)
		approved["r5"] = r5.Seq
		must(t, e.s.PutGrant(e.ctx, issued("g5", "r5", "pat")))
		// Seqs are per partner organisation: p2's first approval is not
		// held back by p1's.
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "q1", "p2", "acme")))
		q1, err := e.s.DecideRequest(e.ctx, "q1", sidecar.RequestApproved, "boss", e.now())
		must(t, err)
		g := grant(e, "gq", "acme", "p2", "pat", sidecar.LevelLook, 30*day)
		g.RequestID, g.Seq = "q1", q1.Seq
		must(t, e.s.PutGrant(e.ctx, g))
		// A rejection takes no Seq.
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "r6", "p1", "acme")))
		r6, err := e.s.DecideRequest(e.ctx, "r6", sidecar.RequestRejected, "boss", e.now())
		must(t, err)
		if r6.Seq != 0 {
			t.Fatalf("rejected request's Seq = %d, want 0", r6.Seq)
		}
	})
	// A user's individual grant is considered before the organisation's,
	// even when lower. Revoking it narrows: until it would have expired,
	// the user gets nothing through an organisation grant above the
	// revoked grant's level, whoever revoked it and whenever the
	// organisation grant was approved. A new individual grant applies as
	// usual.
	t.Run("revoked_individual_grant_holds_back_earlier_org_grant", func(t *testing.T) {
		e := newEnv(t)
		s := &grantSteps{t: t, e: e}
		s.put("g-org", "", sidecar.LevelUpdate, 30*day, s.approve())
		s.put("g-pat", "pat", sidecar.LevelLook, 10*day, s.approve())
		s.want("before the revocation", "pat", "g-pat")
		_, err := e.s.RevokeGrant(e.ctx, "acme", "g-pat", "pat", "p1")
		must(t, err)
		s.want("after the revocation", "pat", "")
		eg, err := e.s.EffectiveGrants(e.ctx, "acme", "p1", "pat")
		must(t, err)
		if len(eg.Held) != 1 || !eg.Held[0].Until.Equal(e.now().Add(10*day)) || eg.Organisation == nil || eg.Held[0].Level != sidecar.LevelLook {
			t.Fatalf("pat's grants after the revocation: %+v, want the organisation's and one hold at look until the revoked grant's expiry", eg)
		}
		if eg, err := e.s.EffectiveGrants(e.ctx, "acme", "p1", ""); err != nil || len(eg.Held) != 0 {
			t.Fatalf("the organisation's grants: %+v, %v; want no hold", eg, err)
		}
		s.want("another user of the organisation", "sam", "g-org")
		s.want("the organisation itself", "", "g-org")
		e.clock.Advance(10*day - time.Second)
		s.want("just before the revoked grant would have expired", "pat", "")
		e.clock.Advance(time.Second)
		s.want("once the revoked grant would have expired", "pat", "g-org")

		// Revoked again before it expires, a second individual grant
		// leaves its own hold; the first one's still holds until it
		// would have expired.
		s.put("g-pat2", "pat", sidecar.LevelLook, 10*day, s.approve())
		_, err = e.s.RevokeGrant(e.ctx, "acme", "g-pat2", "cora", "acme")
		must(t, err)
		s.put("g-pat3", "pat", sidecar.LevelCC, 2*day, s.approve())
		s.want("a new individual grant", "pat", "g-pat3")
		_, err = e.s.RevokeGrant(e.ctx, "acme", "g-pat3", "paul", "p1")
		must(t, err)
		e.clock.Advance(5 * day)
		s.want("past the second revoked grant's expiry, before the first's", "pat", "")
		e.clock.Advance(5 * day)
		s.want("past both", "pat", "g-org")

		// An organisation grant approved after a revocation is held back
		// too when it is above the revoked grant's level.
		s.put("g-pat4", "pat", sidecar.LevelLook, 10*day, s.approve())
		_, err = e.s.RevokeGrant(e.ctx, "acme", "g-pat4", "pat", "p1")
		must(t, err)
		s.want("after the fourth revocation", "pat", "")
		s.put("g-org2", "", sidecar.LevelCreate, 30*day, s.approve())
		s.want("an organisation grant above the revoked level, approved after the revocation", "pat", "")
		s.want("another user, under the organisation grant approved after the revocation", "sam", "g-org2")

		// Revoking the organisation grant holds nobody back from a later one.
		_, err = e.s.RevokeGrant(e.ctx, "acme", "g-org2", "cora", "acme")
		must(t, err)
		s.put("g-org3", "", sidecar.LevelLook, 30*day, s.approve())
		s.want("a later organisation grant", "sam", "g-org3")
		s.want("a later organisation grant at the revoked level", "pat", "g-org3")
	})
	// A revocation only narrows: an organisation grant the customer
	// approves after it (one that lowers the organisation, say) never
	// takes the user above the revoked grant's level while its hold
	// lasts. At or below that level it applies.
	t.Run("hold_keeps_user_at_or_below_revoked_level", func(t *testing.T) {
		e := newEnv(t)
		s := &grantSteps{t: t, e: e}
		s.put("g-org", "", sidecar.LevelFullAdmin, 60*day, s.approve())
		s.put("g-pat", "pat", sidecar.LevelCC, 60*day, s.approve())
		_, err := e.s.RevokeGrant(e.ctx, "acme", "g-pat", "cora", "acme")
		must(t, err)
		s.want("after the revocation", "pat", "")
		s.put("g-org2", "", sidecar.LevelUpdate, 90*day, s.approve())
		s.want("the organisation lowered to update after the revocation", "pat", "")
		s.want("another user under the lowered organisation grant", "sam", "g-org2")
		s.put("g-org3", "", sidecar.LevelCC, 90*day, s.approve())
		s.want("the organisation lowered to the revoked level", "pat", "g-org3")
		s.put("g-org4", "", sidecar.LevelLook, 90*day, s.approve())
		s.want("the organisation raised again", "pat", "")
		e.clock.Advance(60*day - time.Millisecond)
		s.want("just before the revoked grant would have expired", "pat", "")
		e.clock.Advance(time.Millisecond)
		s.want("once the revoked grant would have expired", "pat", "g-org4")
	})
	// Asking again replaces a user's individual grant. A replacement that
	// ends earlier than the grant it replaces only narrows: from its end
	// until the replaced grant's, the user gets nothing through an
	// organisation grant above the replaced grant's level, as after a
	// revocation.
	t.Run("shorter_individual_replacement_holds_to_replaced_level", func(t *testing.T) {
		e := newEnv(t)
		s := &grantSteps{t: t, e: e}
		s.put("g-org", "", sidecar.LevelUpdate, 365*day, s.approve())
		s.put("g-pat", "pat", sidecar.LevelLook, 300*day, s.approve())
		g := grant(e, "g-pat2", "acme", "p1", "pat", sidecar.LevelLook, day)
		g.Seq = s.approve()
		must(t, e.s.PutGrant(e.ctx, g))
		e.clock.Advance(time.Minute)
		must(t, e.s.PutGrant(e.ctx, g)) // written again: a retry whose reply was lost
		s.want("the shorter grant", "pat", "g-pat2")
		e.clock.Advance(day - time.Minute - time.Millisecond)
		s.want("just before the shorter grant ends", "pat", "g-pat2")
		e.clock.Advance(time.Millisecond)
		s.want("once the shorter grant ended", "pat", "")
		s.want("another user", "sam", "g-org")
		e.clock.Advance(299*day - time.Millisecond)
		s.want("just before the replaced grant would have ended", "pat", "")
		e.clock.Advance(time.Millisecond)
		s.want("once the replaced grant would have ended", "pat", "g-org")

		// A replacement that lasts at least as long holds nobody back.
		s.put("g-pat3", "pat", sidecar.LevelLook, 10*day, s.approve())
		s.put("g-pat4", "pat", sidecar.LevelCC, 10*day, s.approve())
		e.clock.Advance(10 * day)
		s.want("a replacement as long as the grant it replaced, ended", "pat", "g-org")

		// An organisation grant at or below the replaced level applies.
		s.put("g-pat5", "pat", sidecar.LevelLook, 30*day, s.approve())
		s.put("g-pat6", "pat", sidecar.LevelCC, day, s.approve())
		e.clock.Advance(day)
		s.want("the shorter replacement ended", "pat", "")
		s.put("g-org2", "", sidecar.LevelLook, 30*day, s.approve())
		s.want("an organisation grant at the replaced level", "pat", "g-org2")
	})
	t.Run("individual_before_organisation_even_when_lower", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.PutGrant(e.ctx, grant(e, "g-org", "acme", "p1", "", sidecar.LevelFullAdmin, 30*day)))
		must(t, e.s.PutGrant(e.ctx, grant(e, "g-pat", "acme", "p1", "pat", sidecar.LevelCC, 10*day)))
		cases := []struct {
			name, user string
			want       string
			level      sidecar.Level
		}{
			{"user_with_own_grant", "pat", "g-pat", sidecar.LevelCC},
			{"other_user_gets_org_grant", "sam", "g-org", sidecar.LevelFullAdmin},
			{"org_itself", "", "g-org", sidecar.LevelFullAdmin},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				eg, err := e.s.EffectiveGrants(e.ctx, "acme", "p1", tc.user)
				must(t, err)
				g := eg.Effective()
				if g == nil || g.ID != tc.want || g.Level != tc.level {
					t.Fatalf("effective = %+v", g)
				}
			})
		}
		t.Run("individual_expired_falls_back_to_org", func(t *testing.T) {
			e.clock.Advance(10 * day)
			eg, err := e.s.EffectiveGrants(e.ctx, "acme", "p1", "pat")
			must(t, err)
			if eg.Individual != nil || eg.Effective() == nil || eg.Effective().ID != "g-org" {
				t.Fatalf("effective = %+v", eg)
			}
		})
		t.Run("all_expired_is_none", func(t *testing.T) {
			e.clock.Advance(20 * day)
			eg, err := e.s.EffectiveGrants(e.ctx, "acme", "p1", "pat")
			must(t, err)
			if eg.Effective() != nil {
				t.Fatalf("expired grant still effective: %+v", eg.Effective())
			}
			_, err = e.s.GetGrant(e.ctx, "acme", "g-org")
			wantCode(t, err, sidecar.ENOTFOUND)
		})
	})
	t.Run("other_partner_org_sees_nothing", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.PutGrant(e.ctx, grant(e, "g1", "acme", "p1", "", sidecar.LevelLook, day)))
		eg, err := e.s.EffectiveGrants(e.ctx, "acme", "p2", "pat")
		must(t, err)
		if eg.Effective() != nil {
			t.Fatalf("p2 got %+v", eg.Effective())
		}
	})
	t.Run("reapproval_replaces_level_and_expiry", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.PutGrant(e.ctx, grant(e, "g1", "acme", "p1", "pat", sidecar.LevelCreate, 30*day)))
		must(t, e.s.PutGrant(e.ctx, grant(e, "g2", "acme", "p1", "pat", sidecar.LevelLook, 5*day)))
		eg, err := e.s.EffectiveGrants(e.ctx, "acme", "p1", "pat")
		must(t, err)
		if g := eg.Individual; g == nil || g.ID != "g2" || g.Level != sidecar.LevelLook || !g.ExpiresAt.Equal(e.now().Add(5*day)) {
			t.Fatalf("individual = %+v", g)
		}
		all, err := e.s.GrantsByCustomer(e.ctx, "acme")
		must(t, err)
		if !slices.Equal(grantIDs(all), []string{"g2"}) {
			t.Fatalf("grants = %v", grantIDs(all))
		}
	})
	t.Run("revoke", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.PutGrant(e.ctx, grant(e, "g1", "acme", "p1", "pat", sidecar.LevelLook, day)))
		got, err := e.s.GetGrant(e.ctx, "acme", "g1")
		must(t, err)
		if got.User != "pat" || got.Scope() != sidecar.ScopeIndividual {
			t.Fatalf("got %+v", got)
		}
		rev, err := e.s.RevokeGrant(e.ctx, "acme", "g1", "cora", "acme")
		must(t, err)
		if rev.ID != "g1" {
			t.Fatalf("revoked %+v", rev)
		}
		eg, err := e.s.EffectiveGrants(e.ctx, "acme", "p1", "pat")
		must(t, err)
		if eg.Effective() != nil {
			t.Fatal("revoked grant still effective")
		}
		_, err = e.s.RevokeGrant(e.ctx, "acme", "g1", "cora", "acme")
		wantCode(t, err, sidecar.ENOTFOUND)
	})
	// A revoked grant is kept, as it was, until it would have expired; an
	// id never revoked, or revoked at another customer, is not found.
	t.Run("revoked_grant_kept_until_its_expiry", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.PutGrant(e.ctx, grant(e, "g1", "acme", "p1", "pat", sidecar.LevelLook, day)))
		must(t, e.s.PutGrant(e.ctx, grant(e, "g2", "acme", "p2", "", sidecar.LevelCC, 2*day)))
		must(t, e.s.PutGrant(e.ctx, grant(e, "g3", "acme", "p3", "", sidecar.LevelCC, day)))
		_, err := e.s.RevokedGrant(e.ctx, "acme", "g1")
		wantCode(t, err, sidecar.ENOTFOUND)
		revokedAt := e.clock.Now()
		for _, id := range []string{"g1", "g2"} {
			_, err = e.s.RevokeGrant(e.ctx, "acme", id, "cora", "acme")
			must(t, err)
		}
		e.clock.Advance(time.Minute)
		got, err := e.s.RevokedGrant(e.ctx, "acme", "g1")
		must(t, err)
		if got.ID != "g1" || got.PartnerOrg != "p1" || got.User != "pat" || got.Level != sidecar.LevelLook || !got.RevokedAt.Equal(revokedAt) ||
			got.RevokedBy != "cora" || got.RevokedByOrg != "acme" {
			t.Fatalf("revoked grant kept as %+v", got)
		}
		for _, c := range []struct{ customer, id string }{{"acme", "g3"}, {"acme", "nope"}, {"globex", "g1"}} {
			_, err = e.s.RevokedGrant(e.ctx, c.customer, c.id)
			wantCode(t, err, sidecar.ENOTFOUND)
		}
		e.clock.Advance(day + time.Minute)
		_, err = e.s.RevokedGrant(e.ctx, "acme", "g1")
		wantCode(t, err, sidecar.ENOTFOUND)
		if got, err := e.s.RevokedGrant(e.ctx, "acme", "g2"); err != nil || got.ID != "g2" {
			t.Fatalf("g2, revoked and not yet past its expiry: %+v, %v", got, err)
		}
	})
	t.Run("invalid_grants_rejected", func(t *testing.T) {
		e := newEnv(t)
		cases := []struct {
			name, field string
			g           *sidecar.Grant
		}{
			{"no_id", "id", grant(e, "", "acme", "p1", "", sidecar.LevelLook, day)},
			{"no_customer", "customer", grant(e, "g", "", "p1", "", sidecar.LevelLook, day)},
			{"no_partner", "partner_org", grant(e, "g", "acme", "", "", sidecar.LevelLook, day)},
			{"bad_level", "level", grant(e, "g", "acme", "p1", "", "root", day)},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				err := e.s.PutGrant(e.ctx, tc.g)
				wantCode(t, err, sidecar.EINVALID)
				if sidecar.ErrorField(err) != tc.field {
					t.Fatalf("field = %q", sidecar.ErrorField(err))
				}
			})
		}
	})
	t.Run("lists_for_both_sides", func(t *testing.T) {
		e := newEnv(t)
		for _, g := range []*sidecar.Grant{
			grant(e, "a-org", "acme", "p1", "", sidecar.LevelLook, 30*day),
			grant(e, "a-pat", "acme", "p1", "pat", sidecar.LevelUpdate, 20*day),
			grant(e, "g-sam", "globex", "p1", "sam", sidecar.LevelCreate, 3*day),
			grant(e, "g-p2", "globex", "p2", "", sidecar.LevelLook, 2*day),
			grant(e, "i-pat", "initech", "p1", "pat", sidecar.LevelCC, 1*day),
		} {
			must(t, e.s.PutGrant(e.ctx, g))
		}
		cases := []struct {
			name string
			list func() ([]sidecar.Grant, error)
			want []string
		}{
			{"my_partners_acme", func() ([]sidecar.Grant, error) { return e.s.GrantsByCustomer(e.ctx, "acme") }, []string{"a-org", "a-pat"}},
			{"my_partners_globex", func() ([]sidecar.Grant, error) { return e.s.GrantsByCustomer(e.ctx, "globex") }, []string{"g-p2", "g-sam"}},
			{"my_customers_pat", func() ([]sidecar.Grant, error) { return e.s.GrantsByPartner(e.ctx, "p1", "pat") }, []string{"a-org", "a-pat", "i-pat"}},
			{"my_customers_sam", func() ([]sidecar.Grant, error) { return e.s.GrantsByPartner(e.ctx, "p1", "sam") }, []string{"a-org", "g-sam"}},
			{"my_customers_org_only", func() ([]sidecar.Grant, error) { return e.s.GrantsByPartner(e.ctx, "p2", "") }, []string{"g-p2"}},
			{"expiring_within_3_days", func() ([]sidecar.Grant, error) {
				return e.s.GrantsExpiringBefore(e.ctx, e.now().Add(3*day+time.Second), 0)
			}, []string{"g-p2", "g-sam", "i-pat"}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				got, err := tc.list()
				must(t, err)
				if !slices.Equal(grantIDs(got), tc.want) {
					t.Fatalf("got %v, want %v", grantIDs(got), tc.want)
				}
			})
		}
		t.Run("expiring_soonest_first_and_limited", func(t *testing.T) {
			got, err := e.s.GrantsExpiringBefore(e.ctx, e.now().Add(40*day), 2)
			must(t, err)
			if len(got) != 2 || got[0].ID != "i-pat" || got[1].ID != "g-p2" {
				t.Fatalf("got %v", got)
			}
		})
		t.Run("expired_drop_out_of_lists", func(t *testing.T) {
			e.clock.Advance(3 * day)
			got, err := e.s.GrantsByPartner(e.ctx, "p1", "pat")
			must(t, err)
			if !slices.Equal(grantIDs(got), []string{"a-org", "a-pat"}) {
				t.Fatalf("got %v", grantIDs(got))
			}
			got, err = e.s.GrantsExpiringBefore(e.ctx, e.now().Add(day), 0)
			must(t, err)
			if len(got) != 0 {
				t.Fatalf("expired grants listed as expiring: %v", grantIDs(got))
			}
		})
		t.Run("revoked_drop_out_of_lists", func(t *testing.T) {
			_, err := e.s.RevokeGrant(e.ctx, "acme", "a-org", "cora", "acme")
			must(t, err)
			got, err := e.s.GrantsByPartner(e.ctx, "p1", "sam")
			must(t, err)
			if len(got) != 0 {
				t.Fatalf("got %v", grantIDs(got))
			}
		})
	})
}

// ---- shares and subscriptions ----------------------------------------------

func testShares(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	for _, sh := range []sidecar.Share{
		{Customer: "acme", Resource: "SR-1", User: "pat", PartnerOrg: "p1", SharedBy: "boss", SharedAt: e.now()},
		{Customer: "acme", Resource: "SR-2", User: "pat", PartnerOrg: "p1"},
		{Customer: "acme", Resource: "SR-2", User: "sam", PartnerOrg: "p1"},
		{Customer: "acme", Resource: "SR-3", User: "pat", PartnerOrg: "p2"},
		{Customer: "globex", Resource: "SR-9", User: "pat", PartnerOrg: "p1"},
	} {
		must(t, ignore(e.s.PutShare(e.ctx, &sh)))
	}
	// A share is made to a user of one partner organisation: the same
	// subject in another organisation is someone else.
	cases := []struct {
		name, customer, resource, org, user string
		want                                bool
	}{
		{"shared", "acme", "SR-1", "p1", "pat", true},
		{"shared_with_other_user", "acme", "SR-1", "p1", "sam", false},
		{"same_user_of_other_org", "acme", "SR-1", "p2", "pat", false},
		{"no_org", "acme", "SR-1", "", "pat", false},
		{"other_customer", "globex", "SR-1", "p1", "pat", false},
		{"unknown_resource", "acme", "SR-404", "p1", "pat", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := e.s.IsShared(e.ctx, tc.customer, tc.resource, tc.org, tc.user)
			must(t, err)
			if ok != tc.want {
				t.Fatalf("IsShared = %v", ok)
			}
		})
	}
	t.Run("lists", func(t *testing.T) {
		for _, tc := range []struct {
			org  string
			want []string
		}{{"p1", []string{"SR-1", "SR-2"}}, {"p2", []string{"SR-3"}}, {"p3", nil}, {"", nil}} {
			got, err := e.s.SharesFor(e.ctx, "acme", tc.org, "pat")
			must(t, err)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("SharesFor(acme, %q, pat) = %v, want %v", tc.org, got, tc.want)
			}
		}
		all, err := e.s.ListShares(e.ctx, "acme")
		must(t, err)
		if len(all) != 4 || all[0].SharedBy != "boss" || !slices.IsSortedFunc(all, sidecar.ShareOrder) {
			t.Fatalf("ListShares = %+v", all)
		}
	})
	t.Run("same_resource_and_user_in_two_orgs", func(t *testing.T) {
		must(t, ignore(e.s.PutShare(e.ctx, &sidecar.Share{Customer: "acme", Resource: "SR-3", User: "pat", PartnerOrg: "p1"})))
		for _, org := range []string{"p1", "p2"} {
			if ok, err := e.s.IsShared(e.ctx, "acme", "SR-3", org, "pat"); err != nil || !ok {
				t.Fatalf("SR-3 with pat of %s: %v %v", org, ok, err)
			}
		}
		must(t, ignore(e.s.DeleteShare(e.ctx, "acme", "SR-3", "p1", "pat", "boss")))
		if ok, err := e.s.IsShared(e.ctx, "acme", "SR-3", "p2", "pat"); err != nil || !ok {
			t.Fatalf("deleting p1's share took p2's: %v %v", ok, err)
		}
	})
	t.Run("delete", func(t *testing.T) {
		wantCode(t, ignore(e.s.DeleteShare(e.ctx, "acme", "SR-1", "p2", "pat", "boss")), sidecar.ENOTFOUND)
		removedAt := e.clock.Now()
		sh, err := e.s.DeleteShare(e.ctx, "acme", "SR-1", "p1", "pat", "boss")
		must(t, err)
		if sh.Resource != "SR-1" || sh.PartnerOrg != "p1" || sh.User != "pat" || !sh.RemovedAt.Equal(removedAt) || sh.RemovedBy != "boss" {
			t.Fatalf("DeleteShare answered %+v", sh)
		}
		ok, err := e.s.IsShared(e.ctx, "acme", "SR-1", "p1", "pat")
		must(t, err)
		if ok {
			t.Fatal("still shared after delete")
		}
		wantCode(t, ignore(e.s.DeleteShare(e.ctx, "acme", "SR-1", "p1", "pat", "boss")), sidecar.ENOTFOUND)
	})
	// A removed share is kept, as removed, for sidecar.AppendOnceWindow:
	// a retried withdrawal finds there what it removed, when and by whom.
	t.Run("removed_kept_for_the_once_window", func(t *testing.T) {
		e := newEnv(t)
		for _, r := range []string{"SR-1", "SR-2"} {
			must(t, ignore(e.s.PutShare(e.ctx, &sidecar.Share{Customer: "acme", Resource: r, User: "pat", PartnerOrg: "p1", SharedBy: "boss", SharedAt: e.clock.Now()})))
		}
		removed, err := e.s.RemovedShares(e.ctx, "acme")
		must(t, err)
		if len(removed) != 0 {
			t.Fatalf("nothing removed; RemovedShares = %+v", removed)
		}
		first := e.clock.Now()
		must(t, ignore(e.s.DeleteShare(e.ctx, "acme", "SR-1", "p1", "pat", "boss")))
		e.clock.Advance(sidecar.AppendOnceWindow / 2)
		must(t, ignore(e.s.DeleteShare(e.ctx, "acme", "SR-2", "p1", "pat", "cora")))
		removed, err = e.s.RemovedShares(e.ctx, "acme")
		must(t, err)
		if len(removed) != 2 || removed[0].Resource != "SR-1" || !removed[0].RemovedAt.Equal(first) || removed[0].RemovedBy != "boss" ||
			removed[0].SharedBy != "boss" || removed[1].Resource != "SR-2" || removed[1].RemovedBy != "cora" {
			t.Fatalf("RemovedShares = %+v", removed)
		}
		if other, err := e.s.RemovedShares(e.ctx, "globex"); err != nil || len(other) != 0 {
			t.Fatalf("RemovedShares of another customer = %+v, %v", other, err)
		}
		e.clock.Advance(sidecar.AppendOnceWindow / 2)
		removed, err = e.s.RemovedShares(e.ctx, "acme")
		must(t, err)
		if len(removed) != 1 || removed[0].Resource != "SR-2" {
			t.Fatalf("an hour after SR-1's removal, RemovedShares = %+v", removed)
		}
		// Shared and withdrawn again: the last removal is the one kept.
		must(t, ignore(e.s.PutShare(e.ctx, &sidecar.Share{Customer: "acme", Resource: "SR-2", User: "pat", PartnerOrg: "p1", SharedBy: "boss", SharedAt: e.clock.Now()})))
		must(t, ignore(e.s.DeleteShare(e.ctx, "acme", "SR-2", "p1", "pat", "boss")))
		removed, err = e.s.RemovedShares(e.ctx, "acme")
		must(t, err)
		if len(removed) != 1 || removed[0].RemovedBy != "boss" || !removed[0].RemovedAt.Equal(e.clock.Now()) {
			t.Fatalf("after a second withdrawal of SR-2, RemovedShares = %+v", removed)
		}
	})
	// A put that repeats the share stored (Share.Retried: same sharer,
	// within the once window) keeps it, and its time; after a withdrawal,
	// by another sharer or past the window, the put is stored as given.
	t.Run("put_again", func(t *testing.T) {
		e := newEnv(t)
		first := e.clock.Now()
		put := func(by string) *sidecar.Share {
			t.Helper()
			got, err := e.s.PutShare(e.ctx, &sidecar.Share{Customer: "acme", Resource: "SR-1", User: "pat", PartnerOrg: "p1", SharedBy: by, SharedAt: e.clock.Now()})
			must(t, err)
			return got
		}
		if got := put("boss"); !got.SharedAt.Equal(first) || got.SharedBy != "boss" {
			t.Fatalf("first put answered %+v", got)
		}
		e.clock.Advance(time.Minute)
		if got := put("boss"); !got.SharedAt.Equal(first) {
			t.Fatalf("the same put a minute later answered as shared at %v, want the first's %v", got.SharedAt, first)
		}
		kept, err := e.s.SharesChanged(e.ctx, first)
		must(t, err)
		if len(kept) != 1 {
			t.Fatalf("one share put twice as the same write: %d kept, want 1", len(kept))
		}
		must(t, ignore(e.s.DeleteShare(e.ctx, "acme", "SR-1", "p1", "pat", "cora")))
		if got := put("boss"); !got.SharedAt.Equal(e.clock.Now()) {
			t.Fatalf("put again after a withdrawal answered as shared at %v, want %v", got.SharedAt, e.clock.Now())
		}
		e.clock.Advance(time.Minute)
		if got := put("cora"); got.SharedBy != "cora" || !got.SharedAt.Equal(e.clock.Now()) {
			t.Fatalf("put by another sharer answered %+v", got)
		}
		e.clock.Advance(sidecar.AppendOnceWindow)
		if got := put("cora"); !got.SharedAt.Equal(e.clock.Now()) {
			t.Fatalf("put again past the window answered as shared at %v, want %v", got.SharedAt, e.clock.Now())
		}
		if ok, err := e.s.IsShared(e.ctx, "acme", "SR-1", "p1", "pat"); err != nil || !ok {
			t.Fatalf("IsShared after the puts: %v, %v", ok, err)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		wantCode(t, ignore(e.s.PutShare(e.ctx, &sidecar.Share{Customer: "acme", User: "pat", PartnerOrg: "p1"})), sidecar.EINVALID)
		wantCode(t, ignore(e.s.PutShare(e.ctx, &sidecar.Share{Customer: "acme", Resource: "SR-5", User: "pat"})), sidecar.EINVALID)
	})
}

func testSubscriptions(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	for _, s := range []sidecar.Subscription{
		{User: "pat", Customer: "acme", Kind: "notifications", CreatedAt: e.now()},
		{User: "pat", Customer: "acme", Kind: "dashboard"},
		{User: "pat", Customer: "globex", Kind: "notifications"},
		{User: "sam", Customer: "acme", Kind: "notifications"},
	} {
		must(t, e.s.PutSubscription(e.ctx, &s))
	}
	key := func(ss []sidecar.Subscription) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.User+"/"+s.Customer+"/"+s.Kind)
		}
		slices.Sort(out)
		return out
	}
	t.Run("by_user", func(t *testing.T) {
		got, err := e.s.SubscriptionsByUser(e.ctx, "pat")
		must(t, err)
		if want := []string{"pat/acme/dashboard", "pat/acme/notifications", "pat/globex/notifications"}; !slices.Equal(key(got), want) {
			t.Fatalf("got %v", key(got))
		}
	})
	t.Run("by_customer", func(t *testing.T) {
		got, err := e.s.SubscriptionsByCustomer(e.ctx, "acme")
		must(t, err)
		if want := []string{"pat/acme/dashboard", "pat/acme/notifications", "sam/acme/notifications"}; !slices.Equal(key(got), want) {
			t.Fatalf("got %v", key(got))
		}
	})
	t.Run("delete", func(t *testing.T) {
		must(t, e.s.DeleteSubscription(e.ctx, "pat", "acme", "dashboard"))
		got, err := e.s.SubscriptionsByUser(e.ctx, "pat")
		must(t, err)
		if len(got) != 2 {
			t.Fatalf("got %v", key(got))
		}
		wantCode(t, e.s.DeleteSubscription(e.ctx, "pat", "acme", "dashboard"), sidecar.ENOTFOUND)
	})
	t.Run("invalid", func(t *testing.T) {
		wantCode(t, e.s.PutSubscription(e.ctx, &sidecar.Subscription{User: "pat", Customer: "acme"}), sidecar.EINVALID)
	})
}

// ---- assignments -------------------------------------------------------------

func testAssignments(t *testing.T, newEnv func(*testing.T) *env) {
	t.Run("put_get_move_delete", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.PutAssignment(e.ctx, &sidecar.Assignment{Customer: "c1", Reseller: "r1", Domain: "eu.r1", UpdatedBy: "admin", UpdatedAt: e.now()}))
		got, err := e.s.GetAssignment(e.ctx, "c1")
		must(t, err)
		if got.Domain != "eu.r1" || got.Reseller != "r1" || got.UpdatedBy != "admin" {
			t.Fatalf("got %+v", got)
		}
		must(t, e.s.PutAssignment(e.ctx, &sidecar.Assignment{Customer: "c1", Reseller: "r1", Domain: "us.r1"}))
		eu, _, err := e.s.AssignmentsByDomain(e.ctx, "eu.r1", sidecar.Page{})
		must(t, err)
		if len(eu) != 0 {
			t.Fatalf("moved customer still listed in old domain: %+v", eu)
		}
		us, _, err := e.s.AssignmentsByDomain(e.ctx, "us.r1", sidecar.Page{})
		must(t, err)
		if len(us) != 1 || us[0].Customer != "c1" {
			t.Fatalf("us = %+v", us)
		}
		must(t, e.s.DeleteAssignment(e.ctx, "c1"))
		_, err = e.s.GetAssignment(e.ctx, "c1")
		wantCode(t, err, sidecar.ENOTFOUND)
		us, _, err = e.s.AssignmentsByDomain(e.ctx, "us.r1", sidecar.Page{})
		must(t, err)
		if len(us) != 0 {
			t.Fatalf("deleted customer still listed: %+v", us)
		}
		wantCode(t, e.s.DeleteAssignment(e.ctx, "c1"), sidecar.ENOTFOUND)
	})
	t.Run("bulk_and_domain_isolation", func(t *testing.T) {
		e := newEnv(t)
		var as []sidecar.Assignment
		for i := range 7 {
			d := "eu.r1"
			if i%2 == 1 {
				d = "us.r1"
			}
			as = append(as, sidecar.Assignment{Customer: fmt.Sprintf("c%d", i), Reseller: "r1", Domain: d})
		}
		n, err := e.s.PutAssignments(e.ctx, as)
		must(t, err)
		if n != 7 {
			t.Fatalf("stored %d", n)
		}
		var eu []string
		p := sidecar.Page{Limit: 2}
		for i := 0; ; i++ {
			got, next, err := e.s.AssignmentsByDomain(e.ctx, "eu.r1", p)
			must(t, err)
			for _, a := range got {
				if a.Domain != "eu.r1" {
					t.Fatalf("%s listed in eu.r1 but assigned to %s", a.Customer, a.Domain)
				}
				eu = append(eu, a.Customer)
			}
			if next == "" {
				break
			}
			if i > 10 {
				t.Fatal("cursor does not advance")
			}
			p.Cursor = next
		}
		if !slices.Equal(eu, []string{"c0", "c2", "c4", "c6"}) {
			t.Fatalf("eu = %v", eu)
		}
	})
	t.Run("get_many", func(t *testing.T) {
		e := newEnv(t)
		// More than one round trip's worth, every other customer assigned.
		var as []sidecar.Assignment
		names := make([]string, 1200)
		for i := range names {
			names[i] = fmt.Sprintf("m%d", i)
			if i%2 == 0 {
				as = append(as, sidecar.Assignment{Customer: names[i], Reseller: "r1", Domain: fmt.Sprintf("d%d.r1", i%3)})
			}
		}
		_, err := e.s.PutAssignments(e.ctx, as)
		must(t, err)
		got, err := e.s.GetAssignments(e.ctx, names)
		must(t, err)
		if len(got) != len(names) {
			t.Fatalf("%d answers for %d customers", len(got), len(names))
		}
		for i, a := range got {
			switch {
			case i%2 == 1 && a != nil:
				t.Fatalf("%s is unassigned, read %+v", names[i], a)
			case i%2 == 0 && (a == nil || a.Customer != names[i] || a.Domain != fmt.Sprintf("d%d.r1", i%3)):
				t.Fatalf("%s read as %+v", names[i], a)
			}
		}
		if got, err := e.s.GetAssignments(e.ctx, nil); err != nil || len(got) != 0 {
			t.Fatalf("no customers: %v, %v", got, err)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		e := newEnv(t)
		cases := []struct {
			name, field string
			a           sidecar.Assignment
		}{
			{"no_customer", "customer", sidecar.Assignment{Reseller: "r1", Domain: "d"}},
			{"no_domain", "domain", sidecar.Assignment{Customer: "c1", Reseller: "r1"}},
			{"no_reseller", "reseller", sidecar.Assignment{Customer: "c1", Domain: "d"}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				err := e.s.PutAssignment(e.ctx, &tc.a)
				wantCode(t, err, sidecar.EINVALID)
				if sidecar.ErrorField(err) != tc.field {
					t.Fatalf("field = %q", sidecar.ErrorField(err))
				}
			})
		}
		_, err := e.s.PutAssignments(e.ctx, []sidecar.Assignment{{Customer: "ok", Reseller: "r", Domain: "d"}, {Customer: "bad"}})
		wantCode(t, err, sidecar.EINVALID)
		_, err = e.s.GetAssignment(e.ctx, "ok")
		wantCode(t, err, sidecar.ENOTFOUND)
	})
}

// ---- streams ---------------------------------------------------------------

func testEvents(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	types := []string{sidecar.EventGrantRequested, sidecar.EventImpersonationStarted, sidecar.EventGrantApproved,
		sidecar.EventImpersonationEnded, sidecar.EventConsentChanged}
	for i, typ := range types {
		ev := &sidecar.Event{Type: typ, Customer: []string{"acme", "globex"}[i%2], Actor: "alice",
			Data: map[string]string{"n": fmt.Sprint(i)}}
		must(t, e.s.AppendEvent(e.ctx, ev))
		if ev.ID == "" || ev.Time.IsZero() {
			t.Fatalf("append did not assign id and time: %+v", ev)
		}
		e.clock.Advance(time.Second)
	}
	cases := []struct {
		name string
		f    sidecar.StreamFilter
		want []string
	}{
		{"all_oldest_first", sidecar.StreamFilter{}, []string{"0", "1", "2", "3", "4"}},
		{"by_type", sidecar.StreamFilter{Type: sidecar.EventGrantApproved}, []string{"2"}},
		{"by_customer", sidecar.StreamFilter{Customer: "globex"}, []string{"1", "3"}},
		{"by_time", sidecar.StreamFilter{From: Epoch.Add(time.Second), To: Epoch.Add(3 * time.Second)}, []string{"1", "2"}},
		{"by_actor_none", sidecar.StreamFilter{Actor: "bob"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := e.s.ReadEvents(e.ctx, tc.f)
			must(t, err)
			var ns []string
			for _, ev := range got {
				ns = append(ns, ev.Data["n"])
			}
			if !slices.Equal(ns, tc.want) {
				t.Fatalf("got %v, want %v", ns, tc.want)
			}
		})
	}
	t.Run("follow_with_cursor", func(t *testing.T) {
		var ns []string
		f := sidecar.StreamFilter{Page: sidecar.Page{Limit: 2}}
		for i := 0; ; i++ {
			got, next, err := e.s.ReadEvents(e.ctx, f)
			must(t, err)
			for _, ev := range got {
				ns = append(ns, ev.Data["n"])
			}
			if next == "" {
				break
			}
			if i > 10 {
				t.Fatal("cursor does not advance")
			}
			f.Cursor = next
		}
		if !slices.Equal(ns, []string{"0", "1", "2", "3", "4"}) {
			t.Fatalf("got %v", ns)
		}
	})
	t.Run("malformed_cursor", func(t *testing.T) {
		_, _, err := e.s.ReadEvents(e.ctx, sidecar.StreamFilter{Page: sidecar.Page{Cursor: "x"}})
		wantCode(t, err, sidecar.EINVALID)
	})
	t.Run("type_required", func(t *testing.T) {
		wantCode(t, e.s.AppendEvent(e.ctx, &sidecar.Event{}), sidecar.EINVALID)
	})
}

func testAudit(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	must(t, e.s.AppendEvent(e.ctx, &sidecar.Event{Type: sidecar.EventConsentChanged, Customer: "acme"}))
	for i, action := range []string{"session.start", "grant.revoke", "session.start"} {
		must(t, e.s.AppendAudit(e.ctx, &sidecar.AuditEntry{Actor: []string{"alice", "bob"}[i%2], Action: action,
			Customer: "acme", Target: fmt.Sprintf("t%d", i), Outcome: "ok", Data: map[string]string{"ip": "10.0.0.1"}}))
	}
	t.Run("separate_from_events", func(t *testing.T) {
		got, _, err := e.s.ReadAudit(e.ctx, sidecar.StreamFilter{})
		must(t, err)
		if len(got) != 3 || got[0].Target != "t0" || got[0].Data["ip"] != "10.0.0.1" || got[0].Outcome != "ok" {
			t.Fatalf("audit = %+v", got)
		}
		evs, _, err := e.s.ReadEvents(e.ctx, sidecar.StreamFilter{})
		must(t, err)
		if len(evs) != 1 {
			t.Fatalf("events = %+v", evs)
		}
	})
	t.Run("filter", func(t *testing.T) {
		got, _, err := e.s.ReadAudit(e.ctx, sidecar.StreamFilter{Type: "session.start", Actor: "alice"})
		must(t, err)
		if len(got) != 2 || got[1].Target != "t2" {
			t.Fatalf("audit = %+v", got)
		}
	})
	t.Run("action_required", func(t *testing.T) {
		wantCode(t, e.s.AppendAudit(e.ctx, &sidecar.AuditEntry{Actor: "x"}), sidecar.EINVALID)
	})
}

// ---- invalidation ------------------------------------------------------------

// waitKey waits (bounded) for key on ch, skipping others.
// waitKey waits until every one of keys arrives on ch, in any order.
func waitKey(t *testing.T, ch <-chan string, keys ...string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for len(keys) > 0 {
		select {
		case k := <-ch:
			keys = slices.DeleteFunc(keys, func(want string) bool { return want == k })
		case <-deadline:
			t.Fatalf("invalidations %q never arrived", keys)
		}
	}
}

// deliveredKey fails unless key is among what ch already holds: it waits
// for nothing.
func deliveredKey(t *testing.T, ch <-chan string, key string) {
	t.Helper()
	for {
		select {
		case k := <-ch:
			if k == key {
				return
			}
		default:
			t.Fatalf("invalidation %q not delivered to this store's subscribers before the write returned", key)
		}
	}
}

func testInvalidation(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	keys := func(s sidecar.Store) (chan string, func()) {
		ch := make(chan string, 1024)
		return ch, s.Subscribe(func(k string) {
			select {
			case ch <- k:
			default:
			}
		})
	}
	ch, cancel := keys(e.s)
	defer cancel()
	peerCh, cancelPeer := keys(e.peer)
	defer cancelPeer()
	must(t, begin(e, newSession(e, "s1", "alice", "c1")))
	must(t, ignore(redeem(e, "s1", "tok")))
	must(t, e.s.PutGrant(e.ctx, grant(e, "g1", "acme", "p1", "", sidecar.LevelLook, time.Hour)))
	must(t, e.s.PutAssignment(e.ctx, &sidecar.Assignment{Customer: "c1", Reseller: "r", Domain: "d"}))
	must(t, ignore(e.s.PutShare(e.ctx, &sidecar.Share{Customer: "acme", Resource: "SR-1", User: "pat", PartnerOrg: "p1"})))
	must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c3"}, sidecar.Protection{})))
	mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c3", Allowed: true, SetBy: "c3", SetAt: e.now()}))

	// Narrowing writes hold on every replica when they return; widening
	// ones reach the others when the message does.
	cases := []struct {
		name      string
		write     func() error
		key       string
		narrowing bool
	}{
		{"session_redeemed", func() error {
			if err := begin(e, newSession(e, "s2", "bob", "c2")); err != nil {
				return err
			}
			_, err := redeem(e, "s2", "tok2")
			return err
		}, sidecar.SessionKey("tok2"), false},
		{"session_end", func() error {
			_, err := e.s.EndSession(e.ctx, "s1", "a", sidecar.EndEnded, e.now(), sidecar.SessionLimits{})
			return err
		}, sidecar.SessionKey("tok"), true},
		{"consent_withdrawn", func() error {
			_, err := e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c1", Allowed: false, SetBy: "c1", SetAt: e.now()})
			return err
		}, sidecar.ConsentKey("c1"), true},
		{"grant_revoked", func() error { _, err := e.s.RevokeGrant(e.ctx, "acme", "g1", "cora", "acme"); return err }, sidecar.GrantKey("acme"), true},
		{"grant_replaced", func() error {
			// Approved after the revocation above, which its Seq follows.
			if err := e.s.CreateRequest(e.ctx, newRequest(e, "r-g2", "p1", "acme")); err != nil {
				return err
			}
			r, err := e.s.DecideRequest(e.ctx, "r-g2", sidecar.RequestApproved, "boss", e.now())
			if err != nil {
				return err
			}
			g := grant(e, "g2", "acme", "p1", "", sidecar.LevelCC, time.Hour)
			g.Seq = r.Seq
			return e.s.PutGrant(e.ctx, g)
		}, sidecar.GrantKey("acme"), true},
		{"assignment_moved", func() error {
			_, err := e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{{Customer: "c1", From: "d", To: &sidecar.Assignment{Customer: "c1", Reseller: "r", Domain: "d2"}}})
			return err
		}, sidecar.AssignmentKey("c1"), true},
		{"assignment_removed", func() error { return e.s.DeleteAssignment(e.ctx, "c1") }, sidecar.AssignmentKey("c1"), true},
		// Every spelling of c1 is cached and evicted as one entry.
		{"assignment_claimed_under_a_variant", func() error {
			_, err := e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{{Customer: "C1", To: &sidecar.Assignment{Customer: "C1", Reseller: "r", Domain: "d"}}})
			return err
		}, "assign:c1", false},
		{"share_removed", func() error { return ignore(e.s.DeleteShare(e.ctx, "acme", "SR-1", "p1", "pat", "cora")) }, sidecar.ShareKey("acme"), true},
		{"customer_changed", func() error {
			return ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c2", Name: "x"}, sidecar.Protection{}))
		}, sidecar.CustomerKey("c2"), true},
		{"customer_protected_ends_sessions", func() error {
			return ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c2", Protected: true}, sidecar.Protection{}))
		}, sidecar.SessionKey("tok2"), true}, // s2, redeemed above and still live
		{"staff_marked", func() error { return ignore(e.s.MarkStaff(e.ctx, "c9")) }, sidecar.CustomerKey("c9"), true},
		{"customer_deleted_withdraws_consent", func() error { return ignore(e.s.DeleteCustomer(e.ctx, "c3", "sync")) }, sidecar.ConsentKey("c3"), true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A barrier: once it arrives, every earlier key has too, so the
			// key waited for below comes from this case's write.
			barrier := fmt.Sprintf("barrier:%d", i)
			must(t, e.s.Invalidate(e.ctx, barrier))
			waitKey(t, ch, barrier)
			waitKey(t, peerCh, barrier)
			must(t, tc.write())
			// This store's own subscribers have the key by the time the
			// write returns: a write holds on the replica that made it
			// from its next request on, not once a message from the bus
			// comes back.
			deliveredKey(t, ch, tc.key)
			// A narrowing write holds on every replica from the next
			// request on.
			if tc.narrowing {
				deliveredKey(t, peerCh, tc.key)
			}
		})
	}
	// Invalidate itself is the bus: what it publishes reaches this store's
	// subscribers too, when it comes back.
	t.Run("explicit", func(t *testing.T) {
		must(t, e.s.Invalidate(e.ctx, "custom:1"))
		waitKey(t, ch, "custom:1")
	})
	t.Run("cancel_stops_delivery", func(t *testing.T) {
		cancel()
		second := make(chan string, 16)
		cancel2 := e.s.Subscribe(func(k string) { second <- k })
		defer cancel2()
		must(t, e.s.Invalidate(e.ctx, "after-cancel"))
		waitKey(t, second, "after-cancel") // delivered to the live subscriber...
		select {
		case k := <-ch: // ...and by then not to the cancelled one
			if k == "after-cancel" {
				t.Fatal("cancelled subscriber still called")
			}
		default:
		}
	})
}

func testPing(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	must(t, e.s.Ping(e.ctx))
}
