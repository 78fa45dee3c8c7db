package authz_test

import (
	"context"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// A header under another spelling of one the policy reads by name is
// refused: Envoy and Caddy forward "x_tenant" beside "x-tenant", and CGI,
// PHP and WSGI read both as HTTP_X_TENANT (one of the two values, or
// both), while the policy reads headers["x-tenant"] alone, or nothing at
// all when only "x_tenant" is sent. A policy reading the headers whole
// sees every name as sent and is not guarded.
func TestHeaderSpellingsThePolicyDoesNotSeeAreRefused(t *testing.T) {
	const (
		readsDash       = "package t\n\ndecision := {\"allowed\": true, \"reason\": r} if r := input.attributes.request.http.headers[\"x-tenant\"]\n\telse := {\"allowed\": true, \"reason\": \"none\"}\n"
		readsUnderscore = "package t\n\ndecision := {\"allowed\": true, \"reason\": r} if r := input.attributes.request.http.headers[\"x_tenant\"]\n\telse := {\"allowed\": true, \"reason\": \"none\"}\n"
		readsAlias      = "package t\n\ndecision := {\"allowed\": true, \"reason\": r} if {\n\thttp_request := input.attributes.request.http\n\tr := http_request.headers[\"x-tenant\"]\n} else := {\"allowed\": true, \"reason\": \"none\"}\n"
		readsGet        = "package t\n\ndecision := {\"allowed\": true, \"reason\": object.get(input.attributes.request.http.headers, \"x-tenant\", \"none\")}\n"
		readsWhole      = "package t\n\ndecision := {\"allowed\": true, \"reason\": concat(\",\", sort([k | some k, _ in input.attributes.request.http.headers; startswith(k, \"x\")]))}\n"
	)
	for _, tc := range []struct {
		name, policy string
		headers      map[string]string
		headerMap    bool   // sent as Envoy's encode_raw_headers sends them
		refusal      string // the 400 names this, when refused
		wantReason   string // else the policy's answer
	}{
		{name: "both spellings", policy: readsDash, headers: map[string]string{"x-tenant": "good", "x_tenant": "evil"}, refusal: `x_tenant: header read as "x-tenant"`},
		{name: "the other spelling alone", policy: readsDash, headers: map[string]string{"x_tenant": "evil"}, refusal: `x_tenant: header read as "x-tenant"`},
		{name: "the other spelling in upper case", policy: readsDash, headers: map[string]string{"X_Tenant": "evil"}, refusal: `x_tenant: header read as "x-tenant"`},
		{name: "a policy reading the underscore name", policy: readsUnderscore, headers: map[string]string{"x-tenant": "evil"}, refusal: `x-tenant: header read as "x_tenant"`},
		// OPA-Envoy's idiom: the request's http through a local variable.
		{name: "a policy reading through a variable", policy: readsAlias, headers: map[string]string{"x-tenant": "good", "x_tenant": "evil"}, refusal: `x_tenant: header read as "x-tenant"`},
		{name: "a policy reading with object.get", policy: readsGet, headers: map[string]string{"x-tenant": "good", "x_tenant": "evil"}, refusal: `x_tenant: header read as "x-tenant"`},
		{name: "the name itself, with object.get", policy: readsGet, headers: map[string]string{"x-tenant": "good"}, wantReason: "good"},
		{name: "the name itself, through a variable", policy: readsAlias, headers: map[string]string{"x-tenant": "good"}, wantReason: "good"},
		{name: "the name itself", policy: readsDash, headers: map[string]string{"x-tenant": "good", "x_other": "1"}, wantReason: "good"},
		{name: "not sent", policy: readsDash, headers: map[string]string{"x_other": "1"}, wantReason: "none"},
		{name: "a policy reading the headers whole", policy: readsWhole, headers: map[string]string{"x-tenant": "good", "x_tenant": "evil"}, wantReason: "x-tenant,x_tenant"},
		// Envoy's encode_raw_headers sends every header in header_map and
		// none in headers: a policy reading headers["x-tenant"] would see
		// nothing of what the upstream gets.
		{name: "header_map", policy: readsDash, headers: map[string]string{"x-tenant": "evil"}, headerMap: true,
			refusal: `x-tenant: header sent in header_map (encode_raw_headers), while the policy reads headers["x-tenant"]`},
		{name: "header_map, another spelling", policy: readsDash, headers: map[string]string{"X_Tenant": "evil"}, headerMap: true,
			refusal: `X_Tenant: header sent in header_map`},
		{name: "header_map, other names", policy: readsDash, headers: map[string]string{"x-other": "1"}, headerMap: true, wantReason: "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := authz.New(engineFor(t, "data.t.decision", tc.policy, nil), authz.WithQuery("data.t.decision"))
			build := httpRequest
			if tc.headerMap {
				build = headerMapRequest
			}
			resp := p.Check(context.Background(), checkRequest(t, build("GET", "/a", tc.headers, "")))
			answeredAs(t, resp, tc.refusal, tc.wantReason)
		})
	}
}

// answeredAs holds resp to an allow with reason wantReason when refusal is
// empty, else to a 400 malformed_request whose body holds refusal.
func answeredAs(t *testing.T, resp *authz.Response, refusal, wantReason string) {
	t.Helper()
	if refusal == "" {
		if !resp.Allowed || resp.Reason != wantReason {
			t.Fatalf("allowed %v (%s %s), want allowed with %q", resp.Allowed, resp.Reason, resp.Body, wantReason)
		}
		return
	}
	if resp.Allowed || resp.HTTPStatus != 400 || resp.Reason != authz.ReasonMalformedRequest {
		t.Fatalf("allowed %v %d %s (%s), want 400 %s", resp.Allowed, resp.HTTPStatus, resp.Reason, resp.Body, authz.ReasonMalformedRequest)
	}
	if !strings.Contains(resp.Body, refusal) {
		t.Errorf("refusal %q does not say %q", resp.Body, refusal)
	}
}
