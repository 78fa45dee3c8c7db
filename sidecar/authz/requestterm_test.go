package authz_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// input.deputy of a check that stripped nothing is kept by canonical path
// and methods: the same path asked again with another method, an override,
// another spelling or under a new activation is decided on its own input,
// never on the one kept for an earlier check.
func TestKeptRequestTermsDecideAlike(t *testing.T) {
	p := shippedPipeline(t)
	for _, tc := range []struct {
		name, method, path string
		headers            map[string]string
		want               bool
	}{
		{name: "public page", method: "GET", path: "/catalog/shoes", want: true},
		{name: "same path, POST", method: "POST", path: "/catalog/shoes"},
		{name: "same path, GET overridden to POST", method: "GET", path: "/catalog/shoes", headers: map[string]string{"x-http-method-override": "POST"}},
		{name: "same path, GET overridden to HEAD", method: "GET", path: "/catalog/shoes", headers: map[string]string{"x-http-method-override": "HEAD"}, want: true},
		{name: "public page again", method: "GET", path: "/catalog/shoes", want: true},
		{name: "same path, POST again", method: "POST", path: "/catalog/shoes"},
		{name: "signed-in section", method: "GET", path: "/customer/account"},
		{name: "spelled otherwise", method: "GET", path: "/Catalog//shoes;x", want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := p.Check(context.Background(), checkRequest(t, httpRequest(tc.method, tc.path, tc.headers, "")))
			if resp.Allowed != tc.want {
				t.Fatalf("allowed = %v, want %v (reason %s)", resp.Allowed, tc.want, resp.Reason)
			}
		})
	}

	// The term kept for a path under one activation is not used under the
	// next: its revision is the new one's.
	const src = `package t
decision := {"allowed": true, "reason": concat(" ", [input.deputy.revision, input.deputy.request.lower_path])}
`
	mod := ast.MustParseModuleWithOpts(src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	e := policy.New(policy.WithQueries("data.t.decision"), policy.WithLogger(slog.New(slog.DiscardHandler)))
	q := authz.New(e, authz.WithQuery("data.t.decision"))
	for _, rev := range []string{"r1", "r2", "r1"} {
		if err := e.Activate(context.Background(), &policy.Set{Modules: map[string]*ast.Module{"t.rego": mod}, Revision: rev}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			resp := q.Check(context.Background(), checkRequest(t, httpRequest("GET", "/A", nil, "")))
			if want := rev + " /a"; resp.Reason != want {
				t.Fatalf("reason = %q, want %q", resp.Reason, want)
			}
		}
	}
}

// input.deputy.request.host is the host decided on by name, as sessions
// and storefront hosts compare it, whatever its spelling; a kept term is
// never reused for another host, and a check naming none has none. A host
// in a form proxies read apart never reaches policy.
func TestRequestHost(t *testing.T) {
	const src = `package t
default host := "none"
host := input.deputy.request.host
decision := {"allowed": true, "reason": host}
`
	mod := ast.MustParseModuleWithOpts(src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	e := policy.New(policy.WithQueries("data.t.decision"), policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err := e.Activate(context.Background(), &policy.Set{Modules: map[string]*ast.Module{"t.rego": mod}}); err != nil {
		t.Fatal(err)
	}
	logs := &logSink{}
	p := authz.New(e, authz.WithQuery("data.t.decision"), authz.WithDecisionLogger(logs))
	// logged is the decision record's host: the decided form, or a
	// refused request's host as sent.
	for _, tc := range []struct{ authority, want, logged string }{
		{"Shop.Example.com.:8443", "shop.example.com", "shop.example.com:8443"},
		{"shop.example.com", "shop.example.com", "shop.example.com"},
		{"admin.example", "admin.example", "admin.example"},
		{"[2001:DB8::0:1]:0443", "[2001:db8::1]", "[2001:db8::1]:443"},
		{"", "none", ""},
		{"shop.example.com:1,admin.example", authz.ReasonMalformedRequest, "shop.example.com:1,admin.example"},
	} {
		for name, build := range map[string]func(string, string, map[string]string, string) string{"headers": httpRequest, "header_map": headerMapRequest} {
			t.Run(name+" "+tc.authority, func(t *testing.T) {
				h := map[string]string{}
				if tc.authority != "" {
					h[":authority"] = tc.authority
				}
				req := checkRequest(t, build("GET", "/catalog", h, ""))
				req.Attributes.Request.Http.Host = tc.authority
				logs.got = nil
				resp := p.Check(context.Background(), req)
				if resp.Reason != tc.want {
					t.Fatalf("reason %q, want %q", resp.Reason, tc.want)
				}
				if len(logs.got) != 1 {
					t.Fatalf("logged %d decisions, want 1", len(logs.got))
				}
				if logs.got[0].Host != tc.logged {
					t.Fatalf("logged host %q, want %q", logs.got[0].Host, tc.logged)
				}
			})
		}
	}
}
