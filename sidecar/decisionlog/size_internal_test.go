package decisionlog

import (
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// input.deputy.request.route_dirs holds the route from each of its
// segments on, every one a slice of one string: the queue estimate counts
// those bytes once, as memory holds them, and counts strings that are
// copies in full. Counting each slice whole made a path of n one-letter
// segments weigh n² bytes, and a 5.6 KB path pass max_queue_bytes.
func TestDecisionSizeCountsSharedBytesOnce(t *testing.T) {
	const segments = 4000
	dir := strings.Repeat("/a", segments) + "/"
	var held int // the bytes of every suffix, were each its own string
	for i := range segments {
		held += len(dir) - 2*i
	}
	inputs := map[string]func(suffix func(i int) string) any{
		"ast": func(suffix func(i int) string) any {
			terms := make([]*ast.Term, segments)
			for i := range terms {
				terms[i] = ast.StringTerm(suffix(i))
			}
			return ast.NewObject([2]*ast.Term{ast.StringTerm("route_dirs"), ast.ArrayTerm(terms...)})
		},
		"json": func(suffix func(i int) string) any {
			elems := make([]any, segments)
			for i := range elems {
				elems[i] = suffix(i)
			}
			return map[string]any{"route_dirs": elems}
		},
	}
	for name, input := range inputs {
		t.Run(name, func(t *testing.T) {
			shared := inputSize(input(func(i int) string { return dir[2*i:] }))
			// The bytes once, and a term (or interface) per value: the object,
			// its key, the array and its elements.
			if most := int64(len(dir) + len("route_dirs") + (segments+3)*valueOverhead); shared < int64(len(dir)) || shared > most {
				t.Errorf("suffixes of one string weigh %d, want between its %d bytes and %d", shared, len(dir), most)
			}
			copied := inputSize(input(func(i int) string { return strings.Clone(dir[2*i:]) }))
			if copied < int64(held) {
				t.Errorf("copies weigh %d, want at least the %d bytes they hold", copied, held)
			}
		})
	}
}
