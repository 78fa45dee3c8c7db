package delegation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

func allowAll(string, map[string]any) error { return nil }

// faultWorld is one case of the fault test: a key space on the real Redis,
// a store that reaches it directly (setup and checks) and one that goes
// through the cutting proxy (the operation under test).
type faultWorld struct {
	ctx     context.Context
	prefix  string
	now     time.Time
	direct  sidecar.Store
	cut     sidecar.Store
	setup   *delegation.Impersonation // on direct
	lc      *delegation.Impersonation // on cut
	started map[string]*delegation.Started
}

var (
	alice = &sidecar.Identity{Subject: "alice", Name: "Alice"}
	bob   = &sidecar.Identity{Subject: "bob", Name: "Bob"}
)

// newFaultWorld is an empty world under prefix on srv, its cut store
// through proxy.
func newFaultWorld(t *testing.T, srv *redistest.Server, proxy *redistest.Proxy, prefix string, clock *storetest.Clock) *faultWorld {
	t.Helper()
	w := &faultWorld{ctx: context.Background(), prefix: prefix, now: clock.Now(),
		direct: directStore(t, srv.Addr, prefix, clock.Now), cut: faultStore(t, proxy.Addr, prefix, clock.Now),
		started: map[string]*delegation.Started{}}
	w.setup = delegation.NewImpersonation(w.direct, shippedData(t), delegation.WithImpersonationClock(clock.Now))
	w.lc = delegation.NewImpersonation(w.cut, shippedData(t), delegation.WithImpersonationClock(clock.Now))
	return w
}

// wholeRun has the world's lifecycle write through a store for a run
// without a cut, which must succeed (wholeRunStore). The store it
// replaces is closed: left open, it would keep subscribing and pinging
// through the proxy, whose command count sets where later worlds are cut.
func (w *faultWorld) wholeRun(t *testing.T, proxy *redistest.Proxy, clock *storetest.Clock) {
	t.Helper()
	_ = w.cut.(io.Closer).Close()
	w.cut = wholeRunStore(t, proxy.Addr, w.prefix, clock.Now)
	w.lc = delegation.NewImpersonation(w.cut, shippedData(t), delegation.WithImpersonationClock(clock.Now))
}

func (w *faultWorld) consent(t *testing.T, customer string, allowed bool) {
	t.Helper()
	if _, _, err := w.setup.SetConsent(w.ctx, &sidecar.Identity{Subject: customer}, delegation.ConsentChange{Customer: customer, Allowed: allowed}, allowAll); err != nil {
		t.Fatal(err)
	}
}

func (w *faultWorld) start(t *testing.T, staff *sidecar.Identity, customer string, redeem bool) *delegation.Started {
	t.Helper()
	st, err := w.setup.Start(w.ctx, staff, delegation.StartRequest{Customer: customer}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	if redeem {
		if _, err := w.setup.Redeem(w.ctx, nil, st.Code, "", "shop.example.com", allowAll); err != nil {
			t.Fatal(err)
		}
	}
	w.started[staff.Subject+"@"+customer] = st
	return st
}

// redeemed gives customer a profile and consent, and staff a session on
// it, redeemed; it returns the session as stored (with its token hash).
func (w *faultWorld) redeemed(t *testing.T, staff *sidecar.Identity, customer string) *sidecar.Session {
	t.Helper()
	if _, err := w.direct.PutCustomer(w.ctx, &sidecar.Customer{ID: customer, DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	w.consent(t, customer, true)
	st := w.start(t, staff, customer, true)
	s, err := w.direct.GetSession(w.ctx, st.Session.ID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestImpersonationWritesUnderFaults cuts the connection to a real Redis
// after every possible number of commands of each impersonation write and
// checks, once Redis is reachable again, what the write left behind: no
// live session without consent, no live session that can never be
// redeemed, at most one live session per staff member, and audit entries
// only for what happened.
func TestImpersonationWritesUnderFaults(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	raw := srv.Client()
	clock := storetest.NewClock(storetest.Epoch) // in the past: a start later than Redis's clock moves back to it
	n := 0
	newWorld := func(t *testing.T) *faultWorld {
		n++
		w := newFaultWorld(t, srv, proxy, fmt.Sprintf("fault%d", n), clock)
		for _, c := range []string{"c1", "c2"} {
			if _, err := w.direct.PutCustomer(w.ctx, &sidecar.Customer{ID: c, DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
				t.Fatal(err)
			}
			w.consent(t, c, true)
		}
		w.start(t, alice, "c1", true)
		w.start(t, bob, "c2", true)
		return w
	}
	ops := []struct {
		name string
		prep func(t *testing.T, w *faultWorld)
		op   func(w *faultWorld) error
	}{
		{"consent_withdrawn", nil, func(w *faultWorld) error {
			_, _, err := w.lc.SetConsent(w.ctx, &sidecar.Identity{Subject: "c1"}, delegation.ConsentChange{Customer: "c1"}, allowAll)
			return err
		}},
		{"consent_narrowed", nil, func(w *faultWorld) error {
			_, _, err := w.lc.SetConsent(w.ctx, &sidecar.Identity{Subject: "c1"},
				delegation.ConsentChange{Customer: "c1", Allowed: true, ExpiresAt: new(w.now.Add(4 * time.Second))}, allowAll)
			return err
		}},
		{"session_start_replacing", nil, func(w *faultWorld) error {
			st, err := w.lc.Start(w.ctx, alice, delegation.StartRequest{Customer: "c2"}, allowAll)
			if err == nil {
				w.started["alice@c2"] = st
			}
			return err
		}},
		{"session_end", nil, func(w *faultWorld) error {
			_, err := w.lc.End(w.ctx, alice, w.started["alice@c1"].Session.ID, allowAll)
			return err
		}},
		{"session_redeem", func(t *testing.T, w *faultWorld) { w.start(t, alice, "c2", false) }, func(w *faultWorld) error {
			_, err := w.lc.Redeem(w.ctx, nil, w.started["alice@c2"].Code, "", "shop.example.com", allowAll)
			return err
		}},
	}
	for _, tc := range ops {
		t.Run(tc.name, func(t *testing.T) {
			// First without a fault: how many commands the write takes.
			w := newWorld(t)
			w.wholeRun(t, proxy, clock)
			prev := w
			if tc.prep != nil {
				tc.prep(t, w)
			}
			proxy.Reset()
			if err := tc.op(w); err != nil {
				t.Fatalf("without a fault: %v", err)
			}
			total := proxy.Commands()
			checkImpersonationState(t, w, raw, "no fault")
			if total < 2 {
				t.Fatalf("the write took %d commands: the proxy is not in its path", total)
			}
			// Cut after 0, 1, 2... commands until the write runs whole
			// before the cut comes: every point of the write is cut once,
			// however many commands this run of it sends. (The fault-free
			// run's count is only a bound: a ping of the subscription may
			// fall among the write's commands, or not.)
			failed, cut := 0, 0
			for ; ; cut++ {
				if cut > 2*total+10 {
					t.Fatalf("every cut up to %d commands happened: the write (%d commands without a fault) never ran whole", cut, total)
				}
				// The proxy counts the commands of every connection through
				// it: the last world's cut store, left open, would subscribe
				// again and ping whenever the machine lets it, and move this
				// world's cuts.
				_ = prev.cut.(io.Closer).Close()
				w := newWorld(t)
				prev = w
				if tc.prep != nil {
					tc.prep(t, w)
				}
				proxy.Reset()
				proxy.CutAfter(cut)
				err := tc.op(w)
				wasCut := proxy.WasCut()
				proxy.Reset()
				if !wasCut {
					// The replicas' confirmations are waited for the default
					// bound here (faultStore), which a loaded machine can
					// pass: then, and only then, the write answers
					// Unpublished.
					if err != nil && !(sidecar.IsUnpublished(err) && unconfirmed(w.cut) > 0) {
						t.Fatalf("cut after %d commands never happened, yet the write failed: %v", cut, err)
					}
					checkImpersonationState(t, w, raw, fmt.Sprintf("no cut within %d commands", cut))
					break
				}
				if err != nil {
					failed++
				}
				checkImpersonationState(t, w, raw, fmt.Sprintf("cut after %d of %d commands (err %v)", cut, total, err))
			}
			if failed == 0 {
				t.Fatalf("no cut point made the write fail")
			}
			t.Logf("%s: cut after each of 0..%d commands (%d without a fault): %d failed, every state safe", tc.name, cut-1, total, failed)
		})
	}
}

// checkImpersonationState checks the invariants on the state as Redis
// holds it.
func checkImpersonationState(t *testing.T, w *faultWorld, raw *goredis.Client, when string) {
	t.Helper()
	ctx := w.ctx
	live, _, err := w.direct.ListSessions(ctx, sidecar.SessionFilter{LiveOnly: true, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	// Sessions that still have a redeem code waiting.
	pending := map[string]bool{}
	keys, err := raw.Keys(ctx, w.prefix+":{imp}:code:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		var ref struct {
			Session string `json:"s"`
		}
		if err := json.Unmarshal([]byte(raw.Get(ctx, k).Val()), &ref); err != nil {
			t.Fatal(err)
		}
		pending[ref.Session] = true
	}
	perActor := map[string]int{}
	for _, s := range live {
		consent, err := w.direct.GetConsent(ctx, s.Customer)
		if err != nil && sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
			t.Fatal(err)
		}
		if !consent.Covers(&s, w.now) {
			t.Fatalf("%s: live session %s of %s without consent (%+v)", when, s.ID, s.Customer, consent)
		}
		if s.TokenHash == "" && !pending[s.ID] {
			t.Fatalf("%s: live session %s can never be redeemed", when, s.ID)
		}
		if perActor[s.Actor]++; perActor[s.Actor] > 1 {
			t.Fatalf("%s: %s has two live sessions", when, s.Actor)
		}
	}
	entries, _, err := w.direct.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Action {
		case "impersonation.start", "impersonation.end", "impersonation.redeem":
			s, err := w.direct.GetSession(ctx, e.Target)
			if err != nil {
				t.Fatalf("%s: audit says %s of %s, which does not exist: %v", when, e.Action, e.Target, err)
			}
			if e.Action == "impersonation.end" && s.EndedAt.IsZero() {
				t.Fatalf("%s: audit says %s ended, it is live", when, s.ID)
			}
			if e.Action == "impersonation.redeem" && s.TokenHash == "" {
				t.Fatalf("%s: audit says %s was redeemed, it has no token", when, s.ID)
			}
		case "consent.set":
			// An entry can be missing (the fault fell after the write, before
			// the append: logged), but never describe a setting the store
			// did not take.
			hist, _, err := w.direct.ConsentHistory(ctx, e.Customer, sidecar.Page{Limit: sidecar.MaxPageLimit})
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, c := range hist {
				found = found || (e.Data["allowed"] == fmt.Sprint(c.Allowed) && e.Data["expires_at"] == expiryText(c.ExpiresAt))
			}
			if !found {
				t.Fatalf("%s: audit records consent %v of %s, the store never held it: %+v", when, e.Data, e.Customer, hist)
			}
		default:
			if !strings.HasPrefix(e.Action, "customer.") {
				t.Fatalf("%s: unexpected audit entry %+v", when, e)
			}
		}
	}
}

func expiryText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// A fault after Start or End committed its session write cannot cost the
// session log its entry, nor the customer the notice: for every cut point
// of the operation, a session stored by a Start that answered success
// (its link redeems) gets its impersonation.start entry and
// impersonation.started event once Redis is back, and an ended session
// its impersonation.end and impersonation.ended; each exactly once, though
// the recorder may have appended it again after a reply it never got.
//
// The lifecycle's own commands and the recorder's appends go through two
// proxies, and each case cuts one of them; the lifecycle's subscription to
// invalidations goes around both. What runs in the background (the
// recorder's retries, with a backoff; the subscription's reconnects and
// health checks) would otherwise land among the counted commands at
// times the machine's load decides, and shift the cut points. Each
// world's recorder is drained and stopped before the next cut, so no retry
// of one world lands among the commands of the next.
func TestSessionLogSurvivesFaults(t *testing.T) {
	srv := redistest.Start(t)
	lcProxy := redistest.StartProxy(t, srv.Addr)
	recProxy := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch) // in the past: a start later than Redis's clock moves back to it
	n := 0
	// cutStore reaches Redis through proxy; a cut fails it at once, so it
	// waits for a slow reply as long as a test may.
	cutStore := func(t *testing.T, proxy *redistest.Proxy, prefix string) sidecar.Store {
		return newFaultStore(t, redis.Config{Addrs: []string{proxy.Addr}, KeyPrefix: prefix, MaxRetries: -1,
			DialTimeout: 10 * time.Second, ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout}, clock.Now)
	}
	newWorld := func(t *testing.T) (*faultWorld, *delegation.Recorder) {
		t.Helper()
		n++
		prefix := fmt.Sprintf("records%d", n)
		w := newFaultWorld(t, srv, lcProxy, prefix, clock)
		w.cut = subscribedAround{Store: cutStore(t, lcProxy, prefix), subs: w.direct}
		if _, err := w.direct.PutCustomer(w.ctx, &sidecar.Customer{ID: "c1", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
		w.consent(t, "c1", true)
		rec := delegation.NewRecorder(cutStore(t, recProxy, prefix), nil)
		if err := rec.Start(w.ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rec.Stop(context.Background()) })
		w.lc = delegation.NewImpersonation(w.cut, shippedData(t), delegation.WithImpersonationClock(clock.Now), delegation.WithImpersonationRecorder(rec))
		return w, rec
	}
	// drain heals both proxies, waits until what rec still holds is
	// appended, then stops it.
	drain := func(t *testing.T, rec *delegation.Recorder, cut int) {
		t.Helper()
		lcProxy.Reset()
		recProxy.Reset()
		partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
		if err := rec.Stop(context.Background()); err != nil {
			t.Fatalf("cut after %d commands: %v", cut, err)
		}
		if rec.AuditDropped()+rec.EventsDropped() != 0 {
			t.Errorf("cut after %d commands: the recorder dropped %d audit entries and %d events", cut, rec.AuditDropped(), rec.EventsDropped())
		}
	}
	// recorded checks the audit entries (action) and events (typ) of the
	// session id are there once each.
	recorded := func(t *testing.T, w *faultWorld, cut int, action, typ, id string) {
		t.Helper()
		audit, _, err := w.direct.ReadAudit(w.ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
		if err != nil {
			t.Fatal(err)
		}
		entries, events := 0, 0
		for _, a := range audit {
			if a.Action == action && a.Target == id {
				entries++
			}
		}
		evs, _, err := w.direct.ReadEvents(w.ctx, sidecar.StreamFilter{Type: typ, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Data["session"] == id {
				events++
			}
		}
		if entries != 1 || events != 1 {
			t.Errorf("cut after %d commands: session %s has %d %s entries and %d %s events, want 1 and 1", cut, id, entries, action, events, typ)
		}
	}
	// An operation runs the change and returns its check, run once the
	// recorder is drained: whether the change was made, and if so whether
	// it was recorded.
	type check func(t *testing.T, w *faultWorld, cut int) (made bool)
	start := func(w *faultWorld) check {
		st, err := w.lc.Start(w.ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
		return func(t *testing.T, w *faultWorld, cut int) bool {
			if err != nil {
				// An answered error left no session behind, to live on
				// unrecorded.
				ss, _, lerr := w.direct.ListSessions(w.ctx, sidecar.SessionFilter{Actor: alice.Subject, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
				if lerr != nil {
					t.Fatal(lerr)
				}
				if len(ss) != 0 {
					t.Errorf("cut after %d commands: Start answered %v, yet stored session %s", cut, err, ss[0].ID)
				}
				return false
			}
			if _, err := w.setup.Redeem(w.ctx, nil, st.Code, "", "shop.example.com", allowAll); err != nil {
				t.Errorf("cut after %d commands: Start answered success but its link does not redeem: %v", cut, err)
			}
			recorded(t, w, cut, "impersonation.start", sidecar.EventImpersonationStarted, st.Session.ID)
			return true
		}
	}
	end := func(w *faultWorld) check {
		id := w.started["alice@c1"].Session.ID
		_, err := w.lc.End(w.ctx, alice, id, allowAll)
		return func(t *testing.T, w *faultWorld, cut int) bool {
			s, gerr := w.direct.GetSession(w.ctx, id)
			if gerr != nil {
				t.Fatal(gerr)
			}
			if s.EndedAt.IsZero() {
				if err == nil {
					t.Errorf("cut after %d commands: End answered success, the session is live", cut)
				}
				return false
			}
			if err != nil && !sidecar.IsUnpublished(err) {
				// The write landed and its reply was lost: the cut came
				// between EXEC and its answer (the store's own lease
				// renewals and pings go through the proxy too, and may
				// be the command that trips it). End answered 503 and
				// recorded nothing; its caller retries, and the retry,
				// finding the session ended, records it.
				retry := delegation.NewRecorder(w.direct, nil)
				if err := retry.Start(w.ctx); err != nil {
					t.Fatal(err)
				}
				lc := delegation.NewImpersonation(w.direct, shippedData(t), delegation.WithImpersonationClock(clock.Now), delegation.WithImpersonationRecorder(retry))
				if _, rerr := lc.End(w.ctx, alice, id, allowAll); rerr != nil {
					t.Errorf("cut after %d commands: End answered %v, and its retry %v", cut, err, rerr)
				}
				partnerEventually(t, "the retry's records to be appended", func() bool { return retry.Pending() == 0 })
				if err := retry.Stop(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			recorded(t, w, cut, "impersonation.end", sidecar.EventImpersonationEnded, s.ID)
			return true
		}
	}
	cases := []struct {
		name string
		cut  *redistest.Proxy
		prep func(t *testing.T, w *faultWorld)
		op   func(w *faultWorld) check
		// least is how many cuts must leave the change made; every: all of
		// them (the lifecycle is not cut, only its records).
		least int
		every bool
	}{
		// Start's session write is its last command, so every cut of its
		// own commands fails it; the cuts after the write are those of
		// start_recorder_cut.
		{"start", lcProxy, nil, start, 0, false},
		{"start_recorder_cut", recProxy, nil, start, 0, true},
		// End evicts the session after its write.
		{"end", lcProxy, func(t *testing.T, w *faultWorld) { w.start(t, alice, "c1", true) }, end, 1, false},
		{"end_recorder_cut", recProxy, func(t *testing.T, w *faultWorld) { w.start(t, alice, "c1", true) }, end, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// First without a fault: how many commands go through the proxy
			// this case cuts.
			w, rec := newWorld(t)
			if tc.prep != nil {
				tc.prep(t, w)
			}
			tc.cut.Reset()
			made := tc.op(w)
			total := tc.cut.Commands()
			drain(t, rec, -1)
			if !made(t, w, -1) {
				t.Fatal("without a fault the change was not made")
			}
			if total < 2 {
				t.Fatalf("the change took %d commands: the proxy is not in its path", total)
			}
			kept := 0
			for cut := range total {
				w, rec := newWorld(t)
				if tc.prep != nil {
					tc.prep(t, w)
				}
				tc.cut.Reset()
				tc.cut.CutAfter(cut)
				made := tc.op(w)
				if !tc.cut.WasCut() {
					t.Fatalf("cut after %d of %d commands never happened", cut, total)
				}
				drain(t, rec, cut)
				if made(t, w, cut) {
					kept++
				}
			}
			if tc.every {
				tc.least = total
			}
			if kept < tc.least {
				t.Fatalf("the change was made under %d of %d cuts, want at least %d", kept, total, tc.least)
			}
			t.Logf("%s: cut after each of 0..%d commands: the change was made under %d, each recorded once", tc.name, total-1, kept)
		})
	}
}

// subscribedAround is a store whose subscription to invalidations goes
// through subs, not through the connection under test.
type subscribedAround struct {
	sidecar.Store
	subs sidecar.Store
}

func (s subscribedAround) Subscribe(fn func(key string)) (cancel func()) { return s.subs.Subscribe(fn) }

// stallBeforeTx, armed, stalls Redis (DEBUG SLEEP, longer than the
// client's read timeout) just before the client's next MULTI/EXEC whose
// commands hold every one of parts (none: any), so that Redis runs the
// transaction after the client gave up on its reply.
type stallBeforeTx struct {
	t       *testing.T
	srv     *redistest.Server
	parts   []string
	armed   atomic.Bool
	stalled chan error
}

func (h *stallBeforeTx) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *stallBeforeTx) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }

func (h *stallBeforeTx) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "multi" && h.holds(cmds) && h.armed.CompareAndSwap(true, false) {
			go func() { h.stalled <- h.srv.Client().Do(context.Background(), "DEBUG", "SLEEP", "1").Err() }()
			probe := goredis.NewClient(&goredis.Options{Addr: h.srv.Addr, MaxRetries: -1, ReadTimeout: 100 * time.Millisecond})
			defer probe.Close()
			partnerEventually(h.t, "Redis to stall", func() bool { return probe.Ping(context.Background()).Err() != nil })
		}
		return next(ctx, cmds)
	}
}

func (h *stallBeforeTx) holds(cmds []goredis.Cmder) bool {
	var all strings.Builder
	for _, c := range cmds {
		fmt.Fprint(&all, c.Args()...)
	}
	for _, p := range h.parts {
		if !strings.Contains(all.String(), p) {
			return false
		}
	}
	return true
}

// End whose session write lost its reply (Redis ran it after the client's
// read timeout) answers an error though the session ended, and records
// nothing; the caller's retry finds the session ended and records its
// end, once however often it is retried.
func TestEndRetriedAfterLostReplyIsRecordedOnce(t *testing.T) {
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	clock := storetest.NewClock(storetest.Epoch) // in the past: a start later than Redis's clock moves back to it
	ctx := context.Background()
	direct := directStore(t, srv.Addr, "lostreply", clock.Now)
	setup := delegation.NewImpersonation(direct, shippedData(t), delegation.WithImpersonationClock(clock.Now))
	if _, err := direct.PutCustomer(ctx, &sidecar.Customer{ID: "c1", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := setup.SetConsent(ctx, &sidecar.Identity{Subject: "c1"}, delegation.ConsentChange{Customer: "c1", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	// A session of bob's, ended, loads the session write's script into
	// Redis, as any running Deputy has: else the late write would find
	// none.
	warm, err := setup.Start(ctx, bob, delegation.StartRequest{Customer: "c1"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setup.End(ctx, bob, warm.Session.ID, allowAll); err != nil {
		t.Fatal(err)
	}
	st, err := setup.Start(ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	stall := &stallBeforeTx{t: t, srv: srv, stalled: make(chan error, 1)}
	stalling := stallingStore(t, srv, "lostreply", stall, clock.Now)
	rec := startedRecorder(t, stalling)
	lc := delegation.NewImpersonation(stalling, shippedData(t), delegation.WithImpersonationClock(clock.Now), delegation.WithImpersonationRecorder(rec))

	stall.armed.Store(true)
	_, err = lc.End(ctx, alice, st.Session.ID, allowAll)
	wantLostReply(t, &stall.armed, stall.stalled, "End", err)
	if s, err := direct.GetSession(ctx, st.Session.ID); err != nil || s.EndedAt.IsZero() {
		t.Fatalf("session after the stall = %+v, %v; want it ended by the write Redis ran late", s, err)
	}
	for range 2 {
		if _, err := lc.End(ctx, alice, st.Session.ID, allowAll); err != nil {
			t.Fatalf("End retried: %v", err)
		}
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	audit, _, err := direct.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	ends := 0
	for _, a := range audit {
		if a.Action == "impersonation.end" && a.Target == st.Session.ID {
			ends++
			if a.Actor != alice.Subject {
				t.Errorf("end recorded as by %q, want %q", a.Actor, alice.Subject)
			}
		}
	}
	events, _, err := direct.ReadEvents(ctx, sidecar.StreamFilter{Type: sidecar.EventImpersonationEnded})
	if err != nil {
		t.Fatal(err)
	}
	ended := 0
	for _, e := range events {
		if e.Data["session"] == st.Session.ID {
			ended++
		}
	}
	if ends != 1 || ended != 1 {
		t.Errorf("session log holds %d impersonation.end entries and %d impersonation.ended events, want 1 and 1", ends, ended)
	}
}
