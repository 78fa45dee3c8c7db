package storetest

import (
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// testWriterAhead: a write stamped later than the store's time (a
// replica whose clock runs ahead of the others') neither records that
// future as the session's nor takes a session still live by the store's
// time for over. The store's time is its clock (on Redis, the earlier of
// its clock and Redis's).
func testWriterAhead(t *testing.T, newEnv func(*testing.T) *env) {
	const ahead, left = 5 * time.Minute, 2 * time.Minute
	// A last-seen in the future would keep the session from going idle
	// that much past its idle timeout, for every replica.
	t.Run("touch_records_no_later_than_the_store_time", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1")))
		must(t, e.s.TouchSession(e.ctx, "s1", e.now().Add(ahead)))
		got, err := e.s.GetSession(e.ctx, "s1")
		must(t, err)
		if !got.LastSeen.Equal(e.now()) {
			t.Fatalf("touched at %v with the store at %v: last seen %v, want the store's time", e.now().Add(ahead), e.now(), got.LastSeen)
		}
		if state := got.EndState(e.now().Add(got.IdleTimeout)); state != sidecar.EndIdle {
			t.Fatalf("a full idle timeout after the store's time: %q, want %q", state, sidecar.EndIdle)
		}
	})
	// A start stamped ahead of the store's time, StartNoLater, starts at
	// the store's time: the session's max_session and its redeem code's
	// TTL count from there, and the starter holds it as stored. An expiry
	// its staff member's token set stays. Without StartNoLater the start
	// is kept as given.
	t.Run("start_moves_back_to_the_store_time", func(t *testing.T) {
		e := newEnv(t)
		const maxSession, codeTTL = 10 * time.Minute, time.Minute
		must(t, ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{ID: "c1"}, sidecar.Protection{})))
		mustEnd(t)(e.s.SetConsent(e.ctx, &sidecar.Consent{Customer: "c1", Allowed: true, SetBy: "c1", SetAt: e.now()}))
		start := func(id string, lasts time.Duration, noLater bool) *sidecar.Session {
			t.Helper()
			at := e.now().Add(ahead)
			s := &sidecar.Session{ID: id, Actor: "staff-" + id, Customer: "c1", StartedAt: at, ExpiresAt: at.Add(lasts), IdleTimeout: maxSession}
			must(t, ignore(e.s.StartSession(e.ctx, sidecar.SessionStart{Session: s, CodeHash: codeOf(id), CodeExpiresAt: at.Add(codeTTL),
				Limits: sidecar.SessionLimits{MaxSession: maxSession}, StartNoLater: noLater})))
			got, err := e.s.GetSession(e.ctx, id)
			must(t, err)
			if !got.StartedAt.Equal(s.StartedAt) || !got.ExpiresAt.Equal(s.ExpiresAt) {
				t.Fatalf("%s: the starter holds it as started %v, expiring %v; stored %v, %v", id, s.StartedAt, s.ExpiresAt, got.StartedAt, got.ExpiresAt)
			}
			return got
		}
		if s := start("max", maxSession, true); !s.StartedAt.Equal(e.now()) || !s.ExpiresAt.Equal(e.now().Add(maxSession)) {
			t.Fatalf("started %v, expiring %v; want the store's time %v, and max_session from it", s.StartedAt, s.ExpiresAt, e.now())
		}
		if s := start("token", 3*time.Minute, true); !s.StartedAt.Equal(e.now()) || !s.ExpiresAt.Equal(e.now().Add(ahead+3*time.Minute)) {
			t.Fatalf("started %v, expiring %v; want the store's time %v, and the token's expiry", s.StartedAt, s.ExpiresAt, e.now())
		}
		if s := start("kept", maxSession, false); !s.StartedAt.Equal(e.now().Add(ahead)) {
			t.Fatalf("started %v without StartNoLater, want as given, %v", s.StartedAt, e.now().Add(ahead))
		}
		e.clock.Advance(codeTTL + time.Second)
		_, err := e.s.RedeemSession(e.ctx, codeOf("max"), "h1", "shop.example.com", "", sidecar.SessionLimits{})
		wantCode(t, err, sidecar.ENOTFOUND) // a code TTL past the store's time: expired
		must(t, ignore(e.s.RedeemSession(e.ctx, codeOf("kept"), "h2", "shop.example.com", "", sidecar.SessionLimits{})))
	})
	// An end stamped ahead of the store's time ends, as asked, a session
	// the store's time holds live: taken for lapsed, it was left live for
	// every replica. One the store's time holds lapsed within the limits
	// given is ended as lapsed, as the sweep would have (EndLapsed), not
	// as the caller's: its lapse came first.
	t.Run("end_judges_lapse_at_the_store_time", func(t *testing.T) {
		e := newEnv(t)
		const maxSession = time.Hour
		live := newSession(e, "live", "alice", "c1")
		live.ExpiresAt = e.now().Add(left)
		must(t, begin(e, live))
		must(t, ignore(redeem(e, "live", "h1")))
		must(t, begin(e, newSession(e, "capped", "bob", "c2")))
		e.clock.Advance(time.Minute)
		at := e.now().Add(ahead)
		l := sidecar.SessionLimits{MaxSession: maxSession}
		got, err := e.s.EndSession(e.ctx, "live", "alice", sidecar.EndEnded, at, l)
		must(t, err)
		if got.EndedBy != "alice" || got.EndReason != sidecar.EndEnded || !got.EndedAt.Equal(at) {
			t.Fatalf("ended %v ahead, with %v left by the store's time: %+v, want ended by alice as asked", ahead, left-time.Minute, got)
		}
		byTok, err := e.peer.SessionByToken(e.ctx, "h1")
		must(t, err)
		if byTok.Live(e.now()) {
			t.Fatalf("the session after its end, read through another client: %+v, want ended", byTok)
		}
		// Past max_session by the store's time, and by the limits alone.
		e.clock.Advance(maxSession)
		got, err = e.s.EndSession(e.ctx, "capped", "bob", sidecar.EndEnded, e.now(), sidecar.SessionLimits{MaxSession: time.Minute})
		must(t, err)
		if got.EndedBy != sidecar.SweepActor || got.EndReason != sidecar.EndExpired || !got.EndedAt.Equal(e.now()) {
			t.Fatalf("ended past max_session: %+v, want ended as expired by %s at %v", got, sidecar.SweepActor, e.now())
		}
		if !got.ExpiresAt.Equal(got.StartedAt.Add(time.Minute)) {
			t.Fatalf("ended as lapsed: expires %v, want the limit's %v", got.ExpiresAt, got.StartedAt.Add(time.Minute))
		}
	})
	// A decision stamped ahead of the store's time is stamped at the
	// store's time: the grants an approval issues count their days from
	// it, and one ahead would outlive them on every replica.
	t.Run("decision_moves_back_to_the_store_time", func(t *testing.T) {
		e := newEnv(t)
		for _, st := range []string{sidecar.RequestApproved, sidecar.RequestRejected} {
			must(t, e.s.CreateRequest(e.ctx, newRequest(e, st, "p1", "acme")))
			got, err := e.s.DecideRequest(e.ctx, st, st, "boss", e.now().Add(ahead))
			must(t, err)
			if !got.DecidedAt.Equal(e.now()) || got.Status != st {
				t.Fatalf("%s %v ahead: decided %v as %s, want at the store's time %v", st, ahead, got.DecidedAt, got.Status, e.now())
			}
			stored, err := e.s.GetRequest(e.ctx, st)
			must(t, err)
			if !stored.DecidedAt.Equal(e.now()) {
				t.Fatalf("%s: stored as decided %v, want %v", st, stored.DecidedAt, e.now())
			}
		}
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "behind", "p1", "acme")))
		behind := e.now().Add(-time.Minute)
		got, err := e.s.DecideRequest(e.ctx, "behind", sidecar.RequestApproved, "boss", behind)
		must(t, err)
		if !got.DecidedAt.Equal(behind) {
			t.Fatalf("decided by a replica a minute behind: %v, want its own time %v", got.DecidedAt, behind)
		}
	})
	// A sweep whose now runs ahead of the store's time ends a session
	// that is live by the store's time: passed over as expired, it would
	// stay live for every replica until a sweep of its own.
	for _, tc := range []struct {
		name   string
		reason string
		sweep  func(e *env, now time.Time) ([]sidecar.Session, error)
	}{
		{"protected_sweep_ends_what_the_store_holds_live", sidecar.EndCustomerProtected, func(e *env, now time.Time) ([]sidecar.Session, error) {
			return e.s.EndProtectedSessions(e.ctx, sidecar.Protection{Customers: []string{"c1"}}, now)
		}},
		{"unpermitted_sweep_ends_what_the_store_holds_live", sidecar.EndActorNotPermitted, func(e *env, now time.Time) ([]sidecar.Session, error) {
			return e.s.EndUnpermittedSessions(e.ctx, []string{"admin"}, now)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			s := newSession(e, "s1", "alice", "c1")
			s.ExpiresAt = e.now().Add(left)
			must(t, begin(e, s))
			must(t, ignore(redeem(e, "s1", "h1")))
			ended, err := tc.sweep(e, e.now().Add(ahead))
			must(t, err)
			if len(ended) != 1 || ended[0].ID != "s1" || ended[0].EndReason != tc.reason {
				t.Fatalf("a sweep %v ahead ended %+v, want s1 (live for %v more) as %s", ahead, ended, left, tc.reason)
			}
			got, err := e.peer.SessionByToken(e.ctx, "h1")
			must(t, err)
			if got.Live(e.now()) || got.EndReason != tc.reason {
				t.Fatalf("the session after the sweep: %+v, want ended as %s", got, tc.reason)
			}
		})
	}
}
