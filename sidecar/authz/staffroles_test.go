package authz_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// Narrowing access takes effect at the next request: once policy data
// takes login_as_customer from the staff member's role, the live session
// they started with it is denied, though it has not ended and its
// resolver caches it for an hour.
func TestStaffPermissionRemovedDeniesLiveSession(t *testing.T) {
	ctx := context.Background()
	allow := func(string, map[string]any) error { return nil } // the manage policy, in the API
	set, err := policy.LoadPaths([]string{"../../policies"})
	must(t, err)
	engine := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)))
	must(t, engine.Activate(ctx, set))
	mem := memory.New()
	lc := delegation.NewImpersonation(mem, func() map[string]any { return engine.Current().Data() })
	must(t, lc.PutCustomer(ctx, &sidecar.Identity{Subject: "storefront-sync"}, &sidecar.Customer{ID: "c42", DefaultStoreView: "en"}, allow))
	_, _, err = lc.SetConsent(ctx, &sidecar.Identity{Subject: "c42"}, delegation.ConsentChange{Customer: "c42", Allowed: true}, allow)
	must(t, err)
	staff := &sidecar.Identity{Subject: "staff-1", Roles: []string{"support_agent"}, ExpiresAt: time.Now().Add(time.Hour)}
	st, err := lc.Start(ctx, staff, delegation.StartRequest{Customer: "c42"}, allow)
	must(t, err)
	red, err := lc.Redeem(ctx, nil, st.Code, "", "shop.example.com", allow)
	must(t, err)
	sessions := resolve.NewSessionResolver(mem, delegation.ImpersonationConfig{CacheTTL: time.Hour})
	defer sessions.Close()
	p := authz.New(engine, authz.WithResolvers(sessions))
	req := withHeaders(t, "/customer/account", map[string]string{"cookie": "deputy_session=" + red.Token})
	if resp := p.Check(ctx, req); !resp.Allowed {
		t.Fatalf("before: denied (%s)", resp.Reason)
	}
	perms := set.Data["deputy"].(map[string]any)["impersonation"].(map[string]any)["role_permissions"].(map[string]any)
	perms["support_agent"] = []any{"view_login_as_customer_log"}
	must(t, engine.Activate(ctx, set))
	if resp := p.Check(ctx, req); resp.Allowed || resp.Reason != "actor_not_permitted" {
		t.Fatalf("after: allowed %v reason %q, want denied actor_not_permitted", resp.Allowed, resp.Reason)
	}
}

// A staff member's own token, sent with the session's cookie, tells what
// their roles are now: once the identity provider takes away the role
// that granted login_as_customer, the session started with it is denied
// on that request, though the roles recorded at its start still grant
// it. A request with the cookie alone is judged on the recorded roles.
func TestStaffCurrentRolesJudgeLiveSession(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	live, _ := twoSessions(t, store, time.Now()) // started by staff-1 as support_agent
	p, mint := delegatedPipeline(t, store)
	cases := []struct {
		name    string
		bearer  bool
		roles   []string // staff-1's roles in the bearer token
		allowed bool
		reason  string
	}{
		{"cookie_alone", false, nil, true, "impersonation"},
		{"roles_unchanged", true, []string{"support_agent"}, true, "impersonation"},
		{"another_role_granting_it", true, []string{"support_lead"}, true, "impersonation"},
		{"role_taken_away", true, []string{"customer"}, false, "actor_not_permitted"},
		{"no_roles_left", true, nil, false, "actor_not_permitted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"cookie": "deputy_session=" + live}
			if tc.bearer {
				h["authorization"] = "Bearer " + mint(identity.DevClaims{Subject: "staff-1", Roles: tc.roles, TTL: time.Hour})
			}
			resp := p.Check(ctx, withHeaders(t, "/customer/account", h))
			if resp.Allowed != tc.allowed || resp.Reason != tc.reason {
				t.Fatalf("allowed %v reason %q, want %v %q", resp.Allowed, resp.Reason, tc.allowed, tc.reason)
			}
			if !tc.allowed && len(resp.Injected) > 0 {
				t.Fatalf("denied, yet the customer's identity is injected: %v", resp.Injected)
			}
		})
	}
}
