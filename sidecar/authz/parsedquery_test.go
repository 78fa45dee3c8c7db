package authz

import (
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// A policy that reads input.parsed_query.query is handed that parameter
// alone, found under every spelling a server decodes to it; a policy that
// reads parsed_query whole gets OPA-Envoy's shape.
func TestParsedQueryHoldsWhatPolicyReads(t *testing.T) {
	named := &policy.InputNeeds{Children: map[string]*policy.InputNeeds{"query": policy.AllInput}}
	for _, tc := range []struct {
		name, raw string
		need      *policy.InputNeeds
		want      string
	}{
		{"no query", "", named, `{}`},
		{"other parameters", "page=2&size=9", named, `{}`},
		{"the parameter", "page=2&query=%7Bcart%7D", named, `{"query": ["{cart}"]}`},
		{"repeated", "query=a&query=b", named, `{"query": ["a", "b"]}`},
		{"escaped name", "%71uery=a", named, `{"query": ["a"]}`},
		{"name as a value", "x=query", named, `{}`},
		{"a plus in another name", "q+uery=a", named, `{}`},
		{"whole", "page=2&query=a", policy.AllInput, `{"page": ["2"], "query": ["a"]}`},
		{"whole, without a query", "", policy.AllInput, `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parsedQuery(tc.raw, nil, tc.need)
			if got.Value.Compare(ast.MustParseTerm(tc.want).Value) != 0 {
				t.Errorf("parsed_query = %v, want %s", got, tc.want)
			}
		})
	}
}

// The common page request, whose query names no parameter the policy
// reads, pays nothing for the rules that read one.
func TestParsedQueryOfOtherParametersAllocatesNothing(t *testing.T) {
	named := &policy.InputNeeds{Children: map[string]*policy.InputNeeds{"query": policy.AllInput}}
	if n := testing.AllocsPerRun(100, func() { parsedQuery("size=42&color=red", nil, named) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
