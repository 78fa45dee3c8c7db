package policy

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// memoModule is a policy whose function f is memoized, with other rules
// around it.
func memoModule(t *testing.T, fn string, rest ...string) *ast.Module {
	t.Helper()
	src := "package t\n\n# METADATA\n# custom:\n#   deputy_memo: true\n" + fn + "\n\n" + strings.Join(rest, "\n\n")
	mod, err := ast.ParseModuleWithOpts("t.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true})
	if err != nil {
		t.Fatal(err)
	}
	return mod
}

func compileMemo(t *testing.T, mod *ast.Module, data map[string]any) (*Engine, error) {
	t.Helper()
	// json.match_schema allowed, as an operator may: a memoized function
	// must still not call it.
	e := New(WithQueries("data.t.out"), WithLogger(slog.New(slog.DiscardHandler)), WithAllowedBuiltins("json.match_schema"))
	return e, e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"t.rego": mod}, Data: data})
}

var memoRoutes = map[string]any{"t": map[string]any{"routes": []any{"/a/", "/a/b/", "/c/"}}}

const pureMatch = `f(x) := [r | some r in data.t.routes; startswith(x, r)]`

// A function is memoized only if its value can depend on nothing but its
// arguments and the activation's base data: anything else is refused at
// activation, naming why.
func TestMemoRefusesFunctionsThatAreNotPure(t *testing.T) {
	cases := []struct{ name, fn, rest, want string }{
		{"reads input", `f(x) := [r | some r in data.t.routes; startswith(input.path, r)]`, "", "reads input"},
		{"reads a rule that reads input", `f(x) := [r | some r in data.t.routes; startswith(x, r); g]`, "g if input.on", "reads input"},
		{"calls a function that reads input", `f(x) := h(x)`, "h(y) := y if input.on", "reads input"},
		{"reads the time", `f(x) := time.now_ns() + x`, "", "time.now_ns"},
		{"may fetch schemas", `f(x) := json.match_schema(x, {"type": "string"})`, "", "json.match_schema"},
		{"traces", `f(x) := x if trace("seen")`, "", "trace"},
		{"uses with", `f(x) := y if { y := g with data.t.routes as [] }`, "g := count(data.t.routes)", "uses with"},
		{"a rule, not a function", `f := count(data.t.routes)`, "", "only a function"},
		{"verifies tokens, which depends on the time", `f(x) := io.jwt.decode_verify(x, {"secret": "s"})`, "", "decode_verify"},
		{"verifies certificates against the clock", `f(x) := v if { [v, _] := crypto.x509.parse_and_verify_certificates(x) }`, "", "crypto.x509.parse_and_verify_certificates"},
		{"verifies certificates, with options", `f(x) := crypto.x509.parse_and_verify_certificates_with_options(x, {})`, "", "parse_and_verify_certificates_with_options"},
		{"a builtin outside the known pure families", `f(x) := time.parse_rfc3339_ns(x)`, "", "time.parse_rfc3339_ns"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := compileMemo(t, memoModule(t, c.fn, c.rest, "out := 1"), memoRoutes)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), memoAnnotation) {
				t.Fatalf("activation error %v, want one naming %q and %s", err, c.want, memoAnnotation)
			}
		})
	}
}

// Results of a memoized function are kept across checks, one per distinct
// arguments, and the answers are those OPA gives without the memo.
func TestMemoKeepsResultsAcrossChecks(t *testing.T) {
	e, err := compileMemo(t, memoModule(t, pureMatch, "out := f(input.path)"), memoRoutes)
	if err != nil {
		t.Fatal(err)
	}
	m := e.Current().memo
	if m == nil || len(m.calls) != 1 {
		t.Fatalf("memo %+v, want one call of f", m)
	}
	for i, path := range []string{"/a/b/x", "/a/b/x", "/c/d", "/a/b/x", "/z/"} {
		sameEval(t, e, "data.t.out", ast.MustParseTerm(fmt.Sprintf(`{"path": %q}`, path)).Value)
		if want := []int{1, 1, 2, 2, 3}[i]; m.len() != want {
			t.Fatalf("after %s: %d results kept, want %d", path, m.len(), want)
		}
	}
	got, err := e.Eval(context.Background(), "data.t.out", ast.MustParseTerm(`{"path": "/a/b/x"}`).Value)
	if err != nil || !got.Value.Equal(ast.MustParseTerm(`["/a/", "/a/b/"]`)) {
		t.Fatalf("f(/a/b/x) = %v, %v", got.Value, err)
	}
}

// Under a `with` modifier a memoized function may see other data: such a
// call neither reads the memo nor fills it.
func TestMemoIsNotUsedUnderWith(t *testing.T) {
	mod := memoModule(t, pureMatch,
		`out := {"plain": f(input.path), "narrowed": g}`,
		`g := y if { y := f(input.path) with data.t.routes as ["/zz/"] }`)
	e, err := compileMemo(t, mod, memoRoutes)
	if err != nil {
		t.Fatal(err)
	}
	want := ast.MustParseTerm(`{"plain": ["/a/"], "narrowed": []}`)
	for range 3 {
		got, err := e.Eval(context.Background(), "data.t.out", ast.MustParseTerm(`{"path": "/a/x"}`).Value)
		if err != nil || !got.Value.Equal(want) {
			t.Fatalf("out = %v, %v; want %v", got.Value, err, want)
		}
	}
	if n := e.Current().memo.len(); n != 1 {
		t.Fatalf("%d results kept, want 1 (the call outside with)", n)
	}
}

// A function OPA evaluates to one value and then finds another for is an
// error, so a denial, on every check: the first value is not kept.
func TestMemoKeepsNothingOfAFailedEvaluation(t *testing.T) {
	mod := memoModule(t, `f(x) := "one" if startswith(x, "/a")`, `f(x) := "two" if startswith(x, "/a/b")`, "out := f(input.path)")
	e, err := compileMemo(t, mod, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := sameEval(t, e, "data.t.out", ast.MustParseTerm(`{"path": "/a/b/c"}`).Value); err == nil {
			t.Fatal("f(/a/b/c) answered, want the conflict error")
		}
	}
	if n := e.Current().memo.len(); n != 0 {
		t.Fatalf("%d results kept from failed evaluations", n)
	}
	sameEval(t, e, "data.t.out", ast.MustParseTerm(`{"path": "/a/c"}`).Value)
	if n := e.Current().memo.len(); n != 1 {
		t.Fatalf("%d results kept, want 1", n)
	}
}

// Each activation starts with an empty memo: new data is read at the next
// check.
func TestMemoLivesWithItsActivation(t *testing.T) {
	mod := memoModule(t, pureMatch, "out := f(input.path)")
	e, err := compileMemo(t, mod, memoRoutes)
	if err != nil {
		t.Fatal(err)
	}
	in := ast.MustParseTerm(`{"path": "/a/b/x"}`).Value
	if got, _ := e.Eval(context.Background(), "data.t.out", in); !got.Value.Equal(ast.MustParseTerm(`["/a/", "/a/b/"]`)) {
		t.Fatalf("before: %v", got.Value)
	}
	narrowed := map[string]any{"t": map[string]any{"routes": []any{"/a/b/"}}}
	if err := e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"t.rego": mod}, Data: narrowed}); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.Eval(context.Background(), "data.t.out", in); !got.Value.Equal(ast.MustParseTerm(`["/a/b/"]`)) {
		t.Fatalf("after new data: %v, want [\"/a/b/\"]", got.Value)
	}
}

// Arguments a client chooses cannot grow the memo without end: what it
// keeps weighs at most memoBytes, and it keeps nothing for large
// arguments.
func TestMemoIsBounded(t *testing.T) {
	e, err := compileMemo(t, memoModule(t, pureMatch, "out := f(input.path)"), memoRoutes)
	if err != nil {
		t.Fatal(err)
	}
	m := e.Current().memo
	big := "/a/" + strings.Repeat("x", memoMaxBytes)
	sameEval(t, e, "data.t.out", ast.MustParseTerm(fmt.Sprintf(`{"path": %q}`, big)).Value)
	if m.len() != 0 {
		t.Fatalf("a %d-byte argument was kept", len(big))
	}
	most, cleared := 0, false
	for i := range 20000 {
		if _, err := e.Eval(context.Background(), "data.t.out", ast.MustParseTerm(fmt.Sprintf(`{"path": "/a/%d"}`, i)).Value); err != nil {
			t.Fatal(err)
		}
		if m.bytes > memoBytes {
			t.Fatalf("the memo weighs %d bytes, past its bound %d", m.bytes, memoBytes)
		}
		if m.len() < most {
			cleared = true
		}
		most = max(most, m.len())
	}
	if !cleared || most < 1000 {
		t.Fatalf("kept at most %d results and was never cleared at its bound", most)
	}
	sameEval(t, e, "data.t.out", ast.MustParseTerm(`{"path": "/a/b/1"}`).Value)
}

// The bound is on the heap the kept results hold: for results of several
// shapes, what they weigh is not below what they hold once collected, nor
// far above it.
func TestMemoWeighsWhatItHolds(t *testing.T) {
	for name, fn := range map[string]string{
		"routes":  pureMatch,
		"object":  `f(x) := {"route": x, "dirs": [r | some r in data.t.routes; startswith(x, r)], "parts": split(x, "/"), "api": startswith(x, "/api/")}`,
		"boolean": `f(x) := startswith(x, "/a/b/")`,
	} {
		e, err := compileMemo(t, memoModule(t, fn, "out := f(input.path)"), memoRoutes)
		if err != nil {
			t.Fatal(err)
		}
		m := e.Current().memo
		inputs := make([]ast.Value, 150)
		for i := range inputs {
			inputs[i] = ast.MustParseTerm(fmt.Sprintf(`{"path": "/a/b/%d/%s"}`, i, strings.Repeat("y", 20))).Value
			if _, err := e.Eval(context.Background(), "data.t.out", inputs[i]); err != nil {
				t.Fatal(err)
			}
		}
		if m.len() < 100 {
			t.Fatalf("%s: %d results kept of %d calls", name, m.len(), len(inputs))
		}
		n, weight := m.len(), m.bytes
		held := heapFreedBy(func() {
			m.mu.Lock()
			m.entries, m.n, m.bytes = nil, 0, 0
			m.mu.Unlock()
		})
		if r := held / float64(weight); r > 1.25 || r < 0.6 {
			t.Errorf("%s: %d results weigh %d bytes and hold %.0f on the heap (%.2f×)", name, n, weight, held, r)
		}
		runtime.KeepAlive(inputs)
		runtime.KeepAlive(e) // else the engine goes with the results
	}
}

// OPA calls 1 and 1.0 equal, but a function can tell them apart
// (json.marshal keeps the spelling): a call with a number is not kept, so
// one client's spelling never answers another's check.
func TestMemoKeepsNoCallWithANumber(t *testing.T) {
	for _, pair := range [][2]string{{`1`, `1.0`}, {`1.0`, `1`}, {`0`, `-0`}, {`[1]`, `[1.0]`}} {
		t.Run(pair[0], func(t *testing.T) {
			mod := memoModule(t, `f(x) := json.marshal(x)`, `out := {"v": f(input.n), "allow": f(input.n) == "1"}`)
			e, err := compileMemo(t, mod, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range pair {
				sameEval(t, e, "data.t.out", ast.MustParseTerm(fmt.Sprintf(`{"n": %s}`, n)).Value)
			}
			if k := e.Current().memo.len(); k != 0 {
				t.Fatalf("%d calls with numbers kept", k)
			}
		})
	}
}

// A value is weighed as its arguments are: a small argument with a large
// value (here every prefix of a path) is not kept.
func TestMemoKeepsNoLargeValue(t *testing.T) {
	mod := memoModule(t, `prefixes(p) := [concat("/", array.slice(parts, 0, i)) | parts := split(p, "/"); some i in numbers.range(1, count(parts))]`,
		`out := count(prefixes(input.path))`)
	e, err := compileMemo(t, mod, nil)
	if err != nil {
		t.Fatal(err)
	}
	sameEval(t, e, "data.t.out", ast.MustParseTerm(`{"path": "a/b"}`).Value)
	if k := e.Current().memo.len(); k != 1 {
		t.Fatalf("%d results kept for a small value, want 1", k)
	}
	sameEval(t, e, "data.t.out", ast.MustParseTerm(fmt.Sprintf(`{"path": %q}`, strings.Repeat("a/", 200))).Value)
	if k := e.Current().memo.len(); k != 1 {
		t.Fatalf("a %d-entry value was kept", 200)
	}
}

// Checks running at once share the memo and each gets its own answer.
func TestMemoConcurrentChecks(t *testing.T) {
	e, err := compileMemo(t, memoModule(t, pureMatch, "out := f(input.path)"), memoRoutes)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{"/a/1": `["/a/"]`, "/a/b/2": `["/a/", "/a/b/"]`, "/c/": `["/c/"]`, "/d/": `[]`}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				var path string
				n := (g + i) % len(paths)
				for p := range paths {
					if n == 0 {
						path = p
						break
					}
					n--
				}
				got, err := e.Eval(context.Background(), "data.t.out", ast.MustParseTerm(fmt.Sprintf(`{"path": %q}`, path)).Value)
				if err != nil || !got.Value.Equal(ast.MustParseTerm(paths[path])) {
					errs <- fmt.Errorf("%s: %v, %v; want %s", path, got.Value, err, paths[path])
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// The shipped impersonation policy memoizes its route matching, and
// decides every request as OPA does without the memo: the matching is
// kept per route, the methods are judged on every check.
func TestShippedPoliciesDecideAlikeWithTheMemo(t *testing.T) {
	set, err := LoadPaths([]string{"../../policies"})
	if err != nil {
		t.Fatal(err)
	}
	e := New(WithLogger(slog.New(slog.DiscardHandler)))
	if err := e.Activate(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	if m := e.Current().memo; m == nil || len(m.calls) == 0 {
		t.Fatal("the shipped policies memoize nothing")
	}
	routes := [][]string{
		{"customer", "account"}, {"customer", "account", "edit"}, {"customer", "account", "password"},
		{"fr", "customer", "account", "edit"}, {"customer", "payment", "x"}, {"catalog", "shoes"}, {}, {"graphql"},
	}
	const query = "data.deputy.authz.decision"
	for round := range 2 {
		for _, route := range routes {
			for _, methods := range []string{`["GET"]`, `["POST"]`, `["GET", "PATCH"]`} {
				dirs := make([]string, len(route))
				for i := range route {
					dirs[i] = fmt.Sprintf("%q", "/"+strings.Join(route[i:], "/")+"/")
				}
				segs := make([]string, len(route))
				for i, s := range route {
					segs[i] = fmt.Sprintf("%q", s)
				}
				in := fmt.Sprintf(`{"delegation": {"mode": "impersonation", "actor_roles": ["support_agent"], "subject": "c1"},
					"deputy": {"request": {"route_dirs": [%s], "route_segments": [%s], "methods": %s}}}`,
					strings.Join(dirs, ","), strings.Join(segs, ","), methods)
				t.Run(fmt.Sprintf("%d/%s/%s", round, strings.Join(route, "/"), methods), func(t *testing.T) {
					sameEval(t, e, query, ast.MustParseTerm(in).Value)
				})
			}
		}
	}
	if e.Current().memo.len() == 0 {
		t.Fatal("no route matching was kept")
	}
}
