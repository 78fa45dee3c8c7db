package authz_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
)

// A share is made to one user of one partner organisation. A cc-level
// user of another organisation with the same subject (a user who moved,
// or an identity provider whose subjects are unique per organisation only)
// must not read what was shared with the first.
func TestShareIsForItsPartnerOrg(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	t.Cleanup(func() { _ = store.Close() })
	partners := delegation.NewPartners(store, shippedData(t), delegation.PartnerConfig{})
	allow := func(string, map[string]any) error { return nil }
	cora := &sidecar.Identity{Subject: "cora", Org: "acme", Roles: []string{"contact_manager"}}
	grant := func(by *sidecar.Identity, in delegation.AccessRequestInput) {
		t.Helper()
		r, err := partners.Request(ctx, by, in, allow)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := partners.Approve(ctx, cora, r.ID, allow); err != nil {
			t.Fatal(err)
		}
	}
	// partnerco's pat holds cc and acme shares sr-7 with pat of partnerco;
	// otherco holds an organisation-wide cc grant, and nothing is shared
	// with it.
	grant(&sidecar.Identity{Subject: "pat", Org: "partnerco"}, delegation.AccessRequestInput{Customer: "acme",
		ContactEmail: "cora@acme.example", ExpiryDays: 30, Level: sidecar.LevelCC, Scope: sidecar.ScopeIndividual, Users: []string{"pat"}})
	grant(&sidecar.Identity{Subject: "oscar", Org: "otherco"}, delegation.AccessRequestInput{Customer: "acme",
		ContactEmail: "cora@acme.example", ExpiryDays: 30, Level: sidecar.LevelCC, Scope: sidecar.ScopeOrganisation})
	if _, err := partners.Share(ctx, cora, "acme", delegation.ShareInput{Resource: "sr-7", User: "pat", PartnerOrg: "partnerco"}, allow); err != nil {
		t.Fatal(err)
	}

	p, mint := delegatedPipeline(t, store)
	for _, tc := range []struct {
		name, sub, org string
		allowed        bool
	}{
		{"the user it was shared with", "pat", "partnerco", true},
		{"another user of the other organisation", "oscar", "otherco", false},
		{"the same subject in the other organisation", "pat", "otherco", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := mint(identity.DevClaims{Subject: tc.sub, Org: tc.org, Roles: []string{"partner"}, TTL: time.Hour})
			req := withHeaders(t, "/service-requests/sr-7", map[string]string{"authorization": "Bearer " + tok, "x-on-behalf-of": "acme"})
			if resp := p.Check(ctx, req); resp.Allowed != tc.allowed {
				t.Fatalf("%s of %s on sr-7: allowed %v (%s), want %v", tc.sub, tc.org, resp.Allowed, resp.Reason, tc.allowed)
			}
		})
	}
}
