package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/deputyhq/deputy/sidecar/identity"
)

// manyKeys is a key set of the given keys followed by n more EC keys of
// kids k0, k1, ...
func manyKeys(t *testing.T, n int, ks ...testKey) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, k := range ks {
		set.Keys = append(set.Keys, k.public())
	}
	for i := range n {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Public(), KeyID: fmt.Sprintf("k%d", i), Algorithm: "ES256", Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A key set of more than identity.MaxJWKSKeys keys is refused as too
// large, as one of too many bytes is: the issuer's previous keys stay, and
// its tokens keep verifying with them.
func TestKeySetOfTooManyKeysRefused(t *testing.T) {
	_, ek, _, other := keys(t)
	if _, err := identity.ParseJWKS(manyKeys(t, identity.MaxJWKSKeys-1, ek)); err != nil {
		t.Fatalf("a set of MaxJWKSKeys keys: %v", err)
	}
	big := manyKeys(t, identity.MaxJWKSKeys, ek)
	if _, err := identity.ParseJWKS(big); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("a set of MaxJWKSKeys+1 keys: err = %v", err)
	}

	srv := newJWKSServer(t, jwks(ek))
	clock := newClock(epoch)
	v := startURLVerifier(t, srv.URL, clock)
	srv.set(manyKeys(t, identity.MaxJWKSKeys, other))
	v.Refresh(context.Background())
	if _, err := v.Verify(context.Background(), bearer(sign(t, ek, ek.kid, goodClaims(epoch)))); err != nil {
		t.Fatalf("token of a previous key after a refused set: %v", err)
	}
	_, err := v.Verify(context.Background(), bearer(sign(t, other, other.kid, goodClaims(epoch))))
	if got := reasonOf(t, err); got != identity.ReasonUnknownKid {
		t.Fatalf("token of a key only the refused set holds: reason %q (%v)", got, err)
	}
	if err := v.Ready(); err != nil {
		t.Fatalf("Ready() = %v with the previous keys held", err)
	}
}

// A token without a kid is tried against the keys of its issuer that fit
// its algorithm only, and refused untried (ambiguous_key) when more than
// identity.MaxKeysPerToken do: keys of another type do not count.
func TestKidlessTokenTriedAgainstFittingKeysOnly(t *testing.T) {
	rk, ek, _, other := keys(t)
	rsaKeys := make([]testKey, identity.MaxKeysPerToken+1)
	for i := range rsaKeys {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		rsaKeys[i] = testKey{kid: "", alg: jose.RS256, key: k}
	}
	ecKeys := []testKey{ek, other}
	set := kidless(append(append([]testKey{}, rsaKeys...), ecKeys...)...)
	clock := newClock(epoch)
	v, err := identity.New(identity.Config{
		Issuers:   []identity.IssuerConfig{{Issuer: testIssuer, JWKSFile: writeFile(t, "jwks.json", set)}},
		Audiences: []string{testAudience},
	}, identity.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	cases := []struct {
		name      string
		key       testKey
		reason    string
		maxChecks int64
	}{
		{name: "ES256 among two EC keys", key: other, maxChecks: 2},
		{name: "RS256 among more RSA keys than the bound", key: rsaKeys[0], reason: identity.ReasonAmbiguousKey},
		{name: "RS256 of a key not published", key: rk, reason: identity.ReasonAmbiguousKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := v.SignatureChecks()
			_, err := v.Verify(context.Background(), bearer(sign(t, tc.key, "", goodClaims(epoch))))
			if got := reasonOf(t, err); got != tc.reason {
				t.Errorf("reason = %q (%v), want %q", got, err, tc.reason)
			}
			if got := v.SignatureChecks() - before; got > tc.maxChecks {
				t.Errorf("%d signature checks, want at most %d", got, tc.maxChecks)
			}
		})
	}
}
