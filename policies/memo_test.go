package policies_test

import (
	"context"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
)

// The shipped policies keep some answers across checks (deputy_memo): a
// check's answer is never another's, whatever came before it on the same
// activation. Each request is asked in turn, then again in reverse, so
// every answer is also given after the ones that could be mistaken for it.
func TestShippedPoliciesKeepEachChecksOwnAnswer(t *testing.T) {
	e := shippedEngine(t)
	grant := func(level string) *sidecar.Delegation {
		return &sidecar.Delegation{Mode: sidecar.ModePartner, ID: "g-" + level, Actor: "pat", Subject: "acme", Level: level}
	}
	session := func(roles ...string) *sidecar.Delegation {
		return &sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "s1", Actor: "staff-1", ActorRoles: roles, Subject: "c42"}
	}
	reseller := &sidecar.Delegation{Mode: sidecar.ModeReseller, ID: "a1", Actor: "rita", Subject: "acme", Domain: "eu.resellco.example"}
	staff := func(roles ...string) *sidecar.Identity {
		return &sidecar.Identity{Subject: "rita", Domain: "eu.resellco.example", Roles: roles}
	}
	cases := []struct {
		name         string
		del          *sidecar.Delegation
		id           *sidecar.Identity
		method, path string
		allowed      bool
	}{
		{"look reads an item", grant("look"), nil, "GET", "/customers/acme/service-requests/1", true},
		{"look may not update it", grant("look"), nil, "PATCH", "/customers/acme/service-requests/1", false},
		{"update may", grant("update"), nil, "PATCH", "/customers/acme/service-requests/1", true},
		{"look may not update at the root", grant("look"), nil, "PUT", "/service-requests/1", false},
		{"update may at the root", grant("update"), nil, "PUT", "/service-requests/1", true},
		{"update may delete a notification", grant("update"), nil, "DELETE", "/customers/acme/notifications/1", true},
		{"update may not touch contacts", grant("update"), nil, "GET", "/customers/acme/contacts/1", false},
		{"full_admin may", grant("full_admin"), nil, "GET", "/customers/acme/contacts/1", true},
		{"create may not touch contacts", grant("create"), nil, "GET", "/contacts/1", false},
		{"a support agent impersonates", session("support_agent"), nil, "GET", "/catalog/shoes", true},
		{"a customer sync account does not", session("customer_sync"), nil, "GET", "/catalog/shoes", false},
		{"nor one without roles", session(), nil, "GET", "/catalog/shoes", false},
		{"a support lead among other roles does", session("mailer", "support_lead"), nil, "GET", "/catalog/shoes", true},
		{"the mailer alone does not", session("mailer"), nil, "GET", "/catalog/shoes", false},
		{"a reseller admin acts for a customer", reseller, staff("reseller_admin"), "GET", "/support/cases", true},
		{"a role that is no admin's does not", reseller, staff("reseller_viewer"), "GET", "/support/cases", false},
		{"an admin among other roles does", reseller, staff("reseller_viewer", "reseller_admin"), "GET", "/support/cases", true},
	}
	check := func(i int) {
		tc := cases[i]
		p := authz.New(e, authz.WithResolvers(sidecar.DelegationResolverFunc(
			func(context.Context, *sidecar.Request, *sidecar.Identity) (*sidecar.Delegation, error) {
				return tc.del, nil
			})),
			authz.WithVerifier(verifierFunc(func(context.Context, *sidecar.Request) (*sidecar.Identity, error) { return tc.id, nil })))
		if resp := p.Check(context.Background(), checkRequest(t, tc.method, tc.path, nil, "")); resp.Allowed != tc.allowed {
			t.Errorf("%s: allowed %v (%s), want %v", tc.name, resp.Allowed, resp.Reason, tc.allowed)
		}
	}
	for i := range cases {
		check(i)
	}
	for i := len(cases) - 1; i >= 0; i-- {
		check(i)
	}
}
