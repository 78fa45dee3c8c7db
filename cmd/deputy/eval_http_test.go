package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// httpCheckPolicy denies with what the HTTP check's settings change: the
// path decided, the methods the request may run as, whether its body was
// cut and whether it was parsed. Asked to (x-allow: yes), it allows on
// setting a header only http.envoy_upstream_headers lets through.
const httpCheckPolicy = `package deputy.authz

_seen := {
	"path": input.deputy.request.path,
	"methods": input.deputy.request.methods,
	"truncated": object.get(input, "truncated_body", null),
	"parsed": "parsed_body" in object.keys(input),
}

decision := {"allowed": true, "reason": "asked", "headers": {"x-extra": "1"}} if {
	input.attributes.request.http.headers["x-allow"] == "yes"
} else := {"allowed": false, "http_status": 403, "reason": "seen", "body": json.marshal(_seen)}
`

// httpCheckSettings are the http.* settings that do not shape what Envoy's
// http_service endpoint decides, and why; every other one needs a case in
// TestEvalDecidesHTTPAsServe.
var httpCheckSettings = map[string]string{
	"http.addr":             "the listener",
	"http.read_timeout":     "the listener",
	"http.idle_timeout":     "the listener",
	"http.max_connections":  "the listener",
	"http.max_header_bytes": "the listener: a request over it is answered 431 before any check",
	"http.check_path":       "the forwarded endpoint of nginx, Caddy and Traefik; eval decides as Envoy's http_service",
	"http.check_proxy":      "the forwarded endpoint of nginx, Caddy and Traefik; eval decides as Envoy's http_service",
}

// `deputy eval` decides a plain HTTP request as serve's HTTP check
// decides it, under every http.* setting that shapes the check: both
// build the handler with httpChecks. Each case is a request whose decision
// the setting changes, sent to a running server and given to eval with
// the same config file; the policy echoes what it was shown.
func TestEvalDecidesHTTPAsServe(t *testing.T) {
	form := "note=" + strings.Repeat("x", 9000) + "&_method=PUT"
	longJSON := `{"note": "` + strings.Repeat("x", 9000) + `"}`
	allHeaders := `["x-deputy-*", "cache-control", "x-on-behalf-of", "x-extra"]`
	cases := []struct {
		name    string
		setting string // the http.* setting the case shows; "" for defaults
		config  string // YAML, for serve and eval alike
		method  string
		path    string // as the client sends it; Envoy adds path_prefix
		headers map[string]string
		body    string
	}{
		{name: "a JSON body past 8 KiB is cut, and known to be", method: "POST", path: "/orders",
			headers: map[string]string{"content-type": "application/json"}, body: longJSON},
		{name: "a form past 8 KiB is cut, so decided as every method", method: "POST", path: "/orders",
			headers: map[string]string{"content-type": "application/x-www-form-urlencoded"}, body: form},
		{name: "max_body_bytes reads the form whole, _method and all", setting: "http.max_body_bytes",
			config: "http:\n  max_body_bytes: 65536\n", method: "POST", path: "/orders",
			headers: map[string]string{"content-type": "application/x-www-form-urlencoded"}, body: form},
		{name: "path_prefix is stripped", setting: "http.path_prefix", config: "http:\n  path_prefix: /authz\n",
			method: "GET", path: "/orders/1"},
		{name: "a header Envoy does not copy upstream refuses the allow", method: "GET", path: "/orders",
			headers: map[string]string{"x-allow": "yes"}},
		{name: "envoy_upstream_headers naming it lets the allow through", setting: "http.envoy_upstream_headers",
			config: "http:\n  envoy_upstream_headers: " + allHeaders + "\n", method: "GET", path: "/orders",
			headers: map[string]string{"x-allow": "yes"}},
	}

	covered := map[string]bool{}
	for _, tc := range cases {
		covered[tc.setting] = true
	}
	for _, s := range settings(defaultConfig()) {
		if strings.HasPrefix(s.path, "http.") && !s.section && !covered[s.path] && httpCheckSettings[s.path] == "" {
			t.Errorf("%s: no case shows eval deciding as serve under it; add one, or say in httpCheckSettings why it does not shape a check", s.path)
		}
	}

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "authz.rego"), []byte(httpCheckPolicy))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "deputy.yaml")
			writeFile(t, file, []byte("dev: true\n"+tc.config))
			cfg := testConfig(t, dir, func(c *Config) {
				if err := loadYAMLFile(file, c, nil); err != nil {
					t.Fatal(err)
				}
			})
			runServer(t, &cfg)
			waitListening(t, cfg.HTTP.Addr)

			req, err := http.NewRequest(tc.method, "http://"+cfg.HTTP.Addr+cfg.HTTP.PathPrefix+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			servedBody, _ := io.ReadAll(resp.Body)
			resp.Body.Close()

			input, _ := json.Marshal(map[string]any{"method": tc.method, "path": tc.path, "host": "localhost", "headers": tc.headers, "body": tc.body})
			in := filepath.Join(t.TempDir(), "request.json")
			writeFile(t, in, input)
			var out bytes.Buffer
			if err := runEval(context.Background(), evalFlags{policies: []string{dir}, config: file, input: in, asJSON: true}, &out); err != nil {
				t.Fatalf("eval: %v", err)
			}
			var evald struct {
				Allowed bool   `json:"allowed"`
				Status  int    `json:"http_status"`
				Reason  string `json:"reason"`
				Body    string `json:"body"`
			}
			if err := json.Unmarshal(out.Bytes(), &evald); err != nil {
				t.Fatalf("eval output: %v\n%s", err, out.String())
			}
			t.Logf("serve: %d %s; eval: %+v", resp.StatusCode, servedBody, evald)
			if evald.Status != resp.StatusCode || evald.Allowed != (resp.StatusCode == http.StatusOK) || evald.Body != string(servedBody) {
				t.Fatalf("serve answered %d %s; eval decided allowed=%v %d %q (%s)", resp.StatusCode, servedBody, evald.Allowed, evald.Status, evald.Body, evald.Reason)
			}
		})
	}
}

// A length the HTTP description states without its body is kept, as
// Envoy's http_service sends the client's when it forwards no body: the
// request is decided as the CheckRequest Envoy's gRPC check sends then,
// as a body that may carry a method override.
func TestEvalKeepsStatedLength(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "authz.rego"), []byte(httpCheckPolicy))
	headers := map[string]string{"content-type": "application/x-www-form-urlencoded", "content-length": "9000"}
	decide := func(input any) string {
		t.Helper()
		raw, _ := json.Marshal(input)
		in := filepath.Join(t.TempDir(), "request.json")
		writeFile(t, in, raw)
		var out bytes.Buffer
		if err := runEval(context.Background(), evalFlags{policies: []string{dir}, input: in, asJSON: true}, &out); err != nil {
			t.Fatalf("eval: %v", err)
		}
		var evald struct{ Body string }
		if err := json.Unmarshal(out.Bytes(), &evald); err != nil {
			t.Fatal(err)
		}
		return evald.Body
	}
	described := decide(map[string]any{"method": "POST", "path": "/orders", "headers": headers})
	checked := decide(map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
		"method": "POST", "path": "/orders", "host": "localhost", "protocol": "HTTP/1.1", "headers": headers}}}})
	if described != checked || !strings.Contains(described, `"DELETE"`) {
		t.Fatalf("described: %s; as a CheckRequest: %s; want both decided as every method", described, checked)
	}
}
