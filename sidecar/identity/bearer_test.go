package identity_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// A bearer token in a form Deputy did not read ("Bearer<TAB>tok") was
// "another scheme": no identity, no refusal, while Rails (/^Bearer\s+/),
// Django REST framework (split()) and Laravel (the text after the last
// "Bearer ", up to a comma) read the token from the same header and sign
// the request in as its holder. Every value naming "bearer" (or Rails'
// "Token" scheme) that is not exactly "Bearer", one space and a token is
// refused as malformed, under every spelling of the configured header.
func TestBearerCredentialForms(t *testing.T) {
	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := dev.Mint(identity.DevClaims{Subject: "mallory", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, value string
		want        string // the subject; "" for no identity and no refusal
		refused     bool
	}{
		{name: "one space", value: "Bearer " + tok, want: "mallory"},
		{name: "scheme in lower case", value: "bearer " + tok, want: "mallory"},
		{name: "scheme in upper case", value: "BEARER " + tok, want: "mallory"},
		{name: "white space around the value", value: " \tBearer " + tok + "\t ", want: "mallory"},
		{name: "basic", value: "Basic bWFsbG9yeTpzZWNyZXQ="},
		{name: "negotiate", value: "Negotiate YIIGhgYJKoZIhvcSAQICAQBuggZ1MIIGcaADAgEFoQMCAQ6iBwMFACAAAACjggS"},
		{name: "digest", value: `Digest username="mallory", realm="shop", nonce="dcd98b", uri="/", response="6629fae4"`},
		{name: "a scheme beginning like token", value: "Tokenized abc"},
		{name: "basic whose last word is not a JWS", value: "Basic eyJhbGciOiJIUzI1NiJ9"},
		{name: "a scheme with a word of two parts", value: "Custom eyJhbGciOiJIUzI1NiJ9.e30"},

		{name: "tab", value: "Bearer\t" + tok, refused: true},
		{name: "tab, lower case", value: "bearer\t" + tok, refused: true},
		{name: "no-break space", value: "Bearer\u00a0" + tok, refused: true},
		{name: "ideographic space", value: "Bearer\u3000" + tok, refused: true},
		{name: "line feed", value: "Bearer\n" + tok, refused: true},
		{name: "vertical tab", value: "Bearer\v" + tok, refused: true},
		{name: "two spaces", value: "Bearer  " + tok, refused: true},
		{name: "space and tab", value: "Bearer \t" + tok, refused: true},
		{name: "colon", value: "bearer:" + tok, refused: true},
		{name: "equals", value: "Bearer=" + tok, refused: true},
		{name: "no separator", value: "Bearer" + tok, refused: true},
		{name: "scheme alone", value: "Bearer", refused: true},
		{name: "comma after the token", value: "Bearer " + tok + ",x", refused: true},
		{name: "comma and space after the token", value: "Bearer " + tok + ", Basic eA==", refused: true},
		{name: "a word after the token", value: "Bearer " + tok + " x", refused: true},
		{name: "tab and a word after the token", value: "Bearer " + tok + "\tx", refused: true},
		{name: "two tokens", value: "Bearer " + tok + ",Bearer " + tok, refused: true},
		{name: "bearer after another scheme", value: "Basic bWFsbG9yeTpzZWNyZXQ=, Bearer " + tok, refused: true},
		{name: "bearer inside another credential", value: "Negotiate xBearer " + tok, refused: true},
		{name: "token scheme", value: "Token " + tok, refused: true},
		{name: "token scheme with a tab", value: "token\t" + tok, refused: true},
		{name: "token scheme with options", value: `Token token="` + tok + `"`, refused: true},

		// A compact JWS with no "Bearer": Go's strings.TrimPrefix(h,
		// "Bearer ") and passport-jwt's fromHeader read the bare token,
		// passport-jwt's "JWT" scheme and simplejwt's AUTH_HEADER_TYPES
		// read "JWT <token>".
		{name: "bare token", value: tok, refused: true},
		{name: "bare token, white space around", value: "\t " + tok + " ", refused: true},
		{name: "JWT scheme", value: "JWT " + tok, refused: true},
		{name: "JWT scheme, lower case and a tab", value: "jwt\t" + tok, refused: true},
		{name: "JWT scheme, colon", value: "JWT:" + tok, refused: true},
		{name: "another scheme and a token", value: "Custom " + tok, refused: true},
		{name: "a token after a comma", value: "Basic bWFsbG9yeTpzZWNyZXQ=," + tok, refused: true},
		{name: "JWT scheme, token=", value: "JWT token=" + tok, refused: true},
		{name: "a token after a no-break space", value: "JWT\u00a0" + tok, refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, configured := range []string{"authorization", "x-auth-token"} {
				v := devVerifierHeader(t, dev, configured)
				reqs := map[string]*sidecar.Request{
					"headers":    {Headers: map[string]string{configured: tc.value}},
					"header_map": {HeaderMap: []sidecar.HeaderField{{Name: "X-Auth_Token", Value: tc.value}}},
				}
				if configured == "authorization" {
					reqs["header_map"] = &sidecar.Request{HeaderMap: []sidecar.HeaderField{{Name: "Authorization", Value: tc.value}}}
				} else {
					reqs["underscore spelling"] = &sidecar.Request{Headers: map[string]string{"x_auth_token": tc.value}}
				}
				for form, r := range reqs {
					id, err := v.Verify(context.Background(), r)
					var se *sidecar.Error
					switch {
					case tc.refused && (!errors.As(err, &se) || se.Reason != identity.ReasonMalformed || id != nil):
						t.Errorf("%s in %s: identity %v, error %v; want refused as %s", configured, form, id, err, identity.ReasonMalformed)
					case !tc.refused && err != nil:
						t.Errorf("%s in %s: refused: %v", configured, form, err)
					case !tc.refused && tc.want == "" && id != nil:
						t.Errorf("%s in %s: identity %s from another scheme", configured, form, id.Subject)
					case !tc.refused && tc.want != "" && (id == nil || id.Subject != tc.want):
						t.Errorf("%s in %s: identity %v, want %s", configured, form, id, tc.want)
					}
				}
			}
		})
	}
}

// devVerifierHeader is a verifier of dev's tokens read from header.
func devVerifierHeader(t *testing.T, dev *identity.DevIssuer, header string) *identity.Verifier {
	t.Helper()
	v, err := identity.New(identity.Config{Header: header, Dev: identity.DevConfig{Enabled: true}, Audiences: []string{testAudience}}, identity.WithDevIssuer(dev))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}
