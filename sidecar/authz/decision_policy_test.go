package authz_test

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// Every logged decision carries the activation that made it, so the
// decision log masks its input with that revision's rules, whatever set
// serves when the record is written.
func TestDecisionCarriesItsActivation(t *testing.T) {
	ctx := context.Background()
	get := `{"attributes":{"request":{"http":{"method":"GET","path":"/"}}}}`
	cases := []struct {
		name   string
		decide func(*authz.Pipeline) *authz.Response
	}{
		{"check", func(p *authz.Pipeline) *authz.Response { return p.Check(ctx, checkRequest(t, get)) }},
		{"refusal", func(p *authz.Pipeline) *authz.Response {
			return p.Refuse(ctx, checkRequest(t, get), sidecar.Invalid("x-original-url", "URL override header"))
		}},
		{"replay", func(p *authz.Pipeline) *authz.Response {
			return p.Replay(ctx, ast.MustParseTerm(get).Value.(ast.Object))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eng := engineFor(t, "data.t.decision", "package t\n\ndecision := true\n", nil)
			logs := &logSink{}
			p := authz.New(eng, authz.WithQuery("data.t.decision"), authz.WithDecisionLogger(logs))
			deciding := eng.Current()
			tc.decide(p)
			if len(logs.got) != 1 {
				t.Fatalf("%d decisions logged, want 1", len(logs.got))
			}
			if got, ok := logs.got[0].Policy.(*policy.Activation); !ok || got != deciding {
				t.Errorf("decision's Policy = %T %p, want the deciding activation %p", logs.got[0].Policy, got, deciding)
			}
		})
	}
	t.Run("none serving", func(t *testing.T) {
		logs := &logSink{}
		authz.New(policy.New(), authz.WithDecisionLogger(logs)).Check(ctx, checkRequest(t, get))
		if len(logs.got) != 1 || logs.got[0].Policy != nil {
			t.Fatalf("logged %+v, want one decision with no Policy", logs.got)
		}
	})
}
