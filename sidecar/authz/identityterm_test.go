package authz_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// input.identity is kept per verified identity: each caller must still
// see only its own claims, request after request, and a new policy that
// reads other claims must see them on the very next check.
func TestIdentityTermPerCallerAndActivation(t *testing.T) {
	dev, verifier := devVerifier(t)
	activate := func(e *policy.Engine, claim string) {
		t.Helper()
		src := "package t\n\ndecision := {\"allowed\": true, \"headers\": {\"x-seen\": input.identity." + claim + "}}\n"
		mod, err := ast.ParseModuleWithOpts("t.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Activate(context.Background(), &policy.Set{Modules: map[string]*ast.Module{"t.rego": mod}}); err != nil {
			t.Fatal(err)
		}
	}
	e := policy.New(policy.WithQueries("data.t.decision"), policy.WithLogger(slog.New(slog.DiscardHandler)))
	activate(e, "sub")
	p := authz.New(e, authz.WithQuery("data.t.decision"), authz.WithVerifier(verifier))

	tokens := map[string]string{}
	for _, who := range []string{"ann", "bob"} {
		tok, err := dev.Mint(identity.DevClaims{Subject: who, Email: who + "@example.com", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		tokens[who] = tok
	}
	seen := func(who string) string {
		t.Helper()
		req := withHeaders(t, "/catalog", map[string]string{"authorization": "Bearer " + tokens[who]})
		resp := p.Check(context.Background(), req)
		for _, h := range resp.Headers {
			if h.Key == "x-seen" {
				return h.Value
			}
		}
		t.Fatalf("%s: no x-seen header (allowed %v, reason %s)", who, resp.Allowed, resp.Reason)
		return ""
	}
	for range 3 {
		for _, who := range []string{"ann", "bob"} {
			if got := seen(who); got != who {
				t.Fatalf("%s's request saw sub %q", who, got)
			}
		}
	}
	activate(e, "email")
	for _, who := range []string{"ann", "bob"} {
		if got, want := seen(who), who+"@example.com"; got != want {
			t.Fatalf("after the new policy, %s's request saw %q, want %q", who, got, want)
		}
	}
}
