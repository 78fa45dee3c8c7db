package policy

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A function whose METADATA says `custom: {deputy_memo: true}` keeps its
// results across checks, for the life of the activation: a call with
// arguments it was called with before is answered from memory instead of
// running its body again. That is only sound for a function whose value
// depends on its arguments and the activation's base data alone, which
// never changes, so activation refuses the annotation on a function that
// could depend on anything else (see purity). A policy uses it for
// work that repeats from check to check on the same few values: matching
// a request's route against a table of routes, say, where the request's
// other facts (its methods, its body) are judged outside the function.
//
// Results are kept only outside `with` (a call under a `with` modifier
// may see other data or other functions, and OPA evaluates it in a frame
// of its own), only for calls whose arguments and value are small and
// hold no number (see smallTerms), and only while what is kept weighs at
// most memoBytes (see heapWeight): past that the memo starts afresh, so
// arguments a client chooses cannot grow memory, only cost the misses
// they cause.
const memoAnnotation = "deputy_memo"

const (
	memoBytes    = 1 << 20 // what the kept results may hold on the heap together
	memoMaxBytes = 2048    // the most a call's arguments, and its value, may weigh to be kept
	memoPerEntry = 96      // what a result costs the memo's map beyond its terms, roughly
)

// memo holds an activation's memoized function results. Its zero value
// memoizes nothing.
type memo struct {
	// calls are the operator terms of the calls to memoized functions in
	// the compiled policies: OPA keys a call's cached result on its own
	// terms, the operator first, so one pointer lookup tells whether a
	// key is a memoized call.
	calls map[*ast.Term]struct{}

	mu      sync.RWMutex
	entries map[int][]memoEntry
	n       int
	bytes   int
}

type memoEntry struct {
	key    ast.Ref
	value  *ast.Term
	weight int // what key and value hold on the heap
}

// covers reports whether key is the cache key of a call to a memoized
// function.
func (m *memo) covers(key ast.Ref) bool {
	if m == nil || len(m.calls) == 0 || len(key) == 0 {
		return false
	}
	_, ok := m.calls[key[0]]
	return ok
}

// get returns the value kept for key (of hash h), or nil.
func (m *memo) get(h int, key ast.Ref) *ast.Term {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, e := range m.entries[h] {
		if e.key.Equal(key) {
			return e.value
		}
	}
	return nil
}

// memoEntryOf returns a copy of key and value to keep, or false when they are
// not to be kept. Both are copied: OPA builds keys in buffers it reuses,
// and arguments may share storage with the input of the check that made
// the call.
func memoEntryOf(key ast.Ref, value *ast.Term) (memoEntry, bool) {
	if value == nil || !smallTerms(key[1:], memoMaxBytes) || !smallTerms([]*ast.Term{value}, memoMaxBytes) {
		return memoEntry{}, false
	}
	w, ok := heapWeight(value.Value, 0)
	if !ok {
		return memoEntry{}, false
	}
	e := memoEntry{key: make(ast.Ref, len(key)), value: value.Copy(), weight: memoPerEntry + 40*len(key) + w}
	e.key[0] = key[0]
	for i := 1; i < len(key); i++ {
		if w, ok = heapWeight(key[i].Value, 0); !ok {
			return memoEntry{}, false
		}
		e.key[i] = key[i].Copy()
		e.weight += w
	}
	return e, true
}

// keep adds the results an evaluation found, once it has finished without
// error: a function OPA evaluates to one value and then finds a conflicting
// one for (an error, so a denial) must not answer the next check with the
// first.
func (m *memo) keep(found []memoEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range found {
		h := e.key.Hash()
		if slices.ContainsFunc(m.entries[h], func(old memoEntry) bool { return old.key.Equal(e.key) }) {
			continue
		}
		if m.bytes+e.weight > memoBytes {
			clear(m.entries)
			m.n, m.bytes = 0, 0
		}
		if m.entries == nil {
			m.entries = map[int][]memoEntry{}
		}
		m.entries[h] = append(m.entries[h], e)
		m.n++
		m.bytes += e.weight
	}
}

// smallTerms reports whether terms weigh at most limit bytes, counting
// string bytes and a few bytes a value, and hold no number. OPA calls
// numbers equal that a function can tell apart (1 and 1.0 marshal
// differently), so a result kept for one spelling must not answer the
// other: calls with numbers are simply not kept.
func smallTerms(terms []*ast.Term, limit int) bool {
	left := limit
	var weigh func(v ast.Value) bool
	weigh = func(v ast.Value) bool {
		left -= 8
		switch v := v.(type) {
		case ast.String:
			left -= len(v)
		case *ast.Array:
			for i := 0; i < v.Len() && left >= 0; i++ {
				if !weigh(v.Elem(i).Value) {
					return false
				}
			}
		case ast.Object:
			for _, k := range v.Keys() {
				if left < 0 || !weigh(k.Value) || !weigh(v.Get(k).Value) {
					return false
				}
			}
		case ast.Set:
			for _, t := range v.Slice() {
				if left < 0 || !weigh(t.Value) {
					return false
				}
			}
		case ast.Boolean, ast.Null:
		default:
			return false // a number, or not a plain value: never kept
		}
		return left >= 0
	}
	for _, t := range terms {
		if !weigh(t.Value) {
			return false
		}
	}
	return true
}

// len returns how many results the memo keeps.
func (m *memo) len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.n
}

// newMemo finds the memoized functions of the compiled policies, checks
// that each is pure, and returns the memo for them (nil when there are
// none).
func newMemo(c *ast.Compiler) (*memo, error) {
	var refs []ast.Ref
	for _, mod := range c.Modules {
		for _, rule := range mod.Rules {
			if !memoized(rule) {
				continue
			}
			ref := rule.Ref().GroundPrefix()
			if len(rule.Head.Args) == 0 {
				return nil, fmt.Errorf("%s: %s: only a function can be memoized (%s)", rule.Location, ref, memoAnnotation)
			}
			if err := newPurity(c).rules(ref); err != nil {
				return nil, fmt.Errorf("%s: %s cannot be memoized (%s): %w", rule.Location, ref, memoAnnotation, err)
			}
			if !containsRef(refs, ref) {
				refs = append(refs, ref)
			}
		}
	}
	if len(refs) == 0 {
		return nil, nil
	}
	m := &memo{calls: map[*ast.Term]struct{}{}}
	for _, mod := range c.Modules {
		ast.WalkExprs(mod, func(x *ast.Expr) bool {
			if op := callOperator(x); op != nil && containsRef(refs, op.Value.(ast.Ref)) {
				m.calls[op] = struct{}{}
			}
			return false
		})
	}
	return m, nil
}

func containsRef(refs []ast.Ref, ref ast.Ref) bool {
	for _, r := range refs {
		if r.Equal(ref) {
			return true
		}
	}
	return false
}

// memoized reports whether rule's annotations ask for its results to be
// kept across checks.
func memoized(rule *ast.Rule) bool {
	for _, a := range rule.Annotations {
		if v, ok := a.Custom[memoAnnotation]; ok && v == true {
			return true
		}
	}
	return false
}

// callOperator returns the operator term of a call expression whose
// operator is a reference, or nil.
func callOperator(x *ast.Expr) *ast.Term {
	terms, ok := x.Terms.([]*ast.Term)
	if !ok || len(terms) == 0 {
		return nil
	}
	if _, ok := terms[0].Value.(ast.Ref); !ok {
		return nil
	}
	return terms[0]
}

// purity checks that rules depend on their arguments and base data only:
// no input, no builtin whose answer may change between calls with the
// same arguments, no `with`, and no rule or function that fails any of
// these, however deep.
type purity struct {
	c    *ast.Compiler
	seen map[string]bool
	// input allows reads of input: a decision query depends on the check's
	// input, which the decision memo keys its answers on.
	input bool
	// tokens allows Deputy's io.jwt.decode_verify (decodeVerifyRef), whose
	// answers the decision memo keeps within their windows; verifies is
	// set when a rule calls it.
	tokens, verifies bool
}

func newPurity(c *ast.Compiler) *purity { return &purity{c: c, seen: map[string]bool{}} }

// pureBuiltinFamilies are the builtins a memoized function may call, by
// name prefix (a name without a dot is one of OPA's core builtins:
// operators, strings, aggregates, types): their answer depends on their
// arguments alone. Any other builtin is refused, so one OPA adds later
// that reads the clock, the network or the host is refused too, until it
// is listed here.
var pureBuiltinFamilies = []string{
	"array.", "object.", "strings.", "regex.", "glob.", "json.", "yaml.", "base64.", "base64url.",
	"hex.", "urlquery.", "units.", "semver.", "bits.", "numbers.range", "net.cidr_", "internal.member_",
	"crypto.md5", "crypto.sha1", "crypto.sha256", "crypto.hmac.",
}

// impureBuiltins are core builtins (no dot in the name) that act rather
// than answer.
var impureBuiltins = map[string]bool{"print": true, "trace": true}

// pureBuiltin reports whether a memoized function may call the builtin
// name.
func pureBuiltin(name string) bool {
	b, ok := ast.BuiltinMap[name]
	if !ok || b.Nondeterministic || impureBuiltins[name] {
		return false
	}
	if !strings.Contains(name, ".") {
		return true
	}
	for _, family := range pureBuiltinFamilies {
		if strings.HasPrefix(name, family) {
			return true
		}
	}
	return false
}

// rules checks every rule that ref may name.
func (p *purity) rules(ref ast.Ref) error {
	key := ref.String()
	if done, ok := p.seen[key]; ok {
		if !done {
			return fmt.Errorf("%s refers to itself", ref)
		}
		return nil
	}
	p.seen[key] = false
	for _, rule := range p.c.GetRulesDynamicWithOpts(ref, ast.RulesOptions{IncludeHiddenModules: true}) {
		for r := rule; r != nil; r = r.Else {
			if err := p.rule(r); err != nil {
				return err
			}
		}
	}
	p.seen[key] = true
	return nil
}

// rule checks one rule: its head and body, comprehensions included.
func (p *purity) rule(r *ast.Rule) error {
	var err error
	fail := func(format string, args ...any) bool {
		if err == nil {
			err = fmt.Errorf("%s: "+format, append([]any{r.Location}, args...)...)
		}
		return true
	}
	vis := ast.NewGenericVisitor(func(x any) bool {
		if err != nil {
			return true
		}
		switch x := x.(type) {
		case *ast.Expr:
			if len(x.With) > 0 {
				return fail("uses with")
			}
			if op := callOperator(x); op != nil {
				if e := p.call(op.Value.(ast.Ref)); e != nil {
					return fail("%v", e)
				}
			}
		case ast.Call:
			op, ok := x[0].Value.(ast.Ref)
			if !ok {
				return fail("calls %v", x[0])
			}
			if e := p.call(op); e != nil {
				return fail("%v", e)
			}
		case ast.Ref:
			switch {
			case x.HasPrefix(ast.InputRootRef):
				if !p.input {
					return fail("reads input")
				}
			case x.HasPrefix(ast.DefaultRootRef):
				if len(x.GroundPrefix()) < 2 {
					return fail("reads all of data (%s)", x)
				}
				if e := p.rules(x); e != nil {
					return fail("reads %s: %v", x, e)
				}
			}
		}
		return false
	})
	// The head's own name is not a read of itself: only its arguments,
	// key and value are walked.
	for _, t := range r.Head.Args {
		vis.Walk(t)
	}
	for _, t := range []*ast.Term{r.Head.Key, r.Head.Value} {
		if t != nil {
			vis.Walk(t)
		}
	}
	vis.Walk(r.Body)
	return err
}

// call checks what a call runs: a builtin that answers alike for alike
// arguments, or a pure function of the policies.
func (p *purity) call(op ast.Ref) error {
	if op.HasPrefix(ast.DefaultRootRef) {
		return p.rules(op)
	}
	if p.tokens && op.Equal(decodeVerifyRef) {
		p.verifies = true
		return nil
	}
	if name := op.String(); !pureBuiltin(name) {
		return fmt.Errorf("calls %s, which may answer alike arguments differently (the clock, the network, the host) or act", name)
	}
	return nil
}
