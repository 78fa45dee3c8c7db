package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// testSessionLimits: the session limits policy data sets now
// (sidecar.SessionLimits) bound the sessions already started, as well as
// what each stored at its start: a session older than the current
// max_session, or idle longer than the current idle_timeout, is not live
// to the live list nor to a redeem, and the sweep ends it (expired or
// idle, by Deputy) once across sweepers and evicts it everywhere. Raising
// a limit extends no session.
func testSessionLimits(t *testing.T, newEnv func(*testing.T) *env) {
	lowered := sidecar.SessionLimits{MaxSession: 10 * time.Minute, IdleTimeout: time.Hour}
	t.Run("lowered_max_session_ends_older_sessions", func(t *testing.T) {
		e := newEnv(t)
		started := e.now()
		must(t, begin(e, newSession(e, "old", "alice", "c1"))) // 1 h, idle after 15 min
		must(t, ignore(redeem(e, "old", "h-old")))
		e.clock.Advance(5 * time.Minute)
		must(t, begin(e, newSession(e, "young", "bob", "c2")))
		e.clock.Advance(6 * time.Minute) // old is 11 minutes old, young 6
		must(t, e.s.TouchSession(e.ctx, "old", e.now()))
		must(t, e.s.TouchSession(e.ctx, "young", e.now()))

		live, _, err := e.s.ListSessions(e.ctx, sidecar.SessionFilter{LiveOnly: true, Limits: lowered})
		must(t, err)
		if !slices.Equal(sessionIDs(live), []string{"young"}) {
			t.Fatalf("live within max_session 10m: %v, want [young]", sessionIDs(live))
		}
		if live, _, err = e.s.ListSessions(e.ctx, sidecar.SessionFilter{LiveOnly: true}); err != nil || len(live) != 2 {
			t.Fatalf("live as stored: %v (%v), want both", sessionIDs(live), err)
		}
		keys := subscribeKeys(t, e)
		all := sweepConcurrently(t, func() ([]sidecar.Session, error) { return e.s.EndLapsedSessions(e.ctx, e.now(), lowered) })
		if len(all) != 1 || all[0].ID != "old" || all[0].EndReason != sidecar.EndExpired || all[0].EndedBy != sidecar.SweepActor ||
			!all[0].EndedAt.Equal(e.now()) {
			t.Fatalf("six sweepers ended %+v, want old once, expired by deputy", all)
		}
		waitKey(t, keys, sidecar.SessionKey("h-old"))
		s, err := e.peer.GetSession(e.ctx, "old")
		must(t, err)
		if s.EndReason != sidecar.EndExpired || !s.ExpiresAt.Equal(started.Add(10*time.Minute)) {
			t.Fatalf("stored %+v, want ended as expired at its start plus the lowered max_session", s)
		}
		young, err := e.peer.GetSession(e.ctx, "young")
		must(t, err)
		if !young.Live(e.now()) || !young.ExpiresAt.Equal(started.Add(5*time.Minute+time.Hour)) {
			t.Fatalf("young %+v, want live and stored as it started", young)
		}
	})
	t.Run("lowered_idle_timeout_ends_idle_sessions", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1"))) // idle after 15 min
		must(t, begin(e, newSession(e, "s2", "bob", "c2")))
		e.clock.Advance(4 * time.Minute)
		must(t, e.s.TouchSession(e.ctx, "s2", e.now()))
		e.clock.Advance(2 * time.Minute) // s1 idle 6 minutes, s2 2
		l := sidecar.SessionLimits{MaxSession: time.Hour, IdleTimeout: 5 * time.Minute}
		ended, err := e.s.EndLapsedSessions(e.ctx, e.now(), l)
		must(t, err)
		if len(ended) != 1 || ended[0].ID != "s1" || ended[0].EndReason != sidecar.EndIdle || ended[0].EndedBy != sidecar.SweepActor {
			t.Fatalf("ended %+v, want s1, idle by deputy", ended)
		}
	})
	t.Run("raised_limits_extend_nothing", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1"))) // 1 h, idle after 15 min
		raised := sidecar.SessionLimits{MaxSession: 8 * time.Hour, IdleTimeout: 8 * time.Hour}
		e.clock.Advance(16 * time.Minute)
		if live, _, err := e.s.ListSessions(e.ctx, sidecar.SessionFilter{LiveOnly: true, Limits: raised}); err != nil || len(live) != 0 {
			t.Fatalf("live under raised limits after its own idle timeout: %v (%v)", sessionIDs(live), err)
		}
		ended, err := e.s.EndLapsedSessions(e.ctx, e.now(), raised)
		must(t, err)
		if len(ended) != 1 || ended[0].EndReason != sidecar.EndIdle || ended[0].IdleTimeout != 15*time.Minute {
			t.Fatalf("ended %+v, want s1 idle by its own 15 minutes", ended)
		}
		// No idle timeout now (zero) leaves the stored one in force too.
		must(t, begin(e, newSession(e, "s2", "bob", "c2")))
		e.clock.Advance(16 * time.Minute)
		ended, err = e.s.EndLapsedSessions(e.ctx, e.now(), sidecar.SessionLimits{MaxSession: time.Hour})
		must(t, err)
		if len(ended) != 1 || ended[0].ID != "s2" || ended[0].EndReason != sidecar.EndIdle {
			t.Fatalf("ended %+v, want s2 idle", ended)
		}
	})
	t.Run("redeem_refused_past_the_lowered_limit", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "s1", "alice", "c1")))
		e.clock.Advance(20 * time.Second)
		_, err := e.s.RedeemSession(e.ctx, codeOf("s1"), "h1", "shop.example.com", "", sidecar.SessionLimits{MaxSession: 10 * time.Second})
		if state, over := sidecar.SessionOverState(err); !over || state != sidecar.EndExpired {
			t.Fatalf("redeem 20 s in under max_session 10s: %v, want refused as expired", err)
		}
		if _, err := redeem(e, "s1", "h2"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
			t.Fatalf("the code after the refused redeem: %v, want used up", err)
		}
	})
	t.Run("a_start_ends_a_replaced_session_past_the_limit_as_expired", func(t *testing.T) {
		e := newEnv(t)
		must(t, begin(e, newSession(e, "old", "alice", "c1")))
		e.clock.Advance(11 * time.Minute)
		must(t, e.s.TouchSession(e.ctx, "old", e.now()))
		replaced, err := e.s.StartSession(e.ctx, sidecar.SessionStart{Session: newSession(e, "new", "alice", "c1"),
			CodeHash: codeOf("new"), CodeExpiresAt: e.now().Add(30 * time.Second), ReplaceLive: true, Limits: lowered})
		must(t, err)
		if len(replaced) != 1 || replaced[0].ID != "old" || replaced[0].EndReason != sidecar.EndExpired || replaced[0].EndedBy != sidecar.SweepActor {
			t.Fatalf("replaced %+v, want old ended as expired by deputy", replaced)
		}
	})
}
