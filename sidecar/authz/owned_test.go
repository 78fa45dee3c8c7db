package authz_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// ownedPolicy allows only when no header that an upstream could read as
// owned (any case, "_" for "-") reached policy, in headers or header_map.
const ownedPolicy = `package t

default decision := {"allowed": false, "reason": "policy_saw_owned"}

decision := {"allowed": true} if not _sees_owned

_owned(name) if startswith(replace(lower(name), "_", "-"), "x-deputy-")

_owned(name) if replace(lower(name), "_", "-") == "x-actor-token"

_sees_owned if {
	some name, _ in input.attributes.request.http.headers
	_owned(name)
}

_sees_owned if {
	some h in input.attributes.request.http.headerMap.headers
	_owned(h.key)
}
`

func TestOwnedHeaderVariantsAreStripped(t *testing.T) {
	e := engineFor(t, "data.t.decision", ownedPolicy, nil)
	p := authz.New(e, authz.WithQuery("data.t.decision"), authz.WithActorTokenHeader("x-actor-token"))
	for _, name := range []string{
		"x-deputy-subject", "X-Deputy-Subject", "X-DEPUTY-LEVEL",
		"x-deputy_subject", "x_deputy_actor", "X_Deputy_Actor", "X_DEPUTY_ROLE", "x_deputy-mode", "X-Deputy_Store_View",
		"x-actor-token", "X_Actor_Token", "x_actor-token",
	} {
		for _, where := range []string{"headers", "header_map"} {
			t.Run(where+"/"+name, func(t *testing.T) {
				n, _ := json.Marshal(name)
				var req string
				if where == "headers" {
					req = `{"attributes":{"request":{"http":{"method":"GET","path":"/","headers":{` + string(n) + `:"forged","x-app":"1"}}}}}`
				} else {
					req = `{"attributes":{"request":{"http":{"method":"GET","path":"/","headerMap":{"headers":[{"key":` + string(n) + `,"value":"forged"},{"key":"x-app","value":"1"}]}}}}}`
				}
				resp := p.Check(context.Background(), checkRequest(t, req))
				if !resp.Allowed {
					t.Fatalf("denied (%s): the owned header reached policy", resp.Reason)
				}
				if !slices.Contains(resp.HeadersToRemove, lowerASCII(name)) {
					t.Errorf("%s not listed for removal upstream: %v", name, resp.HeadersToRemove)
				}
			})
		}
	}
	// Headers that only look alike stay.
	for _, name := range []string{"x-deputyx-subject", "x-app", "deputy-subject", "x-actor-tokens"} {
		t.Run("not owned/"+name, func(t *testing.T) {
			req := `{"attributes":{"request":{"http":{"method":"GET","path":"/","headers":{"` + name + `":"v"}}}}}`
			resp := p.Check(context.Background(), checkRequest(t, req))
			if !resp.Allowed || slices.Contains(resp.HeadersToRemove, name) {
				t.Errorf("%s treated as owned: %+v", name, resp)
			}
		})
	}
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Whatever path a check takes, the forged owned header is listed for
// removal: a dry-run allow, or a proxy that forwards denied requests'
// headers anywhere, must never carry it upstream.
func TestOwnedHeadersRemovedOnEveryPath(t *testing.T) {
	forged := `"headers":{"x-deputy-role":"admin","X_Deputy_Subject":"victim"}`
	get := `{"attributes":{"request":{"http":{"method":"GET","path":"/a",` + forged + `}}}}`
	malformed := `{"attributes":{"request":{"http":{"method":"GET","path":"//a/../b",` + forged + `}}}}`
	unavailable := authz.WithResolvers(delegationFunc(func() (*sidecar.Delegation, error) {
		return nil, sidecar.Unavailable("redis down", errors.New("dial"))
	}))
	for _, tc := range []struct {
		name    string
		eval    authz.Evaluator
		policy  string
		req     string
		opts    []authz.Option
		allowed bool
		reason  string
	}{
		{name: "allowed", policy: "package t\n\ndecision := true\n", req: get, allowed: true, reason: authz.ReasonAllowed},
		{name: "denied", policy: "package t\n\ndecision := false\n", req: get, reason: authz.ReasonDenied},
		{name: "malformed", policy: "package t\n\ndecision := true\n", req: malformed, reason: authz.ReasonMalformedRequest},
		// A request Deputy cannot read as the upstream will is no policy
		// verdict: dry run refuses it too.
		{name: "malformed, dry run", policy: "package t\n\ndecision := true\n", req: malformed, opts: []authz.Option{authz.WithDryRun(true)}, reason: authz.ReasonMalformedRequest},
		{name: "no policy", eval: policy.New(), req: get, reason: authz.ReasonNoPolicy},
		{name: "no policy, dry run", eval: policy.New(), req: get, opts: []authz.Option{authz.WithDryRun(true)}, allowed: true, reason: authz.ReasonNoPolicy},
		{name: "state unavailable", policy: "package t\n\ndecision := true\n", req: get, opts: []authz.Option{unavailable}, reason: authz.ReasonStateUnavailable},
		{name: "evaluation error", policy: "package t\n\ndecision := true\n\ndecision := false if true\n", req: get, reason: authz.ReasonEvalError},
		{name: "undefined", policy: "package t\n", req: get, reason: authz.ReasonUndefined},
		{name: "dry run denial", policy: "package t\n\ndecision := false\n", req: get, opts: []authz.Option{authz.WithDryRun(true)}, allowed: true, reason: authz.ReasonDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eval := tc.eval
			if eval == nil {
				eval = engineFor(t, "data.t.decision", tc.policy, nil)
			}
			logs := &logSink{}
			p := authz.New(eval, append([]authz.Option{authz.WithQuery("data.t.decision"), authz.WithDecisionLogger(logs)}, tc.opts...)...)
			resp := p.Check(context.Background(), checkRequest(t, tc.req))
			if resp.Allowed != tc.allowed || resp.Reason != tc.reason {
				t.Fatalf("allowed %v reason %q, want %v %q", resp.Allowed, resp.Reason, tc.allowed, tc.reason)
			}
			for _, h := range []string{"x-deputy-role", "x_deputy_subject"} {
				if !slices.Contains(resp.HeadersToRemove, h) {
					t.Errorf("%s not removed: %v", h, resp.HeadersToRemove)
				}
			}
			if len(logs.got) != 1 || logs.got[0].Reason != tc.reason || logs.got[0].ID != resp.DecisionID {
				t.Errorf("decision log %+v does not match the response", logs.got)
			}
		})
	}
}

// The pipeline's own reasons are the error table's.
func TestPipelineReasonsAreTheErrorTable(t *testing.T) {
	if got := sidecar.ErrorMetricReason(sidecar.Invalid("path", "x")); got != authz.ReasonMalformedRequest {
		t.Errorf("EINVALID counts as %q, pipeline says %q", got, authz.ReasonMalformedRequest)
	}
	if got := sidecar.ErrorMetricReason(sidecar.Unavailable("x", nil)); got != authz.ReasonStateUnavailable {
		t.Errorf("EUNAVAILABLE counts as %q, pipeline says %q", got, authz.ReasonStateUnavailable)
	}
}

// A result naming one of Deputy's own headers is an invalid decision,
// allow or deny, whatever the spelling: the delegated identity is
// Deputy's to state. A policy's x_deputy_subject would reach a CGI or PHP
// upstream as HTTP_X_DEPUTY_SUBJECT beside Deputy's, and removing
// x-deputy-subject would have Envoy, which removes after it sets, drop
// Deputy's own subject while actor and mode go through.
func TestPolicyOutputNamingDeputysHeadersIsInvalid(t *testing.T) {
	del := &sidecar.Delegation{Mode: sidecar.ModePartner, ID: "g1", Actor: "pat", Subject: "acme", Level: "look"}
	for _, tc := range []struct {
		name, output string
		valid        bool
	}{
		{name: "header with _ for -", output: `"headers": {"x_deputy_subject": "victim"}`},
		{name: "header in another case", output: `"headers": {"X-Deputy-Subject": "victim"}`},
		{name: "owned header Deputy does not inject", output: `"headers": {"x-deputy-role": "admin"}`},
		{name: "actor-token header", output: `"headers": {"X_Actor_Token": "forged"}`},
		{name: "on-behalf-of header", output: `"headers": {"x_on_behalf_of": "globex"}`},
		{name: "removal of the injected subject", output: `"request_headers_to_remove": ["x-deputy-subject"]`},
		{name: "removal with _ for -", output: `"request_headers_to_remove": ["x-app", "X_DEPUTY_MODE"]`},
		{name: "removal of the on-behalf-of header", output: `"request_headers_to_remove": ["x-on-behalf-of"]`},
		{name: "response header", output: `"response_headers_to_add": {"x-deputy-mode": "none"}`},
		{name: "headers that only look alike", output: `"headers": {"x-deputyx-subject": "1", "x-actor-tokens": "1"}, "request_headers_to_remove": ["deputy-subject"]`, valid: true},
	} {
		for _, allowed := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/allowed=%v", tc.name, allowed), func(t *testing.T) {
				src := fmt.Sprintf("package t\n\ndecision := {\"allowed\": %v, %s}\n", allowed, tc.output)
				e := engineFor(t, "data.t.decision", src, nil)
				p := authz.New(e, authz.WithQuery("data.t.decision"), authz.WithActorTokenHeader("x-actor-token"),
					authz.WithResolvers(delegationFunc(func() (*sidecar.Delegation, error) { return del, nil })))
				resp := p.Check(context.Background(), checkRequest(t, `{"attributes":{"request":{"http":{"method":"GET","path":"/"}}}}`))
				switch {
				case tc.valid && (resp.Allowed != allowed || resp.Reason == authz.ReasonInvalidDecision):
					t.Fatalf("allowed %v reason %q, want the policy's verdict", resp.Allowed, resp.Reason)
				case !tc.valid && (resp.Allowed || resp.Reason != authz.ReasonInvalidDecision):
					t.Fatalf("allowed %v reason %q headers %v removals %v, want %s", resp.Allowed, resp.Reason, resp.Headers, resp.HeadersToRemove, authz.ReasonInvalidDecision)
				}
			})
		}
	}
}

// Configuration refuses header names with a byte other than a letter, a
// digit, "-" or "_" (sidecar.ValidHeaderName). A pipeline built with one
// all the same owns what PHP, CGI and WSGI read it as: x.acme.subject is
// HTTP_X_ACME_SUBJECT to them, as a client's plain x-acme-subject is, and
// that client header must not reach the application beside Deputy's own.
func TestDottedOwnedNamesOwnWhatUpstreamsRead(t *testing.T) {
	p := authz.New(engineFor(t, "data.t.decision", ownedPolicy, nil), authz.WithQuery("data.t.decision"),
		authz.WithOwnedPrefix("X.Acme."), authz.WithActorTokenHeader("X-Actor.Token"))
	for _, name := range []string{"x-acme-subject", "x_acme_subject", "X-Acme-Actor", "x-actor-token", "x_actor_token"} {
		if !p.Owned(name) {
			t.Errorf("%s (HTTP_%s upstream, as Deputy's own names) is not owned", name, strings.ToUpper(strings.ReplaceAll(name, "-", "_")))
		}
	}
}
