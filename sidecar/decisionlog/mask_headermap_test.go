package decisionlog_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// headerMapInput is a request as Envoy sends it with encode_raw_headers:
// the headers in header_map, values as value or as base64 rawValue.
func headerMapInput() map[string]any {
	return map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
		"method": "GET",
		"path":   "/catalog/x",
		"headers": map[string]any{
			"proxy_authorization": "Basic hdr-s3cret",
			"accept":              "text/html",
		},
		"headerMap": map[string]any{"headers": []any{
			map[string]any{"key": "authorization", "rawValue": b64("Bearer bearer-s3cret")},
			map[string]any{"key": "Cookie", "value": "deputy_session=cookie-s3cret"},
			map[string]any{"key": "X_Deputy_Token", "rawValue": b64("actor-s3cret")},
			map[string]any{"key": ":path", "rawValue": b64("/cb?state=keep-me&code=c0de-s3cret")},
			map[string]any{"key": "referer", "value": "https://idp.example/a?id_token=id-s3cret&client_id=shop"},
			map[string]any{"key": "accept-language", "rawValue": b64("fr-keep")},
		}},
	}}}}
}

// Envoy with encode_raw_headers sends the headers in header_map: the
// credentials there are masked by the same names (any case, "_" read as
// "-") as in headers, in value and in base64 rawValue alike, and so are the
// credential query parameters of its URI headers.
func TestHeaderMapSecretsAreMasked(t *testing.T) {
	plain := headerMapInput()
	value, err := ast.InterfaceToValue(headerMapInput())
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]any{"plain input": plain, "AST input": value} {
		t.Run(name, func(t *testing.T) {
			var out lines
			l := startLogger(t, testConfig(), decisionlog.NewWriterSink(&out))
			l.Log(impersonationDecision("hm", in))
			if err := l.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			recs := out.records(t)
			if len(recs) != 1 {
				t.Fatalf("%d records", len(recs))
			}
			b, _ := json.Marshal(recs[0])
			for _, s := range []string{"hdr-s3cret", "bearer-s3cret", "cookie-s3cret", "actor-s3cret", "c0de-s3cret", "id-s3cret"} {
				if strings.Contains(string(b), s) {
					t.Errorf("credential %q reached the sink", s)
				}
			}
			for _, s := range []string{b64("Bearer bearer-s3cret"), b64("deputy_session=cookie-s3cret"), b64("actor-s3cret"), b64("/cb?state=keep-me&code=c0de-s3cret")} {
				if strings.Contains(string(b), s) {
					t.Errorf("credential reached the sink base64-encoded: %s", s)
				}
			}
			for _, s := range []string{b64("fr-keep"), "client_id=shop", b64("/cb?state=keep-me&code=***"), `"X_Deputy_Token"`, "text/html"} {
				if !strings.Contains(string(b), s) {
					t.Errorf("%q lost: masking went too far: %s", s, b)
				}
			}
			erased, masked := fmt.Sprint(recs[0]["erased"]), fmt.Sprint(recs[0]["masked"])
			for _, p := range []string{"/headers/proxy_authorization", "/headerMap/headers/0/rawValue", "/headerMap/headers/1/value", "/headerMap/headers/2/rawValue"} {
				if !strings.Contains(erased, p) {
					t.Errorf("erased %s does not list %s", erased, p)
				}
			}
			for _, p := range []string{"/headerMap/headers/3/rawValue", "/headerMap/headers/4/value"} {
				if !strings.Contains(masked, p) {
					t.Errorf("masked %s does not list %s", masked, p)
				}
			}
		})
	}
}
