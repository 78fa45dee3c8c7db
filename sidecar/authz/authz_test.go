package authz_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// engineFor compiles Rego source into an active engine.
func engineFor(t testing.TB, query, src string, data map[string]any) *policy.Engine {
	t.Helper()
	mod, err := ast.ParseModuleWithOpts("policy.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatalf("parse policy: %v", err)
	}
	e := policy.New(policy.WithQueries(query), policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err := e.Activate(context.Background(), &policy.Set{Modules: map[string]*ast.Module{"policy.rego": mod}, Data: data}); err != nil {
		t.Fatalf("activate: %v", err)
	}
	return e
}

func checkRequest(t testing.TB, js string) *authv3.CheckRequest {
	t.Helper()
	var req authv3.CheckRequest
	if err := protojson.Unmarshal([]byte(js), &req); err != nil {
		t.Fatalf("request: %v", err)
	}
	return &req
}

type compatCase struct {
	Request              json.RawMessage `json:"request"`
	Allowed              bool            `json:"allowed"`
	Status               int             `json:"status"`
	Body                 string          `json:"body"`
	Headers              [][2]string     `json:"headers"`
	HeadersToRemove      []string        `json:"headers_to_remove"`
	ResponseHeadersToAdd [][2]string     `json:"response_headers_to_add"`
	QueryToSet           [][2]string     `json:"query_parameters_to_set"`
	QueryToRemove        []string        `json:"query_parameters_to_remove"`
	DynamicMetadata      map[string]any  `json:"dynamic_metadata"`
}

func pairs(hs []authz.Header) [][2]string {
	var out [][2]string
	for _, h := range hs {
		out = append(out, [2]string{h.Key, h.Value})
	}
	return out
}

// TestOPAEnvoyPolicies runs policies written for OPA-Envoy, unchanged, at
// their own query path, and checks the responses OPA-Envoy would give.
func TestOPAEnvoyPolicies(t *testing.T) {
	files, err := filepath.Glob("testdata/opa_envoy/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no compatibility fixtures: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var fx struct {
			Name   string       `json:"name"`
			Query  string       `json:"query"`
			Policy string       `json:"policy"`
			Cases  []compatCase `json:"cases"`
		}
		if err := json.Unmarshal(raw, &fx); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
			p := authz.New(engineFor(t, fx.Query, fx.Policy, nil), authz.WithQuery(fx.Query))
			for i, tc := range fx.Cases {
				resp := p.Check(context.Background(), checkRequest(t, string(tc.Request)))
				if resp.Allowed != tc.Allowed {
					t.Fatalf("case %d (%s): allowed = %v, want %v (reason %s)", i, fx.Name, resp.Allowed, tc.Allowed, resp.Reason)
				}
				if !tc.Allowed && resp.HTTPStatus != tc.Status {
					t.Errorf("case %d: status = %d, want %d", i, resp.HTTPStatus, tc.Status)
				}
				if tc.Body != "" && resp.Body != tc.Body {
					t.Errorf("case %d: body = %q, want %q", i, resp.Body, tc.Body)
				}
				if tc.Headers != nil && !reflect.DeepEqual(pairs(resp.Headers), tc.Headers) {
					t.Errorf("case %d: headers = %v, want %v", i, pairs(resp.Headers), tc.Headers)
				}
				if tc.HeadersToRemove != nil && !reflect.DeepEqual(resp.HeadersToRemove, tc.HeadersToRemove) {
					t.Errorf("case %d: headers to remove = %v, want %v", i, resp.HeadersToRemove, tc.HeadersToRemove)
				}
				if tc.ResponseHeadersToAdd != nil && !reflect.DeepEqual(pairs(resp.ResponseHeadersToAdd), tc.ResponseHeadersToAdd) {
					t.Errorf("case %d: response headers = %v, want %v", i, pairs(resp.ResponseHeadersToAdd), tc.ResponseHeadersToAdd)
				}
				if tc.QueryToSet != nil && !reflect.DeepEqual(pairs(resp.QueryParamsToSet), tc.QueryToSet) {
					t.Errorf("case %d: query to set = %v, want %v", i, pairs(resp.QueryParamsToSet), tc.QueryToSet)
				}
				if tc.QueryToRemove != nil && !reflect.DeepEqual(resp.QueryParamsToRemove, tc.QueryToRemove) {
					t.Errorf("case %d: query to remove = %v, want %v", i, resp.QueryParamsToRemove, tc.QueryToRemove)
				}
				for k, v := range tc.DynamicMetadata {
					if resp.DynamicMetadata[k] != v {
						t.Errorf("case %d: dynamic metadata %s = %v, want %v", i, k, resp.DynamicMetadata[k], v)
					}
				}
				if len(resp.DecisionID) != 32 {
					t.Errorf("case %d: decision id %q", i, resp.DecisionID)
				}
			}
		})
	}
}

const echoPolicy = `package t

import rego.v1

default decision := {"allowed": false, "reason": "no"}

decision := {"allowed": true, "reason": "ok", "headers": {"x-app": "1"}} if {
	input.attributes.request.http.method == "GET"
	not _sees_owned
}

# True if any owned header reached policy.
_sees_owned if {
	some name, _ in input.attributes.request.http.headers
	startswith(lower(name), "x-deputy-")
}
`

type delegationFunc func() (*sidecar.Delegation, error)

func (f delegationFunc) Resolve(context.Context, *sidecar.Request, *sidecar.Identity) (*sidecar.Delegation, error) {
	return f()
}

type signer struct{}

func (signer) Sign(d *sidecar.Delegation) (string, error) { return "signed-for-" + d.Subject, nil }

type logSink struct{ got []*sidecar.Decision }

func (l *logSink) Log(d *sidecar.Decision) { l.got = append(l.got, d) }

func TestOwnedHeadersNeverReachPolicyOrUpstream(t *testing.T) {
	e := engineFor(t, "data.t.decision", echoPolicy, nil)
	for name, header := range map[string]string{
		"lower case":   "x-deputy-actor",
		"mixed case":   "X-Deputy-Actor",
		"upper case":   "X-DEPUTY-SUBJECT",
		"actor token":  "x-deputy-token",
		"other header": "x-deputy-anything",
	} {
		t.Run(name, func(t *testing.T) {
			p := authz.New(e, authz.WithQuery("data.t.decision"))
			req := checkRequest(t, `{"attributes":{"request":{"http":{"method":"GET","path":"/","headers":{"`+header+`":"forged","x-app":"0"}}}}}`)
			resp := p.Check(context.Background(), req)
			if !resp.Allowed {
				t.Fatalf("policy saw an owned header or denied: %s", resp.Reason)
			}
			found := false
			for _, h := range resp.HeadersToRemove {
				if h == strings.ToLower(header) {
					found = true
				}
			}
			if !found {
				t.Errorf("forged %s not removed upstream: %v", header, resp.HeadersToRemove)
			}
		})
	}
}

func TestDelegatedHeadersAreInjectedAndWin(t *testing.T) {
	e := engineFor(t, "data.t.decision", echoPolicy, nil)
	del := &sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "s1", Actor: "staff-1", Subject: "cust-9", SubjectName: "Zoë Müller & Co", StoreView: "en"}
	logs := &logSink{}
	p := authz.New(e, authz.WithQuery("data.t.decision"),
		authz.WithResolvers(delegationFunc(func() (*sidecar.Delegation, error) { return del, nil })),
		authz.WithActorTokenSigner(signer{}),
		authz.WithDecisionLogger(logs))
	req := checkRequest(t, `{"attributes":{"request":{"http":{"method":"GET","path":"/","headers":{"x-deputy-subject":"someone-else","x-deputy-level":"full_admin"}}}}}`)
	resp := p.Check(context.Background(), req)
	if !resp.Allowed {
		t.Fatalf("denied: %s", resp.Reason)
	}
	want := map[string]string{
		"x-deputy-subject": "cust-9", "x-deputy-actor": "staff-1", "x-deputy-mode": "impersonation",
		"x-deputy-session": "s1", "x-deputy-store-view": "en", "x-deputy-token": "signed-for-cust-9",
		"x-deputy-subject-name": "Zo%C3%AB%20M%C3%BCller%20&%20Co",
	}
	got := map[string]string{}
	for _, h := range resp.Injected {
		got[h.Key] = h.Value
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("injected = %v, want %v", got, want)
	}
	if !reflect.DeepEqual(resp.HeadersToRemove, []string{"x-deputy-level"}) {
		t.Errorf("headers to remove = %v: the forged level must go, the overwritten subject must not be removed", resp.HeadersToRemove)
	}
	if len(logs.got) != 1 || logs.got[0].Delegation != del || !logs.got[0].Allowed {
		t.Errorf("decision log = %+v", logs.got)
	}
}

func TestDenials(t *testing.T) {
	ctx := context.Background()
	get := `{"attributes":{"request":{"http":{"method":"GET","path":"/a"}}}}`
	cases := []struct {
		name       string
		policy     string
		opts       []authz.Option
		request    string
		wantStatus int
		wantReason string
		allowed    bool
	}{
		{name: "undefined decision", policy: "package t\n", wantStatus: 403, wantReason: authz.ReasonUndefined, request: get},
		{name: "undefined with configured status", policy: "package t\n", opts: []authz.Option{authz.WithErrorStatus(500)}, wantStatus: 500, wantReason: authz.ReasonUndefined, request: get},
		{name: "conflicting values", policy: "package t\n\ndecision := true\n\ndecision := false if true\n", wantStatus: 403, wantReason: authz.ReasonEvalError, request: get},
		{name: "string result", policy: "package t\n\ndecision := \"yes\"\n", wantStatus: 403, wantReason: authz.ReasonInvalidDecision, request: get},
		{name: "object without allowed", policy: "package t\n\ndecision := {\"ok\": true}\n", wantStatus: 403, wantReason: authz.ReasonInvalidDecision, request: get},
		{name: "allowed not boolean", policy: "package t\n\ndecision := {\"allowed\": \"true\"}\n", wantStatus: 403, wantReason: authz.ReasonInvalidDecision, request: get},
		{name: "bad status", policy: "package t\n\ndecision := {\"allowed\": false, \"http_status\": 999}\n", wantStatus: 403, wantReason: authz.ReasonInvalidDecision, request: get},
		// nginx auth_request, Caddy forward_auth and Traefik forwardAuth
		// let any 2xx through: a denial carrying one would reach the app.
		{name: "denial with 200", policy: "package t\n\ndecision := {\"allowed\": false, \"http_status\": 200, \"reason\": \"suspended\"}\n", wantStatus: 403, wantReason: authz.ReasonInvalidDecision, request: get},
		{name: "denial with 204", policy: "package t\n\ndecision := {\"allowed\": false, \"http_status\": 204}\n", wantStatus: 500, wantReason: authz.ReasonInvalidDecision, request: get,
			opts: []authz.Option{authz.WithErrorStatus(500)}},
		{name: "denial with 101", policy: "package t\n\ndecision := {\"allowed\": false, \"http_status\": 101}\n", wantStatus: 403, wantReason: authz.ReasonInvalidDecision, request: get},
		{name: "denial with 304", policy: "package t\n\ndecision := {\"allowed\": false, \"http_status\": 304}\n", wantStatus: 403, wantReason: authz.ReasonInvalidDecision, request: get},
		{name: "denial redirecting to login", policy: "package t\n\ndecision := {\"allowed\": false, \"http_status\": 302, \"headers\": {\"location\": \"/login\"}, \"reason\": \"login\"}\n", wantStatus: 302, wantReason: "login", request: get},
		{name: "status on an allow is not the answer", policy: "package t\n\ndecision := {\"allowed\": true, \"http_status\": 204}\n", allowed: true, request: get},
		{name: "bad header value", policy: "package t\n\ndecision := {\"allowed\": true, \"headers\": {\"a\": 1}}\n", wantStatus: 403, wantReason: authz.ReasonInvalidDecision, request: get},
		{name: "bad header value in a list", policy: "package t\n\ndecision := {\"allowed\": true, \"headers\": {\"a\": [\"x\", 1]}}\n", wantStatus: 403, wantReason: authz.ReasonInvalidDecision, request: get},
		{name: "bad header value in a list of objects", policy: "package t\n\ndecision := {\"allowed\": true, \"response_headers_to_add\": [{\"a\": \"x\"}, {\"b\": {}}]}\n", wantStatus: 403, wantReason: authz.ReasonInvalidDecision, request: get},
		{name: "headers list holding a string", policy: "package t\n\ndecision := {\"allowed\": true, \"headers\": [{\"a\": \"x\"}, \"b\"]}\n", wantStatus: 403, wantReason: authz.ReasonInvalidDecision, request: get},
		{name: "header name not a string", policy: "package t\n\ndecision := {\"allowed\": true, \"headers\": {1: \"x\"}}\n", wantStatus: 403, wantReason: authz.ReasonInvalidDecision, request: get},
		{name: "policy status and reason", policy: "package t\n\ndecision := {\"allowed\": false, \"http_status\": 429, \"reason\": \"slow_down\"}\n", wantStatus: 429, wantReason: "slow_down", request: get},
		{name: "malformed JSON body", policy: "package t\n\ndecision := true\n", wantStatus: 400, wantReason: authz.ReasonMalformedRequest,
			request: `{"attributes":{"request":{"http":{"method":"POST","path":"/a","headers":{"content-type":"application/json"},"body":"{"}}}}`},
		{name: "malformed JSON body, parsing off", policy: "package t\n\ndecision := true\n", opts: []authz.Option{authz.WithBodyParsing(false)}, allowed: true,
			request: `{"attributes":{"request":{"http":{"method":"POST","path":"/a","headers":{"content-type":"application/json"},"body":"{"}}}}`},
		{name: "bad content-length", policy: "package t\n\ndecision := true\n", wantStatus: 400, wantReason: authz.ReasonMalformedRequest,
			request: `{"attributes":{"request":{"http":{"method":"POST","path":"/a","headers":{"content-type":"application/json","content-length":"x"},"body":"{}"}}}}`},
		{name: "unparsable path", policy: "package t\n\ndecision := true\n", wantStatus: 400, wantReason: authz.ReasonMalformedRequest,
			request: `{"attributes":{"request":{"http":{"method":"GET","path":"/%zz"}}}}`},
		{name: "dot segment", policy: "package t\n\ndecision := true\n", wantStatus: 400, wantReason: authz.ReasonMalformedRequest,
			request: `{"attributes":{"request":{"http":{"method":"GET","path":"/catalog/../customer/account/password"}}}}`},
		{name: "escaped dot segment", policy: "package t\n\ndecision := true\n", wantStatus: 400, wantReason: authz.ReasonMalformedRequest,
			request: `{"attributes":{"request":{"http":{"method":"GET","path":"/catalog/%2E%2e/customer?x=1"}}}}`},
		{name: "trailing dot segment", policy: "package t\n\ndecision := true\n", wantStatus: 400, wantReason: authz.ReasonMalformedRequest,
			request: `{"attributes":{"request":{"http":{"method":"GET","path":"/customer/account/password/."}}}}`},
		{name: "dots inside a segment are a name", policy: "package t\n\ndecision := true\n", allowed: true,
			request: `{"attributes":{"request":{"http":{"method":"GET","path":"/static/..hidden/a.b./.well-known?p=/../x"}}}}`},
		{name: "dry run lets a denial through", policy: "package t\n\ndecision := false\n", opts: []authz.Option{authz.WithDryRun(true)}, allowed: true, request: get},
		{name: "state unavailable fails closed", policy: "package t\n\ndecision := true\n", wantStatus: 503, wantReason: authz.ReasonStateUnavailable, request: get,
			opts: []authz.Option{authz.WithResolvers(delegationFunc(func() (*sidecar.Delegation, error) {
				return nil, sidecar.Unavailable("redis down", errors.New("dial"))
			}))}},
		{name: "delegation error reaches policy", request: get, wantStatus: 401, wantReason: "session_ended",
			policy: "package t\n\ndecision := {\"allowed\": false, \"http_status\": 401, \"reason\": input.delegation_error}\n",
			opts: []authz.Option{authz.WithResolvers(delegationFunc(func() (*sidecar.Delegation, error) {
				return nil, sidecar.Refused(sidecar.EUNAUTHORIZED, "session_ended", nil)
			}))}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logSink{}
			opts := append([]authz.Option{authz.WithQuery("data.t.decision"), authz.WithDecisionLogger(logs)}, tc.opts...)
			p := authz.New(engineFor(t, "data.t.decision", tc.policy, nil), opts...)
			resp := p.Check(ctx, checkRequest(t, tc.request))
			if resp.Allowed != tc.allowed {
				t.Fatalf("allowed = %v (reason %s), want %v", resp.Allowed, resp.Reason, tc.allowed)
			}
			if len(logs.got) != 1 {
				t.Fatalf("%d decisions logged, want 1", len(logs.got))
			}
			if tc.allowed {
				return
			}
			if resp.HTTPStatus != tc.wantStatus || resp.Reason != tc.wantReason {
				t.Errorf("status %d reason %q, want %d %q", resp.HTTPStatus, resp.Reason, tc.wantStatus, tc.wantReason)
			}
			if d := logs.got[0]; d.Allowed || d.Reason != resp.Reason {
				t.Errorf("logged %+v", d)
			}
		})
	}
}

func TestNoPolicyDenies(t *testing.T) {
	p := authz.New(policy.New())
	resp := p.Check(context.Background(), checkRequest(t, `{"attributes":{"request":{"http":{"method":"GET","path":"/"}}}}`))
	if resp.Allowed || resp.Reason != authz.ReasonNoPolicy {
		t.Fatalf("got %+v", resp)
	}
}

func TestEmptyRequestIsDeniedNotPanicking(t *testing.T) {
	p := authz.New(engineFor(t, "data.t.decision", "package t\n\ndecision := input.parsed_path == [\"\"]\n", nil), authz.WithQuery("data.t.decision"))
	for _, req := range []*authv3.CheckRequest{{}, {Attributes: &authv3.AttributeContext{}}} {
		resp := p.Check(context.Background(), req)
		if resp.DecisionID == "" {
			t.Fatalf("no decision id")
		}
	}
}

// Policy sees the delegation attributes it reads, whether it names one
// attribute or the whole object.
func TestDelegationAttributesReachPolicy(t *testing.T) {
	del := &sidecar.Delegation{Mode: sidecar.ModePartner, Subject: "acme", Level: "cc",
		Attributes: map[string]any{"shared_resources": []any{"42"}, "precedence": "individual"}}
	for name, src := range map[string]string{
		"one attribute":  "package t\n\ndecision := \"42\" in input.delegation.attributes.shared_resources\n",
		"whole object":   "package t\n\ndecision := input.delegation.attributes == {\"shared_resources\": [\"42\"], \"precedence\": \"individual\"}\n",
		"dynamic key":    "package t\n\nk := \"precedence\"\n\ndecision := input.delegation.attributes[k] == \"individual\"\n",
		"level and mode": "package t\n\ndecision := {input.delegation.mode, input.delegation.level} == {\"partner\", \"cc\"}\n",
	} {
		t.Run(name, func(t *testing.T) {
			p := authz.New(engineFor(t, "data.t.decision", src, nil), authz.WithQuery("data.t.decision"),
				authz.WithResolvers(delegationFunc(func() (*sidecar.Delegation, error) { return del, nil })))
			if resp := p.Check(context.Background(), checkRequest(t, `{"attributes":{"request":{"http":{"method":"GET","path":"/"}}}}`)); !resp.Allowed {
				t.Fatalf("denied: %s", resp.Reason)
			}
		})
	}
}
