package policy

import (
	"context"
	"log/slog"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A query no rule can answer is evaluated once per activation; any rule
// that may contribute (at the path, above it or below it) keeps it
// evaluated per check, on that check's input.
func TestQueriesWithoutRulesAreEvaluatedOnce(t *testing.T) {
	cases := []struct {
		name     string
		src      string
		data     map[string]any
		constant bool
		want     string // mask value for input {"secret": true}; "" undefined
		off      string // and for {"secret": false}
	}{
		{name: "no mask at all", src: "package t\n\nx := 1\n", constant: true},
		{name: "mask from base data", src: "package t\n\nx := 1\n",
			data:     map[string]any{"system": map[string]any{"log": map[string]any{"mask": []any{"/input/a"}}}},
			constant: true, want: `["/input/a"]`},
		{name: "mask rule reading input", src: "package system.log\n\nmask contains \"/input/x\" if input.secret\n", want: `{"/input/x"}`, off: `set()`},
		{name: "rule above the path", src: "package system\n\nlog := {\"mask\": [\"/input/a\"]} if input.secret\n", want: `["/input/a"]`},
		{name: "rule below the path", src: "package system.log.mask\n\nx := 1 if input.secret\n", want: `{"x": 1}`, off: `{}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mod, err := ast.ParseModuleWithOpts("p.rego", tc.src, ast.ParserOptions{RegoVersion: ast.RegoV1})
			if err != nil {
				t.Fatal(err)
			}
			e := New(WithQueries("data.t.x"), WithLogger(slog.New(slog.DiscardHandler)))
			if err := e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"p.rego": mod}, Data: tc.data}); err != nil {
				t.Fatal(err)
			}
			if _, ok := e.Current().constant[MaskQuery]; ok != tc.constant {
				t.Fatalf("mask query evaluated once = %v, want %v", ok, tc.constant)
			}
			for _, secret := range []bool{true, false} {
				in := ast.NewObject(ast.Item(ast.StringTerm("input"), ast.NewTerm(ast.NewObject(ast.Item(ast.StringTerm("secret"), ast.BooleanTerm(secret))))))
				res, err := e.Eval(context.Background(), MaskQuery, in.Get(ast.StringTerm("input")).Value)
				if err != nil {
					t.Fatal(err)
				}
				want := tc.want
				if !secret && !tc.constant {
					want = tc.off
				}
				switch {
				case want == "" && res.Defined():
					t.Fatalf("secret=%v: %v, want undefined", secret, res.Value)
				case want != "" && (!res.Defined() || res.Value.Value.Compare(ast.MustParseTerm(want).Value) != 0):
					t.Fatalf("secret=%v: %v, want %s", secret, res.Value, want)
				}
			}
		})
	}
}
