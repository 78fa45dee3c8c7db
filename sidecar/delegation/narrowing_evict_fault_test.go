package delegation_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// TestLostNarrowingEvictionAnswersUnavailable cuts the connection after
// every number of Redis commands a narrowing write sends: a grant revoked,
// a share withdrawn, a customer moved out of its domain or unassigned, a grant
// replaced by a lower one, a redeemed session replaced by its staff
// member's next. Whatever the cut, the store never answers
// success without having published the eviction (replicas that cached
// the wider state would honour it until their cache TTL, with the caller
// told it was gone), and a write stored whose eviction was lost answers
// Unpublished (503), so that its retry publishes again
// (TestRetriedRevocationReachesEveryReplica,
// TestRetriedUnshareReachesEveryReplica, TestRetriedStartReachesEveryReplica).
func TestLostNarrowingEvictionAnswersUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch)
	ctx := context.Background()
	assign := func(domain string) *sidecar.Assignment {
		return &sidecar.Assignment{Customer: "acme", Reseller: "r", Domain: domain, UpdatedAt: clock.Now()}
	}
	grant := func(id string, level sidecar.Level) *sidecar.Grant {
		return &sidecar.Grant{ID: id, Customer: "acme", PartnerOrg: "partnerco", User: "pat", Level: level,
			ExpiresAt: clock.Now().Add(30 * day), ApprovedBy: "cora", ApprovedAt: clock.Now()}
	}
	session := func(id string) *sidecar.Session {
		now := clock.Now()
		return &sidecar.Session{ID: id, Actor: "sam", ActorRoles: []string{"admin"}, Customer: "carol", StartedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	startSession := func(s sidecar.Store, id, code string) error {
		_, err := s.StartSession(ctx, sidecar.SessionStart{Session: session(id), CodeHash: delegation.HashSecret(code),
			CodeExpiresAt: clock.Now().Add(30 * time.Second), ReplaceLive: true})
		return err
	}
	// change applies one assignment change; a conflict fails the case.
	change := func(s sidecar.Store, c sidecar.AssignmentChange) error {
		conflicts, err := s.ChangeAssignments(ctx, []sidecar.AssignmentChange{c})
		if len(conflicts) > 0 {
			return fmt.Errorf("change refused as a conflict")
		}
		return err
	}
	cases := []struct {
		name  string
		key   string
		setup func(s sidecar.Store) error
		write func(s sidecar.Store) error
		done  func(s sidecar.Store) bool // the narrowing is stored
	}{
		{"share_withdrawn", sidecar.ShareKey("acme"),
			func(s sidecar.Store) error {
				return storetest.ErrOf(s.PutShare(ctx, &sidecar.Share{Customer: "acme", Resource: "sr1", User: "pat", PartnerOrg: "partnerco", SharedBy: "cora", SharedAt: clock.Now()}))
			},
			func(s sidecar.Store) error {
				_, err := s.DeleteShare(ctx, "acme", "sr1", "partnerco", "pat", "cora")
				return err
			},
			func(s sidecar.Store) bool {
				v, err := s.SharesFor(ctx, "acme", "partnerco", "pat")
				return err == nil && len(v) == 0
			}},
		{"assignment_moved_out", sidecar.AssignmentKey("acme"),
			func(s sidecar.Store) error {
				return change(s, sidecar.AssignmentChange{Customer: "acme", To: assign("d1")})
			},
			func(s sidecar.Store) error {
				return change(s, sidecar.AssignmentChange{Customer: "acme", From: "d1", To: assign("d2")})
			},
			func(s sidecar.Store) bool {
				a, err := s.GetAssignment(ctx, "acme")
				return err == nil && a.Domain == "d2"
			}},
		{"assignment_removed", sidecar.AssignmentKey("acme"),
			func(s sidecar.Store) error {
				return change(s, sidecar.AssignmentChange{Customer: "acme", To: assign("d1")})
			},
			func(s sidecar.Store) error { return change(s, sidecar.AssignmentChange{Customer: "acme", From: "d1"}) },
			func(s sidecar.Store) bool {
				_, err := s.GetAssignment(ctx, "acme")
				return sidecar.ErrorCode(err) == sidecar.ENOTFOUND
			}},
		{"grant_revoked", sidecar.GrantKey("acme"),
			func(s sidecar.Store) error { return s.PutGrant(ctx, grant("g1", sidecar.LevelCreate)) },
			func(s sidecar.Store) error { _, err := s.RevokeGrant(ctx, "acme", "g1", "cora", "acme"); return err },
			func(s sidecar.Store) bool {
				_, err := s.GetGrant(ctx, "acme", "g1")
				return sidecar.ErrorCode(err) == sidecar.ENOTFOUND
			}},
		{"grant_replaced_lower", sidecar.GrantKey("acme"),
			func(s sidecar.Store) error { return s.PutGrant(ctx, grant("g1", sidecar.LevelFullAdmin)) },
			func(s sidecar.Store) error { return s.PutGrant(ctx, grant("g2", sidecar.LevelCC)) },
			func(s sidecar.Store) bool {
				e, err := s.EffectiveGrants(ctx, "acme", "partnerco", "pat")
				return err == nil && e.Individual != nil && e.Individual.Level == sidecar.LevelCC
			}},
		{"session_replaced", sidecar.SessionKey(delegation.HashSecret("token1")),
			func(s sidecar.Store) error {
				if _, err := s.PutCustomer(ctx, &sidecar.Customer{ID: "carol", Name: "Carol"}, sidecar.Protection{}); err != nil {
					return err
				}
				if _, err := s.SetConsent(ctx, &sidecar.Consent{Customer: "carol", Allowed: true, SetBy: "carol", SetAt: clock.Now()}); err != nil {
					return err
				}
				if err := startSession(s, "imp_old", "code1"); err != nil {
					return err
				}
				_, err := s.RedeemSession(ctx, delegation.HashSecret("code1"), delegation.HashSecret("token1"), "shop.example", "", sidecar.SessionLimits{})
				return err
			},
			func(s sidecar.Store) error { return startSession(s, "imp_new", "code2") },
			func(s sidecar.Store) bool {
				old, err := s.GetSession(ctx, "imp_old")
				return err == nil && old.EndReason == sidecar.EndReplaced
			}},
	}
	n := 0
	var prev io.Closer
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// run sets up a world, plans the cut with plan (nil: none) and
			// runs the write through the proxy.
			run := func(plan func()) (wasCut bool, err error, evicted, done bool) {
				if prev != nil {
					// The proxy counts the commands of every connection
					// through it: the last world's cut store, left open,
					// would subscribe again and ping whenever the machine
					// lets it, and move this world's cuts. (Closed only
					// now: Redis may count its subscription a moment
					// longer, on that world's channel, not this one's.)
					_ = prev.Close()
				}
				n++
				prefix := fmt.Sprintf("nevict%d", n)
				direct := directStore(t, srv.Addr, prefix, clock.Now)
				if err := tc.setup(direct); err != nil {
					t.Fatal(err)
				}
				open := faultStore
				if plan == nil {
					open = wholeRunStore // must succeed
				}
				cutStore := open(t, proxy.Addr, prefix, clock.Now)
				prev = cutStore.(io.Closer)
				seen, cancel := watchKey(direct, tc.key)
				defer cancel()
				settle(t, direct, direct, prefix)
				seen() // the setup's own eviction
				proxy.Reset()
				if plan != nil {
					plan()
				}
				err = tc.write(cutStore)
				wasCut = proxy.WasCut()
				proxy.Reset()
				settle(t, direct, direct, prefix+"-after")
				return wasCut, err, seen(), tc.done(direct)
			}
			if _, err, evicted, done := run(nil); err != nil || !evicted || !done {
				t.Fatalf("without a fault: err %v, evicted %v, stored %v", err, evicted, done)
			}
			// Cut after 0, 1, 2... commands until the write runs whole.
			unpublished, cut := 0, 0
			for ; ; cut++ {
				if cut == 100 {
					t.Fatal("the write never ran whole within 100 commands")
				}
				wasCut, err, evicted, done := run(func() { proxy.CutAfter(cut) })
				if err == nil && (!evicted || !done) {
					t.Fatalf("cut after %d commands: success, evicted %v, stored %v", cut, evicted, done)
				}
				if sidecar.IsUnpublished(err) {
					unpublished++
					if !done {
						t.Fatalf("cut after %d: unpublished, yet the narrowing is not stored", cut)
					}
				}
				if !wasCut {
					// Unpublished is still a right answer (replicas slow to
					// confirm); any other failure is not.
					if err != nil && !sidecar.IsUnpublished(err) {
						t.Fatalf("no cut within %d commands, yet the write failed: %v", cut, err)
					}
					break
				}
			}
			// The cut the test is about, placed by what is sent rather
			// than by a count that the machine's timing can shift: Redis
			// gone once the write committed, as its eviction is published
			// (the first PUBLISH comes after the write's transaction and
			// the subscription that hears the confirmations).
			wasCut, err, evicted, done := run(func() { proxy.CutOn("publish") })
			if !wasCut || !sidecar.IsUnpublished(err) || !done {
				t.Fatalf("cut as the eviction is published: cut %v, err %v, evicted %v, stored %v; want the narrowing stored and Unpublished",
					wasCut, err, evicted, done)
			}
			t.Logf("%s: cut after each of 0..%d commands (%d answered Unpublished), then as the eviction is published", tc.name, cut-1, unpublished)
		})
	}
}

// TestRetriedUnshareReachesEveryReplica: a withdrawal whose share was
// deleted while its eviction was lost answers 503, and the client's retry,
// which finds nothing left to delete, publishes the eviction again, so
// other replicas drop the share before their cache TTL.
func TestRetriedUnshareReachesEveryReplica(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch)
	data := shippedData(t)
	in := delegation.ShareInput{Resource: "sr1", User: "pat", PartnerOrg: "partnerco"}
	retried := 0
	var prev io.Closer
	for cut := 0; cut < 100; cut++ {
		if prev != nil {
			// The proxy counts the commands of every connection through
			// it: a cut store left open would subscribe again and ping
			// whenever the machine lets it, and move this world's cuts.
			_ = prev.Close()
		}
		prefix := fmt.Sprintf("unshare%d", cut)
		direct := directStore(t, srv.Addr, prefix, clock.Now)
		if err := storetest.ErrOf(direct.PutShare(t.Context(), &sidecar.Share{Customer: "acme", Resource: "sr1", User: "pat", PartnerOrg: "partnerco", SharedBy: "cora", SharedAt: clock.Now()})); err != nil {
			t.Fatal(err)
		}
		cutStore := faultStore(t, proxy.Addr, prefix, clock.Now)
		prev = cutStore.(io.Closer)
		settle(t, direct, direct, prefix)
		wasCut, err := cutAfter(proxy, cut, func() error {
			return delegation.NewPartners(cutStore, data, delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now)).
				Unshare(t.Context(), cora, "acme", in, allowAll)
		})
		if !wasCut {
			break
		}
		if !sidecar.IsUnpublished(err) {
			continue
		}
		retried++
		seen, cancel := watchKey(direct, sidecar.ShareKey("acme"))
		settle(t, direct, direct, prefix+"-before-retry")
		if err := delegation.NewPartners(direct, data, delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now)).
			Unshare(t.Context(), cora, "acme", in, allowAll); err != nil {
			t.Fatalf("cut after %d: retry of the withdrawal: %v", cut, err)
		}
		settle(t, direct, direct, prefix+"-after-retry")
		if !seen() {
			t.Fatalf("cut after %d: the retry published no eviction of acme's shares", cut)
		}
		cancel()
	}
	if retried == 0 {
		t.Fatal("no cut fell between the share's deletion and its eviction")
	}
}

// TestRetriedStartReachesEveryReplica: a start that replaced the staff
// member's redeemed session while the eviction was lost answers 503, and
// the client's retry publishes that eviction again, so other replicas stop
// honouring the replaced session's cookie before their cache TTL. The
// failed start's own session, whose code was never handed out, is not
// left live.
func TestRetriedStartReachesEveryReplica(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch) // in the past: a start later than Redis's clock moves back to it
	retried := 0
	var prev *faultWorld
	for cut := 0; cut < 100; cut++ {
		if prev != nil {
			// The proxy counts the commands of every connection through
			// it: a cut store left open would resubscribe whenever the
			// machine lets it, and move the cuts of the next world.
			_ = prev.cut.(io.Closer).Close()
		}
		w := newFaultWorld(t, srv, proxy, fmt.Sprintf("restart%d", cut), clock)
		prev = w
		old := w.redeemed(t, alice, "c1")
		settle(t, w.direct, w.direct, w.prefix)
		wasCut, err := cutAfter(proxy, cut, func() error {
			_, err := w.lc.Start(w.ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
			return err
		})
		if !wasCut {
			break
		}
		if !sidecar.IsUnpublished(err) {
			continue
		}
		s, err := w.direct.GetSession(w.ctx, old.ID)
		if err != nil {
			t.Fatal(err)
		}
		if s.EndReason != sidecar.EndReplaced {
			continue // a lost eviction of another step (marking alice as staff)
		}
		retried++
		seen, cancel := watchKey(w.direct, sidecar.SessionKey(old.TokenHash))
		settle(t, w.direct, w.direct, w.prefix+"-before-retry")
		again, err := w.setup.Start(w.ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
		if err != nil {
			t.Fatalf("cut after %d: retry of the start: %v", cut, err)
		}
		settle(t, w.direct, w.direct, w.prefix+"-after-retry")
		if !seen() {
			t.Fatalf("cut after %d: the retry published no eviction of the replaced session", cut)
		}
		cancel()
		live, _, err := w.direct.ListSessions(w.ctx, sidecar.SessionFilter{Actor: alice.Subject, LiveOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(live) != 1 || live[0].ID != again.Session.ID {
			t.Fatalf("cut after %d: alice's live sessions after the retry: %d, want only the retry's %s", cut, len(live), again.Session.ID)
		}
	}
	if retried == 0 {
		t.Fatal("no cut fell between the replacing start and its eviction")
	}
}

// watchKey records whether key is published on s from now on: seen
// reports (and forgets) it, after a settle has delivered every eviction
// published before.
func watchKey(s sidecar.Store, key string) (seen func() bool, cancel func()) {
	got := make(chan struct{}, 1)
	cancel = s.Subscribe(func(k string) {
		if k == key {
			select {
			case got <- struct{}{}:
			default:
			}
		}
	})
	return func() bool {
		select {
		case <-got:
			return true
		default:
			return false
		}
	}, cancel
}

// cutAfter runs op with the proxy cutting the connection after cut
// commands, and reports whether it did cut.
func cutAfter(proxy *redistest.Proxy, cut int, op func() error) (wasCut bool, err error) {
	proxy.Reset()
	proxy.CutAfter(cut)
	err = op()
	wasCut = proxy.WasCut()
	proxy.Reset()
	return wasCut, err
}
