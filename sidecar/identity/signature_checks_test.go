package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/deputyhq/deputy/sidecar/identity"
)

// One token costs a handful of signature checks however many keys the
// trusted issuers publish. A partner's IdP, trusted for its namespace
// alone, publishes many keys, every one under the shop key's kid: were a
// token tried against every key that might sign it, each junk token, and
// the first use of each genuine shop token, would cost a check per key.
// A token is tried only against the keys of the issuer its iss names (it
// is valid for no other), and a token that does not single out at most
// identity.MaxKeysPerToken of them is refused untried.
func TestSignatureChecksPerToken(t *testing.T) {
	_, shop, _, attacker := keys(t)
	const partnerKeys = 50
	var set jose.JSONWebKeySet
	for range partnerKeys {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Public(), KeyID: shop.kid, Algorithm: "ES256", Use: "sig"})
	}
	partnerSet, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	clock := newClock(epoch)
	v, err := identity.New(identity.Config{
		Issuers: []identity.IssuerConfig{
			{Issuer: partnerIssuer, JWKSFile: writeFile(t, "partner.json", partnerSet), Namespace: "partner"},
			{Issuer: testIssuer, JWKSFile: writeFile(t, "shop.json", jwks(shop))},
		},
		Audiences: []string{testAudience},
	}, identity.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	claims := goodClaims(epoch)
	kidlessJunk := sign(t, attacker, "", claims)
	cases := []struct {
		name      string
		token     string
		reason    string
		maxChecks int64
	}{
		{name: "genuine shop token", token: sign(t, shop, shop.kid, claims), maxChecks: 1},
		{name: "junk naming the shop's kid", token: sign(t, attacker, shop.kid, with(claims, "sub", "x")),
			reason: identity.ReasonBadSignature, maxChecks: 1},
		{name: "junk naming no kid", token: kidlessJunk, reason: identity.ReasonBadSignature, maxChecks: 1},
		{name: "the same junk again", token: kidlessJunk, reason: identity.ReasonBadSignature, maxChecks: 0},
		{name: "partner junk naming no kid", token: sign(t, attacker, "", with(claims, "iss", partnerIssuer)),
			reason: identity.ReasonAmbiguousKey, maxChecks: 0},
		{name: "partner junk naming the kid its keys share", token: sign(t, attacker, shop.kid, with(claims, "iss", partnerIssuer)),
			reason: identity.ReasonAmbiguousKey, maxChecks: 0},
		{name: "junk of an issuer not trusted", token: sign(t, attacker, "", with(claims, "iss", "https://evil.example")),
			reason: identity.ReasonIssuer, maxChecks: 0},
		{name: "junk naming no issuer", token: sign(t, attacker, "", with(claims, "iss", nil)),
			reason: identity.ReasonIssuer, maxChecks: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := v.SignatureChecks()
			_, err := v.Verify(context.Background(), bearer(tc.token))
			if got := reasonOf(t, err); got != tc.reason {
				t.Errorf("reason = %q (%v), want %q", got, err, tc.reason)
			}
			if got := v.SignatureChecks() - before; got > tc.maxChecks {
				t.Errorf("%d signature checks, want at most %d", got, tc.maxChecks)
			}
		})
	}
}
