package decisionlog

import (
	"context"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// maskForms masks in as plain Go values and as the AST value the check
// path hands the logger, and returns both records, each with its
// encoding.
func maskForms(t *testing.T, in map[string]any) map[string]struct {
	rec    *Record
	logged string
} {
	t.Helper()
	v, err := ast.InterfaceToValue(in)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]struct {
		rec    *Record
		logged string
	}{}
	for name, form := range map[string]any{"plain": in, "ast": v} {
		rec := &Record{}
		newMasker(Defaults()).mask(context.Background(), rec, form, nil)
		b, err := rec.appendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = struct {
			rec    *Record
			logged string
		}{rec, string(b)}
	}
	return out
}

// A query value may itself be a URL or a query, as OAuth's redirect_uri
// and the next, return_to and continue of sign-in and password-reset flows
// are: the credentials in it are logged no more than those of the request
// itself. Such a value is masked whole, at every level of encoding the
// value arrives in, in the path, the URI headers and parsed_query; other
// values are kept byte for byte.
func TestMaskingNestedURLsInQueryValues(t *testing.T) {
	path := "/catalog/shoes?redirect_uri=https://x/?access_token=SECRET-A&next=/cb%3Fcode%3DSECRET-B" +
		"&back=%252Fcb%253Ftoken%253DSECRET-C&implicit=https%3A%2F%2Fx%2Fcb%23access_token%3DSECRET-D&page=2&q=a%3Fb"
	in := map[string]any{
		"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"path": path, "headers": map[string]any{":path": path, "x-envoy-original-url": "https://shop.example/a?token=SECRET-E"},
		}}},
		"parsed_query": map[string]any{
			"redirect_uri": []any{"https://x/?access_token=SECRET-A"},
			"next":         []any{"/cb?code=SECRET-B"},
			"page":         []any{"2"},
		},
	}
	rec, logged := maskDefaults(t, in)
	if strings.Contains(logged, "SECRET") {
		t.Fatalf("a credential nested in a query value logged in clear: %s", logged)
	}
	const want = "/catalog/shoes?redirect_uri=***&next=***&back=***&implicit=***&page=2&q=a%3Fb"
	http := lookup(rec.Input, "attributes", "request", "http")
	for _, got := range []any{lookup(http, "path"), lookup(http, "headers", ":path")} {
		if got != want {
			t.Errorf("logged %v, want %s", got, want)
		}
	}
	if got := lookup(http, "headers", "x-envoy-original-url"); got != "https://shop.example/a?token=***" {
		t.Errorf("x-envoy-original-url logged %v", got)
	}
	if got := lookup(rec.Input, "parsed_query", "page"); len(got.([]any)) != 1 || got.([]any)[0] != "2" {
		t.Errorf("parsed_query page logged %v, want [2]", got)
	}
}

// Token claims are logged with the same test as header and parameter
// names: a claim named as a credential (api_key, refresh_token, an OIDC
// sid) has its value masked, at any depth of the claims; others are kept.
func TestMaskingSecretClaims(t *testing.T) {
	in := map[string]any{"identity": map[string]any{
		"sub": "alice",
		"claims": map[string]any{
			"sub": "alice", "api_key": "SECRET-K", "refresh_token": "SECRET-R", "sid": "SECRET-S",
			"ext":   map[string]any{"client_secret": "SECRET-N", "tenant": "acme"},
			"roles": []any{"customer"},
		},
	}}
	rec, logged := maskDefaults(t, in)
	if strings.Contains(logged, "SECRET") {
		t.Fatalf("a credential claim logged in clear: %s", logged)
	}
	claims := lookup(rec.Input, "identity", "claims")
	if lookup(claims, "sub") != "alice" || lookup(claims, "ext", "tenant") != "acme" || lookup(claims, "api_key") != MaskedValue {
		t.Errorf("claims logged as %v", claims)
	}
}

// The check path hands the logger the input as OPA's AST, which masking
// turns into Go values only along the objects it reads: claims and
// parsed_query's values are masked in that form too, nested credentials
// in bare queries and in a URL's user information included.
func TestMaskingNestedAndClaimsInTheCheckPathsForm(t *testing.T) {
	for name, got := range maskForms(t, map[string]any{
		"identity": map[string]any{"sub": "alice", "claims": map[string]any{
			"sub": "alice", "api_key": "SECRET-K", "refresh_token": "SECRET-R", "sid": "SECRET-S",
			"ext": map[string]any{"client_secret": "SECRET-N", "tenant": "acme"},
		}},
		"parsed_query": map[string]any{
			"next":         []any{"/cb?code=SECRET-Q"},
			"redirect_uri": []any{"https://x/?access_token=SECRET-A"},
			"bare":         []any{"access_token=SECRET-B"},
			"login":        []any{"https://admin:SECRET-P@host.example/x"},
			"page":         []any{"2"},
		},
		"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"path": "/a?bare=access_token%3DSECRET-C&login=https%3A%2F%2Fadmin%3ASECRET-D%40h%2F&page=2",
		}}},
	}) {
		t.Run(name, func(t *testing.T) {
			if strings.Contains(got.logged, "SECRET") {
				t.Fatalf("logged in clear: %s", got.logged)
			}
			for _, want := range []string{`"tenant":"acme"`, `"page":["2"]`, `page=2`} {
				if !strings.Contains(got.logged, want) {
					t.Errorf("%s not kept: %s", want, got.logged)
				}
			}
		})
	}
}
