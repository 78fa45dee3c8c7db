package delegation_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
)

// The impersonation calls that read switches after asking the manage
// policy (a consent's change budget, the enabled switch at redeem, the
// protected accounts a synced profile is judged by, and every switch a
// start stores) must apply the switches of the revision whose manage rules
// authorized them. In each case revision x's rules allow the call and its
// switches refuse it, and revision y's rules refuse it and its switches
// allow it: x's rules with y's switches is an outcome neither allows. Two
// reloads show it:
//   - after: x serves and answers, and a reload to y lands before the
//     switches are read;
//   - there and back: y serves, a reload to x lands as the policy is asked
//     and one back to y's data (a new activation, as every reload makes)
//     after it answered, so the switches read before and after the answer
//     are equal though x's rules decided.
//
// Either way the call is asked again on y, whose rules refuse it.
func TestImpersonationCallsUnderOneRevision(t *testing.T) {
	ctx := context.Background()
	agent := &sidecar.Identity{Subject: "alice", Roles: []string{"support_agent"}}
	c42 := &sidecar.Identity{Subject: "c42"}
	cases := []struct {
		name string
		x, y *revision
		// prepare runs on the shipped data with every action allowed.
		prepare func(t *testing.T, w *impWorld)
		call    func(w *impWorld) (string, error)
		want    string // y's refusal
	}{
		{
			name: "start: of a customer x protects, by y's rules, which refuse starts",
			x:    &revision{name: "x", data: withDeputyData(t, "impersonation", map[string]any{"protected_customers": []any{"c42"}}), manage: allowAll},
			y:    &revision{name: "y", data: withDeputyData(t, "impersonation", nil), manage: refusing("impersonation.start", "starts_closed")},
			prepare: func(t *testing.T, w *impWorld) {
				w.consent(t, true)
			},
			call: func(w *impWorld) (string, error) {
				st, err := w.lc.Start(ctx, agent, delegation.StartRequest{Customer: "c42"}, w.authorize)
				if err != nil {
					return "", err
				}
				return "session " + st.Session.ID + " started", nil
			},
			want: "starts_closed",
		},
		{
			name: "consent: past x's change budget, by y's rules, which refuse changes",
			x:    &revision{name: "x", data: withDeputyData(t, "impersonation", map[string]any{"max_consent_changes": 1.0}), manage: allowAll},
			y:    &revision{name: "y", data: withDeputyData(t, "impersonation", nil), manage: refusing("consent.set_self", "consent_closed")},
			prepare: func(t *testing.T, w *impWorld) {
				w.consent(t, false) // given once (the budget's one change), then withdrawn
			},
			call: func(w *impWorld) (string, error) {
				_, _, err := w.lc.SetConsent(ctx, c42, delegation.ConsentChange{Customer: "c42", Allowed: true}, w.authorize)
				return "consent given a second time", err
			},
			want: "consent_closed",
		},
		{
			name: "redeem: while x turns impersonation off, by y's rules, which refuse redeeming",
			x:    &revision{name: "x", data: withDeputyData(t, "impersonation", map[string]any{"enabled": false}), manage: allowAll},
			y:    &revision{name: "y", data: withDeputyData(t, "impersonation", nil), manage: refusing("impersonation.redeem", "redeem_closed")},
			prepare: func(t *testing.T, w *impWorld) {
				w.consent(t, true)
				w.started = w.start(t, agent)
			},
			call: func(w *impWorld) (string, error) {
				r, err := w.lc.Redeem(ctx, nil, w.started.Code, "", "shop.example.com", w.authorize)
				if err != nil {
					return "", err
				}
				return "session " + r.Session.ID + " redeemed", nil
			},
			want: "redeem_closed",
		},
		{
			name: "customer sync: unprotected by y's switches, by x's rules, which protect it",
			x:    &revision{name: "x", data: withDeputyData(t, "impersonation", map[string]any{"protected_customers": []any{"c42"}}), manage: allowAll},
			y:    &revision{name: "y", data: withDeputyData(t, "impersonation", nil), manage: refusing("customer.put", "sync_closed")},
			prepare: func(t *testing.T, w *impWorld) {
				w.consent(t, true)
				w.started = w.start(t, agent)
			},
			call: func(w *impWorld) (string, error) {
				if err := w.lc.PutCustomer(ctx, storefrontSync, &sidecar.Customer{ID: "c42", Name: "C. Forty-Two", DefaultStoreView: "en"}, w.authorize); err != nil {
					return "", err
				}
				s, err := w.store.GetSession(ctx, w.started.Session.ID)
				if err != nil {
					return "", err
				}
				if s.EndState(time.Now()) != "" {
					return "", fmt.Errorf("profile stored and session ended (%s), as x's switches would, by x's rules", s.EndState(time.Now()))
				}
				return "profile stored, session " + s.ID + " still live", nil
			},
			want: "sync_closed",
		},
	}
	for _, shape := range []string{"after", "there and back"} {
		for _, tc := range cases {
			t.Run(shape+"/"+tc.name, func(t *testing.T) {
				w := newImpWorld(t)
				if tc.prepare != nil {
					tc.prepare(t, w)
				}
				w.rl.asked = nil
				switch shape {
				case "after":
					w.rl.serve(tc.x)
					w.rl.next = []*revision{tc.y}
					w.authorize = w.rl.authorize
				case "there and back":
					w.rl.serve(tc.y)
					w.rl.next = []*revision{{name: "y'", data: maps.Clone(tc.y.data), manage: tc.y.manage}}
					first := true
					w.authorize = func(action string, target map[string]any) error {
						if first { // the reload to x lands as the policy is asked
							first = false
							w.rl.serve(tc.x)
						}
						return w.rl.authorize(action, target)
					}
				}
				got, err := tc.call(w)
				if err == nil {
					t.Fatalf("decided on %v: %s, which neither revision allows", w.rl.asked, got)
				}
				wantCode(t, err, sidecar.EFORBIDDEN, tc.want)
			})
		}
	}
}

// A reload landing at every ask leaves no revision to decide on: the call
// gives up with a conflict, and changes nothing.
func TestImpersonationCallReloadedThroughout(t *testing.T) {
	w := newImpWorld(t)
	w.consent(t, false)
	for i := range 6 {
		w.rl.next = append(w.rl.next, &revision{name: fmt.Sprint("r", i), data: withDeputyData(t, "impersonation", nil), manage: allowAll})
	}
	_, _, err := w.lc.SetConsent(context.Background(), &sidecar.Identity{Subject: "c42"}, delegation.ConsentChange{Customer: "c42", Allowed: true}, w.rl.authorize)
	wantCode(t, err, sidecar.ECONFLICT, "")
	c, err := w.lc.GetConsent(context.Background(), &sidecar.Identity{Subject: "c42"}, "c42", allowAll)
	must(t, err)
	if c.Allowed {
		t.Fatalf("consent given by a call that gave up: %+v", c)
	}
}

var storefrontSync = &sidecar.Identity{Subject: "storefront-sync"}

// impWorld is an impersonation lifecycle on the revisions rl serves, with
// customer c42's profile synced on the shipped data.
type impWorld struct {
	lc        *delegation.Impersonation
	store     *memory.Store
	rl        *reloading
	authorize delegation.Authorize
	started   *delegation.Started // by prepare, when it starts one
}

func newImpWorld(t *testing.T) *impWorld {
	t.Helper()
	w := &impWorld{rl: &reloading{}}
	w.rl.serve(&revision{name: "shipped", data: withDeputyData(t, "impersonation", nil), manage: allowAll})
	w.store = memory.New()
	t.Cleanup(func() { _ = w.store.Close() })
	w.lc = delegation.NewImpersonation(w.store, w.rl.data)
	must(t, w.lc.PutCustomer(context.Background(), storefrontSync, &sidecar.Customer{ID: "c42", DefaultStoreView: "en"}, allowAll))
	return w
}

// consent has c42 give consent, and withdraw it again unless keep.
func (w *impWorld) consent(t *testing.T, keep bool) {
	t.Helper()
	ctx := context.Background()
	c42 := &sidecar.Identity{Subject: "c42"}
	must(t, second2(w.lc.SetConsent(ctx, c42, delegation.ConsentChange{Customer: "c42", Allowed: true}, allowAll)))
	if !keep {
		must(t, second2(w.lc.SetConsent(ctx, c42, delegation.ConsentChange{Customer: "c42", Allowed: false}, allowAll)))
	}
}

// start has staff start a session on c42.
func (w *impWorld) start(t *testing.T, staff *sidecar.Identity) *delegation.Started {
	t.Helper()
	st, err := w.lc.Start(context.Background(), staff, delegation.StartRequest{Customer: "c42"}, allowAll)
	must(t, err)
	return st
}

func second2[A, B any](_ A, _ B, err error) error { return err }
