package policy

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestInputNeeds(t *testing.T) {
	cases := []struct {
		name, src, want string
	}{
		{"fields read", `package t
decision if {
	input.attributes.request.http.method == "GET"
	input.attributes.request.http.headers["x-a"] == "1"
	input.parsed_path[0] == "a"
}`, `{"attributes":{"request":{"http":{"headers":{"x-a":{"All":true}},"method":{"All":true}}}},"parsed_path":{"All":true}}`},
		{"variable key needs the subtree", `package t
decision if {
	some k
	input.attributes.request.http.headers[k] == "1"
}`, `{"attributes":{"request":{"http":{"headers":{"All":true}}}}}`},
		{"whole input", `package t
decision if walk(input, [_, "x"])`, `All`},
		{"through helper rules and functions", `package t
decision if _f(input.identity.sub)
decision if data.t.other
other if input.delegation.mode == "partner"
_f(x) if x == input.parsed_query.q[0]`, `{"delegation":{"mode":{"All":true}},"identity":{"sub":{"All":true}},"parsed_query":{"q":{"All":true}}}`},
		{"unreachable rules do not count", `package t
decision if input.a
unused if input.b
test_x if decision with input as {}`, `{"a":{"All":true}}`},
		{"dynamic data refs follow every candidate", `package t
decision if data.u[input.m].ok`, `{"c":{"All":true},"m":{"All":true}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mod := ast.MustParseModuleWithOpts(tc.src, ast.ParserOptions{RegoVersion: ast.RegoV1})
			other := ast.MustParseModuleWithOpts("package u\nx := {\"ok\": input.c}\n", ast.ParserOptions{RegoVersion: ast.RegoV1})
			e := New(WithQueries("data.t.decision"), WithLogger(slog.New(slog.DiscardHandler)))
			if err := e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"t.rego": mod, "u.rego": other}}); err != nil {
				t.Fatal(err)
			}
			n := e.Current().InputNeeds("data.t.decision")
			got := "All"
			if !n.All {
				b, _ := json.Marshal(n.Children)
				got = string(compact(b))
			}
			if got != tc.want {
				t.Errorf("needs = %s\nwant    %s", got, tc.want)
			}
		})
	}
}

// compact drops the empty Children fields json.Marshal writes.
func compact(b []byte) []byte {
	var x any
	_ = json.Unmarshal(b, &x)
	var strip func(any) any
	strip = func(v any) any {
		m, ok := v.(map[string]any)
		if !ok {
			return v
		}
		if all, _ := m["All"].(bool); all {
			return map[string]any{"All": true}
		}
		if ch, ok := m["Children"].(map[string]any); ok {
			return strip(ch)
		}
		out := map[string]any{}
		for k, c := range m {
			out[k] = strip(c)
		}
		return out
	}
	out, _ := json.Marshal(strip(x))
	return out
}
