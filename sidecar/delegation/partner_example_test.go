package delegation_test

import (
	"context"
	"fmt"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// A partner organisation asks for access, the customer's contact manager
// approves, and a partner user's request naming the customer resolves to
// the grant the policy will decide on.
func ExampleOnBehalfResolver() {
	ctx := context.Background()
	store := memory.New()
	set, _ := policy.LoadPaths([]string{"../../policies"})
	data := func() map[string]any { return set.Data }
	partners := delegation.NewPartners(store, data, delegation.PartnerConfig{})

	// The management API passes the manage policy here; the lifecycle asks
	// it before every action.
	allow := func(action string, target map[string]any) error { return nil }
	pat := &sidecar.Identity{Subject: "pat", Org: "partnerco"}
	cora := &sidecar.Identity{Subject: "cora", Org: "acme", Roles: []string{"contact_manager"}}
	req, _ := partners.Request(ctx, pat, delegation.AccessRequestInput{
		Customer: "acme", ContactEmail: "cora@acme.example", ExpiryDays: 30,
		Level: sidecar.LevelUpdate, Scope: sidecar.ScopeOrganisation,
	}, allow)
	_, _, _ = partners.Approve(ctx, cora, req.ID, allow)

	cached := resolve.NewCachedState(store, resolve.CacheConfig{}, nil, nil)
	defer cached.Close()
	resolver, _ := resolve.NewOnBehalfResolver(cached, cached, data, delegation.PartnerConfig{})

	d, _ := resolver.Resolve(ctx, &sidecar.Request{Method: "PATCH", Path: "/customers/acme/service-requests/sr-1"}, pat)
	fmt.Println(d.Mode, d.Subject, d.Actor, d.Level, d.Scope)

	_, err := resolver.Resolve(ctx, &sidecar.Request{Headers: map[string]string{"x-on-behalf-of": "globex"}}, pat)
	fmt.Println(sidecar.ErrorMessage(err))
	// Output:
	// partner acme pat update organisation
	// no_live_grant
}
