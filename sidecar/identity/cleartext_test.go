package identity_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// Outside dev mode, keys never come over plain http from another host:
// whoever answers on the path would choose them and sign any token. Plain
// http stays open to loopback, and to any host in dev mode; an issuer
// whose keys come from a file is only a name.
func TestKeyURLsInClearRefusedOutsideDevMode(t *testing.T) {
	remote := "http://10.1.2.3:8080/realms/shop"
	dev := identity.DevConfig{Enabled: true, Namespace: "dev"}
	cases := []struct {
		name  string
		cfg   identity.Config
		field string
	}{
		{name: "issuer URL", cfg: identity.Config{IssuerURLs: []string{remote}}, field: "identity.issuer_urls[0]"},
		{name: "second issuer URL", cfg: identity.Config{IssuerURLs: []string{"https://idp.example.com", "http://idp.internal"}}, field: "identity.issuer_urls[1]"},
		{name: "discovered issuer", cfg: identity.Config{Issuers: []identity.IssuerConfig{{Issuer: remote}}}, field: "identity.issuers[0].issuer"},
		{name: "JWKS URL", cfg: identity.Config{Issuers: []identity.IssuerConfig{{Issuer: testIssuer, JWKSURL: "http://keys.internal/jwks.json"}}},
			field: "identity.issuers[0].jwks_url"},
		{name: "JWKS URL with loopback issuer name", cfg: identity.Config{Issuers: []identity.IssuerConfig{{Issuer: "http://127.0.0.1", JWKSURL: "http://10.1.2.3/jwks.json"}}},
			field: "identity.issuers[0].jwks_url"},
		{name: "loopback look-alike host", cfg: identity.Config{IssuerURLs: []string{"http://127.0.0.1.example.com"}}, field: "identity.issuer_urls[0]"},
		{name: "loopback issuer URL", cfg: identity.Config{IssuerURLs: []string{"http://127.0.0.1:18556"}}},
		{name: "localhost JWKS URL", cfg: identity.Config{Issuers: []identity.IssuerConfig{{Issuer: testIssuer, JWKSURL: "http://localhost:8080/jwks.json"}}}},
		{name: "IPv6 loopback issuer", cfg: identity.Config{Issuers: []identity.IssuerConfig{{Issuer: "http://[::1]:8080"}}}},
		{name: "https", cfg: identity.Config{IssuerURLs: []string{"https://10.1.2.3"}}},
		{name: "http issuer name with a key file", cfg: identity.Config{Issuers: []identity.IssuerConfig{{Issuer: remote, JWKSFile: "keys.json"}}}},
		{name: "dev mode issuer URL", cfg: identity.Config{Dev: dev, IssuerURLs: []string{remote}}},
		{name: "dev mode JWKS URL", cfg: identity.Config{Dev: dev, Issuers: []identity.IssuerConfig{{Issuer: testIssuer, JWKSURL: "http://keys.internal/jwks.json"}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := wantValidate(t, tc.cfg, tc.field)
			if err != nil && !strings.Contains(sidecar.ErrorMessage(err), "plain http") {
				t.Errorf("error %q does not say why", sidecar.ErrorMessage(err))
			}
		})
	}
	t.Run("credential hidden", func(t *testing.T) {
		err := wantValidate(t, identity.Config{IssuerURLs: []string{"http://ops:s3cret@10.1.2.3"}}, "identity.issuer_urls[0]")
		if msg := sidecar.ErrorMessage(err); strings.Contains(msg, "s3cret") {
			t.Errorf("error shows the URL's credential: %s", msg)
		}
	})
}

// A loopback issuer's discovery document naming keys over plain http on
// another host is refused before they are fetched: the document's word
// does not open what the configuration may not name.
func TestDiscoveryRefusesKeysInClearFromAnotherHost(t *testing.T) {
	_, ek, _, _ := keys(t)
	var srvURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": srvURL, "jwks_uri": "http://192.0.2.1/jwks.json"})
	}))
	t.Cleanup(srv.Close)
	srvURL = srv.URL
	v, err := identity.New(identity.Config{IssuerURLs: []string{srv.URL}, Audiences: []string{testAudience}, FetchTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	v.Refresh(context.Background())
	if err := v.Ready(); err == nil || !strings.Contains(err.Error(), "plain http to a host that is not loopback") {
		t.Fatalf("Ready() = %v, want the jwks_uri refused", err)
	}
	if _, err := v.Verify(context.Background(), bearer(sign(t, ek, ek.kid, with(goodClaims(epoch), "iss", srv.URL)))); err == nil {
		t.Fatal("a token verified with no keys trusted")
	}
}

// Nor does a redirect from a loopback key set carry the fetch across the
// network in clear.
func TestKeysNeverRedirectedInClearToAnotherHost(t *testing.T) {
	srv := httptest.NewServer(http.RedirectHandler("http://192.0.2.1/jwks.json", http.StatusFound))
	t.Cleanup(srv.Close)
	v, err := identity.New(identity.Config{Issuers: []identity.IssuerConfig{{Issuer: testIssuer, JWKSURL: srv.URL + "/jwks.json"}},
		Audiences: []string{testAudience}, FetchTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	v.Refresh(context.Background())
	if err := v.Ready(); err == nil || !strings.Contains(err.Error(), "plain http to a host that is not loopback") {
		t.Fatalf("Ready() = %v, want the redirect refused", err)
	}
}
