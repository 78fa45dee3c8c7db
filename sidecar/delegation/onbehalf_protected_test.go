package delegation_test

import (
	"context"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// A protected account (its profile says so, it holds a role of
// impersonation.protected_roles, or its subject acted as staff) cannot be
// acted for by partner users or reseller staff either: what impersonation
// refuses as customer_protected is refused through every other door, at
// the request, whatever was approved or assigned before.
func TestOnBehalfRefusesProtectedCustomers(t *testing.T) {
	staff := resellerStaff("shop-a.example", []string{"reseller_admin"}, nil)
	cases := []struct {
		name    string
		protect func(t *testing.T, s sidecar.Store)
		reason  string
	}{
		{name: "unprotected profile", protect: func(t *testing.T, s sidecar.Store) {
			putProfile(t, s, &sidecar.Customer{ID: "acme", Roles: []string{"customer"}})
		}},
		{name: "no profile"},
		{name: "profile says protected", protect: func(t *testing.T, s sidecar.Store) {
			putProfile(t, s, &sidecar.Customer{ID: "acme", Protected: true})
		}, reason: "customer_protected"},
		{name: "protected role", protect: func(t *testing.T, s sidecar.Store) {
			putProfile(t, s, &sidecar.Customer{ID: "acme", Roles: []string{"customer", "support_agent"}})
		}, reason: "customer_protected"},
		{name: "known as staff", protect: func(t *testing.T, s sidecar.Store) {
			if _, err := s.MarkStaff(context.Background(), "acme"); err != nil {
				t.Fatal(err)
			}
		}, reason: "customer_protected"},
		// Another spelling of the id is one account to an upstream that
		// reads ids without regard to case.
		{name: "another spelling's profile says protected", protect: func(t *testing.T, s sidecar.Store) {
			putProfile(t, s, &sidecar.Customer{ID: "acme", Roles: []string{"customer"}})
			putProfile(t, s, &sidecar.Customer{ID: "ACME", Protected: true})
		}, reason: "customer_protected"},
		{name: "another spelling's protected role", protect: func(t *testing.T, s sidecar.Store) {
			putProfile(t, s, &sidecar.Customer{ID: "Acme", Roles: []string{"support_agent"}})
		}, reason: "customer_protected"},
		{name: "another spelling known as staff", protect: func(t *testing.T, s sidecar.Store) {
			if _, err := s.MarkStaff(context.Background(), "aCME"); err != nil {
				t.Fatal(err)
			}
		}, reason: "customer_protected"},
		{name: "another spelling's profile deleted", protect: func(t *testing.T, s sidecar.Store) {
			putProfile(t, s, &sidecar.Customer{ID: "ACME", Protected: true})
			if _, err := s.DeleteCustomer(context.Background(), "ACME", "shop"); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "another spelling unprotected", protect: func(t *testing.T, s sidecar.Store) {
			putProfile(t, s, &sidecar.Customer{ID: "ACME", Roles: []string{"customer"}})
		}},
	}
	for _, ps := range partnerStores(t) {
		for _, tc := range cases {
			t.Run(ps.name+"/"+tc.name, func(t *testing.T) {
				env := newPartnerEnv(t, ps)
				env.grant(t, patUser, orgRequest(sidecar.LevelFullAdmin, 30))
				if _, err := delegation.NewResellers(env.store, delegation.ResellerConfig{}).Put(context.Background(), superAdmin, "acme", "shop-a.example", allowAll); err != nil {
					t.Fatal(err)
				}
				if tc.protect != nil {
					tc.protect(t, env.store)
				}
				for _, lookups := range []struct {
					name string
					r    *resolve.OnBehalfResolver
				}{{"store", newTestResolver(t, env, env.store)}, {"cache", cachedResolver(t, env, env.store)}} {
					d, err := lookups.r.Resolve(context.Background(), onBehalf("acme"), patUser)
					checkResolved(t, d, err, false, tc.reason)
					d, err = lookups.r.Resolve(context.Background(), onBehalf("acme"), staff)
					checkResolved(t, d, err, false, tc.reason)
				}
			})
		}
	}
}

// A customer protected after the grant or the assignment is refused at
// the next request on every replica, as other narrowings are: the
// profile's and the staff mark's evictions drop what the other replica
// cached.
func TestProtectionReachesEveryReplica(t *testing.T) {
	for _, step := range []struct {
		name    string
		protect func(t *testing.T, s sidecar.Store)
	}{
		{"profile protected", func(t *testing.T, s sidecar.Store) {
			putProfile(t, s, &sidecar.Customer{ID: "acme", Protected: true})
		}},
		{"protected role", func(t *testing.T, s sidecar.Store) {
			putProfile(t, s, &sidecar.Customer{ID: "acme", Roles: []string{"staff"}})
		}},
		{"marked staff", func(t *testing.T, s sidecar.Store) {
			if _, err := s.MarkStaff(context.Background(), "acme"); err != nil {
				t.Fatal(err)
			}
		}},
		// Another spelling's eviction drops what "acme" read too.
		{"another spelling's profile protected", func(t *testing.T, s sidecar.Store) {
			putProfile(t, s, &sidecar.Customer{ID: "ACME", Protected: true})
		}},
		{"another spelling marked staff", func(t *testing.T, s sidecar.Store) {
			if _, err := s.MarkStaff(context.Background(), "Acme"); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(step.name, func(t *testing.T) {
			_, a, b, clock := twoReplicas(t)
			ctx := context.Background()
			staff := resellerStaff("shop-a.example", []string{"reseller_admin"}, nil)
			putProfile(t, a, &sidecar.Customer{ID: "acme", Roles: []string{"customer"}})
			if _, err := delegation.NewResellers(a, delegation.ResellerConfig{}).Put(ctx, superAdmin, "acme", "shop-a.example", allowAll); err != nil {
				t.Fatal(err)
			}
			resolverB := settledResolver(t, a, b, clock)
			if got := resolvedLevel(resolverB, staff, "acme"); got != "reseller:shop-a.example" {
				t.Fatalf("replica b resolves %q before the narrowing, want the assignment", got)
			}
			step.protect(t, a)
			partnerEventually(t, "the protection on the other replica", func() bool {
				return resolvedLevel(resolverB, staff, "acme") == "customer_protected"
			})
		})
	}
}

func putProfile(t *testing.T, s sidecar.Store, c *sidecar.Customer) {
	t.Helper()
	if _, err := s.PutCustomer(context.Background(), c, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
}

// On the storefront hosts (impersonation.storefront_hosts) the only way
// of acting for a customer is a consented impersonation session: a
// customer named by the on-behalf-of header or the path is refused there,
// for partner users and reseller staff alike, and honoured elsewhere.
func TestOnBehalfRefusedOnStorefrontHosts(t *testing.T) {
	ps := partnerStores(t)[0]
	env := newPartnerEnv(t, ps)
	env.grant(t, patUser, orgRequest(sidecar.LevelFullAdmin, 30))
	ctx := context.Background()
	if _, err := delegation.NewResellers(env.store, delegation.ResellerConfig{}).Put(ctx, superAdmin, "acme", "shop-a.example", allowAll); err != nil {
		t.Fatal(err)
	}
	r, err := resolve.NewOnBehalfResolver(env.store, env.store, shippedData(t), delegation.PartnerConfig{},
		resolve.WithResolverClock(env.clock.Now), resolve.WithStorefrontHosts([]string{"shop.example", "Shop2.Example."}))
	if err != nil {
		t.Fatal(err)
	}
	staff := resellerStaff("shop-a.example", []string{"reseller_admin"}, nil)
	for _, tc := range []struct {
		host, path string
		header     bool
		reason     string
	}{
		{host: "shop.example", header: true, reason: "on_behalf_of_storefront_host"},
		{host: "SHOP.example:8443", header: true, reason: "on_behalf_of_storefront_host"},
		{host: "shop2.example", header: true, reason: "on_behalf_of_storefront_host"},
		{host: "shop.example", path: "/customers/acme/service-requests", reason: "on_behalf_of_storefront_host"},
		{host: "portal.example", header: true},
		{host: "portal.example", path: "/customers/acme/service-requests"},
	} {
		for _, caller := range []*sidecar.Identity{patUser, staff} {
			req := &sidecar.Request{Method: "GET", Host: tc.host, Path: "/service-requests", Headers: map[string]string{}}
			if tc.header {
				req.Headers["x-on-behalf-of"] = "acme"
			}
			if tc.path != "" {
				req.Path = tc.path
			}
			d, err := r.Resolve(ctx, req, caller)
			if tc.reason != "" {
				checkResolved(t, d, err, false, tc.reason)
				continue
			}
			if err != nil || d == nil || d.Subject != "acme" {
				t.Fatalf("%s %s as %s: %+v, %v; want a delegation for acme", tc.host, req.Path, caller.Subject, d, err)
			}
		}
	}
	// A request naming no customer acts as the caller there, as before.
	if d, err := r.Resolve(ctx, &sidecar.Request{Method: "GET", Host: "shop.example", Path: "/customer/account", Headers: map[string]string{}}, patUser); d != nil || err != nil {
		t.Fatalf("no customer named on the storefront: %+v, %v; want none", d, err)
	}
}
