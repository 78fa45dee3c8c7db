package authz

import (
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// A query field an upstream reads as a parameter the policy reads, but
// that parsed_query holds under another name or leaves out, is refused;
// the parameter as Go reads it, and names that only look like it, pass.
func TestUnseenParamIsRefused(t *testing.T) {
	named := &policy.InputNeeds{Children: map[string]*policy.InputNeeds{
		"query": policy.AllInput, "operationName": policy.AllInput, "store_id": policy.AllInput,
	}}
	for _, tc := range []struct {
		name, raw string
		need      *policy.InputNeeds
		refused   bool
	}{
		{name: "no query", raw: "", need: named},
		{name: "other parameters", raw: "size=42&color=red", need: named},
		{name: "the parameter", raw: "query=%7Bcart%7D", need: named},
		{name: "the parameter twice", raw: "query=a&query=b", need: named},
		{name: "escaped, as Go decodes it", raw: "%71uery=a", need: named},
		{name: "names that hold it", raw: "queryx=1&x_query=1&query_=1&que.ry=1&q+uery=1", need: named},
		{name: "a name with a letter that folds to none", raw: "q%C3%BCery=1&%E2%98%83=2", need: named},
		{name: "as a value", raw: "x=query&y=+query", need: named},
		{name: "value with an escape and a plus", raw: "query=a+b%20c", need: named},
		{name: "PHP: a leading + (space)", raw: "query=a&+query=b", need: named, refused: true},
		{name: "PHP: a leading %20", raw: "query=a&%20query=b", need: named, refused: true},
		{name: "PHP: a leading space alone", raw: "%20query=b", need: named, refused: true},
		{name: "PHP: array", raw: "query[]=b", need: named, refused: true},
		{name: "PHP: keyed array", raw: "query[x]=b", need: named, refused: true},
		{name: "PHP: escaped bracket", raw: "query%5B%5D=b", need: named, refused: true},
		{name: "PHP: unclosed bracket", raw: "query[=b", need: named, refused: true},
		{name: "PHP: dot for underscore", raw: "store.id=2", need: named, refused: true},
		{name: "PHP: space for underscore", raw: "store+id=2", need: named, refused: true},
		{name: "Rack and qs: brackets around", raw: "[query]=b", need: named, refused: true},
		{name: "Rack: a trailing bracket", raw: "query]=b", need: named, refused: true},
		{name: "ASP.NET: another case", raw: "Query=b", need: named, refused: true},
		{name: "ASP.NET: another case, mixed name", raw: "OPERATIONNAME=x", need: named, refused: true},
		{name: "ASP.NET: dotless i", raw: "operat%C4%B1onName=x", need: named, refused: true},
		// IIS and classic ASP.NET (HttpUtility.UrlDecode) decode %uXXXX,
		// which Go leaves out as an invalid escape.
		{name: "IIS: a %u escape", raw: "query=a&%u0071uery=b", need: named, refused: true},
		{name: "IIS: a %u escape in another case", raw: "q%u0055ERY=b", need: named, refused: true},
		{name: "IIS: a %u escape elsewhere", raw: "x%u0071uery=b&query=a", need: named},
		{name: "Go drops a semicolon in the value", raw: "query=a&query=b;c", need: named, refused: true},
		{name: "Go drops an invalid escape in the value", raw: "query=a&query=b%zz", need: named, refused: true},
		{name: "PHP: keyed array, an invalid escape in the key", raw: "query[%zz]=b", need: named, refused: true},
		{name: "Rack 2 splits on semicolons", raw: "x=1;query=b", need: named, refused: true},
		{name: "Rack 2 splits on semicolons, then a space", raw: "x=1;+query=b", need: named, refused: true},
		{name: "a semicolon elsewhere", raw: "x=1;y=2&query=a", need: named},
		{name: "an invalid escape elsewhere", raw: "x=%zz&query=a", need: named},
		{name: "policy reads no parameter", raw: "+query=b", need: nil},
		{name: "policy reads parsed_query whole", raw: "+query=b", need: policy.AllInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := unseenParam(tc.raw, tc.need)
			if (err != nil) != tc.refused {
				t.Fatalf("unseenParam(%.60q) = %v, refused %v", tc.raw, err, tc.refused)
			}
			if err != nil && sidecar.ErrorField(err) != "query" {
				t.Errorf("refused on field %q, want query", sidecar.ErrorField(err))
			}
		})
	}
}

// The check reads every query against the names the policy reads: a
// query without another spelling of them costs no allocation.
func TestUnseenParamAllocatesNothing(t *testing.T) {
	named := &policy.InputNeeds{Children: map[string]*policy.InputNeeds{"query": policy.AllInput}}
	for _, raw := range []string{"size=42&color=red", "query=%7Bcart(cart_id%3A%22c1%22)%7Bid%7D%7D&q=red+shoes", "x=1;y=2"} {
		if n := testing.AllocsPerRun(100, func() { _ = unseenParam(raw, named) }); n != 0 {
			t.Errorf("%s: %v allocations", raw, n)
		}
	}
}

// BenchmarkUnseenParam is the check's cost on a page's query and on a
// GraphQL GET's.
func BenchmarkUnseenParam(b *testing.B) {
	named := &policy.InputNeeds{Children: map[string]*policy.InputNeeds{"query": policy.AllInput}}
	for _, tc := range []struct{ name, raw string }{
		{"other_parameters", "size=42&color=red"},
		{"graphql_document", "query=%7Bcart(cart_id%3A%22c1%22)%7Bid%7D%7D&variables=%7B%7D"},
	} {
		raw := tc.raw
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := unseenParam(raw, named); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
