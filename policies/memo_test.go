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
	cases := []struct {
		name         string
		del          *sidecar.Delegation
		method, path string
		allowed      bool
	}{
		{"look reads an item", grant("look"), "GET", "/customers/acme/service-requests/1", true},
		{"look may not update it", grant("look"), "PATCH", "/customers/acme/service-requests/1", false},
		{"update may", grant("update"), "PATCH", "/customers/acme/service-requests/1", true},
		{"look may not update at the root", grant("look"), "PUT", "/service-requests/1", false},
		{"update may at the root", grant("update"), "PUT", "/service-requests/1", true},
		{"update may delete a notification", grant("update"), "DELETE", "/customers/acme/notifications/1", true},
		{"update may not touch contacts", grant("update"), "GET", "/customers/acme/contacts/1", false},
		{"full_admin may", grant("full_admin"), "GET", "/customers/acme/contacts/1", true},
		{"create may not touch contacts", grant("create"), "GET", "/contacts/1", false},
	}
	check := func(i int) {
		tc := cases[i]
		p := authz.New(e, authz.WithResolvers(sidecar.DelegationResolverFunc(
			func(context.Context, *sidecar.Request, *sidecar.Identity) (*sidecar.Delegation, error) { return tc.del, nil })))
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
