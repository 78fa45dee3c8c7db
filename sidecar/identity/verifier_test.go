package identity_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

const (
	testIssuer   = "https://login.example.com/"
	testAudience = "storefront"
)

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a settable sidecar.Clock.
type fakeClock struct{ ns atomic.Int64 }

func newClock(t time.Time) *fakeClock { c := &fakeClock{}; c.Set(t); return c }
func (c *fakeClock) Now() time.Time   { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Set(t time.Time)  { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) Add(d time.Duration) {
	c.ns.Add(int64(d))
}

// testKey is a private signing key with its kid and algorithm.
type testKey struct {
	kid string
	alg jose.SignatureAlgorithm
	key crypto.Signer
}

func (k testKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.key.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

var (
	keysOnce                      sync.Once
	rsaKey, ecKey, edKey, otherEC testKey
)

func keys(t testing.TB) (rsaK, ecK, edK, other testKey) {
	t.Helper()
	keysOnce.Do(func() {
		r, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		e, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		o, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, ed, _ := ed25519.GenerateKey(rand.Reader)
		rsaKey = testKey{"rsa-1", jose.RS256, r}
		ecKey = testKey{"ec-1", jose.ES256, e}
		edKey = testKey{"ed-1", jose.EdDSA, ed}
		otherEC = testKey{"ec-other", jose.ES256, o}
	})
	return rsaKey, ecKey, edKey, otherEC
}

func jwks(ks ...testKey) []byte {
	var set jose.JSONWebKeySet
	for _, k := range ks {
		set.Keys = append(set.Keys, k.public())
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err)
	}
	return b
}

// sign makes a compact JWS of claims with key k, naming kid in the header.
func sign(t testing.TB, k testKey, kid string, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return signRaw(t, k, kid, string(payload))
}

// signRaw makes a compact JWS of payload exactly as given, with key k,
// naming kid in the header unless it is empty.
func signRaw(t testing.TB, k testKey, kid, payload string) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// signHeader makes a compact JWS of payload under header, both exactly
// as given, with the ES256 key k.
func signHeader(t testing.TB, k testKey, header, payload string) string {
	t.Helper()
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	h := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, k.key.(*ecdsa.PrivateKey), h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func rawJWT(header, payload string, sig []byte) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString(sig)
}

func goodClaims(now time.Time) map[string]any {
	return map[string]any{
		"iss": testIssuer, "aud": testAudience, "sub": "alice",
		"name": "Alice Example", "email": "alice@example.com",
		"roles": []any{"support_agent", "viewer"}, "privileges": []any{"view_customers", "access_support_cases"},
		"org": "acme", "domain": "shop.example.com",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

func with(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newFileVerifier(t testing.TB, clock *fakeClock, opts ...identity.Option) *identity.Verifier {
	t.Helper()
	rk, ek, dk, _ := keys(t)
	cfg := identity.Config{
		Issuers:   []identity.IssuerConfig{{Issuer: testIssuer, JWKSFile: writeFile(t, "jwks.json", jwks(rk, ek, dk))}},
		Audiences: []string{testAudience},
	}
	v, err := identity.New(cfg, append([]identity.Option{identity.WithClock(clock.Now)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func bearer(tok string) *sidecar.Request {
	return &sidecar.Request{Headers: map[string]string{"authorization": "Bearer " + tok}}
}

func reasonOf(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var e *sidecar.Error
	if !errors.As(err, &e) || e.Code != sidecar.EUNAUTHORIZED {
		t.Fatalf("want an EUNAUTHORIZED *sidecar.Error, got %#v", err)
	}
	return e.Message
}

func TestVerify(t *testing.T) {
	rk, ek, dk, other := keys(t)
	now := epoch
	good := goodClaims(now)
	pubPEM := func() []byte {
		der, _ := x509.MarshalPKIXPublicKey(rk.key.Public())
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}()
	hmacWithPublicKey := func() string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pubPEM},
			(&jose.SignerOptions{}).WithHeader("kid", rk.kid))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := json.Marshal(good)
		obj, _ := s.Sign(p)
		out, _ := obj.CompactSerialize()
		return out
	}
	goodPayload, _ := json.Marshal(good)

	cases := []struct {
		name    string
		req     *sidecar.Request
		reason  string // "" means accepted
		none    bool   // no credentials: (nil, nil)
		subject string
	}{
		{name: "RS256 accepted", req: bearer(sign(t, rk, rk.kid, good)), subject: "alice"},
		{name: "ES256 accepted", req: bearer(sign(t, ek, ek.kid, good)), subject: "alice"},
		{name: "EdDSA accepted", req: bearer(sign(t, dk, dk.kid, good)), subject: "alice"},
		{name: "no kid: tries the issuer's keys", req: bearer(sign(t, ek, "", good)), subject: "alice"},
		{name: "scheme is case-insensitive", req: &sidecar.Request{Headers: map[string]string{"authorization": "bearer " + sign(t, ek, ek.kid, good)}}, subject: "alice"},
		{name: "audience in an array", req: bearer(sign(t, ek, ek.kid, with(good, "aud", []any{"other", testAudience}))), subject: "alice"},
		{name: "expired within leeway", req: bearer(sign(t, ek, ek.kid, with(good, "exp", now.Add(-20*time.Second).Unix()))), subject: "alice"},
		{name: "nbf within leeway", req: bearer(sign(t, ek, ek.kid, with(good, "nbf", now.Add(20*time.Second).Unix()))), subject: "alice"},

		{name: "no header", req: &sidecar.Request{Headers: map[string]string{}}, none: true},
		{name: "basic auth is not ours", req: &sidecar.Request{Headers: map[string]string{"authorization": "Basic YWxpY2U6c2VjcmV0"}}, none: true},

		{name: "empty bearer", req: &sidecar.Request{Headers: map[string]string{"authorization": "Bearer"}}, reason: identity.ReasonMalformed},
		{name: "garbage", req: bearer("not-a-token"), reason: identity.ReasonMalformed},
		{name: "three dots of nothing", req: bearer(".."), reason: identity.ReasonMalformed},
		{name: "too many parts", req: bearer("a.b.c.d"), reason: identity.ReasonMalformed},
		{name: "header not base64", req: bearer("!!!.e30.AA"), reason: identity.ReasonMalformed},
		{name: "header not JSON", req: bearer(rawJWT("nope", "{}", []byte{1})), reason: identity.ReasonMalformed},
		{name: "oversized", req: bearer(string(make([]byte, identity.MaxTokenSize+1))), reason: identity.ReasonMalformed},
		{name: "payload not an object", req: bearer(sign(t, ek, ek.kid, nil)), reason: identity.ReasonMalformed},
		{name: "exp not a number", req: bearer(sign(t, ek, ek.kid, with(good, "exp", "tomorrow"))), reason: identity.ReasonMalformed},
		// A parser that keeps the first of two subs reads mallory where
		// Go's keeps the last: no one may read this token otherwise.
		{name: "a claim repeated", req: bearer(signRaw(t, ek, ek.kid, `{"sub":"mallory",`+string(goodPayload[1:]))), reason: identity.ReasonMalformed},
		// Subjects, orgs and domains become state keys, headers, log lines
		// and event fields: one holding a line break or a terminal escape
		// is refused, not relayed.
		{name: "control character in sub", req: bearer(sign(t, ek, ek.kid, with(good, "sub", "al\x1b[31mice"))), reason: identity.ReasonMalformed},
		{name: "line break in org", req: bearer(sign(t, ek, ek.kid, with(good, "org", "acme\r\nBcc: x"))), reason: identity.ReasonMalformed},
		{name: "C1 control in domain", req: bearer(sign(t, ek, ek.kid, with(good, "domain", "shop\u009b.example"))), reason: identity.ReasonMalformed},
		{name: "control character in email", req: bearer(sign(t, ek, ek.kid, with(good, "email", "a@b.example\n"))), reason: identity.ReasonMalformed},
		{name: "bidi override in sub", req: bearer(sign(t, ek, ek.kid, with(good, "sub", "nimda\u202e"))), reason: identity.ReasonMalformed},
		{name: "bidi isolate in email", req: bearer(sign(t, ek, ek.kid, with(good, "email", "a@\u2067b.example"))), reason: identity.ReasonMalformed},
		// HTTP parsers strip white space around a header value, and many
		// applications trim: " alice" or "alice\u00a0" would reach them as
		// alice (or, from the issuer without a namespace, " partner:x" as
		// the partner issuer's x).
		{name: "leading space in sub", req: bearer(sign(t, ek, ek.kid, with(good, "sub", " alice"))), reason: identity.ReasonMalformed},
		{name: "trailing space in org", req: bearer(sign(t, ek, ek.kid, with(good, "org", "acme "))), reason: identity.ReasonMalformed},
		{name: "no-break space ending domain", req: bearer(sign(t, ek, ek.kid, with(good, "domain", "eu.example\u00a0"))), reason: identity.ReasonMalformed},
		{name: "ideographic space opening email", req: bearer(sign(t, ek, ek.kid, with(good, "email", "\u3000a@b.example"))), reason: identity.ReasonMalformed},
		// Format characters too: JavaScript's trim() strips U+FEFF, so
		// "alice\uFEFF", another person to Deputy, reaches a Node upstream
		// as alice; zero-width ones print as nothing.
		{name: "BOM ending sub", req: bearer(sign(t, ek, ek.kid, with(good, "sub", "alice\ufeff"))), reason: identity.ReasonMalformed},
		{name: "BOM opening sub", req: bearer(sign(t, ek, ek.kid, with(good, "sub", "\ufeffalice"))), reason: identity.ReasonMalformed},
		{name: "BOM ending org", req: bearer(sign(t, ek, ek.kid, with(good, "org", "acme\ufeff"))), reason: identity.ReasonMalformed},
		{name: "zero-width space opening domain", req: bearer(sign(t, ek, ek.kid, with(good, "domain", "\u200beu.example"))), reason: identity.ReasonMalformed},
		{name: "zero-width joiner ending sub", req: bearer(sign(t, ek, ek.kid, with(good, "sub", "alice\u200d"))), reason: identity.ReasonMalformed},
		{name: "word joiner ending email", req: bearer(sign(t, ek, ek.kid, with(good, "email", "a@b.example\u2060"))), reason: identity.ReasonMalformed},
		// Go reads a lone surrogate escape as U+FFFD: "\ud800" and
		// "\udfff" would be one name.
		{name: "a lone surrogate escape in a claim", req: bearer(signRaw(t, ek, ek.kid, `{"nickname":"al\ud800ice",`+string(goodPayload[1:]))), reason: identity.ReasonMalformed},
		{name: "a nested claim repeated", req: bearer(signRaw(t, ek, ek.kid, `{"realm":{"roles":["x"],"roles":["admin"]},`+string(goodPayload[1:]))), reason: identity.ReasonMalformed},
		// Go's encoding/json (golang-jwt's claims), System.Text.Json under
		// ASP.NET Core's defaults and Jackson with case-insensitive
		// properties read a struct field under any case, Go under Unicode
		// folding too: an upstream decoding the token itself reads mallory
		// or globex where Deputy reads alice of acme.
		{name: "a claim repeated in upper case", req: bearer(signRaw(t, ek, ek.kid, string(goodPayload[:len(goodPayload)-1])+`,"SUB":"mallory"}`)), reason: identity.ReasonMalformed},
		{name: "a claim repeated in mixed case", req: bearer(signRaw(t, ek, ek.kid, string(goodPayload[:len(goodPayload)-1])+`,"Org":"globex"}`)), reason: identity.ReasonMalformed},
		{name: "a claim repeated under Unicode folding", req: bearer(signRaw(t, ek, ek.kid, string(goodPayload[:len(goodPayload)-1])+`,"\u017fub":"mallory"}`)), reason: identity.ReasonMalformed},
		{name: "a nested claim repeated in another case", req: bearer(signRaw(t, ek, ek.kid, `{"realm_access":{"roles":["x"],"ROLES":["admin"]},`+string(goodPayload[1:]))), reason: identity.ReasonMalformed},
		// Read as a C string, "sub\u0000x" is sub.
		{name: "a claim key holding NUL", req: bearer(signRaw(t, ek, ek.kid, string(goodPayload[:len(goodPayload)-1])+`,"sub\u0000x":"mallory"}`)), reason: identity.ReasonMalformed},
		// The other way round: Deputy would read no actor where such an
		// upstream reads one.
		{name: "act in another case", req: bearer(signRaw(t, ek, ek.kid, `{"ACT":{"sub":"bert"},`+string(goodPayload[1:]))), reason: identity.ReasonDelegatedToken},

		{name: "header as signed", req: bearer(signHeader(t, ek, `{"alg":"ES256","kid":"ec-1","typ":"JWT"}`, string(goodPayload))), subject: "alice"},
		// go-jose refuses a header key repeated exactly, but takes "ALG"
		// or "Kid" as other keys: an upstream decoding the header into a
		// struct in any case reads another algorithm or key.
		{name: "alg in another case beside", req: bearer(signHeader(t, ek, `{"alg":"ES256","ALG":"HS256","kid":"ec-1"}`, string(goodPayload))), reason: identity.ReasonMalformed},
		{name: "kid in another case beside", req: bearer(signHeader(t, ek, `{"alg":"ES256","kid":"ec-1","Kid":"rsa-1"}`, string(goodPayload))), reason: identity.ReasonMalformed},
		{name: "header key holding NUL", req: bearer(signHeader(t, ek, `{"alg":"ES256","kid":"ec-1","kid\u0000":"rsa-1"}`, string(goodPayload))), reason: identity.ReasonMalformed},
		// RFC 7515 4.1.11: crit, when present, lists header names; it
		// must not be empty.
		{name: "crit empty", req: bearer(signHeader(t, ek, `{"alg":"ES256","kid":"ec-1","crit":[]}`, string(goodPayload))), reason: identity.ReasonMalformed},
		{name: "crit not a list", req: bearer(signHeader(t, ek, `{"alg":"ES256","kid":"ec-1","crit":"b64"}`, string(goodPayload))), reason: identity.ReasonMalformed},
		{name: "alg none", req: bearer(rawJWT(`{"alg":"none","typ":"JWT"}`, string(goodPayload), nil)), reason: identity.ReasonAlgNotAllowed},
		{name: "alg none with kid", req: bearer(rawJWT(`{"alg":"none","kid":"rsa-1"}`, string(goodPayload), nil)), reason: identity.ReasonAlgNotAllowed},
		{name: "HMAC signed with the public key", req: bearer(hmacWithPublicKey()), reason: identity.ReasonAlgNotAllowed},
		{name: "unknown kid", req: bearer(sign(t, other, other.kid, good)), reason: identity.ReasonUnknownKid},
		{name: "known kid, other key", req: bearer(sign(t, other, ek.kid, good)), reason: identity.ReasonBadSignature},
		{name: "no kid, unknown key", req: bearer(sign(t, other, "", good)), reason: identity.ReasonBadSignature},
		{name: "signature stripped", req: bearer(rawJWT(`{"alg":"ES256","kid":"ec-1"}`, string(goodPayload), nil)), reason: identity.ReasonBadSignature},

		{name: "wrong issuer", req: bearer(sign(t, ek, ek.kid, with(good, "iss", "https://evil.example.com/"))), reason: identity.ReasonIssuer},
		{name: "missing issuer", req: bearer(sign(t, ek, ek.kid, with(good, "iss", nil))), reason: identity.ReasonIssuer},
		{name: "wrong audience", req: bearer(sign(t, ek, ek.kid, with(good, "aud", "billing"))), reason: identity.ReasonAudience},
		{name: "missing audience", req: bearer(sign(t, ek, ek.kid, with(good, "aud", nil))), reason: identity.ReasonAudience},
		{name: "expired beyond leeway", req: bearer(sign(t, ek, ek.kid, with(good, "exp", now.Add(-31*time.Second).Unix()))), reason: identity.ReasonExpired},
		{name: "not yet valid", req: bearer(sign(t, ek, ek.kid, with(good, "nbf", now.Add(time.Minute).Unix()))), reason: identity.ReasonNotYetValid},
		{name: "issued in the future", req: bearer(sign(t, ek, ek.kid, with(good, "iat", now.Add(time.Hour).Unix()))), reason: identity.ReasonNotYetValid},
		{name: "no exp", req: bearer(sign(t, ek, ek.kid, with(good, "exp", nil))), reason: identity.ReasonMissingExp},
		{name: "no sub", req: bearer(sign(t, ek, ek.kid, with(good, "sub", nil))), reason: identity.ReasonMissingSub},
	}
	v := newFileVerifier(t, newClock(now))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The second presentation is answered from what the verifier
			// remembers of the first: it must give the same verdict.
			for _, use := range []string{"first use", "second use"} {
				id, err := v.Verify(context.Background(), tc.req)
				if got := reasonOf(t, err); got != tc.reason {
					t.Fatalf("%s: reason = %q (%v), want %q", use, got, err, tc.reason)
				}
				switch {
				case tc.reason != "" && id != nil:
					t.Fatalf("%s: refused token still produced identity %+v", use, id)
				case tc.none && id != nil:
					t.Fatalf("%s: no credentials produced identity %+v", use, id)
				case tc.subject != "" && (id == nil || id.Subject != tc.subject):
					t.Fatalf("%s: identity = %+v, want subject %q", use, id, tc.subject)
				}
			}
		})
	}
}

// TestZeroLeewayCutsTokensOffExactly: an operator who sets leeway 0 wants
// a token refused the second it expires, and before its nbf; the default
// leeway, 30 s, taken in its place, accepted both.
func TestZeroLeewayCutsTokensOffExactly(t *testing.T) {
	rk, ek, dk, _ := keys(t)
	now := epoch
	good := goodClaims(now)
	cfg := identity.Config{
		Issuers:   []identity.IssuerConfig{{Issuer: testIssuer, JWKSFile: writeFile(t, "jwks.json", jwks(rk, ek, dk))}},
		Audiences: []string{testAudience},
		Leeway:    new(time.Duration(0)),
	}
	v, err := identity.New(cfg, identity.WithClock(newClock(now).Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	for _, tc := range []struct {
		name   string
		claims map[string]any
		reason string
	}{
		{"valid", good, ""},
		{"expired 5s ago", with(good, "exp", now.Add(-5*time.Second).Unix()), identity.ReasonExpired},
		{"expired 1s ago", with(good, "exp", now.Add(-time.Second).Unix()), identity.ReasonExpired},
		{"nbf 5s ahead", with(good, "nbf", now.Add(5*time.Second).Unix()), identity.ReasonNotYetValid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), bearer(sign(t, ek, ek.kid, tc.claims)))
			if got := reasonOf(t, err); got != tc.reason {
				t.Fatalf("leeway 0: reason = %q (%v), want %q", got, err, tc.reason)
			}
		})
	}
}

// TestRememberedVerdictsFollowClockAndKeys pins what the verifier may
// remember of a token: a refusal that time or a key set change can lift
// is judged again, an identity never outlives its exp, and a token that
// differs from a remembered one in any byte is judged on its own.
func TestRememberedVerdictsFollowClockAndKeys(t *testing.T) {
	_, ek, _, other := keys(t)
	clock := newClock(epoch)
	path := writeFile(t, "jwks.json", jwks(ek))
	v, err := identity.New(identity.Config{
		Issuers:   []identity.IssuerConfig{{Issuer: testIssuer, JWKSFile: path}},
		Audiences: []string{testAudience},
	}, identity.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	good := goodClaims(epoch)
	valid := sign(t, ek, ek.kid, good)
	head, _, _ := strings.Cut(valid, ".")
	_, payload, _ := strings.Cut(valid, ".")
	payload, _, _ = strings.Cut(payload, ".")
	resigned := strings.Split(sign(t, other, ek.kid, good), ".")[2]
	// Valid 20s on, within the time a refusal may be remembered.
	notYet := sign(t, ek, ek.kid, with(good, "nbf", epoch.Add(identity.DefaultLeeway+15*time.Second).Unix()))
	futureIat := sign(t, ek, ek.kid, with(good, "iat", epoch.Add(identity.DefaultLeeway+15*time.Second).Unix()))
	otherKeyUnderKnownKid := sign(t, other, "rotating", good)
	rotating := other
	rotating.kid = "rotating"

	steps := []struct {
		name   string
		do     func()
		token  string
		reason string
	}{
		{name: "valid token accepted", token: valid},
		{name: "same header and payload, another signature", token: head + "." + payload + "." + resigned, reason: identity.ReasonBadSignature},
		{name: "valid token with its signature cut short", token: valid[:len(valid)-2], reason: identity.ReasonBadSignature},
		{name: "valid token still accepted", token: valid},
		{name: "nbf in the future", token: notYet, reason: identity.ReasonNotYetValid},
		{name: "iat in the future", token: futureIat, reason: identity.ReasonNotYetValid},
		{name: "nbf reached", do: func() { clock.Add(20 * time.Second) }, token: notYet},
		{name: "iat reached", token: futureIat},
		{name: "key not in the set", do: func() {
			writeKeys(t, path, ek, jose.JSONWebKey{Key: other.key.Public(), KeyID: "rotating-old", Algorithm: "ES256"})
		},
			token: otherKeyUnderKnownKid, reason: identity.ReasonUnknownKid},
		{name: "kid known, key differs", do: func() {
			writeKeys(t, path, ek, jose.JSONWebKey{Key: ek.key.Public(), KeyID: "rotating", Algorithm: "ES256"})
			v.Refresh(context.Background())
		}, token: otherKeyUnderKnownKid, reason: identity.ReasonBadSignature},
		{name: "key set now vouches for it", do: func() {
			writeKeys(t, path, ek, rotating.public())
			v.Refresh(context.Background())
		}, token: otherKeyUnderKnownKid},
		{name: "key set drops it again", do: func() {
			writeKeys(t, path, ek, jose.JSONWebKey{Key: ek.key.Public(), KeyID: "rotating", Algorithm: "ES256"})
			v.Refresh(context.Background())
		}, token: otherKeyUnderKnownKid, reason: identity.ReasonBadSignature},
		{name: "remembered identity expires", do: func() { clock.Set(epoch.Add(time.Hour + time.Minute)) }, token: valid, reason: identity.ReasonExpired},
		{name: "expired stays expired", token: valid, reason: identity.ReasonExpired},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.do != nil {
				st.do()
			}
			for _, use := range []string{"first use", "second use"} {
				id, err := v.Verify(context.Background(), bearer(st.token))
				if got := reasonOf(t, err); got != st.reason {
					t.Fatalf("%s: reason = %q (%v), want %q", use, got, err, st.reason)
				}
				if (st.reason == "") != (id != nil) {
					t.Fatalf("%s: identity %+v with reason %q", use, id, st.reason)
				}
			}
		})
	}
}

// foreignToken is the bearer token of the OPA-Envoy-style JWT policy in
// cmd/deputy-bench/testdata (HS256 with the secret "secret").
const foreignToken = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInJvbGUiOiJhZG1pbiIsIm5iZiI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.TrF5ADf7ZyqCe2Ul1gK8J2ETziNZD5E_qx3kp5Xybpw"

// TestForeignTokenRefusedEveryTime is the OPA-Envoy-style bearer token a
// policy verifies itself (HS256, a shared secret): never Deputy's to
// accept, however often it comes.
func TestForeignTokenRefusedEveryTime(t *testing.T) {
	v := newFileVerifier(t, newClock(epoch))
	for i := range 3 {
		id, err := v.Verify(context.Background(), bearer(foreignToken))
		if got := reasonOf(t, err); got != identity.ReasonAlgNotAllowed || id != nil {
			t.Fatalf("use %d: identity %+v, reason %q, want %q", i+1, id, got, identity.ReasonAlgNotAllowed)
		}
	}
}

// writeKeys replaces the key set file at path.
func writeKeys(t *testing.T, path string, ek testKey, extra jose.JSONWebKey) {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{ek.public(), extra}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyFillsIdentity(t *testing.T) {
	_, ek, _, _ := keys(t)
	v := newFileVerifier(t, newClock(epoch))
	id, err := v.Verify(context.Background(), bearer(sign(t, ek, ek.kid, goodClaims(epoch))))
	if err != nil {
		t.Fatal(err)
	}
	want := sidecar.Identity{
		Subject: "alice", Name: "Alice Example", Email: "alice@example.com",
		Roles: []string{"support_agent", "viewer"}, Privileges: []string{"view_customers", "access_support_cases"},
		Org: "acme", Domain: "shop.example.com", Issuer: testIssuer, ExpiresAt: epoch.Add(time.Hour),
	}
	if id.Subject != want.Subject || id.Name != want.Name || id.Email != want.Email || id.Org != want.Org ||
		id.Domain != want.Domain || id.Issuer != want.Issuer || !id.ExpiresAt.Equal(want.ExpiresAt) ||
		!slices.Equal(id.Roles, want.Roles) || !slices.Equal(id.Privileges, want.Privileges) {
		t.Fatalf("identity = %+v\nwant       %+v", *id, want)
	}
	if id.Claims["email"] != "alice@example.com" || id.Claims["iss"] != testIssuer {
		t.Fatalf("claims not kept as issued: %v", id.Claims)
	}
}

func TestVerifyCachedTokenStillExpires(t *testing.T) {
	_, ek, _, _ := keys(t)
	clock := newClock(epoch)
	v := newFileVerifier(t, clock)
	tok := sign(t, ek, ek.kid, goodClaims(epoch))
	for _, step := range []struct {
		name    string
		advance time.Duration
		reason  string
	}{
		{"first use", 0, ""},
		{"cached use", time.Minute, ""},
		{"after expiry", time.Hour, identity.ReasonExpired},
	} {
		t.Run(step.name, func(t *testing.T) {
			clock.Add(step.advance)
			_, err := v.Verify(context.Background(), bearer(tok))
			if got := reasonOf(t, err); got != step.reason {
				t.Fatalf("reason = %q, want %q", got, step.reason)
			}
		})
	}
}

func TestClaimsMapping(t *testing.T) {
	_, ek, _, _ := keys(t)
	base := map[string]any{"iss": testIssuer, "aud": testAudience, "exp": epoch.Add(time.Hour).Unix()}
	cases := []struct {
		name    string
		mapping identity.ClaimsConfig
		claims  map[string]any
		want    sidecar.Identity
	}{
		{
			name:    "nested paths (Keycloak realm roles)",
			mapping: identity.ClaimsConfig{Sub: "preferred_username", Roles: "realm_access.roles", Org: "tenant.id"},
			claims: with(base, "preferred_username", "bob", "realm_access", map[string]any{"roles": []any{"reseller_admin"}},
				"tenant", map[string]any{"id": "acme"}),
			want: sidecar.Identity{Subject: "bob", Roles: []string{"reseller_admin"}, Org: "acme"},
		},
		{
			name:    "space-separated string list",
			mapping: identity.ClaimsConfig{Privileges: "scope"},
			claims:  with(base, "sub", "carol", "scope", "view_customers  access_support_cases"),
			want:    sidecar.Identity{Subject: "carol", Privileges: []string{"view_customers", "access_support_cases"}},
		},
		{
			name:    "scp is space-separated too",
			mapping: identity.ClaimsConfig{Roles: "ext.scp"},
			claims:  with(base, "sub", "carol", "ext", map[string]any{"scp": "support_agent viewer"}),
			want:    sidecar.Identity{Subject: "carol", Roles: []string{"support_agent", "viewer"}},
		},
		// Providers send a one-valued roles or groups claim as a string
		// (Keycloak mappers with multivalued off, SAML bridges, Auth0
		// actions) and as an array once it has two: "Regional admin" is
		// one role either way, not Regional and admin.
		{
			name:   "a role given as a string is one role",
			claims: with(base, "sub", "hana", "roles", "Regional admin"),
			want:   sidecar.Identity{Subject: "hana", Roles: []string{"Regional admin"}},
		},
		{
			name:   "a privilege given as a string is one privilege",
			claims: with(base, "sub", "hana", "privileges", "view_customers access_support_cases"),
			want:   sidecar.Identity{Subject: "hana", Privileges: []string{"view_customers access_support_cases"}},
		},
		{
			name:    "a string of another claim named like scope is one value",
			mapping: identity.ClaimsConfig{Roles: "scopes"},
			claims:  with(base, "sub", "hana", "scopes", "Shop admin"),
			want:    sidecar.Identity{Subject: "hana", Roles: []string{"Shop admin"}},
		},
		{
			name:   "an empty string is no role",
			claims: with(base, "sub", "hana", "roles", ""),
			want:   sidecar.Identity{Subject: "hana"},
		},
		{
			name:   "array with non-strings keeps the strings",
			claims: with(base, "sub", "dave", "roles", []any{"a", 3, nil, "b", ""}),
			want:   sidecar.Identity{Subject: "dave", Roles: []string{"a", "b"}},
		},
		{
			name:   "numeric subject",
			claims: with(base, "sub", 12345),
			want:   sidecar.Identity{Subject: "12345"},
		},
		{
			name:    "claim literally named with dots wins over nesting",
			mapping: identity.ClaimsConfig{Domain: "https://example.com/domain"},
			claims:  with(base, "sub", "erin", "https://example.com/domain", "eu.shop"),
			want:    sidecar.Identity{Subject: "erin", Domain: "eu.shop"},
		},
		{
			name:    "path through a non-object yields nothing",
			mapping: identity.ClaimsConfig{Roles: "realm_access.roles"},
			claims:  with(base, "sub", "frank", "realm_access", "admin"),
			want:    sidecar.Identity{Subject: "frank"},
		},
		{
			name:   "wrong types are ignored, not trusted",
			claims: with(base, "sub", "gina", "roles", map[string]any{"admin": true}, "org", []any{"acme"}),
			want:   sidecar.Identity{Subject: "gina"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := identity.Config{
				Issuers:   []identity.IssuerConfig{{Issuer: testIssuer, JWKSFile: writeFile(t, "jwks.json", jwks(ek))}},
				Audiences: []string{testAudience},
				Claims:    tc.mapping,
			}
			v, err := identity.New(cfg, identity.WithClock(newClock(epoch).Now))
			if err != nil {
				t.Fatal(err)
			}
			id, err := v.Verify(context.Background(), bearer(sign(t, ek, ek.kid, tc.claims)))
			if err != nil {
				t.Fatal(err)
			}
			if id.Subject != tc.want.Subject || id.Org != tc.want.Org || id.Domain != tc.want.Domain ||
				!slices.Equal(id.Roles, tc.want.Roles) || !slices.Equal(id.Privileges, tc.want.Privileges) {
				t.Fatalf("identity = %+v, want %+v", *id, tc.want)
			}
		})
	}
}

// jwksServer serves a key set that the test can change, counting fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	body    []byte
	gate    chan struct{} // non-nil: each fetch waits until it is closed (hold)
	arrived chan struct{} // a fetch reached the gate
	fetches atomic.Int32
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	s := &jwksServer{body: body}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		gate, arrived := s.gate, s.arrived
		s.mu.Unlock()
		if gate != nil {
			select {
			case arrived <- struct{}{}:
			default:
			}
			<-gate
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

// hold makes the fetches from now on wait, an identity provider that has
// not answered yet, until release: arrived receives as each one reaches
// the wait.
func (s *jwksServer) hold(t *testing.T) (arrived <-chan struct{}, release func()) {
	s.mu.Lock()
	gate, arr := make(chan struct{}), make(chan struct{}, 64)
	s.gate, s.arrived = gate, arr
	s.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			s.mu.Lock()
			s.gate = nil
			s.mu.Unlock()
			close(gate)
		})
	}
	t.Cleanup(release) // before s.Close, which waits for held fetches
	return arr, release
}

func (s *jwksServer) set(body []byte) { s.mu.Lock(); s.body = body; s.mu.Unlock() }

func TestRefreshOnUnknownKid(t *testing.T) {
	_, ek, _, other := keys(t)
	srv := newJWKSServer(t, jwks(ek))
	clock := newClock(epoch)
	v, err := identity.New(identity.Config{
		Issuers:            []identity.IssuerConfig{{Issuer: testIssuer, JWKSURL: srv.URL + "/jwks.json"}},
		Audiences:          []string{testAudience},
		MinRefreshInterval: 10 * time.Second,
	}, identity.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Ready(); err == nil {
		t.Fatal("ready before the key set URL was fetched")
	}
	if err := v.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.Ready(); err != nil {
		t.Fatalf("not ready after start: %v", err)
	}
	rotated := sign(t, other, other.kid, goodClaims(epoch))
	forged := func(kid string) string { return sign(t, other, kid, goodClaims(epoch)) }

	steps := []struct {
		name        string
		do          func()
		token       string
		reason      string
		wantFetches int32
	}{
		{name: "start fetched once", token: sign(t, ek, ek.kid, goodClaims(epoch)), wantFetches: 1},
		{name: "unknown kid refetches", token: rotated, reason: identity.ReasonUnknownKid, wantFetches: 2},
		{name: "issuer rotates; refresh is rate-bound", do: func() { srv.set(jwks(ek, other)) },
			token: rotated, reason: identity.ReasonUnknownKid, wantFetches: 2},
		{name: "forged kids do not cause fetches", token: forged("forged-1"), reason: identity.ReasonUnknownKid, wantFetches: 2},
		{name: "after the bound the new key is fetched", do: func() { clock.Add(11 * time.Second) },
			token: rotated, wantFetches: 3},
		{name: "known kid needs no fetch", token: sign(t, other, other.kid, with(goodClaims(epoch), "sub", "zoe")), wantFetches: 3},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.do != nil {
				st.do()
			}
			_, err := v.Verify(context.Background(), bearer(st.token))
			if got := reasonOf(t, err); got != st.reason {
				t.Fatalf("reason = %q (%v), want %q", got, err, st.reason)
			}
			if got := srv.fetches.Load(); got != st.wantFetches {
				t.Fatalf("fetches = %d, want %d", got, st.wantFetches)
			}
		})
	}
}

func TestRefreshDropsRemovedKeys(t *testing.T) {
	_, ek, _, other := keys(t)
	path := writeFile(t, "jwks.json", jwks(ek, other))
	v, err := identity.New(identity.Config{
		Issuers:   []identity.IssuerConfig{{Issuer: testIssuer, JWKSFile: path}},
		Audiences: []string{testAudience},
	}, identity.WithClock(newClock(epoch).Now))
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, other, other.kid, goodClaims(epoch))
	if _, err := v.Verify(context.Background(), bearer(tok)); err != nil {
		t.Fatalf("before removal: %v", err)
	}
	if err := os.WriteFile(path, jwks(ek), 0o600); err != nil {
		t.Fatal(err)
	}
	v.Refresh(context.Background())
	_, err = v.Verify(context.Background(), bearer(tok))
	if got := reasonOf(t, err); got != identity.ReasonUnknownKid {
		t.Fatalf("token of a removed key: reason %q, want %q", got, identity.ReasonUnknownKid)
	}
}

func TestRefreshKeepsKeysWhenSourceBreaks(t *testing.T) {
	_, ek, _, _ := keys(t)
	srv := newJWKSServer(t, jwks(ek))
	v, err := identity.New(identity.Config{
		Issuers:   []identity.IssuerConfig{{Issuer: testIssuer, JWKSURL: srv.URL}},
		Audiences: []string{testAudience},
	}, identity.WithClock(newClock(epoch).Now), identity.WithCacheSize(0))
	if err != nil {
		t.Fatal(err)
	}
	v.Refresh(context.Background())
	srv.set([]byte("<html>maintenance</html>"))
	v.Refresh(context.Background())
	if _, err := v.Verify(context.Background(), bearer(sign(t, ek, ek.kid, goodClaims(epoch)))); err != nil {
		t.Fatalf("a broken refresh dropped good keys: %v", err)
	}
}

func TestJWKSFileMalformed(t *testing.T) {
	for _, name := range []string{"truncated.json", "array.json", "no-keys.json", "empty-keys.json", "only-unusable.json", "not-json.json", "missing.json"} {
		t.Run(name, func(t *testing.T) {
			_, err := identity.New(identity.Config{
				Issuers: []identity.IssuerConfig{{Issuer: testIssuer, JWKSFile: filepath.Join("testdata", name)}},
			})
			if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "identity.issuers" {
				t.Fatalf("err = %v, want EINVALID naming identity.issuers", err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ok := identity.IssuerConfig{Issuer: testIssuer, JWKSURL: "https://login.example.com/jwks"}
	cases := []struct {
		name  string
		cfg   identity.Config
		field string
	}{
		{name: "defaults", cfg: identity.Config{Issuers: []identity.IssuerConfig{ok}}},
		{name: "no issuers", cfg: identity.Config{}},
		{name: "alg none", cfg: identity.Config{Algorithms: []string{"ES256", "none"}}, field: "identity.algorithms"},
		{name: "HMAC", cfg: identity.Config{Algorithms: []string{"HS256"}}, field: "identity.algorithms"},
		{name: "negative leeway", cfg: identity.Config{Leeway: new(-time.Second)}, field: "identity.leeway"},
		{name: "huge leeway", cfg: identity.Config{Leeway: new(time.Hour)}, field: "identity.leeway"},
		{name: "min refresh above refresh", cfg: identity.Config{RefreshInterval: time.Minute, MinRefreshInterval: time.Hour}, field: "identity.min_refresh_interval"},
		{name: "max key age", cfg: identity.Config{RefreshInterval: time.Minute, MaxKeyAge: 2 * time.Minute}},
		{name: "max key age below twice the refresh", cfg: identity.Config{RefreshInterval: time.Minute, MaxKeyAge: 119 * time.Second}, field: "identity.max_key_age"},
		{name: "negative max key age", cfg: identity.Config{MaxKeyAge: -time.Second}, field: "identity.max_key_age"},
		// Twice a refresh interval past 100 years wraps negative, and the
		// max_key_age check above passed.
		{name: "refresh interval past 100 years", cfg: identity.Config{RefreshInterval: 2562047 * time.Hour, MaxKeyAge: time.Hour}, field: "identity.refresh_interval"},
		{name: "max key age past 100 years", cfg: identity.Config{MaxKeyAge: 876001 * time.Hour}, field: "identity.max_key_age"},
		{name: "issuer without name", cfg: identity.Config{Issuers: []identity.IssuerConfig{{JWKSURL: ok.JWKSURL}}}, field: "identity.issuers[0].issuer"},
		{name: "issuer by URL alone", cfg: identity.Config{Issuers: []identity.IssuerConfig{{Issuer: "https://id.example.com"}}}},
		{name: "issuer neither URL nor keys", cfg: identity.Config{Issuers: []identity.IssuerConfig{{Issuer: "a"}}}, field: "identity.issuers[0].issuer"},
		{name: "issuer_urls", cfg: identity.Config{IssuerURLs: []string{"https://login.example.com/realms/shop"}}},
		{name: "issuer_urls not a URL", cfg: identity.Config{IssuerURLs: []string{"id.example.com"}}, field: "identity.issuer_urls[0]"},
		{name: "issuer_urls duplicate", cfg: identity.Config{IssuerURLs: []string{testIssuer}, Issuers: []identity.IssuerConfig{ok}}, field: "identity.issuers[0].issuer"},
		{name: "issuer with both sources", cfg: identity.Config{Issuers: []identity.IssuerConfig{{Issuer: "a", JWKSURL: ok.JWKSURL, JWKSFile: "k.json"}}}, field: "identity.issuers[0].jwks_url"},
		{name: "not a URL", cfg: identity.Config{Issuers: []identity.IssuerConfig{{Issuer: "a", JWKSURL: "ftp://x/jwks"}}}, field: "identity.issuers[0].jwks_url"},
		{name: "duplicate issuer", cfg: identity.Config{Issuers: []identity.IssuerConfig{ok, ok}}, field: "identity.issuers[1].issuer"},
		{name: "dev issuer name reserved", cfg: identity.Config{Dev: identity.DevConfig{Enabled: true}, Issuers: []identity.IssuerConfig{{Issuer: identity.DevIssuerName, JWKSURL: ok.JWKSURL}}}, field: "identity.issuers[0].issuer"},
		{name: "bad claim path", cfg: identity.Config{Claims: identity.ClaimsConfig{Roles: "realm_access..roles"}}, field: "identity.claims.roles"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantValidate(t, tc.cfg, tc.field) })
	}
}

// wantValidate checks that the defaulted cfg validates, or, when field is
// set, that it is refused as invalid naming field; it returns the error.
func wantValidate(t *testing.T, cfg identity.Config, field string) error {
	t.Helper()
	cfg.SetDefaults()
	err := cfg.Validate()
	if field == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return nil
	}
	if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != field {
		t.Fatalf("err = %v, want EINVALID on %s", err, field)
	}
	return err
}

func TestDefaults(t *testing.T) {
	d := identity.Defaults()
	if *d.Leeway != 30*time.Second || !slices.Equal(d.Algorithms, []string{"RS256", "ES256", "EdDSA"}) ||
		d.Header != "authorization" || d.Claims.Roles != "roles" || d.Dev.KeyFile != identity.DefaultDevKeyFile {
		t.Fatalf("defaults = %+v", d)
	}
}

func FuzzVerifyToken(f *testing.F) {
	_, ek, _, _ := keys(f)
	for _, seed := range []string{
		sign(f, ek, ek.kid, goodClaims(epoch)),
		sign(f, ek, "", map[string]any{"iss": testIssuer}),
		rawJWT(`{"alg":"none"}`, `{"sub":"x"}`, nil),
		rawJWT(`{"alg":"ES256","kid":"ec-1"}`, `[]`, []byte("sig")),
		"", ".", "..", "a.b.c", "eyJ.eyJ.", "\x00\xff",
	} {
		f.Add(seed)
	}
	v := newFileVerifier(f, newClock(epoch))
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := v.VerifyToken(context.Background(), tok)
		if err == nil {
			if id == nil || id.Subject == "" || id.Issuer != testIssuer {
				t.Fatalf("accepted token without a verified identity: %+v", id)
			}
			return
		}
		if id != nil {
			t.Fatalf("refused token produced identity %+v", id)
		}
		if sidecar.ErrorCode(err) != sidecar.EUNAUTHORIZED {
			t.Fatalf("error code %q for %q", sidecar.ErrorCode(err), tok)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	rk, ek, _, _ := keys(b)
	for _, bc := range []struct {
		name    string
		key     testKey
		cache   int
		foreign bool   // an HS256 token of another issuer: refused
		other   string // a credential of another scheme: no identity
	}{
		{"ES256/cached", ek, identity.DefaultCacheSize, false, ""},
		{"ES256/uncached", ek, 0, false, ""},
		{"RS256/uncached", rk, 0, false, ""},
		{"foreign/cached", ek, identity.DefaultCacheSize, true, ""},
		{"foreign/uncached", ek, 0, true, ""},
		{"basic", ek, identity.DefaultCacheSize, false, "Basic " + base64.StdEncoding.EncodeToString([]byte("mallory@shop.example:correct-horse-battery-staple"))},
		{"negotiate", ek, identity.DefaultCacheSize, false, "Negotiate " + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("\x60\x82\x06\x86\x06\x09\x2a\x86\x48\x86\xf7\x12"), 128))},
		// Hostile values of 8 KiB (nginx's header buffer): each byte a
		// candidate for the scheme words, or a Basic credential to decode.
		{"hostile/b", ek, identity.DefaultCacheSize, false, strings.Repeat("b", 8<<10)},
		{"hostile/basic", ek, identity.DefaultCacheSize, false, "Basic " + strings.Repeat("Basi", 2<<10)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			v := newFileVerifier(b, newClock(epoch), identity.WithCacheSize(bc.cache))
			req := bearer(sign(b, bc.key, bc.key.kid, goodClaims(epoch)))
			if bc.foreign {
				req = bearer(foreignToken)
			}
			if bc.other != "" {
				req = &sidecar.Request{Headers: map[string]string{"authorization": bc.other}}
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, req); (err != nil) != bc.foreign {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestPeriodicRefresh(t *testing.T) {
	_, ek, _, other := keys(t)
	srv := newJWKSServer(t, jwks(ek))
	v, err := identity.New(identity.Config{
		Issuers:            []identity.IssuerConfig{{Issuer: testIssuer, JWKSURL: srv.URL}},
		Audiences:          []string{testAudience},
		RefreshInterval:    time.Second,
		MinRefreshInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.set(jwks(ek, other))
	// The second fetch, the first to see the new key, has been answered
	// and its keys installed once a third begins: refreshes run one after
	// another. Waiting for the second to arrive is not enough: Close would
	// cancel it before its answer is read.
	deadline := time.Now().Add(10 * time.Second)
	for srv.fetches.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("key set was not refreshed periodically")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	// The key published since start verifies without an unknown-kid fetch.
	before := srv.fetches.Load()
	if _, err := v.Verify(context.Background(), bearer(sign(t, other, other.kid, goodClaims(time.Now())))); err != nil {
		t.Fatal(err)
	}
	if srv.fetches.Load() != before {
		t.Fatal("verification fetched the key set again")
	}
}

// A numeric id above 2^53 read as a float64 becomes a neighbour's id
// (9007199254740993 is 9007199254740992): such claims are refused.
func TestNumericIdClaimsAreExactOrRefused(t *testing.T) {
	_, ek, _, _ := keys(t)
	base := map[string]any{"iss": testIssuer, "aud": testAudience, "exp": epoch.Add(time.Hour).Unix()}
	cfg := identity.Config{
		Issuers:   []identity.IssuerConfig{{Issuer: testIssuer, JWKSFile: writeFile(t, "jwks.json", jwks(ek))}},
		Audiences: []string{testAudience},
	}
	v, err := identity.New(cfg, identity.WithClock(newClock(epoch).Now))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		claims  map[string]any
		want    string // the subject, or "" for refused
		naming  string // the refusal names this claim
		wantOrg string
	}{
		{name: "largest exact integer", claims: with(base, "sub", json.Number("9007199254740991")), want: "9007199254740991"},
		{name: "negative integer", claims: with(base, "sub", json.Number("-42")), want: "-42"},
		{name: "numeric org", claims: with(base, "sub", "ann", "org", json.Number("77")), want: "ann", wantOrg: "77"},
		{name: "2^53+1", claims: with(base, "sub", json.Number("9007199254740993")), naming: "sub"},
		{name: "2^53", claims: with(base, "sub", json.Number("9007199254740992")), naming: "sub"},
		{name: "beyond int64", claims: with(base, "sub", json.Number("123456789012345678901234567890")), naming: "sub"},
		{name: "fraction", claims: with(base, "sub", json.Number("1.5")), naming: "sub"},
		{name: "integer written as a float", claims: with(base, "sub", json.Number("12.0")), naming: "sub"},
		{name: "exponent", claims: with(base, "sub", json.Number("1e3")), naming: "sub"},
		{name: "org above 2^53", claims: with(base, "sub", "ann", "org", json.Number("1152921504606846977")), naming: "org"},
		{name: "domain above 2^53", claims: with(base, "sub", "ann", "domain", json.Number("-9007199254740993")), naming: "domain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), bearer(sign(t, ek, ek.kid, tc.claims)))
			if tc.naming != "" {
				if err == nil {
					t.Fatalf("accepted as %+v", *id)
				}
				if reasonOf(t, err) != identity.ReasonMalformed || !strings.Contains(errors.Unwrap(err).Error(), "claim "+tc.naming) {
					t.Fatalf("err = %v (%v), want %s naming %s", err, errors.Unwrap(err), identity.ReasonMalformed, tc.naming)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.Subject != tc.want || id.Org != tc.wantOrg {
				t.Fatalf("identity = %+v, want subject %q org %q", *id, tc.want, tc.wantOrg)
			}
		})
	}
}

// Envoy with encode_raw_headers sends the headers in header_map only: the
// bearer token there is the request's identity, as it would be in headers.
// Two tokens (repeated entries, or one in each) are joined as Envoy joins
// repeated headers, which no token verifies as.
func TestVerifyReadsHeaderMap(t *testing.T) {
	_, ek, _, _ := keys(t)
	v := newFileVerifier(t, newClock(epoch))
	tok := sign(t, ek, ek.kid, goodClaims(epoch))
	cases := []struct {
		name    string
		req     *sidecar.Request
		subject string
		reason  string
	}{
		{name: "header_map only", subject: "alice",
			req: &sidecar.Request{HeaderMap: []sidecar.HeaderField{{Name: "accept", Value: "*/*"}, {Name: "Authorization", Value: "Bearer " + tok}}}},
		{name: "repeated in header_map", reason: identity.ReasonMalformed,
			req: &sidecar.Request{HeaderMap: []sidecar.HeaderField{{Name: "authorization", Value: "Bearer " + tok}, {Name: "authorization", Value: "Bearer " + tok}}}},
		{name: "in headers and header_map", reason: identity.ReasonMalformed,
			req: &sidecar.Request{Headers: map[string]string{"authorization": "Bearer " + tok}, HeaderMap: []sidecar.HeaderField{{Name: "authorization", Value: "Bearer x"}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tc.req)
			if tc.subject != "" {
				if err != nil || id == nil || id.Subject != tc.subject {
					t.Fatalf("identity %+v, err %v; want %s", id, err, tc.subject)
				}
				return
			}
			if id != nil || reasonOf(t, err) != tc.reason {
				t.Fatalf("identity %+v, err %v; want refused (%s)", id, err, tc.reason)
			}
		})
	}
}

// A jwks_url may carry its credential (user:pass@, or a key in the query);
// the failure reported on /readyz and in the refresh log must not repeat it.
func TestJWKSURLCredentialsNotRepeated(t *testing.T) {
	const secret, apiKey = "s3cretPASS", "KEYxyz123"
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(failing.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close() // refuses connections: the client's own error names the URL
	for name, base := range map[string]string{"503": failing.URL, "unreachable": closed.URL} {
		t.Run(name, func(t *testing.T) {
			var logs strings.Builder
			u := strings.Replace(base, "http://", "http://ops:"+secret+"@", 1) + "/jwks.json?api_key=" + apiKey
			v, err := identity.New(identity.Config{
				Issuers:   []identity.IssuerConfig{{Issuer: testIssuer, JWKSURL: u}},
				Audiences: []string{testAudience},
			}, identity.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			if err != nil {
				t.Fatal(err)
			}
			v.Refresh(context.Background())
			ready := v.Ready()
			if ready == nil {
				t.Fatal("ready without keys")
			}
			for what, text := range map[string]string{"readiness": ready.Error(), "log": logs.String()} {
				if strings.Contains(text, secret) || strings.Contains(text, apiKey) {
					t.Errorf("%s repeats the jwks_url credential: %s", what, text)
				}
			}
			if !strings.Contains(logs.String(), "api_key=REDACTED") {
				t.Errorf("log does not name the key set:\n%s", logs.String())
			}
		})
	}
}
