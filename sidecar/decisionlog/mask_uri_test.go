package decisionlog

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

// The URL overrides the check refuses (x-original-url, x-rewrite-url;
// ingress-nginx sends X-Original-URL with the query) and the headers
// proxies pass the client's URI on in carry the query's credentials: they
// are masked there as in the path, in headers and header_map alike, and
// the rest of the URI is kept.
func TestMaskingURIHeaders(t *testing.T) {
	o := sidecar.URLOverrideHeaders()
	names := append(o[:], "X-Original-URL", "x_rewrite_url", "x-forwarded-url", "x-request-uri", "request-uri")
	const uri = "https://shop.example/cb?access_token=SECRET-Q&code=SECRET-C&page=2"
	headers := map[string]any{}
	var entries []any
	for _, h := range names {
		headers[h] = uri
		entries = append(entries,
			map[string]any{"key": h, "value": uri},
			map[string]any{"key": h, "rawValue": base64.StdEncoding.EncodeToString([]byte(uri))})
	}
	in := map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
		"path": "/", "headers": headers, "headerMap": map[string]any{"headers": entries},
	}}}}
	rec, logged := maskDefaults(t, in)
	raw := base64.StdEncoding.EncodeToString([]byte(uri))
	if strings.Contains(logged, "SECRET") || strings.Contains(logged, raw) {
		t.Errorf("credential in a URI header logged in clear: %s", logged)
	}
	const want = "https://shop.example/cb?access_token=***\u0026code=***\u0026page=2"
	for _, h := range names {
		if got := lookup(rec.Input, "attributes", "request", "http", "headers", h); got != want {
			t.Errorf("header %s logged as %v, want %s", h, got, want)
		}
	}
	if len(rec.Masked) != 3*len(names) {
		t.Errorf("masked %d pointers, want %d: %v", len(rec.Masked), 3*len(names), rec.Masked)
	}
}

// Servlet containers read the session from a path parameter
// (/app;jsessionid=...): credential path parameters are masked in the
// path, the URI headers and the referer, query or not, and other path
// parameters are kept byte for byte.
func TestMaskingPathParameters(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"/app;jsessionid=SECRET-A?x=1", "/app;jsessionid=***?x=1"},
		{"/app;JSESSIONID=SECRET-A", "/app;JSESSIONID=***"},
		{"/a;v=2/b;token=SECRET-B;lang=en/c", "/a;v=2/b;token=***;lang=en/c"},
		{"/a;%74oken=SECRET-C?sig=SECRET-D&page=1", "/a;%74oken=***?sig=***&page=1"},
		{"/files;v=2/doc;type=pdf?x=1", "/files;v=2/doc;type=pdf?x=1"},
		{"/a;jsessionid/b;key=", "/a;jsessionid/b;key=***"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			in := map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
				"path": tc.path, "headers": map[string]any{":path": tc.path, "referer": "https://shop.example" + tc.path},
			}}}}
			rec, _ := maskDefaults(t, in)
			http := lookup(rec.Input, "attributes", "request", "http")
			for _, got := range []any{lookup(http, "path"), lookup(http, "headers", ":path")} {
				if got != tc.want {
					t.Errorf("logged %v, want %s", got, tc.want)
				}
			}
			if got := lookup(http, "headers", "referer"); got != "https://shop.example"+tc.want {
				t.Errorf("referer logged %v, want https://shop.example%s", got, tc.want)
			}
		})
	}
}
