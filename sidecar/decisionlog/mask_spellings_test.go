package decisionlog

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// A credential parameter is masked in every spelling an upstream reads as
// it: PHP reads "access.token", "access token" and "access_token[]" as
// $_GET['access_token'] (Rack the last too), and older Python and Java
// frameworks split pairs on ";".
func TestQueryCredentialsMaskedInEverySpelling(t *testing.T) {
	m := newMasker(Config{MaskQueryParams: []string{"access_token"}})
	for _, q := range []string{
		"access_token=SECRET1", "ACCESS_TOKEN=SECRET1", "access%5Ftoken=SECRET1",
		"access.token=SECRET1", "access+token=SECRET1", "access_token[]=SECRET1",
		"access_token[0]=SECRET1", "a=1;access_token=SECRET1", "%20access_token=SECRET1",
	} {
		out, changed := m.maskQuery("/api?"+q, false)
		if strings.Contains(out, "SECRET1") || !changed {
			t.Errorf("query %q logged as %q", q, out)
		}
	}
	if out, changed := m.maskQuery("/api?a=1;b=2&access_level=x", false); changed || out != "/api?a=1;b=2&access_level=x" {
		t.Errorf("a query without credentials changed: %q", out)
	}
	for _, k := range []string{"access_token", "access.token", "access token", " access_token", "access_token[]", "access[token"} {
		rec := &Record{}
		m.mask(context.Background(), rec, map[string]any{"parsed_query": map[string]any{k: []any{"SECRET3"}}}, nil)
		b, err := json.Marshal(rec.Input)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "SECRET3") {
			t.Errorf("parsed_query key %q logged as %s", k, b)
		}
	}
}

// A name is matched as sent and as an upstream may read it: percent
// escapes decoded (once, or again for a doubly encoded name) and NUL and
// other control characters dropped, as sanitizers do. A header name may
// hold "%" (it is a token character), a query name may be decoded twice,
// and parsed_query and header_map keys are matched the same way.
func TestNamesMaskedDecoded(t *testing.T) {
	names := []string{"tok%00en", "tok%65n", "access%5Ftoken", "a%3Bkey", "x%2Dkey", "api%5Fkey", "tok\x00en",
		"%6Bey", "pass%77ord", "sess%00ion", "tok%2500en", "ke%00y", "x%00key", "TOK%45N", "au%74h"}
	for _, n := range names {
		for where, in := range map[string]map[string]any{
			"header":       httpInput(map[string]any{"path": "/", "headers": map[string]any{n: "SECRETX"}}),
			"query":        httpInput(map[string]any{"path": "/a?" + n + "=SECRETX"}),
			"envoy query":  httpInput(map[string]any{"path": "/a", "query": n + "=SECRETX"}),
			"path param":   httpInput(map[string]any{"path": "/a;" + n + "=SECRETX/b"}),
			"parsed_query": {"parsed_query": map[string]any{n: []any{"SECRETX"}}},
			"header_map": httpInput(map[string]any{"path": "/", "headerMap": map[string]any{"headers": []any{
				map[string]any{"key": n, "value": "SECRETX"}}}}),
		} {
			if _, out := maskDefaults(t, in); strings.Contains(out, "SECRETX") {
				t.Errorf("%s named %q logged: %s", where, n, out)
			}
		}
	}
	// Decoding finds no credential where there is none.
	for _, n := range []string{"page%20size", "x%2Dsides", "keyb%6Fard", "q%00", "%zz", "mon%6Bey"} {
		in := httpInput(map[string]any{"path": "/", "headers": map[string]any{n: "VISIBLE"}})
		if _, out := maskDefaults(t, in); !strings.Contains(out, "VISIBLE") {
			t.Errorf("header %q masked: %s", n, out)
		}
	}
}

func httpInput(http map[string]any) map[string]any {
	return map[string]any{"attributes": map[string]any{"request": map[string]any{"http": http}}}
}
