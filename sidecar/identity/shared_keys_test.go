package identity_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/identity"
)

// TestIssuersSharingKeys trusts two tenants of one multi-tenant identity
// provider that publish the same key. Each tenant's tokens are its own:
// the signature verifies with both tenants' keys, and the token belongs
// to the tenant its iss names, checked against that tenant's settings. iss
// alone never makes a token valid: it is tried against the keys of the
// tenant it names only, so a key only one tenant publishes signs only for
// that tenant.
func TestIssuersSharingKeys(t *testing.T) {
	_, shared, _, own := keys(t)
	dir := t.TempDir()
	sharedFile, aFile := filepath.Join(dir, "shared.json"), filepath.Join(dir, "a.json")
	if err := os.WriteFile(sharedFile, jwks(shared), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(aFile, jwks(shared, own), 0o600); err != nil {
		t.Fatal(err)
	}
	const tenantA, tenantB = "https://idp.example/tenant-a", "https://idp.example/tenant-b"
	v, err := identity.New(identity.Config{
		Issuers: []identity.IssuerConfig{
			{Issuer: tenantA, JWKSFile: aFile, Audiences: []string{"shop-a"}},
			{Issuer: tenantB, JWKSFile: sharedFile, Audiences: []string{"shop-b"}, Namespace: "tenant-b"},
		},
		Algorithms: []string{"ES256"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	now := time.Now()
	cases := []struct {
		name       string
		key        testKey
		iss, aud   string
		wantIssuer string
		reason     string
	}{
		{name: "first tenant", key: shared, iss: tenantA, aud: "shop-a", wantIssuer: tenantA},
		{name: "second tenant", key: shared, iss: tenantB, aud: "shop-b", wantIssuer: tenantB},
		{name: "second tenant, first tenant's audience", key: shared, iss: tenantB, aud: "shop-a", reason: identity.ReasonAudience},
		{name: "first tenant, second tenant's audience", key: shared, iss: tenantA, aud: "shop-b", reason: identity.ReasonAudience},
		{name: "a tenant not trusted", key: shared, iss: "https://idp.example/tenant-c", aud: "shop-b", reason: identity.ReasonIssuer},
		{name: "second tenant named, key only the first publishes", key: own, iss: tenantB, aud: "shop-b", reason: identity.ReasonUnknownKid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := sign(t, tc.key, tc.key.kid, with(goodClaims(now), "iss", tc.iss, "aud", tc.aud))
			id, err := v.VerifyToken(context.Background(), tok)
			if got := reasonOf(t, err); got != tc.reason {
				t.Fatalf("reason = %q, want %q (%v)", got, tc.reason, err)
			}
			if tc.reason == "" && id.Issuer != tc.wantIssuer {
				t.Fatalf("issuer = %q, want %q", id.Issuer, tc.wantIssuer)
			}
		})
	}
}
