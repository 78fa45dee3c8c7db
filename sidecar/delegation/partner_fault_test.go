package delegation_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// partnerFaultWorld is one case of the partner fault test: a key space on
// the real Redis, lifecycles on a store that reaches it directly (setup,
// checks) and on one through the cutting proxy (the write under test).
type partnerFaultWorld struct {
	ctx       context.Context
	direct    sidecar.Store
	cut       sidecar.Store // through the proxy
	setup     *delegation.Partners
	lc        *delegation.Partners
	resellers *delegation.Resellers
	direct2   *delegation.Resellers // on direct, for the retry
	requests  map[string]*sidecar.AccessRequest
	grants    map[string]string // name → grant id
	before    map[string]string // customer → domain before the import
	importing []delegation.ImportRow
}

// TestPartnerWritesUnderFaults cuts the connection to a real Redis after
// every possible number of commands of each partner and reseller write and
// checks what it left behind: no grant beyond the level of an approved
// request, a revoked grant either gone or as it was, every assignment
// either as it was or as the import asked, and audit entries only for
// what happened.
func TestPartnerWritesUnderFaults(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch)
	data := shippedData(t)
	sam := &sidecar.Identity{Subject: "sam", Org: "resellerco", Domain: "shop-a"}
	n := 0
	// newWorld opens the world's cut store with open (faultStore, or
	// wholeRunStore for the run without a fault).
	newWorld := func(t *testing.T, open func(t *testing.T, addr, prefix string, clock sidecar.Clock) sidecar.Store) *partnerFaultWorld {
		n++
		prefix := fmt.Sprintf("pfault%d", n)
		w := &partnerFaultWorld{ctx: context.Background(), direct: directStore(t, srv.Addr, prefix, clock.Now),
			requests: map[string]*sidecar.AccessRequest{}, grants: map[string]string{}, before: map[string]string{}}
		cut := open(t, proxy.Addr, prefix, clock.Now)
		w.cut = cut
		w.setup = delegation.NewPartners(w.direct, data, delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))
		w.lc = delegation.NewPartners(cut, data, delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))
		w.resellers = delegation.NewResellers(cut, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now))
		w.direct2 = delegation.NewResellers(w.direct, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now))
		if _, err := w.direct.PutCustomer(w.ctx, &sidecar.Customer{ID: "paul", Org: "partnerco"}, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
		return w
	}
	request := func(t *testing.T, w *partnerFaultWorld, name string, in delegation.AccessRequestInput) {
		t.Helper()
		r, err := w.setup.Request(w.ctx, patUser, in, allowAll)
		if err != nil {
			t.Fatal(err)
		}
		w.requests[name] = r
	}
	approved := func(t *testing.T, w *partnerFaultWorld, name string, in delegation.AccessRequestInput) {
		t.Helper()
		request(t, w, name, in)
		_, gs, err := w.setup.Approve(w.ctx, cora, w.requests[name].ID, allowAll)
		if err != nil {
			t.Fatal(err)
		}
		w.grants[name] = gs[0].ID
	}
	// done checks that a write retried after the fault completed: the
	// retry of an operation that failed part-way must finish it.
	ops := []struct {
		name string
		prep func(t *testing.T, w *partnerFaultWorld)
		op   func(w *partnerFaultWorld) error
		done func(w *partnerFaultWorld) error
	}{
		{"approve_organisation", func(t *testing.T, w *partnerFaultWorld) {
			request(t, w, "r", orgRequest(sidecar.LevelUpdate, 30))
		}, func(w *partnerFaultWorld) error {
			_, _, err := w.lc.Approve(w.ctx, cora, w.requests["r"].ID, allowAll)
			return err
		}, approvalDone},
		{"approve_individuals", func(t *testing.T, w *partnerFaultWorld) {
			request(t, w, "r", individualRequest(sidecar.LevelCreate, 30, "pat", "paul"))
		}, func(w *partnerFaultWorld) error {
			_, _, err := w.lc.Approve(w.ctx, cora, w.requests["r"].ID, allowAll)
			return err
		}, approvalDone},
		{"replace_with_a_lower_level", func(t *testing.T, w *partnerFaultWorld) {
			approved(t, w, "old", orgRequest(sidecar.LevelFullAdmin, 30))
			request(t, w, "r", orgRequest(sidecar.LevelLook, 10))
		}, func(w *partnerFaultWorld) error {
			_, _, err := w.lc.Approve(w.ctx, cora, w.requests["r"].ID, allowAll)
			return err
		}, approvalDone},
		{"reject", func(t *testing.T, w *partnerFaultWorld) {
			request(t, w, "r", orgRequest(sidecar.LevelUpdate, 30))
		}, func(w *partnerFaultWorld) error {
			_, err := w.lc.Reject(w.ctx, cora, w.requests["r"].ID, allowAll)
			return err
		}, func(w *partnerFaultWorld) error {
			return wantStatus(w, "r", sidecar.RequestRejected)
		}},
		{"revoke", func(t *testing.T, w *partnerFaultWorld) {
			approved(t, w, "g", orgRequest(sidecar.LevelUpdate, 30))
		}, func(w *partnerFaultWorld) error {
			_, err := w.lc.Revoke(w.ctx, cora, "acme", w.grants["g"], allowAll)
			return err
		}, func(w *partnerFaultWorld) error {
			if _, err := w.direct.GetGrant(w.ctx, "acme", w.grants["g"]); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
				return fmt.Errorf("grant still there (%v)", err)
			}
			return nil
		}},
		{"share", func(t *testing.T, w *partnerFaultWorld) {
			approved(t, w, "g", individualRequest(sidecar.LevelCC, 30, "pat"))
		}, func(w *partnerFaultWorld) error {
			_, err := w.lc.Share(w.ctx, cora, "acme", delegation.ShareInput{Resource: "sr-1", User: "pat", PartnerOrg: "partnerco"}, allowAll)
			return err
		}, func(w *partnerFaultWorld) error {
			if ss, err := w.direct.ListShares(w.ctx, "acme"); err != nil || len(ss) != 1 {
				return fmt.Errorf("shares %v (%v)", ss, err)
			}
			return nil
		}},
		{"subscribe", func(t *testing.T, w *partnerFaultWorld) {
			approved(t, w, "g", orgRequest(sidecar.LevelLook, 30))
		}, func(w *partnerFaultWorld) error {
			_, err := w.lc.Subscribe(w.ctx, patUser, "acme", delegation.SubscriptionNotifications, allowAll)
			return err
		}, func(w *partnerFaultWorld) error {
			if ss, err := w.direct.SubscriptionsByCustomer(w.ctx, "acme"); err != nil || len(ss) != 1 {
				return fmt.Errorf("subscriptions %v (%v)", ss, err)
			}
			return nil
		}},
		{"assignment_import", func(t *testing.T, w *partnerFaultWorld) {
			for c, d := range map[string]string{"acme": "shop-b", "globex": "shop-a"} {
				if err := w.direct.PutAssignment(w.ctx, &sidecar.Assignment{Customer: c, Reseller: "resellerco", Domain: d}); err != nil {
					t.Fatal(err)
				}
				w.before[c] = d
			}
			w.importing = []delegation.ImportRow{{Line: 1, Customer: "acme", Domain: "shop-a"}, {Line: 2, Customer: "initech", Domain: "shop-a"}, {Line: 3, Customer: "globex", Domain: "shop-a"}}
		}, func(w *partnerFaultWorld) error {
			_, err := w.resellers.Import(w.ctx, sam, w.importing, allowAll)
			return err
		}, func(w *partnerFaultWorld) error {
			for _, row := range w.importing {
				if a, err := w.direct.GetAssignment(w.ctx, row.Customer); err != nil || a.Domain != row.Domain {
					return fmt.Errorf("%s is %+v (%v)", row.Customer, a, err)
				}
			}
			return nil
		}},
	}
	for _, tc := range ops {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, wholeRunStore)
			tc.prep(t, w)
			proxy.Reset()
			if err := tc.op(w); err != nil {
				t.Fatalf("without a fault: %v", err)
			}
			total := proxy.Commands()
			checkPartnerState(t, w, "no fault")
			if total < 2 {
				t.Fatalf("the write took %d commands: the proxy is not in its path", total)
			}
			// Cut after 0, 1, 2... commands until the write runs whole
			// before the cut comes: every point of the write is cut once,
			// however many commands this run of it sends. (The fault-free
			// run's count is only a bound: the subscription's pings and a
			// new connection opened or not make it vary by a few.)
			failed, cuts, cut := 0, 0, 0
			for ; ; cut++ {
				if cut > 2*total+10 {
					t.Fatalf("every cut up to %d commands happened: the write (%d commands without a fault) never ran whole", cut, total)
				}
				w := newWorld(t, faultStore)
				tc.prep(t, w)
				proxy.Reset()
				proxy.CutAfter(cut)
				err := tc.op(w)
				wasCut := proxy.WasCut()
				proxy.Reset()
				if !wasCut {
					// The replicas' confirmations are waited for the
					// default bound here (faultStore), which a loaded
					// machine can pass: then, and only then, the write
					// answers Unpublished. The run without a fault waits
					// for them as long as a test may, and must succeed.
					if err != nil && !(sidecar.IsUnpublished(err) && unconfirmed(w.cut) > 0) {
						t.Fatalf("cut after %d commands never happened, yet the write failed: %v", cut, err)
					}
					checkPartnerState(t, w, fmt.Sprintf("no cut within %d commands", cut))
					break
				}
				cuts++
				when := fmt.Sprintf("cut after %d of %d commands (err %v)", cut, total, err)
				checkPartnerState(t, w, when)
				if err != nil {
					failed++
					if tc.done != nil {
						// Redis is back: the same write, retried, completes. The
						// retry may answer that it was done already (a request
						// decided, a grant gone), as the API's idempotent
						// answers do; the state is what counts.
						w.lc, w.resellers = w.setup, w.direct2
						rerr := tc.op(w)
						if err := tc.done(w); err != nil {
							t.Fatalf("%s: the retry (%v) did not complete the write: %v", when, rerr, err)
						}
						checkPartnerState(t, w, when+", retried")
					}
				}
			}
			if failed == 0 {
				t.Fatalf("%d cut points happened, none made the write fail", cuts)
			}
			t.Logf("%s: cut after each of 0..%d commands (%d without a fault): %d failed, every state safe", tc.name, cuts-1, total, failed)
		})
	}
}

// faultStore opens a Redis store on addr (the cutting proxy) that gives
// up at once when the connection goes: no retries to hide a cut. A cut
// fails it at once (the proxy closes its connections and refuses new
// ones), so it waits for a slow dial or reply as long as a test may: on a
// loaded machine, a slow answer must not pass for a cut, nor a write left
// uncut fail. Replicas' confirmations of a narrowing write are waited for
// the default invalidation_ack_timeout: a cut loses them, and the write
// then waits that long for nothing, at several cut points of a sweep. A
// run that is not cut and must succeed opens its store with
// wholeRunStore.
func faultStore(t *testing.T, addr, prefix string, clock sidecar.Clock) sidecar.Store {
	t.Helper()
	return newFaultStore(t, redis.Config{Addrs: []string{addr}, KeyPrefix: prefix, MaxRetries: -1,
		DialTimeout: 10 * time.Second, ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout}, clock)
}

// wholeRunStore is faultStore for a run without a cut, whose write must
// succeed: the replicas, this one included, are in this process, and how
// soon they confirm a narrowing write is the machine's speed, so it waits
// for them as long as a test may.
func wholeRunStore(t *testing.T, addr, prefix string, clock sidecar.Clock) sidecar.Store {
	t.Helper()
	return newFaultStore(t, redis.Config{Addrs: []string{addr}, KeyPrefix: prefix, MaxRetries: -1,
		DialTimeout: 10 * time.Second, ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout,
		InvalidationAckTimeout: redistest.AckTimeout}, clock)
}

// directStore is the store that sets up and inspects a fault test's
// world, on the uncut connection: a reply, or a replica's confirmation
// of a narrowing write, slowed by a loaded machine must not read as a
// fault, so it waits as long as a test may.
func directStore(t *testing.T, addr, prefix string, clock sidecar.Clock) sidecar.Store {
	t.Helper()
	return newFaultStore(t, redis.Config{Addrs: []string{addr}, KeyPrefix: prefix, MaxRetries: -1,
		DialTimeout: 10 * time.Second, ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout,
		InvalidationAckTimeout: redistest.AckTimeout}, clock)
}

func newFaultStore(t *testing.T, cfg redis.Config, clock sidecar.Clock) sidecar.Store {
	t.Helper()
	s, err := redis.New(cfg, redis.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// unconfirmed is how many narrowing writes s answered Unpublished
// because not every replica confirmed in time.
func unconfirmed(s sidecar.Store) uint64 {
	return s.(interface{ InvalidationsUnconfirmed() uint64 }).InvalidationsUnconfirmed()
}

// approvalDone: the request is approved, no grant of it is pending, and
// each user it names holds its grant at its level.
func approvalDone(w *partnerFaultWorld) error {
	if err := wantStatus(w, "r", sidecar.RequestApproved); err != nil {
		return err
	}
	r, err := w.direct.GetRequest(w.ctx, w.requests["r"].ID)
	if err != nil || r.GrantsPending {
		return fmt.Errorf("grants still pending (%v)", err)
	}
	users := r.Users
	if r.Scope == sidecar.ScopeOrganisation {
		users = []string{""}
	}
	for _, u := range users {
		e, err := w.direct.EffectiveGrants(w.ctx, r.Customer, r.PartnerOrg, u)
		g := e.Organisation
		if u != "" {
			g = e.Individual
		}
		if err != nil || g == nil || g.RequestID != r.ID || g.Level != r.Level {
			return fmt.Errorf("grant for %q is %+v (%v)", u, g, err)
		}
		// Indexed too: the partner's "My Customers" and the expiry sweep find it.
		mine, err := w.direct.GrantsByPartner(w.ctx, r.PartnerOrg, u)
		if err != nil || !slices.ContainsFunc(mine, func(x sidecar.Grant) bool { return x.ID == g.ID }) {
			return fmt.Errorf("grant %s missing from the partner's list %v (%v)", g.ID, mine, err)
		}
		soon, err := w.direct.GrantsExpiringBefore(w.ctx, g.ExpiresAt.Add(time.Second), 0)
		if err != nil || !slices.ContainsFunc(soon, func(x sidecar.Grant) bool { return x.ID == g.ID }) {
			return fmt.Errorf("grant %s missing from the expiry index (%v)", g.ID, err)
		}
	}
	return nil
}

func wantStatus(w *partnerFaultWorld, name, status string) error {
	r, err := w.direct.GetRequest(w.ctx, w.requests[name].ID)
	if err != nil || r.Status != status {
		return fmt.Errorf("request %+v (%v), want %s", r, err, status)
	}
	return nil
}

// checkPartnerState checks the invariants on the state as Redis holds it.
func checkPartnerState(t *testing.T, w *partnerFaultWorld, when string) {
	t.Helper()
	ctx := w.ctx
	byID := map[string]*sidecar.AccessRequest{}
	for _, r := range w.requests {
		cur, err := w.direct.GetRequest(ctx, r.ID)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		byID[r.ID] = cur
	}
	// No grant beyond the level of an approved request.
	live, err := w.direct.GrantsByCustomer(ctx, "acme")
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	for _, g := range live {
		r := byID[g.RequestID]
		if r == nil || r.Status != sidecar.RequestApproved || g.Level != r.Level {
			t.Fatalf("%s: live grant %s at %s, but its request is %+v", when, g.ID, g.Level, r)
		}
	}
	entries, _, err := w.direct.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	decided := map[string]int{}
	for _, e := range entries {
		switch e.Action {
		case "partner.request":
			if byID[e.Target] == nil {
				t.Fatalf("%s: audit records request %s, which does not exist", when, e.Target)
			}
		case "partner.approve", "partner.reject":
			want := map[string]string{"partner.approve": sidecar.RequestApproved, "partner.reject": sidecar.RequestRejected}[e.Action]
			if r := byID[e.Target]; r == nil || r.Status != want {
				t.Fatalf("%s: audit records %s of %s, the request is %+v", when, e.Action, e.Target, r)
			}
			// A retry completing an approval does not record it again.
			if decided[e.Target]++; decided[e.Target] > 1 {
				t.Fatalf("%s: audit records %s of %s %d times", when, e.Action, e.Target, decided[e.Target])
			}
		case "partner.revoke":
			if _, err := w.direct.GetGrant(ctx, "acme", e.Target); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
				t.Fatalf("%s: audit records the revocation of %s, it is still there (%v)", when, e.Target, err)
			}
		case "share.put":
			shares, err := w.direct.ListShares(ctx, "acme")
			if err != nil || len(shares) != 1 {
				t.Fatalf("%s: audit records a share, the store holds %v (%v)", when, shares, err)
			}
		case "reseller.assignment.import":
			for _, row := range w.importing {
				a, err := w.direct.GetAssignment(ctx, row.Customer)
				if err != nil || a.Domain != row.Domain {
					t.Fatalf("%s: audit records the import, %s is %+v (%v)", when, row.Customer, a, err)
				}
			}
		default:
			t.Fatalf("%s: unexpected audit entry %+v", when, e)
		}
	}
	// Every assignment is as it was, or as the import asked.
	for _, row := range w.importing {
		a, err := w.direct.GetAssignment(ctx, row.Customer)
		switch {
		case sidecar.ErrorCode(err) == sidecar.ENOTFOUND:
			if w.before[row.Customer] != "" {
				t.Fatalf("%s: %s lost its assignment", when, row.Customer)
			}
		case err != nil:
			t.Fatal(err)
		case a.Domain != row.Domain && a.Domain != w.before[row.Customer]:
			t.Fatalf("%s: %s is in %s, neither where it was nor where the import put it", when, row.Customer, a.Domain)
		}
	}
}

// An approval cut off after some of its grants were stored completes when
// retried; but a grant of it revoked meanwhile is not issued again.
func TestPendingApprovalCompletesButNeverReissuesARevokedGrant(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			r, err := env.partners.Request(ctx, patUser, individualRequest(sidecar.LevelCreate, 30, "pat", "paul"), allowAll)
			if err != nil {
				t.Fatal(err)
			}
			// The fault: the decision and pat's grant were stored, then Redis went.
			d, err := env.store.DecideRequest(ctx, r.ID, sidecar.RequestApproved, cora.Subject, env.clock.Now())
			if err != nil || !d.GrantsPending {
				t.Fatalf("decided %+v (%v), want grants pending", d, err)
			}
			pat := sidecar.Grant{ID: "g-pat", Customer: "acme", PartnerOrg: "partnerco", User: "pat", Level: r.Level,
				ExpiresAt: d.DecidedAt.Add(30 * day), ApprovedBy: cora.Subject, ApprovedAt: d.DecidedAt, RequestID: r.ID}
			if err := env.store.PutGrant(ctx, &pat); err != nil {
				t.Fatal(err)
			}
			// The customer revokes pat's grant before anyone retries.
			if _, err := env.partners.Revoke(ctx, cora, "acme", "g-pat", allowAll); err != nil {
				t.Fatal(err)
			}
			_, _, err = env.partners.Approve(ctx, cora, r.ID, allowAll)
			wantCode(t, err, sidecar.ECONFLICT, "request_already_approved")
			for _, u := range []string{"pat", "paul"} {
				if e, err := env.store.EffectiveGrants(ctx, "acme", "partnerco", u); err != nil || e.Individual != nil {
					t.Fatalf("%s holds %+v after the revocation (%v)", u, e.Individual, err)
				}
			}

			// Without a revocation, the retry completes the approval as decided.
			r2, err := env.partners.Request(ctx, patUser, orgRequest(sidecar.LevelLook, 10), allowAll)
			if err != nil {
				t.Fatal(err)
			}
			d2, err := env.store.DecideRequest(ctx, r2.ID, sidecar.RequestApproved, cora.Subject, env.clock.Now())
			if err != nil {
				t.Fatal(err)
			}
			env.clock.Advance(time.Hour)
			_, gs, err := env.partners.Approve(ctx, cora, r2.ID, allowAll)
			if err != nil || len(gs) != 1 || !gs[0].ApprovedAt.Equal(d2.DecidedAt) || !gs[0].ExpiresAt.Equal(d2.DecidedAt.Add(10*day)) {
				t.Fatalf("completed with %+v (%v), want one grant as of the decision", gs, err)
			}
			if cur, _ := env.store.GetRequest(ctx, r2.ID); cur.GrantsPending {
				t.Fatal("grants still pending after completion")
			}
			_, _, err = env.partners.Approve(ctx, cora, r2.ID, allowAll)
			wantCode(t, err, sidecar.ECONFLICT, "request_already_approved")
		})
	}
}
