package identity_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// With identity.header set to a name with "-" (x-auth-token), CGI, PHP
// and WSGI upstreams read x_auth_token as the same name (PHP keeps the
// last). A second token under that spelling was not read: Deputy decided
// as the first token's person while the application acted as the
// second's. Several tokens are now refused, and one token is read under
// whichever spelling it comes, as the application reads it, however the
// setting spells the name: configured as x_auth_token, the name is the
// same HTTP_X_AUTH_TOKEN to the application.
func TestIdentityHeaderEverySpelling(t *testing.T) {
	for _, configured := range []string{"x-auth-token", "x_auth_token", "X_Auth-Token"} {
		t.Run(configured, func(t *testing.T) { testIdentityHeaderEverySpelling(t, configured) })
	}
}

func testIdentityHeaderEverySpelling(t *testing.T, configured string) {
	clock := newClock(epoch)
	rk, ek, dk, _ := keys(t)
	v, err := identity.New(identity.Config{
		Header:    configured,
		Issuers:   []identity.IssuerConfig{{Issuer: testIssuer, JWKSFile: writeFile(t, "jwks.json", jwks(rk, ek, dk))}},
		Audiences: []string{testAudience},
	}, identity.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	alice := "Bearer " + sign(t, rk, rk.kid, with(goodClaims(epoch), "sub", "alice", "exp", epoch.Add(time.Hour).Unix()))
	bob := "Bearer " + sign(t, rk, rk.kid, with(goodClaims(epoch), "sub", "bob", "exp", epoch.Add(time.Hour).Unix()))

	for _, tc := range []struct {
		name string
		req  *sidecar.Request
		want string // the subject; "" for refused
	}{
		{"two spellings", &sidecar.Request{Headers: map[string]string{"x-auth-token": alice, "x_auth_token": bob}}, ""},
		{"two spellings in header_map", &sidecar.Request{HeaderMap: []sidecar.HeaderField{{Name: "x-auth-token", Value: alice}, {Name: "X_Auth_Token", Value: bob}}}, ""},
		{"one in each", &sidecar.Request{Headers: map[string]string{"x-auth-token": alice}, HeaderMap: []sidecar.HeaderField{{Name: "x_auth_token", Value: bob}}}, ""},
		{"the same token twice", &sidecar.Request{Headers: map[string]string{"x-auth-token": alice, "x_auth-token": alice}}, ""},
		{"plain", &sidecar.Request{Headers: map[string]string{"x-auth-token": alice}, PlainNames: true}, "alice"},
		{"underscore spelling alone", &sidecar.Request{Headers: map[string]string{"x_auth_token": bob}}, "bob"},
		{"dash spelling alone", &sidecar.Request{Headers: map[string]string{"x-auth-token": bob}}, "bob"},
		{"header_map alone", &sidecar.Request{HeaderMap: []sidecar.HeaderField{{Name: "X-Auth_Token", Value: bob}}}, "bob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tc.req)
			if tc.want == "" {
				var se *sidecar.Error
				if !errors.As(err, &se) || se.Reason != identity.ReasonMalformed {
					t.Fatalf("got identity %v, error %v: want refused as %s", id, err, identity.ReasonMalformed)
				}
				return
			}
			if err != nil || id == nil || id.Subject != tc.want {
				t.Fatalf("got identity %v, error %v: want %s", id, err, tc.want)
			}
		})
	}
}
