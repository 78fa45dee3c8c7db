package policy

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// InputNeeds is the part of `input` a query can possibly read, found by
// walking every rule reachable from the query. Building only that part of
// a CheckRequest is the largest saving of a check: most policies read a
// method, a path and a header or two, not the forty fields Envoy sends.
//
// A nil *InputNeeds needs nothing; All needs the whole subtree.
type InputNeeds struct {
	All      bool
	Children map[string]*InputNeeds
}

// Child returns the needs below key: n itself when n needs everything.
func (n *InputNeeds) Child(key string) *InputNeeds {
	if n == nil {
		return nil
	}
	if n.All {
		return n
	}
	return n.Children[key]
}

func (n *InputNeeds) add(path []string) {
	for _, k := range path {
		if n.All {
			return
		}
		if n.Children == nil {
			n.Children = map[string]*InputNeeds{}
		}
		c := n.Children[k]
		if c == nil {
			c = &InputNeeds{}
			n.Children[k] = c
		}
		n = c
	}
	n.All, n.Children = true, nil
}

// AllInput needs the whole input.
var AllInput = &InputNeeds{All: true}

// inputNeeds collects the input paths read by the rules reachable from
// query. It is conservative: a reference with a variable key, or to input
// as a whole (including passing it to a function), needs the whole subtree
// at that point.
func inputNeeds(c *ast.Compiler, query string) *InputNeeds {
	body, err := ast.ParseBody(query)
	if err != nil {
		return AllInput
	}
	needs := &InputNeeds{}
	seen := map[*ast.Rule]bool{}
	var queue []*ast.Rule
	visit := func(x any) {
		ast.WalkRefs(x, func(r ast.Ref) bool {
			switch {
			case r.HasPrefix(ast.InputRootRef):
				needs.add(groundPath(r[1:]))
			case r.HasPrefix(ast.DefaultRootRef):
				for _, rule := range c.GetRulesDynamicWithOpts(r, ast.RulesOptions{IncludeHiddenModules: true}) {
					if !seen[rule] {
						seen[rule] = true
						queue = append(queue, rule)
					}
				}
			}
			return false
		})
	}
	visit(body)
	for len(queue) > 0 {
		rule := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		visit(rule)
	}
	return needs
}

// groundPath is the leading run of string keys of a reference.
func groundPath(ts []*ast.Term) []string {
	var path []string
	for _, t := range ts {
		s, ok := t.Value.(ast.String)
		if !ok {
			break
		}
		path = append(path, string(s))
	}
	return path
}
