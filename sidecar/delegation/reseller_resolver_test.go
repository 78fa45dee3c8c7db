package delegation_test

import (
	"context"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

func resellerStaff(domain string, roles, privileges []string) *sidecar.Identity {
	return &sidecar.Identity{Subject: "rita", Org: "resellerco", Domain: domain, Roles: roles, Privileges: privileges}
}

func TestResolveReseller(t *testing.T) {
	cases := []struct {
		name     string
		caller   *sidecar.Identity
		customer string
		reason   string
	}{
		{name: "reseller admin, customer of the domain", caller: resellerStaff("shop-a.example", []string{"reseller_admin"}, nil), customer: "acme"},
		{name: "both privileges", caller: resellerStaff("shop-a.example", []string{"custom"}, []string{"view_customers", "access_support_cases"}), customer: "acme"},
		{name: "custom role with both privileges", caller: resellerStaff("shop-a.example", []string{"reseller_support"}, nil), customer: "acme"},
		{name: "legacy enterprise support", caller: resellerStaff("shop-a.example", []string{"legacy_enterprise_support"}, nil), customer: "acme"},
		{name: "legacy reseller enterprise support", caller: resellerStaff("shop-a.example", []string{"legacy_reseller_enterprise_support"}, nil), customer: "acme"},
		{name: "customer of another domain of the same reseller", caller: resellerStaff("shop-a.example", []string{"reseller_admin"}, nil), customer: "globex", reason: "customer_not_in_domain"},
		{name: "signed in through the other domain", caller: resellerStaff("shop-b.example", []string{"reseller_admin"}, nil), customer: "acme", reason: "customer_not_in_domain"},
		{name: "unassigned customer", caller: resellerStaff("shop-a.example", []string{"reseller_admin"}, nil), customer: "initech", reason: "customer_not_in_domain"},
		{name: "only view_customers", caller: resellerStaff("shop-a.example", nil, []string{"view_customers"}), customer: "acme", reason: "missing_privilege:access_support_cases"},
		{name: "only access_support_cases", caller: resellerStaff("shop-a.example", []string{"reseller_viewer"}, nil), customer: "acme", reason: "missing_privilege:access_support_cases"},
		{name: "only the support privilege", caller: resellerStaff("shop-a.example", nil, []string{"access_support_cases"}), customer: "acme", reason: "missing_privilege:view_customers"},
		{name: "no privileges", caller: resellerStaff("shop-a.example", []string{"customer"}, nil), customer: "acme", reason: "missing_privilege:access_support_cases,view_customers"},
	}
	for _, ps := range partnerStores(t) {
		for _, tc := range cases {
			t.Run(ps.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				env := newPartnerEnv(t, ps)
				for c, d := range map[string]string{"acme": "shop-a.example", "globex": "shop-b.example"} {
					if err := env.store.PutAssignment(ctx, &sidecar.Assignment{Customer: c, Reseller: "resellerco", Domain: d}); err != nil {
						t.Fatal(err)
					}
				}
				r := newTestResolver(t, env, env.store)
				d, err := r.Resolve(ctx, onBehalf(tc.customer), tc.caller)
				checkResolved(t, d, err, false, tc.reason)
				if d == nil {
					return
				}
				if d.Mode != sidecar.ModeReseller || d.Domain != tc.caller.Domain || d.Subject != tc.customer || d.Actor != "rita" || d.Level != "" {
					t.Fatalf("delegation = %+v, want reseller for %s in %s", d, tc.customer, tc.caller.Domain)
				}
			})
		}
	}
}
