package authz_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// input.deputy carries the serving policy's revision and the config
// switches given as facts; a new activation shows its own revision on the
// next check, whether or not owned headers were stripped.
func TestInputDeputyFacts(t *testing.T) {
	const src = `package t
decision := {"allowed": true, "headers": {
	"x-revision": input.deputy.revision,
	"x-dev": sprintf("%v", [input.deputy.dev]),
	"x-dry-run": sprintf("%v", [input.deputy.dry_run]),
	"x-stripped": sprintf("%v", [count(object.get(input.deputy, "stripped_headers", []))]),
}}
`
	mod := ast.MustParseModuleWithOpts(src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	e := policy.New(policy.WithQueries("data.t.decision"), policy.WithLogger(slog.New(slog.DiscardHandler)))
	activate := func(rev string) {
		t.Helper()
		if err := e.Activate(context.Background(), &policy.Set{Modules: map[string]*ast.Module{"t.rego": mod}, Revision: rev}); err != nil {
			t.Fatal(err)
		}
	}
	// A fact named like one the pipeline owns does not replace it.
	p := authz.New(e, authz.WithQuery("data.t.decision"), authz.WithFacts(map[string]any{"dev": true, "revision": "forged", "dry_run": true}))
	plain := `{"attributes":{"request":{"http":{"method":"GET","path":"/"}}}}`
	stripped := `{"attributes":{"request":{"http":{"method":"GET","path":"/","headers":{"x-deputy-subject":"x"}}}}}`
	for _, tc := range []struct {
		name, rev, req, stripped string
	}{
		{name: "first revision", rev: "r1", req: plain, stripped: "0"},
		{name: "first revision, owned header stripped", rev: "r1", req: stripped, stripped: "1"},
		{name: "after an update", rev: "r2", req: plain, stripped: "0"},
		{name: "after an update, owned header stripped", rev: "r2", req: stripped, stripped: "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if cur := e.Current(); cur == nil || cur.Revision != tc.rev {
				activate(tc.rev)
			}
			resp := p.Check(context.Background(), checkRequest(t, tc.req))
			got := map[string]string{}
			for _, h := range resp.Headers {
				got[h.Key] = h.Value
			}
			want := map[string]string{"x-revision": tc.rev, "x-dev": "true", "x-dry-run": "false", "x-stripped": tc.stripped}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q (reason %s)", k, got[k], v, resp.Reason)
				}
			}
		})
	}
}
