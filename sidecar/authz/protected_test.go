package authz_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A live session is denied on its next request once the customer's
// account becomes protected, however it becomes so: the profile (flag or
// roles) synced through the lifecycle, which also ends the session; policy
// data listing the customer or one of its roles, which applies to live
// sessions at once; the customer's subject acting as staff.
func TestProtectionDeniesLiveSessions(t *testing.T) {
	ctx := context.Background()
	sync := &sidecar.Identity{Subject: "storefront-sync"}
	allow := func(string, map[string]any) error { return nil } // the manage policy, in the API
	cases := []struct {
		name    string
		roles   []string // the profile's roles when the session starts
		lost    bool     // session evictions never arrive
		protect func(t *testing.T, lc *delegation.Impersonation, activate func(func(imp map[string]any)))
		reason  string
	}{
		{"profile_protected", nil, false, func(t *testing.T, lc *delegation.Impersonation, _ func(func(map[string]any))) {
			must(t, lc.PutCustomer(ctx, sync, &sidecar.Customer{ID: "c42", Protected: true}, allow))
		}, "session_customer_protected"},
		{"profile_roles_admin", nil, false, func(t *testing.T, lc *delegation.Impersonation, _ func(func(map[string]any))) {
			must(t, lc.PutCustomer(ctx, sync, &sidecar.Customer{ID: "c42", Roles: []string{"admin"}}, allow))
		}, "session_customer_protected"},
		{"recorded_as_staff", nil, false, func(t *testing.T, lc *delegation.Impersonation, _ func(func(map[string]any))) {
			lc.RecordStaff(ctx, "c42")
		}, "session_customer_protected"},
		{"data_protected_customers", nil, false, func(t *testing.T, _ *delegation.Impersonation, activate func(func(map[string]any))) {
			activate(func(imp map[string]any) { imp["protected_customers"] = []any{"c42"} })
		}, "customer_protected"},
		{"data_protected_roles", []string{"customer", "vip"}, false, func(t *testing.T, _ *delegation.Impersonation, activate func(func(map[string]any))) {
			activate(func(imp map[string]any) { imp["protected_roles"] = append(imp["protected_roles"].([]any), "vip") })
		}, "customer_protected"},
		// The session end never reaches this replica: the profile, read with
		// the consent on every request, still denies.
		{"profile_protected_session_eviction_lost", nil, true, func(t *testing.T, lc *delegation.Impersonation, _ func(func(map[string]any))) {
			must(t, lc.PutCustomer(ctx, sync, &sidecar.Customer{ID: "c42", Protected: true}, allow))
		}, "customer_protected"},
		{"staff_session_eviction_lost", nil, true, func(t *testing.T, lc *delegation.Impersonation, _ func(func(map[string]any))) {
			lc.RecordStaff(ctx, "c42")
		}, "customer_protected"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, err := policy.LoadPaths([]string{"../../policies"})
			must(t, err)
			engine := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)))
			must(t, engine.Activate(ctx, set))
			activate := func(change func(imp map[string]any)) {
				change(set.Data["deputy"].(map[string]any)["impersonation"].(map[string]any))
				must(t, engine.Activate(ctx, set))
			}
			mem := memory.New()
			var state resolve.SessionState = mem
			if tc.lost {
				state = storetest.LostSessionEvictions{Store: mem}
			}
			lc := delegation.NewImpersonation(mem, func() map[string]any { return engine.Current().Data() })
			must(t, lc.PutCustomer(ctx, sync, &sidecar.Customer{ID: "c42", Roles: tc.roles}, allow))
			now := time.Now()
			token := "protected-session-token-0123456789abcdef012"
			must(t, storetest.StartRedeemed(ctx, mem, &sidecar.Session{ID: "imp_1", Actor: "staff-1", ActorRoles: []string{"support_agent"}, Customer: "c42",
				StartedAt: now, ExpiresAt: now.Add(time.Hour), Host: "shop.example.com"}, delegation.HashSecret(token)))
			sessions := resolve.NewSessionResolver(state, delegation.ImpersonationConfig{CacheTTL: time.Hour})
			defer sessions.Close()
			p := authz.New(engine, authz.WithResolvers(sessions))
			req := withHeaders(t, "/customer/account", map[string]string{"cookie": "deputy_session=" + token})
			if resp := p.Check(ctx, req); !resp.Allowed {
				t.Fatalf("before: denied (%s)", resp.Reason)
			}
			tc.protect(t, lc, activate)
			if resp := p.Check(ctx, req); resp.Allowed || resp.Reason != tc.reason {
				t.Fatalf("after: allowed %v reason %q, want denied %q", resp.Allowed, resp.Reason, tc.reason)
			}
			// The sweep records what policy data decided: however the account
			// became protected, the session ends once, as customer_protected,
			// with one impersonation.ended event.
			must(t, lc.Sweep(ctx))
			ended, err := mem.GetSession(ctx, "imp_1")
			must(t, err)
			if ended.EndReason != sidecar.EndCustomerProtected {
				t.Fatalf("session in the store: %q, want %q", ended.EndReason, sidecar.EndCustomerProtected)
			}
			events, _, err := mem.ReadEvents(ctx, sidecar.StreamFilter{Type: sidecar.EventImpersonationEnded})
			must(t, err)
			if len(events) != 1 || events[0].Data["end_reason"] != sidecar.EndCustomerProtected {
				t.Fatalf("impersonation.ended events: %+v", events)
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
