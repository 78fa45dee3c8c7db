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
	m := newMasker(Config{MaskQueryParams: []string{"access_token"}}, nil)
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
		m.mask(context.Background(), rec, map[string]any{"parsed_query": map[string]any{k: []any{"SECRET3"}}})
		b, err := json.Marshal(rec.Input)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "SECRET3") {
			t.Errorf("parsed_query key %q logged as %s", k, b)
		}
	}
}
