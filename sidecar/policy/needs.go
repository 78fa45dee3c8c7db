package policy

import (
	"slices"

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
		gets, varGets := objectGets(x)
		paths, sources := aliases(x, varGets)
		for v, keys := range varGets {
			if path, ok := paths[v]; ok {
				for _, key := range keys {
					needs.add(append(slices.Clone(path), key...))
				}
			}
		}
		ast.WalkRefs(x, func(r ast.Ref) bool {
			if sources[&r[0]] {
				return false // an alias's own assignment reads nothing
			}
			// object.get(ref, key, default) reads ref's key alone, when
			// every key of ref is a string too.
			key, got := gets[&r[0]]
			if got && len(groundPath(r[1:])) != len(r)-1 {
				got = false
			}
			if v, ok := r[0].Value.(ast.Var); ok {
				if path, ok := paths[v]; ok {
					path = append(slices.Clone(path), groundPath(r[1:])...)
					if got {
						path = append(path, key...)
					}
					needs.add(path)
					return false
				}
			}
			switch {
			case r.HasPrefix(ast.InputRootRef):
				path := groundPath(r[1:])
				if got {
					path = append(path, key...)
				}
				needs.add(path)
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

// objectGets finds the calls object.get(x, key, default) of x whose key is
// a string or an array of strings (a path): such a call reads x's key, not
// all of x. refs maps the first element of such an x that is a reference
// to the key; vars, such an x that is a variable (the compiler binds a
// reference argument to one) to the keys of its calls.
func objectGets(x any) (refs map[**ast.Term][]string, vars map[ast.Var][][]string) {
	note := func(args []*ast.Term) {
		if len(args) < 3 {
			return
		}
		var key []string
		switch k := args[1].Value.(type) {
		case ast.String:
			key = []string{string(k)}
		case *ast.Array:
			key = []string{}
			for i := range k.Len() {
				s, ok := k.Elem(i).Value.(ast.String)
				if !ok {
					return
				}
				key = append(key, string(s))
			}
		default:
			return
		}
		switch v := args[0].Value.(type) {
		case ast.Ref:
			if refs == nil {
				refs = map[**ast.Term][]string{}
			}
			refs[&v[0]] = key
		case ast.Var:
			if vars == nil {
				vars = map[ast.Var][][]string{}
			}
			vars[v] = append(vars[v], key)
		}
	}
	objectGet := ast.ObjectGet.Ref()
	ast.WalkExprs(x, func(e *ast.Expr) bool {
		if e.IsCall() && e.Operator().Equal(objectGet) {
			note(e.Operands())
		}
		return false
	})
	ast.WalkTerms(x, func(t *ast.Term) bool {
		if c, ok := t.Value.(ast.Call); ok && len(c) > 0 && c[0].Value.Compare(objectGet) == 0 {
			note(c[1:])
		}
		return false
	})
	return refs, vars
}

// aliases finds the local variables of x (a rule with its else branches,
// or a query body) that stand for a part of input: assigned once, by
// v := input.a.b, v = input.a.b or input.a.b = v, or from another such
// variable (v := w.c), every key a string; and used only at the head of
// references (v.c, v.d[k]) or as the object of object.get with a known
// key (gets: objectGets), never whole. paths holds each one's path in
// input, and sources the first element of each assignment's reference:
// that reference reads nothing, the variable's references read what they
// spell. A variable used any other way (passed to a function, compared,
// iterated, the rule's value, assigned twice) is no alias: its
// assignment's reference reads the whole subtree, as any reference to
// input does.
func aliases(x any, gets map[ast.Var][][]string) (paths map[ast.Var][]string, sources map[**ast.Term]bool) {
	type assignment struct {
		src   ast.Ref
		times int
	}
	assigned := map[ast.Var]*assignment{}
	ast.WalkExprs(x, func(e *ast.Expr) bool {
		if !e.IsEquality() && !e.IsAssignment() {
			return false
		}
		ops := e.Operands()
		if len(ops) != 2 {
			return false
		}
		for i := range ops {
			v, ok := ops[i].Value.(ast.Var)
			if !ok || v.IsWildcard() {
				continue
			}
			a := assigned[v]
			if a == nil {
				a = &assignment{}
				assigned[v] = a
			}
			a.times++
			if r, ok := ops[1-i].Value.(ast.Ref); ok {
				a.src = r
			}
		}
		return false
	})
	if len(assigned) == 0 {
		return nil, nil
	}
	uses, heads := map[ast.Var]int{}, map[ast.Var]int{}
	ast.WalkVars(x, func(v ast.Var) bool {
		uses[v]++
		return false
	})
	ast.WalkRefs(x, func(r ast.Ref) bool {
		if v, ok := r[0].Value.(ast.Var); ok {
			heads[v]++
		}
		return false
	})
	// Resolved in rounds: an alias of an alias is known once its source is.
	for changed := true; changed; {
		changed = false
		for v, a := range assigned {
			if _, done := paths[v]; done || a.times != 1 || a.src == nil || uses[v] != 1+heads[v]+len(gets[v]) {
				continue
			}
			var base []string
			switch head := a.src[0].Value.(type) {
			case ast.Var:
				if head.Equal(ast.InputRootDocument.Value) {
					base = []string{}
				} else if p, ok := paths[head]; ok {
					base = p
				} else {
					continue
				}
			default:
				continue
			}
			rest := groundPath(a.src[1:])
			if len(rest) != len(a.src)-1 {
				continue // a key that is not a string
			}
			if paths == nil {
				paths, sources = map[ast.Var][]string{}, map[**ast.Term]bool{}
			}
			paths[v] = append(slices.Clone(base), rest...)
			sources[&a.src[0]] = true
			changed = true
		}
	}
	return paths, sources
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
