package decisionlog

import (
	"net/url"

	"github.com/open-policy-agent/opa/v1/ast"
	"strings"
	"testing"
)

// jsonValues are query values that hold a credential in JSON, as OAuth's
// state and sign-in flows' return data often do, each with the
// credential written SECRET, in the spellings an upstream's JSON reader
// (or a lenient one) reads as the same object.
var jsonValues = map[string]string{
	"raw":                       `{"access_token":"SECRET"}`,
	"percent-encoded":           `%7B%22access_token%22%3A%22SECRET%22%7D`,
	"doubly percent-encoded":    url.QueryEscape(url.QueryEscape(`{"access_token":"SECRET"}`)),
	"plus for space":            `{+"access_token"+:+"SECRET"+}`,
	"encoded whitespace":        `%7B%0A%20%22access_token%22%20%3A%09%22SECRET%22%7D`,
	"nested object and array":   `{"a":{"b":[1,{"refresh_token":"SECRET"}]}}`,
	"array of objects":          `[{"client_secret":"SECRET"}]`,
	"unicode escape":            `{"\u0061ccess_token":"SECRET"}`,
	"unicode escaped word":      `{"\u0070wd":"SECRET"}`,
	"a configured name":         `{"code":"SECRET"}`,
	"a secret-named object":     `{"credentials":{"user":"alice","p":"SECRET"}}`,
	"a URL in a string":         `{"return":"https://x.example/cb?access_token=SECRET"}`,
	"an encoded URL":            `{"return":"https%3A%2F%2Fx.example%2Fcb%3Ftoken%3DSECRET"}`,
	"JSON in a string":          `{"inner":"{\"api_key\":\"SECRET\"}"}`,
	"JSON in JSON in a string":  `{"a":"{\"b\":\"{\\\"access_token\\\":\\\"SECRET\\\"}\"}"}`,
	"a URL in JSON in a string": `{"a":"{\"b\":\"https://x.example/cb?token=SECRET\"}"}`,
	"a name and its value":      `["access_token","SECRET"]`,
	"name and value pairs":      `[["page","2"],["access_token","SECRET"]]`,
	"a bearer credential":       `{"h":"Bearer SECRET"}`,
	"after a prefix":            `v1.{"access_token":"SECRET"}`,
	"second of two":             `{"a":1}{"token":"SECRET"}`,
	"unquoted names":            `{access_token:'SECRET'}`,
	"cut short":                 `{"step":2,"access_token":"SECRET"`,
	"too deep":                  strings.Repeat("[", 200) + `"SECRET"` + strings.Repeat("]", 200),
	"too long":                  `{"note":"` + strings.Repeat("x", 64<<10) + `SECRET"}`,
}

// A query value that is JSON is read as JSON: a credential-named key at
// any depth, or a string holding a URL, query or JSON with a credential
// of its own, masks the value whole, in the path, Envoy's query, the URI
// headers and parsed_query, in Go values and in the check path's AST.
// A value too long or too deep to read is masked whole, never logged.
func TestMaskingJSONQueryValues(t *testing.T) {
	for name, raw := range jsonValues {
		t.Run(name, func(t *testing.T) {
			decoded, err := url.QueryUnescape(raw)
			if err != nil {
				t.Fatal(err)
			}
			path := "/cb?state=" + raw + "&page=2"
			for form, got := range maskForms(t, map[string]any{
				"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
					"path": path, "query": "state=" + raw + "&page=2",
					"headers": map[string]any{":path": path, "x-envoy-original-url": "https://shop.example" + path},
				}}},
				"parsed_query": map[string]any{"state": []any{decoded}, "page": []any{"2"}},
			}) {
				if strings.Contains(got.logged, "SECRET") {
					t.Fatalf("%s: logged in clear: %.400s", form, got.logged)
				}
				http := lookup(got.rec.Input, "attributes", "request", "http")
				for _, f := range []any{lookup(http, "path"), lookup(http, "headers", ":path")} {
					if f != "/cb?state=***&page=2" {
						t.Errorf("%s: logged %.200v", form, f)
					}
				}
				if q := lookup(http, "query"); q != "state=***&page=2" {
					t.Errorf("%s: query logged %.200v", form, q)
				}
				if s := values(t, lookup(got.rec.Input, "parsed_query", "state")); len(s) != 1 || s[0] != MaskedValue {
					t.Errorf("%s: parsed_query state logged %.200v", form, s)
				}
			}
		})
	}
}

// JSON without a credential is logged as sent: masking reads names, not
// every word of every value.
func TestMaskingKeepsJSONWithoutCredentials(t *testing.T) {
	for _, raw := range []string{
		`{"step":2,"lang":"en","return":"/orders?page=2"}`,
		`%7B%22step%22%3A2%7D`,
		`[1,2,3]`,
		`{"q":"reset my password"}`,
		`{"left":3}x`,
		`[draft]`,
		`{"a":"{\"b\":1}"}`,
		`{"a":"{\"b\":\"en\"}"}`,
		`{"fields":["email","password"]}`,
		`{"h":"Bearer of bad news"}`,
	} {
		t.Run(raw, func(t *testing.T) {
			decoded, err := url.QueryUnescape(raw)
			if err != nil {
				t.Fatal(err)
			}
			path := "/cb?state=" + raw + "&page=2"
			for form, got := range maskForms(t, map[string]any{
				"attributes":   map[string]any{"request": map[string]any{"http": map[string]any{"path": path}}},
				"parsed_query": map[string]any{"state": []any{decoded}},
			}) {
				http := lookup(got.rec.Input, "attributes", "request", "http")
				if p := lookup(http, "path"); p != path {
					t.Errorf("%s: logged %v, want %s", form, p, path)
				}
				if s := values(t, lookup(got.rec.Input, "parsed_query", "state")); len(s) != 1 || s[0] != decoded {
					t.Errorf("%s: parsed_query logged %v, want %s", form, s, decoded)
				}
			}
		})
	}
}

// values is a parsed_query entry as logged: Go values, or the check
// path's AST array when masking left it as it was.
func values(t *testing.T, v any) []any {
	t.Helper()
	if arr, ok := v.(*ast.Array); ok {
		plain, err := plainValue(arr)
		if err != nil {
			t.Fatal(err)
		}
		v = plain
	}
	list, _ := v.([]any)
	return list
}

// A pair without "=" whose name reads as a credential is masked whole:
// its name is all it has, and may hold the credential itself (a JSON
// value cut at a raw "&" or ";", token:SECRET). A value that is a piece
// of JSON so cut is read as words.
func TestMaskingPairsWithoutValue(t *testing.T) {
	for _, q := range []string{
		`state={"x":"a&b","access_token":"SECRET"}`,
		`state={"x":"a;b","pwd":"SECRET"}`,
		`token:SECRET`,
		`state={"x":"a&b=c","pwd":"SECRET"}`,
		`state={"x":"a&b=c","pwd":"SECRET","y":"d&e=f"}`,
		`state={"x":"a&b=c","pwd":"SECRET","y":{"z":1}}`,
		`state={"x":"a&b=c","y":{"z":1},"pwd":"SECRET"}`,
	} {
		t.Run(q, func(t *testing.T) {
			for form, got := range maskForms(t, httpInput(map[string]any{"path": "/cb?" + q + "&page=2"})) {
				if strings.Contains(got.logged, "SECRET") {
					t.Errorf("%s: logged in clear: %s", form, got.logged)
				}
				if !strings.Contains(got.logged, "page=2") {
					t.Errorf("%s: page lost: %s", form, got.logged)
				}
			}
		})
	}
}

// A query value that is a bearer credential, as an Authorization header
// carries it, is masked whole under any name; text that starts with the
// word is kept.
func TestMaskingBearerValues(t *testing.T) {
	for q, masked := range map[string]bool{
		"h=Bearer+SECRET":          true,
		"h=bearer%20SECRET":        true,
		"h=Bearer%2520SECRET":      true,
		"q=Bearer+of+bad+news":     false,
		"q=Bearer":                 false,
		"q=Bearers%20are%20common": false,
		// Servers trim a header value, and a value may be quoted or
		// carry the header's name.
		"h=Bearer+SECRET+":                                             true,
		"h=%09Bearer%09SECRET%09":                                      true,
		"h=%22Bearer+SECRET%22":                                        true,
		"h=Authorization:+Bearer+SECRET":                               true,
		"h=DPoP+SECRET":                                                true,
		"s=" + url.QueryEscape(`{"h":"Bearer SECRET "}`):               true,
		"s=" + url.QueryEscape(`"\"Bearer SECRET\""`):                  true,
		"s=" + url.QueryEscape(`{"h":"\"Bearer SECRET\""}`):            true,
		"s=" + url.QueryEscape(`{"h":"Authorization: Bearer SECRET"}`): true,
		"q=%22Bearer+of+bad+news%22":                                   false,
	} {
		path := "/cb?" + q + "&page=2"
		for form, got := range maskForms(t, httpInput(map[string]any{"path": path})) {
			p := lookup(got.rec.Input, "attributes", "request", "http", "path")
			if masked && (strings.Contains(got.logged, "SECRET") || !strings.Contains(got.logged, "page=2")) {
				t.Errorf("%s: %s logged as %v", form, q, p)
			}
			if !masked && p != path {
				t.Errorf("%s: %s logged as %v", form, q, p)
			}
		}
	}
}

// A query value nested past the levels masking reads is masked whole when
// it may still hold a credential, and kept when it cannot.
func TestMaskingPastTheNestingRead(t *testing.T) {
	deep := "https://c.example/cb?token=SECRET"
	for value, masked := range map[string]bool{
		"https://a.example/?r=" + url.QueryEscape("https://b.example/?u="+url.QueryEscape(deep)): true,
		"https://a.example/?r=" + url.QueryEscape("https://b.example/?u=en"):                     false,
	} {
		path := "/login?next=" + url.QueryEscape(value) + "&page=2"
		for form, got := range maskForms(t, httpInput(map[string]any{"path": path})) {
			p := lookup(got.rec.Input, "attributes", "request", "http", "path")
			if masked && p != "/login?next=***&page=2" || !masked && p != path {
				t.Errorf("%s: %s logged as %v", form, value, p)
			}
		}
	}
}
