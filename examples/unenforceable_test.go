package examples_test

import (
	"net/http"
	"testing"
)

// nginx auth_request and Caddy forward_auth carry out of an allow only the
// headers their shipped configs copy by name: Deputy's delegated identity
// and cache-control. A policy that allows on condition of another change
// to the request (a header removed, set or added to the response, a query
// parameter removed or set) would have it dropped without a word, and the
// application would get the client's values: such an allow is refused
// (result_not_enforceable). What the configs do apply still goes through.
func TestUnenforceableResultsAreRefused(t *testing.T) {
	dir := policyDir(t, "scrub", `package scrub

decision := {"allowed": true, "request_headers_to_remove": ["x-user-role", "authorization"]} if {
	input.deputy.request.path == "/catalog/remove-header"
} else := {"allowed": true, "headers": {"x-user-id": "anonymous"}} if {
	input.deputy.request.path == "/catalog/set-header"
} else := {"allowed": true, "query_parameters_to_remove": ["admin"]} if {
	input.deputy.request.path == "/catalog/remove-query"
} else := {"allowed": true, "query_parameters_to_set": {"admin": "0"}} if {
	input.deputy.request.path == "/catalog/set-query"
} else := {"allowed": true, "response_headers_to_add": {"x-frame-options": "DENY"}} if {
	input.deputy.request.path == "/catalog/response-header"
} else := {"allowed": true, "headers": {"cache-control": "no-cache"}, "response_headers_to_add": {"cache-control": "private, no-store"}} if {
	input.deputy.request.path == "/catalog/cache"
} else := data.deputy.authz.decision
`)
	client := http.Header{"X-User-Role": {"admin"}, "X-User-Id": {"victim-42"}}
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputyWith(t, px.name, dir, "data.scrub.decision")
			app := startUpstream(t)
			url := px.start(t, d, app)
			for _, path := range []string{"/catalog/remove-header", "/catalog/set-header", "/catalog/remove-query", "/catalog/set-query", "/catalog/response-header"} {
				resp, body := call(t, "GET", url+path+"?admin=1", client, nil)
				rec := d.decisionFor(t, path)
				if rec.Result != "deny" || rec.Reason != "result_not_enforceable" {
					t.Errorf("%s: logged %s (%s), want deny (result_not_enforceable)", path, rec.Result, rec.Reason)
				}
				if resp.StatusCode != http.StatusForbidden || resp.Header.Get("x-upstream") != "" {
					t.Errorf("%s: client got %d from %q, want 403 from Deputy; body %.80s", path, resp.StatusCode, resp.Header.Get("x-upstream"), body)
				}
			}
			if n := app.count(); n != 0 {
				t.Errorf("the application served %d requests whose conditions it never saw", n)
			}
			resp, body := call(t, "GET", url+"/catalog/cache", client, nil)
			s := decodeSeen(t, resp, body)
			if s.Headers.Get("Cache-Control") != "no-cache" || resp.Header.Get("Cache-Control") != "private, no-store" {
				t.Errorf("cache-control upstream %q, to the client %q", s.Headers.Get("Cache-Control"), resp.Header.Get("Cache-Control"))
			}
		})
	}
}
