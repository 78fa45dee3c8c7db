package identity_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// jwe is a compact JWE, five parts, its protected header starting "eyJ";
// with key management "dir" its second part is empty.
func jwe(t testing.TB, alg jose.KeyAlgorithm, key any) string {
	t.Helper()
	enc, err := jose.NewEncrypter(jose.A128GCM, jose.Recipient{Algorithm: alg, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := enc.Encrypt([]byte(`{"sub":"mallory"}`))
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A JWT in a form Deputy did not read as a credential was "another
// scheme", while an upstream reads it and signs the request in as its
// holder: the session cookie beside it was honoured. PyJWT (simplejwt,
// djangorestframework-jwt, Flask-JWT: "JWT <token>") pads each part and
// decodes it with Python's lenient base64, which takes padding, the
// standard alphabet's "+" and "/", and drops other bytes (white space,
// quotes) in fours; the signature is not part of the signed input, so any
// such spelling of it still verifies. Nor was a compact JWE (five parts)
// seen, nor a JWT as a Basic credential's user or password (API key as
// user name; an OAuth client secret, form-encoded before Basic). Each is a
// bearer credential now, refused as malformed.
func TestLenientTokenForms(t *testing.T) {
	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := dev.Mint(identity.DevClaims{Subject: "mallory", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	h, p, s := parts[0], parts[1], parts[2]
	std := strings.NewReplacer("-", "+", "_", "/")
	dir := jwe(t, jose.DIRECT, make([]byte, 16))
	wrapped := jwe(t, jose.A128KW, make([]byte, 16))
	basic := func(userPass string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(userPass)) }
	b64 := base64.StdEncoding.EncodeToString([]byte("apikey:" + tok))
	pct := func(s string) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			b.WriteString("%" + strings.ToUpper(hexByte(s[i])))
		}
		return b.String()
	}
	for _, tc := range []struct {
		name, value string
		refused     bool
	}{
		{name: "the exact form, for comparison", value: "Bearer " + tok},
		{name: "basic, a user and a password", value: basic("mallory:secret")},
		{name: "basic, a password with a percent", value: basic("mallory:50%off")},
		{name: "basic, a user of two parts", value: basic("eyJhbGciOiJIUzI1NiJ9.e30:pw")},
		{name: "basic, a JWT's header alone", value: basic(h + ":")},
		{name: "negotiate, eyJ without dots", value: "Negotiate YIIeyJhbGciOiJIUzI1NiJ9eyJzdWIiOiJtIn0"},

		{name: "JWT scheme, padded signature", value: "JWT " + tok + "=", refused: true},
		{name: "JWT scheme, two pads", value: "JWT " + tok + "==", refused: true},
		{name: "JWT scheme, three pads", value: "JWT " + tok + "===", refused: true},
		{name: "bare, padded", value: tok + "=", refused: true},
		{name: "padded header", value: "JWT " + h + "==." + p + "." + s, refused: true},
		{name: "padded payload", value: "JWT " + h + "." + p + "=." + s, refused: true},
		{name: "standard alphabet", value: "JWT " + h + "." + p + "." + std.Replace(s) + "+/", refused: true},
		{name: "standard alphabet, padded", value: std.Replace(tok) + "+/==", refused: true},
		{name: "white space inside the signature", value: "JWT " + h + "." + p + "." + s[:8] + "    " + s[8:], refused: true},
		{name: "quotes after the token", value: "JWT " + tok + `""""`, refused: true},
		{name: "other bytes after the token", value: "JWT " + tok + "!!!!", refused: true},
		{name: "a token in quotes", value: `JWT "` + tok + `"`, refused: true},
		{name: "a token as a quoted parameter", value: `JWT token="` + tok + `", realm="shop"`, refused: true},
		{name: "a word of two parts after the token", value: "JWT " + tok + " x.y", refused: true},
		{name: "a token before another credential", value: tok + ", Basic eA==", refused: true},

		{name: "JWE, JWT scheme", value: "JWT " + wrapped, refused: true},
		{name: "JWE, bare", value: wrapped, refused: true},
		{name: "JWE with an empty key part", value: "JWT " + dir, refused: true},
		{name: "JWE, padded", value: "JWT " + wrapped + "==", refused: true},

		{name: "basic, token as user", value: basic(tok + ":"), refused: true},
		{name: "basic, token as password", value: basic(":" + tok), refused: true},
		{name: "basic, token as a named user's password", value: basic("mallory:" + tok), refused: true},
		{name: "basic, lower case, two spaces", value: "basic  " + base64.StdEncoding.EncodeToString([]byte(tok+":")), refused: true},
		{name: "basic, unpadded", value: "Basic " + base64.RawStdEncoding.EncodeToString([]byte(tok+":x")), refused: true},
		{name: "basic, URL-safe alphabet", value: "Basic " + base64.URLEncoding.EncodeToString([]byte("\xfb\xff:"+tok)), refused: true},
		{name: "basic, token padded", value: basic(tok + "==:"), refused: true},
		{name: "basic, JWE", value: basic(wrapped + ":"), refused: true},
		{name: "basic, token percent-encoded", value: basic(pct(tok) + ":"), refused: true},
		{name: "basic, token's dots percent-encoded", value: basic("client:" + strings.ReplaceAll(tok, ".", "%2E")), refused: true},
		{name: "basic, token after a comma", value: "Basic eA==, Basic " + base64.StdEncoding.EncodeToString([]byte(tok+":")), refused: true},
		// PHP's base64_decode (Symfony's PHP_AUTH_PW, so Laravel) and
		// werkzeug's b64decode decode all that follows "Basic ", dropping
		// every byte outside the standard alphabet: a space, a comma, "-"
		// or "_" put into the encoding is skipped by them.
		{name: "basic, a space inside the encoding", value: "Basic " + b64[:8] + " " + b64[8:], refused: true},
		{name: "basic, a comma inside the encoding", value: "Basic " + b64[:8] + "," + b64[8:], refused: true},
		{name: "basic, a dash inside the encoding", value: "Basic " + b64[:40] + "-" + b64[40:], refused: true},
		{name: "basic, an underscore inside the encoding", value: "Basic " + b64[:40] + "_" + b64[40:], refused: true},
		{name: "basic, tabs and quotes inside the encoding", value: "Basic \"" + b64[:12] + "\t" + b64[12:30] + "\"" + b64[30:], refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, configured := range []string{"authorization", "x-auth-token"} {
				v := devVerifierHeader(t, dev, configured)
				id, err := v.Verify(context.Background(), &sidecar.Request{Headers: map[string]string{configured: tc.value}})
				var se *sidecar.Error
				switch {
				case tc.refused && (!errors.As(err, &se) || se.Reason != identity.ReasonMalformed || id != nil):
					t.Errorf("%s: identity %v, error %v; want refused as %s", configured, id, err, identity.ReasonMalformed)
				case !tc.refused && err != nil:
					t.Errorf("%s: refused: %v", configured, err)
				}
			}
		})
	}
}

func hexByte(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&15]})
}

// LooksLikeJWS is the form an upstream may read a JWT in, wider than a
// strict parser's: a header and a second part as an issuer wrote them
// (the header, and a JWS's payload, are signed as sent), then anything.
func TestLooksLikeJWS(t *testing.T) {
	const h, p, s = "eyJhbGciOiJFUzI1NiJ9", "eyJzdWIiOiJtIn0", "c2lnbmF0dXJl"
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{h + "." + p + "." + s, true},
		{h + "." + p + ".", true},
		{h + "." + p + "." + s + "=", true},
		{h + "=." + p + "==." + s + "===", true},
		{h + "." + p + ".ab+/cd==", true},
		{h + "." + p + "." + s + `""""`, true},
		{h + "." + p + ".ab  cd", true},
		{h + ".." + s + "." + s + "." + s, true}, // JWE, key management "dir"
		{h + "." + s + "." + s + "." + s + "." + s, true},
		{h + "." + p + "." + s + ".", true},

		{"", false},
		{"eyJ", false},
		{h, false},
		{h + "." + p, false},
		{"abc." + p + "." + s, false},
		{`"` + h + "." + p + "." + s + `"`, false},
		{"Bearer " + h + "." + p + "." + s, false},
		{" " + h + "." + p + "." + s, false},
		{"eyJhb Gci." + p + "." + s, false},
		{h + ":." + p + "." + s, false},
		{h + "." + p + ":x." + s, false},
	} {
		if got := identity.LooksLikeJWS(tc.s); got != tc.want {
			t.Errorf("LooksLikeJWS(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}
