package delegation_test

import (
	"context"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// Once policy data takes login_as_customer from a staff role, the sweep
// ends the live sessions started with it (actor_not_permitted, by Deputy,
// one impersonation.ended event and an audit entry), as it ends those of
// customers the data now protects; a session whose actor still holds the
// permission through another role runs on. A session recorded without
// roles (started before Deputy recorded them), which policy denies, ends
// at the first sweep.
func TestSweepEndsSessionsOfActorsNoLongerPermitted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T, clock *storetest.Clock) sidecar.Store
	}{
		{"memory", func(_ *testing.T, clock *storetest.Clock) sidecar.Store {
			return memory.New(memory.WithClock(clock.Now))
		}},
		{"redis", func(t *testing.T, clock *storetest.Clock) sidecar.Store {
			return redisReplica(t, redistest.Start(t), "perm", clock)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			clock := storetest.NewClock(storetest.Epoch)
			store := tc.store(t, clock)
			set, err := policy.LoadPaths([]string{"../../policies"})
			must(t, err)
			lc := delegation.NewImpersonation(store, func() map[string]any { return set.Data }, delegation.WithImpersonationClock(clock.Now))
			starts := map[string][]string{ // actor: roles (nil: recorded without roles)
				"agent":  {"support_agent"},
				"both":   {"support_agent", "support_lead"},
				"legacy": nil,
			}
			ids := map[string]string{}
			for actor, roles := range starts {
				customer := "c-" + actor
				must(t, lc.PutCustomer(ctx, &sidecar.Identity{Subject: "storefront-sync"}, &sidecar.Customer{ID: customer, DefaultStoreView: "en"}, allowAll))
				_, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: customer}, delegation.ConsentChange{Customer: customer, Allowed: true}, allowAll)
				must(t, err)
				st, err := lc.Start(ctx, &sidecar.Identity{Subject: actor, Roles: roles}, delegation.StartRequest{Customer: customer}, allowAll)
				must(t, err)
				ids[actor] = st.Session.ID
			}
			must(t, lc.Sweep(ctx))
			for _, actor := range []string{"agent", "both"} {
				if s, err := store.GetSession(ctx, ids[actor]); err != nil || !s.Live(clock.Now()) {
					t.Fatalf("%s's session ended before any change: %+v, %v", actor, s, err)
				}
			}
			if s, err := store.GetSession(ctx, ids["legacy"]); err != nil || s.Live(clock.Now()) || s.EndReason != sidecar.EndActorNotPermitted {
				t.Fatalf("the session recorded without roles: %+v, %v", s, err)
			}
			imp := set.Data["deputy"].(map[string]any)["impersonation"].(map[string]any)
			imp["role_permissions"].(map[string]any)["support_agent"] = []any{"view_login_as_customer_log"}
			for range 2 { // a second sweep finds nothing left to end
				must(t, lc.Sweep(ctx))
			}
			s, err := store.GetSession(ctx, ids["agent"])
			must(t, err)
			if s.Live(clock.Now()) || s.EndReason != sidecar.EndActorNotPermitted || s.EndedBy != sidecar.SweepActor {
				t.Fatalf("agent's session: live %v, ended as %q by %q", s.Live(clock.Now()), s.EndReason, s.EndedBy)
			}
			if s, err := store.GetSession(ctx, ids["both"]); err != nil || !s.Live(clock.Now()) {
				t.Fatalf("both's session: %+v, %v", s, err)
			}
			live, _, err := store.ListSessions(ctx, sidecar.SessionFilter{Actor: "agent", LiveOnly: true})
			must(t, err)
			if len(live) != 0 {
				t.Fatalf("agent's live sessions: %v", live)
			}
			events, _, err := store.ReadEvents(ctx, sidecar.StreamFilter{Type: sidecar.EventImpersonationEnded})
			must(t, err)
			ended := map[any]any{}
			for _, ev := range events {
				ended[ev.Data["session"]] = ev.Data["end_reason"]
			}
			if len(events) != 2 || ended[ids["agent"]] != sidecar.EndActorNotPermitted || ended[ids["legacy"]] != sidecar.EndActorNotPermitted {
				t.Fatalf("impersonation.ended events: %+v", events)
			}
			audit, _, err := store.ReadAudit(ctx, sidecar.StreamFilter{Type: "impersonation.end"})
			must(t, err)
			targets := map[string]bool{}
			for _, a := range audit {
				if a.Actor != sidecar.SweepActor || a.Data["end_reason"] != sidecar.EndActorNotPermitted {
					t.Fatalf("impersonation.end audit: %+v", audit)
				}
				targets[a.Target] = true
			}
			if len(audit) != 2 || !targets[ids["agent"]] || !targets[ids["legacy"]] {
				t.Fatalf("impersonation.end audit: %+v", audit)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
