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
