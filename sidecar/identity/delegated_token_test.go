package identity_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/deputyhq/deputy/sidecar/identity"
)

// A token carrying an act claim (RFC 8693 §4.1) says that its act acts
// for its sub: taken as a plain identity it would be the subject acting,
// and the real actor would be lost from policy input, headers and records.
// Such a token is refused; may_act (who may act, not who does) is not.
func TestDelegatedTokenRefused(t *testing.T) {
	v, shop, partner := twoIssuers(t)
	cases := []struct {
		name   string
		key    testKey
		claims map[string]any
		reason string
	}{
		{name: "act", key: shop, claims: with(goodClaims(epoch), "sub", "cust-8", "act", map[string]any{"sub": "sue9"}), reason: identity.ReasonDelegatedToken},
		{name: "nested act", key: shop, claims: with(goodClaims(epoch), "act", map[string]any{"sub": "sue9", "act": map[string]any{"sub": "svc"}}), reason: identity.ReasonDelegatedToken},
		{name: "act of a namespaced issuer", key: partner, claims: with(goodClaims(epoch), "iss", partnerIssuer, "act", map[string]any{"sub": "sue9"}), reason: identity.ReasonDelegatedToken},
		// Whatever its value: a null or empty act is still a claim that
		// somebody acts, which Deputy does not read.
		{name: "null act", key: shop, claims: with(goodClaims(epoch), "act", json.RawMessage("null")), reason: identity.ReasonDelegatedToken},
		{name: "empty act", key: shop, claims: with(goodClaims(epoch), "act", map[string]any{}), reason: identity.ReasonDelegatedToken},
		{name: "may_act", key: shop, claims: with(goodClaims(epoch), "may_act", map[string]any{"sub": "sue9"})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := sign(t, tc.key, tc.key.kid, tc.claims)
			// Twice: the second answer is the remembered verdict.
			for range 2 {
				id, err := v.Verify(context.Background(), bearer(tok))
				if got := reasonOf(t, err); got != tc.reason {
					t.Fatalf("reason = %q, want %q", got, tc.reason)
				}
				if tc.reason != "" && id != nil {
					t.Fatalf("refused token gave identity %+v", id)
				}
				if tc.reason == "" && id == nil {
					t.Fatal("no identity")
				}
			}
		})
	}
}
