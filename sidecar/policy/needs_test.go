package policy

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
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
		// A local variable standing for a part of input (OPA-Envoy's
		// http_request := input.attributes.request.http) reads only what
		// its references read, so that the spelling refusals and the
		// input built follow the names the policy reads.
		{"a local alias reads what its references read", `package t
decision if {
	h := input.attributes.request.http
	h.headers["x-a"] == "1"
	h.method == "GET"
}`, `{"attributes":{"request":{"http":{"headers":{"x-a":{"All":true}},"method":{"All":true}}}}}`},
		{"an alias of an alias", `package t
decision if {
	h := input.attributes.request.http
	hs := h.headers
	hs["x-a"] == "1"
}`, `{"attributes":{"request":{"http":{"headers":{"x-a":{"All":true}}}}}}`},
		{"an alias unified the other way round", `package t
decision if {
	input.attributes.request.http = h
	h.method == "GET"
}`, `{"attributes":{"request":{"http":{"method":{"All":true}}}}}`},
		{"an alias read in a comprehension", `package t
decision if {
	h := input.attributes.request.http
	count([x | x := h.headers["x-a"]]) > 0
}`, `{"attributes":{"request":{"http":{"headers":{"x-a":{"All":true}}}}}}`},
		{"an alias read with a variable key", `package t
decision if {
	h := input.attributes.request.http
	some k
	h.headers[k] == "1"
}`, `{"attributes":{"request":{"http":{"headers":{"All":true}}}}}`},
		{"an alias passed whole to a function", `package t
decision if {
	h := input.attributes.request.http
	contains(json.marshal(h), "GET")
}`, `{"attributes":{"request":{"http":{"All":true}}}}`},
		{"an alias read by object.get", `package t
decision if {
	h := input.attributes.request.http
	object.get(h, "method", "") == "GET"
}`, `{"attributes":{"request":{"http":{"method":{"All":true}}}}}`},
		{"an alias read by object.get and passed whole", `package t
decision if {
	h := input.attributes.request.http
	object.get(h, "method", "") == "GET"
	contains(json.marshal(h), "x-b")
}`, `{"attributes":{"request":{"http":{"All":true}}}}`},
		{"an alias compared whole", `package t
decision if {
	h := input.attributes.request.http
	h.method == "GET"
	h != {}
}`, `{"attributes":{"request":{"http":{"All":true}}}}`},
		{"an alias as the rule's value", `package t
decision := h if {
	h := input.attributes.request.http
	h.method == "GET"
}`, `{"attributes":{"request":{"http":{"All":true}}}}`},
		{"an alias of an alias used whole", `package t
decision if {
	h := input.attributes.request.http
	hs := h.headers
	hs["x-a"] == "1"
	count(hs) > 1
}`, `{"attributes":{"request":{"http":{"headers":{"All":true}}}}}`},
		{"an alias iterated", `package t
decision if {
	h := input.attributes.request.http
	some name, value in h.headers
	name == value
}`, `{"attributes":{"request":{"http":{"headers":{"All":true}}}}}`},
		{"a variable unified twice", `package t
decision if {
	h = input.attributes.request.http
	h = input.attributes.request.http
	h.method == "GET"
}`, `{"attributes":{"request":{"http":{"All":true}}}}`},
		{"aliases in else branches", `package t
decision := 1 if {
	h := input.a
	h.b == 1
} else := 2 if {
	h := input.c
	h.d == 1
}`, `{"a":{"b":{"All":true}},"c":{"d":{"All":true}}}`},
		// object.get with a string key or a path of them reads that key.
		{"object.get of a key", `package t
decision if object.get(input.attributes.request.http.headers, "x-a", "") == "1"`, `{"attributes":{"request":{"http":{"headers":{"x-a":{"All":true}}}}}}`},
		{"object.get of a path", `package t
decision if object.get(input.attributes, ["request", "http", "method"], "") == "GET"`, `{"attributes":{"request":{"http":{"method":{"All":true}}}}}`},
		{"object.get through an alias", `package t
decision if {
	h := input.attributes.request.http
	object.get(h.headers, "x-b", "") == "x-b"
}`, `{"attributes":{"request":{"http":{"headers":{"x-b":{"All":true}}}}}}`},
		{"object.get of an empty path", `package t
decision if count(object.get(input.attributes.request.http.headers, [], {})) == 3`, `{"attributes":{"request":{"http":{"headers":{"All":true}}}}}`},
		{"object.get of a key not known before", `package t
decision if {
	some k in ["x-a", "x-c"]
	object.get(input.attributes.request.http.headers, k, "") == "2"
}`, `{"attributes":{"request":{"http":{"headers":{"All":true}}}}}`},
		{"object.get with a default read from input", `package t
decision if object.get(input.a, "b", input.c.d) == 1`, `{"a":{"b":{"All":true}},"c":{"d":{"All":true}}}`},
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
			// What the needs leave out changes nothing: the decision on
			// the input cut to them is the decision on the whole input.
			full := map[string]any{
				"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
					"method": "GET", "headers": map[string]any{"x-a": "1", "x-b": "x-b", "x-c": "2"}}}},
				"parsed_path": []any{"a"}, "parsed_query": map[string]any{"q": []any{"x"}},
				"a": map[string]any{"b": 1, "z": 1}, "c": map[string]any{"d": 1, "z": 2}, "m": "c",
				"identity": map[string]any{"sub": "x"}, "delegation": map[string]any{"mode": "partner"},
			}
			if got, want := decide(t, tc.src, prune(full, n)), decide(t, tc.src, full); got != want {
				t.Errorf("decision on the input the needs keep = %s, on the whole input %s", got, want)
			}
		})
	}
}

// decide evaluates data.t.decision of src (beside u.rego) on input.
func decide(t *testing.T, src string, input any) string {
	t.Helper()
	rs, err := rego.New(rego.Query("data.t.decision"), rego.SetRegoVersion(ast.RegoV1), rego.Input(input),
		rego.Module("t.rego", src), rego.Module("u.rego", "package u\nx := {\"ok\": input.c}\n")).Eval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rs)
	return string(b)
}

// prune keeps of doc only what n needs.
func prune(doc any, n *InputNeeds) any {
	if n == nil {
		return nil
	}
	if n.All {
		return doc
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return doc
	}
	out := map[string]any{}
	for k, c := range n.Children {
		if v, ok := obj[k]; ok {
			out[k] = prune(v, c)
		}
	}
	return out
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
