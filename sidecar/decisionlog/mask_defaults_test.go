package decisionlog

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// The default masking covers the headers and query parameters that
// commonly carry credentials, not only authorization and cookies: API
// keys, session and CSRF tokens, temporary cloud credentials, OAuth
// tokens and client secrets.
func TestDefaultMaskingCoversCredentialCarriers(t *testing.T) {
	m := newMasker(Defaults())
	headers := map[string]any{"x-request-id": "r-1"}
	for _, h := range []string{"x-api-key", "X-Auth-Token", "x-csrf-token", "x_xsrf_token", "x-amz-security-token"} {
		headers[h] = "SECRET-" + h
	}
	var query []string
	parsed := map[string]any{"page": []any{"2"}}
	for _, p := range []string{"client_secret", "refresh_token", "access_token", "id_token", "api_key", "apikey", "secret", "token", "client.secret"} {
		query = append(query, p+"=SECRET-"+p)
		parsed[p] = []any{"SECRET-" + p}
	}
	path := "/api?page=2&" + strings.Join(query, "&")
	in := map[string]any{
		"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"path": path, "headers": headers,
		}}},
		"parsed_query": parsed,
	}
	rec := &Record{}
	m.mask(context.Background(), rec, in, nil)
	b, err := json.Marshal(rec.Input)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "SECRET-") {
		t.Errorf("credentials logged: %s", b)
	}
	for _, kept := range []string{`"x-request-id":"r-1"`, `page=2`, `"page":["2"]`} {
		if !strings.Contains(string(b), kept) {
			t.Errorf("harmless %s lost: %s", kept, b)
		}
	}
}

// A credential carrier is masked whatever the operator's mask lists say:
// with mask_query_params set empty, the query carrier still is, and the
// header carrier in any case and "_" spelling.
func TestCarriersMaskedWithEmptyLists(t *testing.T) {
	m := newMasker(Config{MaskQueryParams: []string{}})
	m.addCarriers([]string{"X_User"}, []string{"T"})
	in := map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
		"path": "/a?t=SECRET-q&page=2", "headers": map[string]any{"x-user": "SECRET-h", "X_USER": "SECRET-h2", "x-other": "kept"},
	}}}, "parsed_query": map[string]any{"t": []any{"SECRET-p"}, "page": []any{"2"}}}
	rec := &Record{}
	m.mask(context.Background(), rec, in, nil)
	b, _ := json.Marshal(rec.Input)
	if s := string(b); strings.Contains(s, "SECRET-") || !strings.Contains(s, "page=2") || !strings.Contains(s, `"x-other":"kept"`) {
		t.Errorf("carriers logged, or other values lost: %s", s)
	}
}
