package identity_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// oidcServer is a local OpenID provider: a discovery document and the key
// set it names, over TLS, with the keys replaceable to rotate them.
type oidcServer struct {
	*httptest.Server
	mu          sync.Mutex
	jwks        []byte
	doc         map[string]any // nil: the real document
	discoveries atomic.Int32
	jwksFetches atomic.Int32
}

func newOIDCServer(t *testing.T, jwks []byte) *oidcServer {
	t.Helper()
	s := &oidcServer{jwks: jwks}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		s.discoveries.Add(1)
		s.mu.Lock()
		doc := s.doc
		s.mu.Unlock()
		if doc == nil {
			doc = map[string]any{"issuer": s.URL, "jwks_uri": s.URL + "/oauth2/keys",
				"authorization_endpoint": s.URL + "/authorize", "id_token_signing_alg_values_supported": []string{"ES256", "RS256"}}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	})
	mux.HandleFunc("GET /oauth2/keys", func(w http.ResponseWriter, r *http.Request) {
		s.jwksFetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(s.jwks)
	})
	s.Server = httptest.NewTLSServer(mux)
	t.Cleanup(s.Close)
	return s
}

func (s *oidcServer) rotate(jwks []byte) { s.mu.Lock(); s.jwks = jwks; s.mu.Unlock() }

func (s *oidcServer) setDoc(doc map[string]any) { s.mu.Lock(); s.doc = doc; s.mu.Unlock() }

// An issuer configured by its URL alone: keys found by discovery, and a
// rotation (a new kid) picked up on the first token that names it.
func TestDiscoveryByIssuerURL(t *testing.T) {
	_, ek, _, other := keys(t)
	srv := newOIDCServer(t, jwks(ek))
	clock := newClock(epoch)
	v, err := identity.New(identity.Config{
		IssuerURLs:         []string{srv.URL},
		Audiences:          []string{testAudience},
		MinRefreshInterval: 10 * time.Second,
	}, identity.WithClock(clock.Now), identity.WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Ready(); err == nil {
		t.Fatal("ready before discovery")
	}
	if err := v.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	if err := v.Ready(); err != nil {
		t.Fatalf("not ready after discovery: %v", err)
	}
	claims := with(goodClaims(epoch), "iss", srv.URL)

	steps := []struct {
		name                     string
		do                       func()
		token                    string
		reason                   string
		discoveries, jwksFetches int32
	}{
		{name: "start discovers and fetches once", token: sign(t, ek, ek.kid, claims), discoveries: 1, jwksFetches: 1},
		{name: "the issuer rotates to a new kid", do: func() { clock.Add(11 * time.Second); srv.rotate(jwks(other)) },
			token: sign(t, other, other.kid, claims), discoveries: 1, jwksFetches: 2},
		{name: "the retired key no longer verifies", token: sign(t, ek, ek.kid, with(claims, "sub", "bob")),
			reason: identity.ReasonUnknownKid, discoveries: 1, jwksFetches: 2},
		{name: "another issuer's token is refused", token: sign(t, other, other.kid, with(claims, "iss", "https://evil.example.com")),
			reason: identity.ReasonIssuer, discoveries: 1, jwksFetches: 2},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.do != nil {
				st.do()
			}
			id, err := v.Verify(context.Background(), bearer(st.token))
			if got := reasonOf(t, err); got != st.reason {
				t.Fatalf("reason = %q (%v), want %q", got, err, st.reason)
			}
			if err == nil && id.Issuer != srv.URL {
				t.Fatalf("issuer %q, want %q", id.Issuer, srv.URL)
			}
			if d, j := srv.discoveries.Load(), srv.jwksFetches.Load(); d != st.discoveries || j != st.jwksFetches {
				t.Fatalf("discoveries %d, key set fetches %d; want %d, %d", d, j, st.discoveries, st.jwksFetches)
			}
		})
	}
}

// A provider that moves its key set is followed: a failed key set fetch
// sends the next refresh back to the discovery document.
func TestDiscoveryFollowsMovedKeySet(t *testing.T) {
	_, ek, _, _ := keys(t)
	srv := newOIDCServer(t, jwks(ek))
	v, err := identity.New(identity.Config{Issuers: []identity.IssuerConfig{{Issuer: srv.URL, Audiences: []string{testAudience}}}},
		identity.WithClock(newClock(epoch).Now), identity.WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	v.Refresh(context.Background())
	srv.setDoc(map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + "/moved"})
	srv.rotate([]byte("gone"))
	v.Refresh(context.Background()) // the old jwks_uri fails: keys kept, discovery forgotten
	if _, err := v.Verify(context.Background(), bearer(sign(t, ek, ek.kid, with(goodClaims(epoch), "iss", srv.URL)))); err != nil {
		t.Fatalf("a failed refresh dropped good keys: %v", err)
	}
	v.Refresh(context.Background())
	if got := srv.discoveries.Load(); got != 2 {
		t.Fatalf("discoveries = %d, want 2 (the first, and again after the key set failed)", got)
	}
}

// A discovery document that does not vouch for the configured issuer, or
// points its keys somewhere unusable, leaves the issuer without keys:
// not ready, and the reason says why.
func TestDiscoveryRefusesBadDocuments(t *testing.T) {
	_, ek, _, _ := keys(t)
	cases := []struct {
		name string
		doc  func(srvURL string) map[string]any
		want string
	}{
		{"issuer mix-up", func(u string) map[string]any {
			return map[string]any{"issuer": "https://other.example.com", "jwks_uri": u + "/oauth2/keys"}
		}, "names issuer"},
		{"no jwks_uri", func(u string) map[string]any { return map[string]any{"issuer": u} }, "no usable jwks_uri"},
		{"relative jwks_uri", func(u string) map[string]any { return map[string]any{"issuer": u, "jwks_uri": "/oauth2/keys"} }, "no usable jwks_uri"},
		{"keys over plain http", func(u string) map[string]any {
			return map[string]any{"issuer": u, "jwks_uri": strings.Replace(u, "https:", "http:", 1) + "/oauth2/keys"}
		}, "not https"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newOIDCServer(t, jwks(ek))
			srv.setDoc(tc.doc(srv.URL))
			v, err := identity.New(identity.Config{IssuerURLs: []string{srv.URL}}, identity.WithHTTPClient(srv.Client()))
			if err != nil {
				t.Fatal(err)
			}
			v.Refresh(context.Background())
			err = v.Ready()
			if err == nil || !strings.Contains(sidecar.ErrorMessage(err)+err.Error(), tc.want) {
				t.Fatalf("Ready() = %v, want an error saying %q", err, tc.want)
			}
			if _, err := v.Verify(context.Background(), bearer(sign(t, ek, ek.kid, with(goodClaims(epoch), "iss", srv.URL)))); err == nil {
				t.Fatal("a token verified against keys from a refused discovery document")
			}
			if got := srv.jwksFetches.Load(); got != 0 {
				t.Fatalf("key set fetched %d times from a refused document", got)
			}
		})
	}
}

// A key set fetched over TLS never continues over plain http, whatever a
// redirect says.
func TestKeysNeverRedirectedToPlainHTTP(t *testing.T) {
	_, ek, _, _ := keys(t)
	plain := newJWKSServer(t, jwks(ek))
	tlsSrv := httptest.NewTLSServer(http.RedirectHandler(plain.URL+"/jwks.json", http.StatusFound))
	t.Cleanup(tlsSrv.Close)
	v, err := identity.New(identity.Config{Issuers: []identity.IssuerConfig{{Issuer: testIssuer, JWKSURL: tlsSrv.URL + "/jwks.json"}}},
		identity.WithHTTPClient(tlsSrv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	v.Refresh(context.Background())
	if err := v.Ready(); err == nil || !strings.Contains(err.Error(), "not https") {
		t.Fatalf("Ready() = %v, want the downgrade refused", err)
	}
	if n := plain.fetches.Load(); n != 0 {
		t.Fatalf("the plain http server was asked %d times", n)
	}
}

// Anonymous-only: no issuer is trusted. Deputy is ready, a request with no
// token has no identity, and every bearer token is refused.
func TestAnonymousOnlyRefusesEveryToken(t *testing.T) {
	_, ek, _, _ := keys(t)
	v, err := identity.New(identity.Config{AnonymousOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Ready(); err != nil {
		t.Fatalf("not ready: %v", err)
	}
	id, err := v.Verify(context.Background(), &sidecar.Request{Headers: map[string]string{}})
	if id != nil || err != nil {
		t.Fatalf("anonymous request: %v, %v", id, err)
	}
	for _, kid := range []string{ek.kid, ""} {
		_, err := v.Verify(context.Background(), bearer(sign(t, ek, kid, goodClaims(epoch))))
		if reasonOf(t, err) == "" {
			t.Fatalf("a token (kid %q) was accepted with no issuer trusted", kid)
		}
	}
}

// A discovery or key set URL can carry a credential (user:pass@, a signed
// query). Whatever goes wrong with it, the error that reaches /readyz and
// the refresh warning show the URL without it.
func TestDiscoveryErrorsHideCredentials(t *testing.T) {
	_, ek, _, _ := keys(t)
	const secret = "s3cret"
	withCreds := func(u string) string { return strings.Replace(u, "https://", "https://deputy:"+secret+"@", 1) }
	cases := []struct {
		name   string
		issuer func(srvURL string) string
		doc    func(srvURL string) map[string]any
		want   string
	}{
		{"key set fetch fails", func(u string) string { return u }, func(u string) map[string]any {
			return map[string]any{"issuer": u, "jwks_uri": withCreds(u) + "/missing?X-Amz-Signature=" + secret}
		}, "jwks_uri https://127.0.0.1"},
		{"unusable jwks_uri", func(u string) string { return u }, func(u string) map[string]any {
			return map[string]any{"issuer": u, "jwks_uri": "/keys?sig=" + secret}
		}, "no usable jwks_uri"},
		{"keys over plain http", func(u string) string { return u }, func(u string) map[string]any {
			return map[string]any{"issuer": u, "jwks_uri": strings.Replace(withCreds(u), "https:", "http:", 1) + "/keys?sig=" + secret}
		}, "not https"},
		{"issuer with credentials mixed up", withCreds, func(u string) map[string]any {
			return map[string]any{"issuer": u, "jwks_uri": u + "/oauth2/keys"}
		}, "names issuer"},
		{"discovery document missing", func(u string) string { return withCreds(u) + "/realms/none" }, nil, "404"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newOIDCServer(t, jwks(ek))
			if tc.doc != nil {
				srv.setDoc(tc.doc(srv.URL))
			}
			var logs strings.Builder
			v, err := identity.New(identity.Config{IssuerURLs: []string{tc.issuer(srv.URL)}},
				identity.WithHTTPClient(srv.Client()), identity.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			if err != nil {
				t.Fatal(err)
			}
			v.Refresh(context.Background())
			err = v.Ready()
			if err == nil {
				t.Fatal("ready with a refused discovery")
			}
			shown := sidecar.ErrorMessage(err) + "\n" + err.Error()
			if !strings.Contains(shown, tc.want) {
				t.Errorf("Ready() = %v, want an error saying %q", err, tc.want)
			}
			if !strings.Contains(logs.String(), "refresh failed") {
				t.Errorf("no refresh warning logged: %q", logs.String())
			}
			for what, s := range map[string]string{"Ready()": shown, "log": logs.String()} {
				if strings.Contains(s, secret) {
					t.Errorf("%s shows the URL's credential: %s", what, s)
				}
			}
		})
	}
}

// Nor does a configuration error naming an issuer URL.
func TestIssuerConfigErrorsHideCredentials(t *testing.T) {
	for name, cfg := range map[string]identity.Config{
		"duplicate issuer": {IssuerURLs: []string{"https://deputy:s3cret@idp.example.com?k=s3cret", "https://deputy:s3cret@idp.example.com?k=s3cret"}},
		"not discoverable": {IssuerURLs: []string{"ftp://deputy:s3cret@idp.example.com"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := identity.New(cfg)
			if err == nil {
				t.Fatal("configuration accepted")
			}
			if msg := sidecar.ErrorMessage(err) + "\n" + err.Error(); strings.Contains(msg, "s3cret") || !strings.Contains(msg, "idp.example.com") {
				t.Errorf("error = %q, want the issuer shown without its credential", msg)
			}
		})
	}
}
