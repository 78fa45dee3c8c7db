package delegation_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
)

// revision is one policy activation as the partner lifecycle meets it:
// the partner limits in its data, and its manage rules (manage).
type revision struct {
	name   string
	data   map[string]any
	manage delegation.Authorize
}

// reloading serves one revision at a time. The manage policy is asked on
// the revision serving when it is asked, as the engine evaluates it, and
// each of the first answers is followed by a reload to the next revision
// of next: the reload lands after the decision and before whatever the
// call reads of the limits.
type reloading struct {
	cur   atomic.Pointer[revision]
	next  []*revision
	asked []string // the revision each decision was made on
}

func (r *reloading) data() map[string]any { return r.cur.Load().data }

func (r *reloading) serve(rev *revision) { r.cur.Store(rev) }

func (r *reloading) authorize(action string, target map[string]any) error {
	rev := r.cur.Load()
	r.asked = append(r.asked, rev.name)
	err := rev.manage(action, target)
	if len(r.next) > 0 {
		r.cur.Store(r.next[0])
		r.next = r.next[1:]
	}
	return err
}

// refusing is manage rules that refuse action (with reason) and allow the
// rest.
func refusing(action, reason string) delegation.Authorize {
	return func(a string, _ map[string]any) error {
		if a == action {
			return sidecar.Errorf(sidecar.EFORBIDDEN, "%s", reason)
		}
		return nil
	}
}

// The partner calls read their limits (grant lengths, the self-service
// budget, the subscription level) from the rules serving, and the manage
// policy that authorizes them is evaluated on the rules serving when it
// is asked. A reload between the two had one revision's manage rules
// authorize what the call then applied the other revision's limits to:
// an outcome neither revision allows, e.g. a full_admin request for 60
// days when revision A caps requests at 30 days and revision B lets no
// one ask for full_admin. Every call must decide and apply its limits on
// one revision: the one serving after the manage policy answered, asked
// again if a reload landed meanwhile.
func TestPartnerCallsUnderOneRevision(t *testing.T) {
	ctx := context.Background()
	// Revision a of the subscription cases: only update and up subscribe.
	minUpdate := &revision{name: "a", data: withPartnerData(t, map[string]any{"subscription_min_level": "update"}), manage: allowAll}
	cases := []struct {
		name string
		// a serves first; the manage policy's first answer, a's, is
		// followed by a reload to b.
		a, b *revision
		// prepare runs on a with every action allowed, before the reload
		// is armed.
		prepare func(t *testing.T, w revisionWorld)
		call    func(w revisionWorld) (string, error)
		// want is "" when the call must succeed, else the reason it is
		// refused with.
		want string
	}{
		{
			name: "request: a level b refuses, for longer than a allows",
			a:    &revision{name: "a", data: withPartnerData(t, map[string]any{"max_grant_days": 30.0}), manage: allowAll},
			b:    &revision{name: "b", data: withPartnerData(t, map[string]any{"max_grant_days": 365.0}), manage: refusingLevel(sidecar.LevelFullAdmin)},
			call: func(w revisionWorld) (string, error) {
				r, err := w.p.Request(ctx, patUser, orgRequest(sidecar.LevelFullAdmin, 60), w.rl.authorize)
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("request %s for %d days stored", r.Level, r.ExpiryDays), nil
			},
			want: "level_not_requestable",
		},
		{
			name: "request: b's rules and limits both allow it",
			a:    &revision{name: "a", data: withPartnerData(t, map[string]any{"max_grant_days": 30.0}), manage: allowAll},
			b:    &revision{name: "b", data: withPartnerData(t, map[string]any{"max_grant_days": 365.0}), manage: allowAll},
			call: func(w revisionWorld) (string, error) {
				r, err := w.p.Request(ctx, patUser, orgRequest(sidecar.LevelLook, 60), w.rl.authorize)
				if err != nil {
					return "", err
				}
				if last := w.rl.asked[len(w.rl.asked)-1]; last != "b" {
					return "", fmt.Errorf("request for %d days stored, last authorized on %s's rules, whose limit is 30 days", r.ExpiryDays, last)
				}
				return "", nil
			},
		},
		{
			name: "share: past a's self-service budget, by b's limits, which refuse shares",
			a:    &revision{name: "a", data: withPartnerData(t, map[string]any{"max_self_service_changes": 1.0}), manage: allowAll},
			b:    &revision{name: "b", data: withPartnerData(t, nil), manage: refusing("share.put", "shares_closed")},
			prepare: func(t *testing.T, w revisionWorld) {
				must(t, second(w.p.Share(ctx, cora, "acme", delegation.ShareInput{Resource: "sr-1", User: "pat", PartnerOrg: "partnerco"}, allowAll)))
			},
			call: func(w revisionWorld) (string, error) {
				_, err := w.p.Share(ctx, cora, "acme", delegation.ShareInput{Resource: "sr-2", User: "pat", PartnerOrg: "partnerco"}, w.rl.authorize)
				return "second share stored", err
			},
			want: "shares_closed",
		},
		{
			name: "subscribe: below a's minimum level, by b's, which refuse subscriptions",
			a:    minUpdate,
			b:    &revision{name: "b", data: withPartnerData(t, nil), manage: refusing("subscription.put", "subscriptions_closed")},
			prepare: func(t *testing.T, w revisionWorld) {
				grantLook(t, w.p)
			},
			call: func(w revisionWorld) (string, error) {
				v, err := w.p.Subscribe(ctx, patUser, "acme", delegation.SubscriptionDashboard, w.rl.authorize)
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("subscription at level %s stored", v.Level), nil
			},
			want: "subscriptions_closed",
		},
		{
			name:    "subscribers: active by b's minimum level, listed by a's rules",
			a:       minUpdate,
			b:       &revision{name: "b", data: withPartnerData(t, nil), manage: refusing("partner.list_subscribers", "listing_closed")},
			prepare: lookSubscriber,
			call: func(w revisionWorld) (string, error) {
				vs, err := w.p.Subscribers(ctx, cora, "acme", "", w.rl.authorize)
				return fmt.Sprintf("%d active subscribers listed", len(vs)), err
			},
			want: "listing_closed",
		},
		{
			name:    "my subscriptions: active by b's minimum level, listed by a's rules",
			a:       minUpdate,
			b:       &revision{name: "b", data: withPartnerData(t, nil), manage: refusing("subscription.list", "listing_closed")},
			prepare: lookSubscriber,
			call: func(w revisionWorld) (string, error) {
				vs, err := w.p.MySubscriptions(ctx, patUser, w.rl.authorize)
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("subscriptions listed: %+v", vs), nil
			},
			want: "listing_closed",
		},
		{
			name: "approve: past a's grant length, by b's rules, which refuse approvals",
			a:    &revision{name: "a", data: withPartnerData(t, map[string]any{"max_grant_days": 30.0}), manage: allowAll},
			b:    &revision{name: "b", data: withPartnerData(t, nil), manage: refusing("partner.approve", "approvals_closed")},
			prepare: func(t *testing.T, w revisionWorld) {
				requestOn(t, w, orgRequest(sidecar.LevelLook, 365))
			},
			call: approvePending,
			want: "approvals_closed",
		},
		{
			name: "approve: a level b's rules do not grant, for longer than a allows",
			a:    &revision{name: "a", data: withPartnerData(t, map[string]any{"max_grant_days": 30.0}), manage: allowAll},
			b:    &revision{name: "b", data: withPartnerData(t, nil), manage: refusingApproval(sidecar.LevelFullAdmin)},
			prepare: func(t *testing.T, w revisionWorld) {
				requestOn(t, w, orgRequest(sidecar.LevelFullAdmin, 60))
			},
			call: approvePending,
			want: "level_not_grantable",
		},
		{
			name: "approve: b's rules and limits both allow it",
			a:    &revision{name: "a", data: withPartnerData(t, map[string]any{"max_grant_days": 30.0}), manage: allowAll},
			b:    &revision{name: "b", data: withPartnerData(t, nil), manage: allowAll},
			prepare: func(t *testing.T, w revisionWorld) {
				requestOn(t, w, orgRequest(sidecar.LevelLook, 60))
			},
			call: func(w revisionWorld) (string, error) {
				got, err := approvePending(w)
				if err != nil {
					return "", err
				}
				if last := w.rl.asked[len(w.rl.asked)-1]; last != "b" {
					return "", fmt.Errorf("%s approved, last authorized on %s's rules, whose limit is 30 days", got, last)
				}
				return "", nil
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := revisionWorld{rl: &reloading{}}
			w.rl.serve(tc.a)
			w.p = newRevisionPartners(t, w.rl)
			if tc.prepare != nil {
				tc.prepare(t, w)
			}
			w.rl.serve(tc.a)
			w.rl.asked, w.rl.next = nil, []*revision{tc.b}
			got, err := tc.call(w)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("decided on %v: %v", w.rl.asked, err)
			case tc.want != "" && err == nil:
				t.Fatalf("decided on %v: %s, which neither revision allows", w.rl.asked, got)
			case tc.want != "":
				wantCode(t, err, sidecar.EFORBIDDEN, tc.want)
			}
		})
	}
}

// Approve made the grant a request asked for, whatever the limits serving
// when it is approved: a request for 365 days, stored before a revision
// cut max_grant_days to 30, became a 365-day grant. Its grant length is
// now checked against the limits of the revision that authorizes the
// approval; one they no longer allow is refused, naming the limit, and
// the request waits on, for a rejection or its expiry.
func TestApproveUnderServingLimits(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		limits map[string]any // the partner limits serving at the approval
		in     delegation.AccessRequestInput
		want   string // the refusal, "" for a grant
	}{
		{
			name:   "organisation grant past a lowered max_grant_days",
			limits: map[string]any{"max_grant_days": 30.0},
			in:     orgRequest(sidecar.LevelFullAdmin, 365),
			want:   "grant_days_not_allowed: the request asks for 365 days, past max_grant_days (30); reject it, and the partner may ask again",
		},
		{
			name:   "individual grant short of a raised min_grant_days",
			limits: map[string]any{"min_grant_days": 10.0},
			in:     individualRequest(sidecar.LevelLook, 5, "pat"),
			want:   "grant_days_not_allowed: the request asks for 5 days, short of min_grant_days (10); reject it, and the partner may ask again",
		},
		{
			name:   "grant within the lowered limit",
			limits: map[string]any{"max_grant_days": 30.0},
			in:     orgRequest(sidecar.LevelLook, 30),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := revisionWorld{rl: &reloading{}}
			w.rl.serve(&revision{name: "shipped", data: withPartnerData(t, nil), manage: allowAll})
			w.p = newRevisionPartners(t, w.rl)
			requestOn(t, w, tc.in)
			w.rl.serve(&revision{name: "cut", data: withPartnerData(t, tc.limits), manage: allowAll})
			got, err := approvePending(w)
			if tc.want == "" {
				must(t, err)
				return
			}
			if err == nil {
				t.Fatalf("approved under the limits %v: %s", tc.limits, got)
			}
			wantCode(t, err, sidecar.EFORBIDDEN, tc.want)
			user := ""
			if tc.in.Scope == sidecar.ScopeIndividual {
				user = tc.in.Users[0]
			}
			g, err := w.p.Effective(ctx, "acme", "partnerco", user)
			must(t, err)
			if g != nil {
				t.Fatalf("refused approval left a grant: %+v", g)
			}
		})
	}
}

// A reload landing at every ask leaves no revision to decide on: the call
// gives up with a conflict, and stores nothing.
func TestPartnerCallReloadedThroughout(t *testing.T) {
	ctx := context.Background()
	rl := &reloading{}
	var revs []*revision
	for i := range 6 {
		revs = append(revs, &revision{name: fmt.Sprint("r", i), data: withPartnerData(t, map[string]any{"max_grant_days": float64(30 + i)}), manage: allowAll})
	}
	rl.serve(revs[0])
	rl.next = revs[1:]
	p := newRevisionPartners(t, rl)
	_, err := p.Request(ctx, patUser, orgRequest(sidecar.LevelLook, 30), rl.authorize)
	wantCode(t, err, sidecar.ECONFLICT, "")
	rs, _, err := p.ListRequests(ctx, patUser, sidecar.RequestFilter{PartnerOrg: "partnerco"}, allowAll)
	must(t, err)
	if len(rs) != 0 {
		t.Fatalf("%d requests stored by a call that gave up", len(rs))
	}
}

// revisionWorld is a partner lifecycle on the revisions rl serves.
type revisionWorld struct {
	p  *delegation.Partners
	rl *reloading
}

func newRevisionPartners(t *testing.T, rl *reloading) *delegation.Partners {
	t.Helper()
	clock := newPartnerClock()
	store := memory.New(memory.WithClock(clock.Now))
	t.Cleanup(func() { _ = store.Close() })
	return delegation.NewPartners(store, rl.data, delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))
}

// refusingLevel is manage rules that let no one ask for level.
func refusingLevel(level sidecar.Level) delegation.Authorize {
	return func(action string, target map[string]any) error {
		if action == "partner.request" && target["level"] == string(level) {
			return sidecar.Errorf(sidecar.EFORBIDDEN, "level_not_requestable")
		}
		return nil
	}
}

// requestOn stores partnerco's request in at acme on the shipped limits,
// which allow every level for up to 365 days.
func requestOn(t *testing.T, w revisionWorld, in delegation.AccessRequestInput) {
	t.Helper()
	w.rl.serve(&revision{name: "shipped", data: withPartnerData(t, nil), manage: allowAll})
	must(t, second(w.p.Request(context.Background(), patUser, in, allowAll)))
}

// refusingApproval is manage rules that let no one approve a request for
// level.
func refusingApproval(level sidecar.Level) delegation.Authorize {
	return func(action string, target map[string]any) error {
		if action == "partner.approve" && target["level"] == string(level) {
			return sidecar.Errorf(sidecar.EFORBIDDEN, "level_not_grantable")
		}
		return nil
	}
}

// approvePending has cora approve the one request waiting at acme, on the
// revisions w serves, and tells the grants it made. A refused approval
// leaves the request waiting.
func approvePending(w revisionWorld) (string, error) {
	ctx := context.Background()
	pending := sidecar.RequestFilter{Customer: "acme", Status: sidecar.RequestPending}
	rs, _, err := w.p.ListRequests(ctx, cora, pending, allowAll)
	if err != nil {
		return "", err
	}
	if len(rs) != 1 {
		return "", fmt.Errorf("%d requests waiting, want 1", len(rs))
	}
	_, gs, err := w.p.Approve(ctx, cora, rs[0].ID, w.rl.authorize)
	if err != nil {
		if rs, _, lerr := w.p.ListRequests(ctx, cora, pending, allowAll); lerr != nil || len(rs) != 1 {
			return "", fmt.Errorf("refused approval (%w) left %d requests waiting (%v), want 1", err, len(rs), lerr)
		}
		return "", err
	}
	out := ""
	for _, g := range gs {
		out += fmt.Sprintf("%s grant for %q until %s; ", g.Level, g.User, g.ExpiresAt.Format(time.DateOnly))
	}
	return out, nil
}

// grantLook gives partnerco a live look grant at acme.
func grantLook(t *testing.T, p *delegation.Partners) {
	t.Helper()
	ctx := context.Background()
	r, err := p.Request(ctx, patUser, orgRequest(sidecar.LevelLook, 10), allowAll)
	must(t, err)
	_, _, err = p.Approve(ctx, cora, r.ID, allowAll)
	must(t, err)
}

// lookSubscriber gives partnerco a look grant at acme and subscribes pat
// to acme's dashboard on the shipped limits, where a look grant may
// subscribe.
func lookSubscriber(t *testing.T, w revisionWorld) {
	t.Helper()
	grantLook(t, w.p)
	w.rl.serve(&revision{name: "shipped", data: withPartnerData(t, nil), manage: allowAll})
	must(t, second(w.p.Subscribe(context.Background(), patUser, "acme", delegation.SubscriptionDashboard, allowAll)))
}

func second[T any](_ T, err error) error { return err }
