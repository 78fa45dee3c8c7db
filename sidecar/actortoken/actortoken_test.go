package actortoken_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/actortoken"
)

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func impersonation() *sidecar.Delegation {
	return &sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "sess-42", Actor: "staff-7",
		Subject: "customer-1", StoreView: "en_us", Reason: "order fix", Ticket: "SUP-1"}
}

func newSigner(t testing.TB, cfg actortoken.Config, opts ...actortoken.Option) *actortoken.Signer {
	t.Helper()
	s, err := actortoken.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func genKey(t testing.TB) actortoken.Key {
	t.Helper()
	k, err := actortoken.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type upstreamClaims struct {
	Act struct {
		Sub string `json:"sub"`
	} `json:"act"`
	Deputy map[string]string `json:"deputy"`
}

// verifyAsUpstream does what an upstream application does: fetch the
// JWKS from Deputy over HTTP, pick the key by kid, check the signature,
// issuer, audience and expiry, then read act.sub.
func verifyAsUpstream(t *testing.T, jwksURL, token, issuer, audience string, now time.Time) (jwt.Claims, upstreamClaims, error) {
	t.Helper()
	set, _ := fetchJWKS(t, jwksURL)
	return verifyWithJWKS(set, token, issuer, audience, now)
}

// fetchJWKS fetches the JWKS as an upstream does, with how long its
// Cache-Control lets the upstream keep it.
func fetchJWKS(t *testing.T, jwksURL string) (jose.JSONWebKeySet, time.Duration) {
	t.Helper()
	resp, err := http.Get(jwksURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	cc := resp.Header.Get("Cache-Control")
	_, age, ok := strings.Cut(cc, "max-age=")
	secs, err := strconv.Atoi(age)
	if !ok || err != nil {
		t.Fatalf("JWKS Cache-Control %q has no max-age", cc)
	}
	return set, time.Duration(secs) * time.Second
}

// verifyWithJWKS checks a token against a JWKS the upstream holds: a kid
// it does not list is refused, as an upstream refuses it.
func verifyWithJWKS(set jose.JSONWebKeySet, token, issuer, audience string, now time.Time) (jwt.Claims, upstreamClaims, error) {
	var std jwt.Claims
	var extra upstreamClaims
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return std, extra, err
	}
	kid := tok.Headers[0].KeyID
	keys := set.Key(kid)
	if len(keys) != 1 {
		return std, extra, fmt.Errorf("kid %q: %d keys in the JWKS", kid, len(keys))
	}
	if err := tok.Claims(keys[0], &std, &extra); err != nil {
		return std, extra, err
	}
	err = std.ValidateWithLeeway(jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{audience}, Time: now}, 0)
	return std, extra, err
}

func TestUpstreamVerifiesActorToken(t *testing.T) {
	cfg := actortoken.Config{Issuer: "https://deputy.example.com", Audience: "storefront", TTL: 45 * time.Second}
	s := newSigner(t, cfg, actortoken.WithKeys(genKey(t)), actortoken.WithClock(func() time.Time { return epoch }))
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	tok, err := s.Sign(impersonation())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		audience string
		at       time.Time
		wantErr  bool
	}{
		{name: "fresh token", audience: "storefront", at: epoch.Add(10 * time.Second)},
		{name: "other audience", audience: "billing", at: epoch, wantErr: true},
		{name: "after its lifetime", audience: "storefront", at: epoch.Add(46 * time.Second), wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			std, extra, err := verifyAsUpstream(t, srv.URL+actortoken.JWKSPath, tok, cfg.Issuer, tc.audience, tc.at)
			if tc.wantErr {
				if err == nil {
					t.Fatal("upstream accepted the token")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if std.Subject != "customer-1" || extra.Act.Sub != "staff-7" || std.ID == "" {
				t.Fatalf("sub=%q act.sub=%q jti=%q", std.Subject, extra.Act.Sub, std.ID)
			}
			if got := std.Expiry.Time().Sub(std.IssuedAt.Time()); got != 45*time.Second {
				t.Fatalf("lifetime %v, want 45s", got)
			}
			want := map[string]string{"mode": "impersonation", "sid": "sess-42", "store_view": "en_us", "reason": "order fix", "ticket": "SUP-1"}
			for k, v := range want {
				if extra.Deputy[k] != v {
					t.Fatalf("deputy.%s = %q, want %q (all: %v)", k, extra.Deputy[k], v, extra.Deputy)
				}
			}
		})
	}
}

func TestTokenReuse(t *testing.T) {
	now := epoch
	clock := func() time.Time { return now }
	reusing := newSigner(t, actortoken.Config{TTL: 30 * time.Second}, actortoken.WithKeys(genKey(t)), actortoken.WithClock(clock))
	perRequest := newSigner(t, actortoken.Config{TTL: 30 * time.Second, MintPerRequest: true}, actortoken.WithKeys(genKey(t)), actortoken.WithClock(clock))
	other := impersonation()
	other.ID = "sess-43"

	first, err := reusing.Sign(impersonation())
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		signer *actortoken.Signer
		at     time.Duration
		d      *sidecar.Delegation
		reused bool
	}{
		{name: "same delegation within half the lifetime", signer: reusing, at: 14 * time.Second, d: impersonation(), reused: true},
		{name: "another session never shares a token", signer: reusing, at: 14 * time.Second, d: other},
		{name: "half the lifetime gone: fresh token", signer: reusing, at: 15 * time.Second, d: impersonation()},
		{name: "mint_per_request signs every time", signer: perRequest, at: 0, d: impersonation()},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			now = epoch.Add(st.at)
			tok, err := st.signer.Sign(st.d)
			if err != nil {
				t.Fatal(err)
			}
			if (tok == first) != st.reused {
				t.Fatalf("reused = %v, want %v", tok == first, st.reused)
			}
		})
	}
}

func TestSignRefusesIncompleteDelegation(t *testing.T) {
	s := newSigner(t, actortoken.Config{}, actortoken.WithKeys(genKey(t)))
	for _, tc := range []struct {
		name string
		d    *sidecar.Delegation
	}{
		{"nil", nil},
		{"no subject", &sidecar.Delegation{Mode: sidecar.ModePartner, Actor: "p"}},
		{"no actor", &sidecar.Delegation{Mode: sidecar.ModePartner, Subject: "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tok, err := s.Sign(tc.d); err == nil {
				t.Fatalf("signed %q", tok)
			}
		})
	}
}

func TestKeyFiles(t *testing.T) {
	cases := []struct {
		file    string
		alg     jose.SignatureAlgorithm
		kid     string // "" : thumbprint
		wantErr bool
	}{
		{file: "ec-p256.pem", alg: jose.ES256},
		{file: "rsa-pkcs8.pem", alg: jose.RS256},
		{file: "ed25519.pem", alg: jose.EdDSA},
		{file: "ec-p256.jwk", alg: jose.ES256, kid: "deputy-2026-01"},
		{file: "ec-public.pem", wantErr: true},
		{file: "ec-public.jwk", wantErr: true},
		{file: "garbage.pem", wantErr: true},
		{file: "truncated.jwk", wantErr: true},
		{file: "missing.pem", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			s, err := actortoken.New(actortoken.Config{KeyFiles: []string{filepath.Join("testdata", tc.file)}})
			if tc.wantErr {
				if sidecar.ErrorField(err) != "actor_token.key_files[0]" {
					t.Fatalf("err = %v, want EINVALID naming actor_token.key_files[0]", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			k := s.Keys()[0]
			if k.Algorithm != tc.alg || (tc.kid != "" && k.ID != tc.kid) || k.ID == "" {
				t.Fatalf("key alg=%s kid=%q, want alg=%s kid=%q", k.Algorithm, k.ID, tc.alg, tc.kid)
			}
			tok, err := s.Sign(impersonation())
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{tc.alg})
			if err != nil {
				t.Fatal(err)
			}
			pub := k.Public()
			var c jwt.Claims
			if err := parsed.Claims(&pub, &c); err != nil || c.Subject != "customer-1" {
				t.Fatalf("verify with published key: %v (sub %q)", err, c.Subject)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		cfg   actortoken.Config
		field string
	}{
		{name: "defaults", cfg: actortoken.Config{}},
		{name: "60s is the ceiling", cfg: actortoken.Config{TTL: 60 * time.Second}},
		{name: "ttl over 60s", cfg: actortoken.Config{TTL: 61 * time.Second}, field: "actor_token.ttl"},
		{name: "negative ttl", cfg: actortoken.Config{TTL: -time.Second}, field: "actor_token.ttl"},
		{name: "bad jwks uri", cfg: actortoken.Config{JWKSURI: "/jwks"}, field: "actor_token.jwks_uri"},
		{name: "empty key path", cfg: actortoken.Config{KeyFiles: []string{"a.pem", " "}}, field: "actor_token.key_files[1]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.SetDefaults()
			err := tc.cfg.Validate()
			if tc.field == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.field != "" && sidecar.ErrorField(err) != tc.field {
				t.Fatalf("err = %v, want field %s", err, tc.field)
			}
		})
	}
	d := actortoken.Defaults()
	if d.TTL != 30*time.Second || d.Issuer != "deputy" || d.Audience != "upstream" {
		t.Fatalf("defaults = %+v", d)
	}
	if _, err := actortoken.New(actortoken.Config{}); sidecar.ErrorField(err) != "actor_token.key_files" {
		t.Fatalf("no keys outside dev mode: err = %v", err)
	}
	k := genKey(t)
	if _, err := actortoken.New(actortoken.Config{}, actortoken.WithKeys(k, k)); sidecar.ErrorField(err) != "actor_token.key_files" {
		t.Fatalf("duplicate kid: err = %v", err)
	}
}

func TestHandlers(t *testing.T) {
	k1, k2 := genKey(t), genKey(t)
	byURL := newSigner(t, actortoken.Config{Issuer: "https://deputy.example.com/", CacheMaxAge: time.Minute}, actortoken.WithKeys(k1, k2))
	byName := newSigner(t, actortoken.Config{}, actortoken.WithKeys(k1))
	byConfig := newSigner(t, actortoken.Config{JWKSURI: "https://keys.example.com/jwks.json"}, actortoken.WithKeys(k1))
	evilHost := map[string]string{"Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
	etag := func() string {
		rec := httptest.NewRecorder()
		byURL.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, actortoken.JWKSPath, nil))
		return rec.Header().Get("ETag")
	}()
	cases := []struct {
		name       string
		signer     *actortoken.Signer
		method     string
		path       string
		header     map[string]string
		status     int
		wantHeader map[string]string
		check      func(t *testing.T, body []byte)
	}{
		{
			name: "jwks publishes every key", signer: byURL, method: http.MethodGet, path: actortoken.JWKSPath, status: 200,
			wantHeader: map[string]string{"Cache-Control": "public, max-age=60", "Content-Type": "application/jwk-set+json"},
			check: func(t *testing.T, body []byte) {
				var set jose.JSONWebKeySet
				if err := json.Unmarshal(body, &set); err != nil {
					t.Fatal(err)
				}
				if len(set.Keys) != 2 || set.Keys[0].KeyID != k1.ID || set.Keys[1].KeyID != k2.ID {
					t.Fatalf("keys = %+v", set.Keys)
				}
				for _, k := range set.Keys {
					if !k.IsPublic() {
						t.Fatal("private key material published")
					}
				}
				if strings.Contains(string(body), `"d"`) {
					t.Fatal("private exponent in the JWKS")
				}
			},
		},
		{name: "jwks not modified", signer: byURL, method: http.MethodGet, path: actortoken.JWKSPath,
			header: map[string]string{"If-None-Match": etag}, status: http.StatusNotModified},
		{name: "jwks refuses POST", signer: byURL, method: http.MethodPost, path: actortoken.JWKSPath, status: http.StatusMethodNotAllowed,
			wantHeader: map[string]string{"Allow": "GET, HEAD"}},
		{
			name: "discovery from issuer URL", signer: byURL, method: http.MethodGet, path: actortoken.DiscoveryPath, status: 200,
			check: discoveryCheck("https://deputy.example.com/", "https://deputy.example.com/.well-known/jwks.json"),
		},
		{
			// A shared cache keeps the document for every client: a jwks_uri
			// built from the Host would point upstreams at the attacker's keys.
			name: "discovery never takes jwks_uri from the request", signer: byName, method: http.MethodGet, path: actortoken.DiscoveryPath,
			header: evilHost, status: 200,
			check: discoveryCheck("deputy", ""),
		},
		{
			name: "discovery with a configured jwks_uri", signer: byConfig, method: http.MethodGet, path: actortoken.DiscoveryPath,
			header: evilHost, status: 200,
			check: discoveryCheck("deputy", "https://keys.example.com/jwks.json"),
		},
		{name: "unknown path", signer: byURL, method: http.MethodGet, path: "/.well-known/other", status: http.StatusNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, nil)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			if h := tc.header["Host"]; h != "" {
				req.Host = h
			}
			rec := httptest.NewRecorder()
			tc.signer.Handler().ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d", rec.Code, tc.status)
			}
			for k, v := range tc.wantHeader {
				if got := rec.Header().Get(k); got != v {
					t.Fatalf("%s = %q, want %q", k, got, v)
				}
			}
			if tc.check != nil {
				body, _ := io.ReadAll(rec.Body)
				tc.check(t, body)
			}
		})
	}
}

func discoveryCheck(issuer, jwksURI string) func(*testing.T, []byte) {
	return func(t *testing.T, body []byte) {
		var doc struct {
			Issuer  string   `json:"issuer"`
			JWKSURI *string  `json:"jwks_uri"`
			Algs    []string `json:"id_token_signing_alg_values_supported"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Issuer != issuer || len(doc.Algs) != 1 || doc.Algs[0] != "ES256" {
			t.Fatalf("discovery = %s", body)
		}
		switch {
		case jwksURI == "" && doc.JWKSURI != nil:
			t.Fatalf("jwks_uri %q, want none", *doc.JWKSURI)
		case jwksURI != "" && (doc.JWKSURI == nil || *doc.JWKSURI != jwksURI):
			t.Fatalf("discovery = %s, want jwks_uri %q", body, jwksURI)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  actortoken.Config
	}{
		{"reused", actortoken.Config{}},
		{"mint", actortoken.Config{MintPerRequest: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := newSigner(b, bc.cfg, actortoken.WithKeys(genKey(b)))
			d := impersonation()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Sign(d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// claimsOf reads a token's claims without verifying it (the signer's own
// output, in the same process).
func claimsOf(t *testing.T, tok string) actortoken.Claims {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var c actortoken.Claims
	if err := parsed.UnsafeClaimsWithoutVerification(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// An actor token never outlives the delegation it was minted for: its exp
// is capped at the session's or grant's end, and a token kept for reuse is
// not handed out past that end either.
func TestTokenEndsWithItsDelegation(t *testing.T) {
	now := epoch
	clock := func() time.Time { return now }
	cfg := actortoken.Config{TTL: 60 * time.Second}
	grant := &sidecar.Delegation{Mode: sidecar.ModePartner, ID: "grant-1", Actor: "partner-7", Subject: "org-1", Level: "look",
		ExpiresAt: epoch.Add(20 * time.Second)}
	cases := []struct {
		name    string
		d       *sidecar.Delegation
		wantExp time.Time
	}{
		{name: "delegation ends in 20s", d: grant, wantExp: epoch.Add(20 * time.Second)},
		{name: "delegation ends after the TTL", d: func() *sidecar.Delegation {
			d := *grant
			d.ExpiresAt = epoch.Add(time.Hour)
			return &d
		}(), wantExp: epoch.Add(60 * time.Second)},
		{name: "no end known", d: impersonation(), wantExp: epoch.Add(60 * time.Second)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for name, s := range map[string]*actortoken.Signer{
				"reusing":     newSigner(t, cfg, actortoken.WithKeys(genKey(t)), actortoken.WithClock(clock)),
				"per request": newSigner(t, actortoken.Config{TTL: cfg.TTL, MintPerRequest: true}, actortoken.WithKeys(genKey(t)), actortoken.WithClock(clock)),
			} {
				now = epoch
				tok, err := s.Sign(tc.d)
				if err != nil {
					t.Fatal(err)
				}
				if got := time.Unix(claimsOf(t, tok).Expiry, 0); !got.Equal(tc.wantExp) {
					t.Errorf("%s: exp %v, want %v", name, got, tc.wantExp)
				}
			}
		})
	}

	t.Run("reuse stops at the delegation's end", func(t *testing.T) {
		s := newSigner(t, cfg, actortoken.WithKeys(genKey(t)), actortoken.WithClock(clock))
		now = epoch.Add(5 * time.Second)
		first, err := s.Sign(grant)
		if err != nil {
			t.Fatal(err)
		}
		// Within half the TTL of the first token, but at the grant's end.
		now = epoch.Add(20 * time.Second)
		tok, err := s.Sign(grant)
		if err != nil {
			t.Fatal(err)
		}
		if tok == first {
			t.Fatal("a token that expired with its grant was handed out again")
		}
	})

	t.Run("a narrowed end is a new token", func(t *testing.T) {
		s := newSigner(t, cfg, actortoken.WithKeys(genKey(t)), actortoken.WithClock(clock))
		now = epoch
		long := *grant
		long.ExpiresAt = epoch.Add(time.Hour)
		if _, err := s.Sign(&long); err != nil {
			t.Fatal(err)
		}
		tok, err := s.Sign(grant)
		if err != nil {
			t.Fatal(err)
		}
		if got := time.Unix(claimsOf(t, tok).Expiry, 0); !got.Equal(grant.ExpiresAt) {
			t.Fatalf("exp %v after the grant was narrowed to end at %v", got, grant.ExpiresAt)
		}
	})
}
