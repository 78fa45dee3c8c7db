package authz_test

import (
	"context"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// A JSON object that repeats a key (compared as decoded) is refused
// before policy with 400 malformed_request, the refusal naming the key and
// where it is: Go keeps the last of the values and drops the others
// before policy sees the body, and an upstream whose parser keeps the
// first runs another request than the one judged. It is the same for a
// body override: with parse_body off (the body not refused, as a
// malformed one is not), and for a JSON body read only for overrides, a
// repeated key makes the override unreadable, so the POST is decided as
// every method an override may name.
func TestRepeatedJSONKeysAreRefused(t *testing.T) {
	ctx := context.Background()
	const every = "POST,GET,HEAD,PUT,PATCH,DELETE,OPTIONS"
	jsonType := map[string]string{"content-type": "application/json"}
	for _, tc := range []struct {
		name      string
		headers   map[string]string
		body      string
		parseOff  bool
		refusal   string // the 400's body names this, when refused
		wantAllow string // else the methods policy sees
	}{
		{name: "top-level override", headers: jsonType, body: `{"_method":"DELETE","_method":"POST"}`, refusal: `repeats the key "_method"`},
		{name: "nested object", headers: jsonType, body: `{"query":"q","variables":{"input":{"c":1,"d":[],"c":2}}}`, refusal: `$.variables.input repeats the key "c"`},
		{name: "object in an array", headers: jsonType, body: `[{"a":1},{"query":"x","\u0071uery":"y"}]`, refusal: `$[1] repeats the key "query"`},
		{name: "a +json type", headers: map[string]string{"content-type": "application/vnd.api+json; charset=utf-8"}, body: `{"data":{"id":"1","id":"2"}}`,
			refusal: `$.data repeats the key "id"`},
		{name: "a key no name can spell", headers: jsonType, body: `{"a":{"x-y":{"":1,"":2}}}`, refusal: `$.a["x-y"] repeats the key ""`},
		{name: "unpaired surrogate", headers: jsonType, body: `{"a\udc00b":1}`, refusal: `unpaired surrogate`},
		{name: "NUL", headers: jsonType, body: `{"_method\u0000":"DELETE"}`, refusal: `NUL`},
		{name: "invalid UTF-8", headers: jsonType, body: "{\"_method\xc0\":\"DELETE\"}", refusal: `not UTF-8`},
		{name: "invalid UTF-8 in a value", headers: jsonType, body: "{\"a\":\"x\xffy\"}", refusal: `not UTF-8 at byte 7`},
		{name: "an unpaired surrogate in a value", headers: jsonType, body: `{"_method":"DELETE","note":"\ud83d"}`, wantAllow: "POST,DELETE"},
		{name: "repeated key with parse_body off", headers: jsonType, body: `{"_method":"DELETE","_method":"POST"}`, parseOff: true, wantAllow: every},
		{name: "JSON read for overrides alone", headers: map[string]string{"content-type": "text/json"}, body: `{"_method":"DELETE","_method":"POST"}`, wantAllow: every},
		// A policy reading parsed_body.query sees "{ catalog }"; an
		// upstream decoding into a struct (Go's encoding/json, ASP.NET's
		// System.Text.Json, Newtonsoft) runs the last of the two.
		{name: "a key in another letter case", headers: jsonType, body: `{"query":"{ catalog }","Query":"mutation { deleteCustomer }"}`,
			refusal: `has the keys "query" and "Query"`},
		{name: "an override in another letter case", headers: jsonType, body: `{"_method":"DELETE","_Method":"PATCH"}`, refusal: `has the keys "_method" and "_Method"`},
		{name: "keys apart", headers: jsonType, body: `{"_method":"DELETE","x":{"_method":"PUT"},"y":{"_Method":"PATCH"}}`, wantAllow: "POST,DELETE"},
		{name: "keys apart, parse_body off", headers: jsonType, body: `{"_method":"DELETE"}`, parseOff: true, wantAllow: "POST,DELETE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []authz.Option{authz.WithQuery("data.t.decision")}
			if tc.parseOff {
				opts = append(opts, authz.WithBodyParsing(false))
			}
			p := authz.New(engineFor(t, "data.t.decision", methodsPolicy, nil), opts...)
			req := checkRequest(t, httpRequest("POST", "/a", tc.headers, ""))
			req.Attributes.Request.Http.Body = tc.body // as sent: not UTF-8 in one case
			resp := p.Check(ctx, req)
			if tc.refusal == "" {
				if !resp.Allowed || resp.Reason != tc.wantAllow {
					t.Fatalf("allowed %v (%s %s), want methods %s", resp.Allowed, resp.Reason, resp.Body, tc.wantAllow)
				}
				return
			}
			if resp.Allowed || resp.HTTPStatus != 400 || resp.Reason != authz.ReasonMalformedRequest {
				t.Fatalf("allowed %v %d %s, want 400 %s", resp.Allowed, resp.HTTPStatus, resp.Reason, authz.ReasonMalformedRequest)
			}
			if !strings.HasPrefix(resp.Body, "body: ") || !strings.Contains(resp.Body, tc.refusal) {
				t.Errorf("refusal %q does not say %q", resp.Body, tc.refusal)
			}
		})
	}
}
