package authz_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// A result a rule states outright is parsed once per activation and
// shared by the checks that get it: what one check adds to its response
// (the owned headers it strips, a session cookie to clear) never shows in
// another's.
func TestStatedResultsAreSharedUnchanged(t *testing.T) {
	const src = `package t

default decision := {"allowed": false, "reason": "shut", "headers": {"x-a": "1", "x-b": "2", "x-c": "3"}}

decision := {"allowed": true, "reason": "open", "headers": {"x-app": "1"}, "request_headers_to_remove": ["x-a"]} if {
	input.attributes.request.http.path == "/open"
}
`
	e := engineFor(t, "data.t.decision", src, nil)
	cookie := ""
	p := authz.New(e, authz.WithQuery("data.t.decision"), authz.WithResolvers(delegationFunc(func() (*sidecar.Delegation, error) {
		if cookie != "" {
			return nil, &sidecar.ClearCookie{SetCookie: cookie}
		}
		return nil, nil
	})))
	check := func(path, header string) *authz.Response {
		t.Helper()
		headers := `"x-app":"0"`
		if header != "" {
			headers += `,"` + header + `":"forged"`
		}
		return p.Check(context.Background(), checkRequest(t, `{"attributes":{"request":{"http":{"method":"GET","path":"`+path+`","headers":{`+headers+`}}}}}`))
	}
	shut := [][2]string{{"x-a", "1"}, {"x-b", "2"}, {"x-c", "3"}}
	for range 2 {
		if got := check("/open", "x-deputy-actor").HeadersToRemove; !reflect.DeepEqual(got, []string{"x-a", "x-deputy-actor"}) {
			t.Errorf("with a forged header: headers to remove = %v", got)
		}
		if got := check("/open", "").HeadersToRemove; !reflect.DeepEqual(got, []string{"x-a"}) {
			t.Errorf("without: headers to remove = %v, want the policy's alone", got)
		}
		cookie = "deputy_session=; Max-Age=0; Path=/a"
		first := check("/shut", "")
		cookie = "deputy_session=; Max-Age=0; Path=/b"
		second := check("/shut", "")
		if got := pairs(first.Headers); !reflect.DeepEqual(got, append(shut, [2]string{"set-cookie", "deputy_session=; Max-Age=0; Path=/a"})) {
			t.Errorf("first dead session, after the second: headers = %v", got)
		}
		if got := pairs(second.Headers); !reflect.DeepEqual(got, append(shut, [2]string{"set-cookie", "deputy_session=; Max-Age=0; Path=/b"})) {
			t.Errorf("second dead session: headers = %v", got)
		}
		cookie = ""
		if got := pairs(check("/shut", "").Headers); !reflect.DeepEqual(got, shut) {
			t.Errorf("without: headers = %v, want the policy's alone", got)
		}
	}
}

// A stated result is checked as every result is, on every check, and a
// new activation's results are its own.
func TestStatedResultsFollowTheActivation(t *testing.T) {
	e := engineFor(t, "data.t.decision", `package t

decision := {"allowed": true, "headers": {"x-deputy-subject": "someone"}}
`, nil)
	p := authz.New(e, authz.WithQuery("data.t.decision"))
	req := checkRequest(t, `{"attributes":{"request":{"http":{"method":"GET","path":"/"}}}}`)
	for range 2 {
		if resp := p.Check(context.Background(), req); resp.Allowed || resp.Reason != authz.ReasonInvalidDecision {
			t.Fatalf("a result setting Deputy's header: allowed %v, reason %s", resp.Allowed, resp.Reason)
		}
	}
	mod, err := ast.ParseModuleWithOpts("policy.rego", `package t

decision := {"allowed": true, "reason": "next", "headers": {"x-app": "2"}}
`, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Activate(context.Background(), &policy.Set{Modules: map[string]*ast.Module{"policy.rego": mod}}); err != nil {
		t.Fatal(err)
	}
	resp := p.Check(context.Background(), req)
	if !resp.Allowed || resp.Reason != "next" || !reflect.DeepEqual(pairs(resp.Headers), [][2]string{{"x-app", "2"}}) {
		t.Errorf("after a new activation: %+v", resp)
	}
}
