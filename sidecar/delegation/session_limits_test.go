package delegation_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// limitsReplica is one Deputy replica: its store, its active policy
// data (which a bundle update swaps), the lifecycle and the check path's
// resolver reading it, the resolver caching sessions for an hour.
type limitsReplica struct {
	store sidecar.Store
	data  atomic.Pointer[map[string]any]
	lc    *delegation.Impersonation
	res   *resolve.SessionResolver
}

// resolve is the staff member's storefront request with the session
// cookie, decided under the replica's active policy data, as the check
// pipeline hands it to the resolver.
func (r *limitsReplica) resolve(token string) (*sidecar.Delegation, error) {
	req := &sidecar.Request{Host: "shop.example.com", Headers: map[string]string{"cookie": "deputy_session=" + token},
		PolicyData: *r.data.Load()}
	return r.res.Resolve(context.Background(), req, nil)
}

// limitsWorld is two replicas of one state: on Redis two stores on one
// server, on the embedded store the same store under two resolvers (each
// with its own cache).
type limitsWorld struct {
	ctx      context.Context
	clock    *storetest.Clock
	replicas [2]*limitsReplica
}

func newLimitsWorld(t *testing.T, open func(t *testing.T, clock *storetest.Clock) (a, b sidecar.Store), imp map[string]any) *limitsWorld {
	t.Helper()
	w := &limitsWorld{ctx: context.Background(), clock: storetest.NewClock(storetest.Epoch)}
	a, b := open(t, w.clock)
	for k, s := range []sidecar.Store{a, b} {
		r := &limitsReplica{store: s}
		r.lc = delegation.NewImpersonation(s, func() map[string]any { return *r.data.Load() }, delegation.WithImpersonationClock(w.clock.Now))
		r.res = resolve.NewSessionResolver(s, delegation.ImpersonationConfig{CacheTTL: time.Hour}, resolve.WithSessionClock(w.clock.Now))
		t.Cleanup(func() { _ = r.res.Close(); _ = r.lc.Close() })
		w.replicas[k] = r
	}
	w.setLimits(t, imp)
	if _, err := a.PutCustomer(w.ctx, &sidecar.Customer{ID: "c42", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.replicas[0].lc.SetConsent(w.ctx, &sidecar.Identity{Subject: "c42"}, delegation.ConsentChange{Customer: "c42", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	return w
}

// setLimits is a bundle update reaching both replicas: the shipped data
// with imp's impersonation switches.
func (w *limitsWorld) setLimits(t *testing.T, imp map[string]any) {
	t.Helper()
	raw, err := json.Marshal(shippedData(t)())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range w.replicas {
		var d map[string]any
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		sw := d["deputy"].(map[string]any)["impersonation"].(map[string]any)
		for k, v := range imp {
			sw[k] = v
		}
		r.data.Store(&d)
	}
}

// started has alice start a session on c42 through replica a, returning
// it and its redeem code.
func (w *limitsWorld) started(t *testing.T) *delegation.Started {
	t.Helper()
	st, err := w.replicas[0].lc.Start(w.ctx, &sidecar.Identity{Subject: "alice", Roles: []string{"support_agent"}, ExpiresAt: w.clock.Now().Add(8 * time.Hour)},
		delegation.StartRequest{Customer: "c42"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// live starts and redeems a session, and has both replicas honour (and
// cache) its cookie.
func (w *limitsWorld) live(t *testing.T) (*delegation.Started, string) {
	t.Helper()
	st := w.started(t)
	red, err := w.replicas[0].lc.Redeem(w.ctx, nil, st.Code, "", "shop.example.com", allowAll)
	if err != nil {
		t.Fatal(err)
	}
	w.honoured(t, red.Token, "after the start")
	return st, red.Token
}

func (w *limitsWorld) honoured(t *testing.T, token, when string) {
	t.Helper()
	for k, r := range w.replicas {
		if d, err := r.resolve(token); err != nil || d == nil || d.Subject != "c42" {
			t.Fatalf("replica %d %s: %+v, %v; want the session honoured", k, when, d, err)
		}
	}
}

// deniedEverywhere checks that both replicas deny the cookie, as state
// (session_<state>), and clear it.
func (w *limitsWorld) deniedEverywhere(t *testing.T, token, state string) {
	t.Helper()
	for k, r := range w.replicas {
		d, err := r.resolve(token)
		var clear *sidecar.ClearCookie
		if d != nil || sidecar.ErrorReason(err) != "session_"+state || !errors.As(err, &clear) {
			t.Fatalf("replica %d: %+v, %v; want denied as session_%s, cookie cleared", k, d, err, state)
		}
	}
}

// sweptOnce sweeps on both replicas and checks that the session ended as
// state, by Deputy, recorded once in the audit trail and the events.
func (w *limitsWorld) sweptOnce(t *testing.T, id, state string) {
	t.Helper()
	for _, r := range w.replicas {
		if err := r.lc.Sweep(w.ctx); err != nil {
			t.Fatal(err)
		}
	}
	s, err := w.replicas[1].store.GetSession(w.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if s.EndReason != state || s.EndedBy != sidecar.SweepActor || s.EndedAt.IsZero() {
		t.Fatalf("session in the store: ended %v by %q as %q; want ended by deputy as %s", s.EndedAt, s.EndedBy, s.EndReason, state)
	}
	audit, _, err := w.replicas[1].store.ReadAudit(w.ctx, sidecar.StreamFilter{Type: "impersonation.end", Customer: "c42"})
	if err != nil {
		t.Fatal(err)
	}
	events, _, err := w.replicas[1].store.ReadEvents(w.ctx, sidecar.StreamFilter{Type: sidecar.EventImpersonationEnded, Customer: "c42"})
	if err != nil {
		t.Fatal(err)
	}
	if len(audit) != 1 || audit[0].Target != id || audit[0].Data["end_reason"] != state ||
		len(events) != 1 || events[0].Data["end_reason"] != state {
		t.Fatalf("recorded %d impersonation.end (%+v) and %d impersonation.ended (%+v); want one each, as %s", len(audit), audit, len(events), events, state)
	}
}

// limitsStores are the stores the tests run on: two replicas of one
// state.
var limitsStores = map[string]func(t *testing.T, clock *storetest.Clock) (a, b sidecar.Store){
	"redis": func(t *testing.T, clock *storetest.Clock) (a, b sidecar.Store) {
		srv := redistest.Start(t)
		return redisReplica(t, srv, "limits", clock), redisReplica(t, srv, "limits", clock)
	},
	"memory": func(t *testing.T, clock *storetest.Clock) (a, b sidecar.Store) {
		s := memory.New(memory.WithClock(clock.Now))
		return s, s
	},
}

// TestLoweredMaxSessionBoundsLiveSessions: security lowers
// impersonation.max_session in policy data (a bundle update); a session
// started under the old limit and now older than the new one is denied
// at its next request on every replica, although both cached it as live,
// is no longer listed as live, and the sweep ends it as expired, recorded
// once. Raising the limit again brings nothing back.
func TestLoweredMaxSessionBoundsLiveSessions(t *testing.T) {
	for name, open := range limitsStores {
		t.Run(name, func(t *testing.T) {
			w := newLimitsWorld(t, open, map[string]any{"max_session": "1h", "idle_timeout": "2h"})
			st, token := w.live(t)
			w.clock.Advance(15 * time.Minute)
			w.honoured(t, token, "15 minutes in, under max_session 1h")

			w.setLimits(t, map[string]any{"max_session": "10m", "idle_timeout": "2h"})
			w.deniedEverywhere(t, token, sidecar.EndExpired)
			for k, r := range w.replicas {
				live, _, err := r.lc.List(w.ctx, alice, sidecar.SessionFilter{LiveOnly: true}, allowAll)
				if err != nil {
					t.Fatal(err)
				}
				if len(live) != 0 {
					t.Errorf("replica %d lists %d live sessions, want none", k, len(live))
				}
				s, err := r.lc.GetSession(w.ctx, alice, st.Session.ID, allowAll)
				if err != nil {
					t.Fatal(err)
				}
				if got := s.EndState(w.clock.Now()); got != sidecar.EndExpired {
					t.Errorf("replica %d shows the session as %q, want expired", k, got)
				}
			}
			w.sweptOnce(t, st.Session.ID, sidecar.EndExpired)

			w.setLimits(t, map[string]any{"max_session": "1h", "idle_timeout": "2h"})
			w.deniedEverywhere(t, token, sidecar.EndExpired)
		})
	}
}

// TestEndOfALapsedSessionEndsItAsLapsed: staff ending a session that
// has run past the lowered max_session ends it as the sweep would have,
// as expired by Deputy, recorded once: its lapse came before the End.
func TestEndOfALapsedSessionEndsItAsLapsed(t *testing.T) {
	for name, open := range limitsStores {
		t.Run(name, func(t *testing.T) {
			w := newLimitsWorld(t, open, map[string]any{"max_session": "1h", "idle_timeout": "2h"})
			st, token := w.live(t)
			w.clock.Advance(15 * time.Minute)
			w.setLimits(t, map[string]any{"max_session": "10m", "idle_timeout": "2h"})
			got, err := w.replicas[1].lc.End(w.ctx, alice, st.Session.ID, allowAll)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || got.EndedBy != sidecar.SweepActor || got.EndReason != sidecar.EndExpired || got.EndedAt.IsZero() {
				t.Fatalf("End past the lowered max_session answered %+v; want it ended as expired by %s", got, sidecar.SweepActor)
			}
			w.deniedEverywhere(t, token, sidecar.EndExpired)
			w.sweptOnce(t, st.Session.ID, sidecar.EndExpired)
		})
	}
}

// TestRaisedMaxSessionExtendsNoSession: a session keeps the expiry it
// stored at its start when max_session is raised.
func TestRaisedMaxSessionExtendsNoSession(t *testing.T) {
	for name, open := range limitsStores {
		t.Run(name, func(t *testing.T) {
			w := newLimitsWorld(t, open, map[string]any{"max_session": "10m", "idle_timeout": "2h"})
			st, token := w.live(t)
			w.setLimits(t, map[string]any{"max_session": "1h", "idle_timeout": "2h"})
			w.clock.Advance(11 * time.Minute)
			w.deniedEverywhere(t, token, sidecar.EndExpired)
			w.sweptOnce(t, st.Session.ID, sidecar.EndExpired)
		})
	}
}

// TestLoweredIdleTimeoutBoundsLiveSessions: lowering idle_timeout ends a
// session idle longer than the new one at its next request on every
// replica (idle, as for any session that goes idle), and the sweep
// records it once; a session used at least every two thirds of the new
// idle timeout stays live, the last-seen writes following the new one.
func TestLoweredIdleTimeoutBoundsLiveSessions(t *testing.T) {
	for name, open := range limitsStores {
		t.Run(name, func(t *testing.T) {
			w := newLimitsWorld(t, open, map[string]any{"max_session": "1h", "idle_timeout": "2h"})
			st, token := w.live(t)
			w.setLimits(t, map[string]any{"max_session": "1h", "idle_timeout": "30s"})
			for range 6 { // used every 20 s on one replica: never idle
				w.clock.Advance(20 * time.Second)
				if d, err := w.replicas[0].resolve(token); err != nil || d == nil {
					t.Fatalf("a session used every 20 s, with idle_timeout 30s: %+v, %v", d, err)
				}
			}
			w.honoured(t, token, "while in use")
			w.clock.Advance(31 * time.Second)
			w.deniedEverywhere(t, token, sidecar.EndIdle)
			w.sweptOnce(t, st.Session.ID, sidecar.EndIdle)
		})
	}
}

// TestRedeemAfterLoweredMaxSession: a redeem link of a session already
// older than the lowered max_session is refused.
func TestRedeemAfterLoweredMaxSession(t *testing.T) {
	for name, open := range limitsStores {
		t.Run(name, func(t *testing.T) {
			w := newLimitsWorld(t, open, map[string]any{"max_session": "1h", "idle_timeout": "2h"})
			st := w.started(t)
			w.clock.Advance(20 * time.Second)
			w.setLimits(t, map[string]any{"max_session": "10s", "idle_timeout": "2h"})
			_, err := w.replicas[1].lc.Redeem(w.ctx, nil, st.Code, "", "shop.example.com", allowAll)
			if sidecar.ErrorCode(err) != sidecar.EUNAUTHORIZED || sidecar.ErrorMessage(err) != "session_expired" {
				t.Fatalf("redeem 20 s after the start with max_session 10s: %v; want refused as session_expired", err)
			}
		})
	}
}
