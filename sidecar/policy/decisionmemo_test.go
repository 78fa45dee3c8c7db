package policy

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// forgetAnswers turns off the decision memo of query on e's activation,
// for tests that measure evaluation itself.
func forgetAnswers(e *Engine, query string) {
	if d := e.Current().direct[query]; d != nil {
		d.memo = nil
	}
}

// answers returns the decision memo of data.t.out on e's activation.
func answers(e *Engine) *decisionMemo { return e.Current().direct["data.t.out"].memo }

// activateData activates src with data, allowing json.match_schema as an
// operator may.
func activateData(t *testing.T, src string, data map[string]any) *Engine {
	t.Helper()
	mod, err := ast.ParseModuleWithOpts("p.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	e := New(WithQueries("data.t.out"), WithLogger(slog.New(slog.DiscardHandler)), WithAllowedBuiltins("json.match_schema"))
	if err := e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"p.rego": mod}, Data: data}); err != nil {
		t.Fatal(err)
	}
	return e
}

const memoPolicy = `package t

import data.t.levels

out := {"allowed": true, "level": levels[input.who], "path": input.path} if {
	levels[input.who] >= levels[input.need]
	startswith(input.path, "/a/")
	not input.blocked
} else := {"allowed": false, "reason": sprintf("%s/%v", [input.who, object.get(input, "n", 0)])}
`

var memoLevels = map[string]any{"t": map[string]any{"levels": map[string]any{"look": 1, "update": 2}}}

// A pure decision query keeps its answers, and every answer, kept or
// evaluated, is the one OPA gives without the memo.
func TestDecisionMemoAnswersAsEvaluation(t *testing.T) {
	e := activateData(t, memoPolicy, memoLevels)
	m := answers(e)
	if m == nil {
		t.Fatal("a pure query keeps no answers")
	}
	inputs := []string{
		`{"who": "update", "need": "look", "path": "/a/1"}`,
		`{"who": "look", "need": "update", "path": "/a/1"}`,
		`{"who": "update", "need": "look", "path": "/b/1"}`,
		`{"who": "update", "need": "look", "path": "/a/1", "blocked": true}`,
		`{"who": "update", "need": "look", "path": "/a/1", "blocked": false}`,
		`{"who": "nobody", "need": "look", "path": "/a/1", "n": 1}`,
		`{"who": "nobody", "need": "look", "path": "/a/1", "n": 1.0}`,
		`{"who": "update", "need": "look", "path": "/a/1", "extra": {"x": [1, "2", null]}}`,
	}
	for round := range 3 {
		for _, in := range inputs {
			t.Run(fmt.Sprintf("%d/%s", round, in), func(t *testing.T) {
				want, err := e.Eval(context.Background(), "data.t.out", ast.MustParseTerm(in).Value, viaRego)
				if err != nil {
					t.Fatal(err)
				}
				got, err := e.Eval(context.Background(), "data.t.out", ast.MustParseTerm(in).Value)
				if err != nil {
					t.Fatal(err)
				}
				// Compared as written, numbers' spelling included.
				if got.Value.String() != want.Value.String() {
					t.Fatalf("%v, without the memo %v", got.Value, want.Value)
				}
			})
		}
	}
	if hits, lookups := e.AnswersKept(); lookups != uint64(3*len(inputs)) || hits != uint64(2*len(inputs)) {
		t.Fatalf("%d hits in %d lookups, want %d in %d: every input kept after its first check", hits, lookups, 2*len(inputs), 3*len(inputs))
	}
}

// A query whose answer may change between checks with the same input
// keeps none: one that reads the clock, randomness, a fresh id, one that
// traces, one using with (a mocked token verification too), one reading
// input whole (its needs are all of input).
func TestDecisionMemoKeepsNothingForImpureQueries(t *testing.T) {
	for name, rule := range map[string]string{
		"the clock":                  `out := {"t": time.now_ns(), "p": input.path}`,
		"randomness":                 `out := rand.intn(input.path, 10)`,
		"a fresh id":                 `out := uuid.rfc4122(input.path)`,
		"mocked token verification":  "out := y if { y := g with io.jwt.decode_verify as fake }\n\ng := io.jwt.decode_verify(input.token, {\"secret\": \"s\"})\n\nfake(_, _) := [true, {}, {}]",
		"token signatures":           `out := io.jwt.verify_hs256(input.token, "s")`,
		"a schema it may fetch":      `out := json.match_schema(input.doc, {"type": "string"})`,
		"trace":                      `out := input.path if trace(input.path)`,
		"with":                       "out := y if { y := g with input.path as \"/x\" }\n\ng := input.path",
		"a helper reading the clock": "out := g(input.path)\n\ng(p) := [p, time.now_ns()]",
		"all of input":               `out := count(input)`,
	} {
		t.Run(name, func(t *testing.T) {
			if m := answers(activateData(t, "package t\n\n"+rule+"\n", nil)); m != nil {
				t.Fatalf("%s keeps its answers", rule)
			}
		})
	}
	e := activateData(t, "package t\n\nout := [input.path, time.now_ns()]\n", nil)
	in := ast.MustParseTerm(`{"path": "/a"}`).Value
	first, _ := e.Eval(context.Background(), "data.t.out", in)
	for range 100 {
		if next, _ := e.Eval(context.Background(), "data.t.out", in); !next.Value.Equal(first.Value) {
			return // the clock moved, and the answer with it
		}
	}
	t.Fatal("100 checks of a policy reading the clock answered alike")
}

// Keys keep apart every two inputs OPA can tell apart, numbers by their
// spelling, and join inputs that differ only in the order of object keys.
func TestDecisionMemoKeys(t *testing.T) {
	distinct := []string{
		`1`, `1.0`, `-0`, `0`, `"1"`, `true`, `"true"`, `false`, `null`, `"null"`, `""`,
		`[]`, `{}`, `[[]]`, `[{}]`, `[""]`, `[["a"], "b"]`, `[["a", "b"]]`, `["a", ["b"]]`,
		`{"a": "bc"}`, `{"ab": "c"}`, `{"a": {"b": "c"}}`, `{"a": ["b", "c"]}`, `{"a": "b", "c": ""}`,
		`{"a": "b", "c": null}`, `{"1": 1}`, `{1: "1"}`, `"\u0000"`, `"s\u0001"`, `["s", ""]`,
	}
	seen := map[string]string{}
	for _, src := range distinct {
		key, ok := newKeyEncoder().encode(ast.MustParseTerm(src).Value)
		if !ok {
			t.Fatalf("%s: not encoded", src)
		}
		if other, dup := seen[string(key)]; dup {
			t.Fatalf("%s and %s share a key", src, other)
		}
		seen[string(key)] = src
	}
	ab := ast.NewObject([2]*ast.Term{ast.StringTerm("a"), ast.StringTerm("1")}, [2]*ast.Term{ast.StringTerm("b"), ast.StringTerm("2")})
	ba := ast.NewObject([2]*ast.Term{ast.StringTerm("b"), ast.StringTerm("2")}, [2]*ast.Term{ast.StringTerm("a"), ast.StringTerm("1")})
	k1, _ := newKeyEncoder().encode(ab)
	k2, _ := newKeyEncoder().encode(ba)
	if string(k1) != string(k2) {
		t.Fatal("one object built in two orders has two keys")
	}
	if _, ok := newKeyEncoder().encode(ast.NewSet(ast.StringTerm("a"))); ok {
		t.Fatal("a set was encoded")
	}
	if _, ok := newKeyEncoder().encode(ast.NewObject([2]*ast.Term{ast.StringTerm("s"), ast.SetTerm()})); ok {
		t.Fatal("an object holding a set was encoded")
	}
}

// Each activation starts with an empty memo: a narrowed rule in new data
// decides the next check.
func TestDecisionMemoLivesWithItsActivation(t *testing.T) {
	e := activateData(t, memoPolicy, memoLevels)
	in := ast.MustParseTerm(`{"who": "look", "need": "look", "path": "/a/1"}`).Value
	for range 2 {
		if got, _ := e.Eval(context.Background(), "data.t.out", in); !strings.Contains(got.Value.String(), `"allowed": true`) {
			t.Fatalf("before: %v", got.Value)
		}
	}
	mod, err := ast.ParseModuleWithOpts("p.rego", memoPolicy, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	narrowed := map[string]any{"t": map[string]any{"levels": map[string]any{"look": 0, "update": 2}}}
	if err := e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"p.rego": mod}, Data: map[string]any{"t": narrowed["t"]}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.Eval(context.Background(), "data.t.out", in); !strings.Contains(got.Value.String(), `"allowed": true, "level": 0`) {
		t.Fatalf("after new data: %v", got.Value)
	}
}

// Inputs a client chooses cannot grow the memo without end: what it keeps
// weighs at most decisionMemoBytes, and a large input is not kept.
func TestDecisionMemoIsBounded(t *testing.T) {
	e := activateData(t, memoPolicy, memoLevels)
	m := answers(e)
	big := fmt.Sprintf(`{"who": "look", "need": "look", "path": "/a/%s"}`, strings.Repeat("x", decisionMemoMaxKey))
	sameEval(t, e, "data.t.out", ast.MustParseTerm(big).Value)
	if len(m.entries) != 0 {
		t.Fatalf("a %d-byte input was kept", len(big))
	}
	most, cleared := 0, false
	for i := range 12000 {
		if _, err := e.Eval(context.Background(), "data.t.out", ast.MustParseTerm(fmt.Sprintf(`{"who": "look", "need": "look", "path": "/a/%d/%s"}`, i, strings.Repeat("y", 80))).Value); err != nil {
			t.Fatal(err)
		}
		if m.bytes > decisionMemoBytes {
			t.Fatalf("the memo weighs %d bytes, past its bound %d", m.bytes, decisionMemoBytes)
		}
		if len(m.entries) < most {
			cleared = true
		}
		most = max(most, len(m.entries))
		if i%5 == 0 { // some repeats keep the memo on
			for range 3 {
				sameEval(t, e, "data.t.out", ast.MustParseTerm(`{"who": "look", "need": "look", "path": "/a/1"}`).Value)
			}
		}
	}
	if !cleared || m.off.Load() {
		t.Fatalf("the memo was never cleared at its bound (most %d entries), or turned itself off", most)
	}
}

// The memo's bound is on the heap it holds: for answers of every shape
// (a small decision, one carrying headers and a list, a wide object, a
// bare boolean) what the kept entries weigh is not below what they hold
// once collected, nor far above it.
func TestDecisionMemoWeighsWhatItHolds(t *testing.T) {
	answersOf := map[string]string{
		"decision": memoPolicy,
		"headers": `package t
out := {"allowed": true, "headers": {"x-a": "1", "x-b": input.path, "x-c": "three", "x-d": "four", "x-e": "5", "x-f": "six", "x-g": "seven", "x-h": "eight"}, "list": ["a", "b", input.who], "n": 42}
`,
		"wide": `package t
out := {sprintf("k%d", [i]): input.path | some i in numbers.range(1, 24)}
`,
		"boolean": `package t
out := input.path == "/a/1"
`,
	}
	for name, src := range answersOf {
		e := activateData(t, src, memoLevels)
		m := answers(e)
		inputs := make([]ast.Value, 150) // fewer than the bound holds of any of them
		for i := range inputs {
			inputs[i] = ast.MustParseTerm(fmt.Sprintf(`{"who": "look", "need": "look", "path": "/a/%d/%s"}`, i, strings.Repeat("y", 20))).Value
		}
		for _, in := range inputs {
			if _, err := e.Eval(context.Background(), "data.t.out", in); err != nil {
				t.Fatal(err)
			}
		}
		if len(m.entries) < 100 {
			t.Fatalf("%s: %d answers kept of %d inputs", name, len(m.entries), len(inputs))
		}
		n, weight := len(m.entries), m.bytes
		held := heapFreedBy(func() {
			m.mu.Lock()
			m.entries = nil
			m.mu.Unlock()
		})
		if r := held / float64(weight); r > 1.25 || r < 0.6 {
			t.Errorf("%s: %d entries weigh %d bytes and hold %.0f on the heap (%.2f×)", name, n, weight, held, r)
		}
		runtime.KeepAlive(inputs)
		runtime.KeepAlive(e) // else the engine goes with the entries
	}
}

// heapFreedBy returns how much live heap drop frees. Two collections on
// each side: the first only moves pooled objects (evaluation state, key
// buffers) aside, the second frees them.
func heapFreedBy(drop func()) float64 {
	var full, emptied runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&full)
	drop()
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&emptied)
	return float64(full.HeapAlloc) - float64(emptied.HeapAlloc)
}

// A query whose input never repeats (it reads a request id) stops
// keeping answers after a trial, still answers right, and tries again
// after its rest: a burst of new pages does not turn the memo off for
// good.
func TestDecisionMemoRestsWhenNothingRepeats(t *testing.T) {
	e := activateData(t, memoPolicy, memoLevels)
	m := answers(e)
	check := func(i int) {
		t.Helper()
		in := ast.MustParseTerm(fmt.Sprintf(`{"who": "look", "need": "look", "path": "/a/%d"}`, i)).Value
		if got, _ := e.Eval(context.Background(), "data.t.out", in); !strings.Contains(got.Value.String(), fmt.Sprintf(`"/a/%d"`, i)) {
			t.Fatalf("check %d: %v", i, got.Value)
		}
	}
	for i := range decisionMemoTrial {
		check(i)
	}
	if !m.off.Load() || m.entries != nil {
		t.Fatalf("after %d inputs seen once, the memo is on (%d entries)", decisionMemoTrial, len(m.entries))
	}
	_, before := e.AnswersKept()
	for i := range 1000 {
		check(i % 8)
	}
	if _, after := e.AnswersKept(); after != before || !m.off.Load() {
		t.Fatalf("a resting memo was looked up %d times", after-before)
	}
	m.resting.Store(decisionMemoRest - 2) // the rest's other checks, counted
	check(0)
	if !m.off.Load() {
		t.Fatal("the memo came back before its rest ended")
	}
	check(0) // the last check of the rest
	for range 3 {
		check(1)
	}
	if hits, _ := e.AnswersKept(); m.off.Load() || hits == 0 {
		t.Fatalf("after its rest the memo is off (%v) or answered nothing (%d hits)", m.off.Load(), hits)
	}
	// A trial that finds answers keeps the memo on for the next.
	for i := range 2 * decisionMemoTrial {
		check(i % 64)
	}
	if m.off.Load() {
		t.Fatal("a memo answering most checks was turned off")
	}
}

// Checks running at once share the memo and each gets its own answer.
func TestDecisionMemoConcurrentChecks(t *testing.T) {
	e := activateData(t, memoPolicy, memoLevels)
	inputs := []string{
		`{"who": "update", "need": "look", "path": "/a/1"}`,
		`{"who": "look", "need": "update", "path": "/a/1"}`,
		`{"who": "update", "need": "look", "path": "/b/2"}`,
		`{"who": "look", "need": "look", "path": "/a/3", "blocked": true}`,
	}
	want := make([]string, len(inputs))
	for i, in := range inputs {
		r, err := e.Eval(context.Background(), "data.t.out", ast.MustParseTerm(in).Value, viaRego)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = r.Value.String()
	}
	concurrentChecks(t, e, inputs, func(n int, got Result) bool { return got.Value.String() == want[n] })
	if hits, _ := e.AnswersKept(); hits == 0 {
		t.Fatal("no check was answered from the memo")
	}
}

// concurrentChecks evaluates inputs from 16 goroutines, 300 checks each,
// and fails the test for a check that errs or that right refuses.
func concurrentChecks(t *testing.T, e *Engine, inputs []string, right func(n int, got Result) bool) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := range 300 {
				n := (g + i) % len(inputs)
				got, err := e.Eval(context.Background(), "data.t.out", ast.MustParseTerm(inputs[n]).Value)
				if err != nil || !got.Defined() || !right(n, got) {
					errs <- fmt.Errorf("%s: %v, %v", inputs[n], got.Value, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A check whose context has ended is refused as its evaluation would be,
// even when its answer is kept.
func TestDecisionMemoRefusesAnEndedCheck(t *testing.T) {
	e := activateData(t, memoPolicy, memoLevels)
	in := ast.MustParseTerm(`{"who": "update", "need": "look", "path": "/a/1"}`).Value
	sameEval(t, e, "data.t.out", in)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r, err := e.Eval(ctx, "data.t.out", in); err == nil {
		t.Fatalf("an ended check answered %v", r.Value)
	}
}

// BenchmarkDecisionMemo is one check of a small pure policy: evaluated
// without the memo, answered from it, and missing it (each input new to
// the memo, kept on), which pays the key and the copy on top of the
// evaluation. The evaluated and missing checks cycle through the same
// inputs, more than the memo holds.
func BenchmarkDecisionMemo(b *testing.B) {
	mod, err := ast.ParseModuleWithOpts("p.rego", memoPolicy, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		b.Fatal(err)
	}
	activate := func(b *testing.B) *Engine {
		e := New(WithQueries("data.t.out"), WithLogger(slog.New(slog.DiscardHandler)))
		if err := e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"p.rego": mod}, Data: memoLevels}); err != nil {
			b.Fatal(err)
		}
		return e
	}
	inputs := make([]ast.Value, 1<<14)
	for i := range inputs {
		inputs[i] = ast.MustParseTerm(fmt.Sprintf(`{"who": "update", "need": "look", "path": "/a/%d", "extra": {"x": ["1", "2", null]}}`, i)).Value
	}
	run := func(b *testing.B, e *Engine, inputs []ast.Value) {
		m := answers(e)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if m != nil && i%(decisionMemoTrial/2) == 0 {
				m.trialLookups.Store(0) // no trial ends: the memo stays on
			}
			if _, err := e.Eval(context.Background(), "data.t.out", inputs[i%len(inputs)]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("evaluated", func(b *testing.B) {
		e := activate(b)
		forgetAnswers(e, "data.t.out")
		run(b, e, inputs)
	})
	b.Run("hit", func(b *testing.B) { run(b, activate(b), inputs[:1]) })
	b.Run("miss", func(b *testing.B) { run(b, activate(b), inputs) })
}

const tokenPolicy = `package t

out := {"allowed": true, "sub": payload.sub} if {
	[valid, _, payload] := io.jwt.decode_verify(input.token, {"secret": "secret"})
	valid
} else := {"allowed": false}
`

// A query that verifies tokens keeps an answer only while every token it
// verified stays verified: an expired token is evaluated again, and
// refused, the moment it leaves its window. The engine's clock is the
// time of both the lookup and the evaluation.
func TestDecisionMemoKeepsTokenAnswersWithinTheirWindow(t *testing.T) {
	var clock atomic.Int64
	start := time.Now()
	clock.Store(start.UnixNano())
	mod, err := ast.ParseModuleWithOpts("p.rego", tokenPolicy, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	e := New(WithQueries("data.t.out"), WithLogger(slog.New(slog.DiscardHandler)),
		WithClock(func() time.Time { return time.Unix(0, clock.Load()) }))
	if err := e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"p.rego": mod}}); err != nil {
		t.Fatal(err)
	}
	m := answers(e)
	if m == nil || !m.verifies {
		t.Fatalf("a query verifying tokens keeps no answers (%v)", m)
	}
	k := &jwtKeys{hmacSecret: "secret"}
	exp := start.Unix() + 60
	tok := k.sign(t, "HS256", map[string]any{"alg": "HS256", "typ": "JWT"}, map[string]any{"sub": "alice", "exp": exp})
	in := ast.MustParseTerm(fmt.Sprintf(`{"token": %q}`, tok)).Value
	check := func(at time.Time, want string) (hit bool) {
		t.Helper()
		clock.Store(at.UnixNano())
		before, _ := e.AnswersKept()
		got, err := e.Eval(context.Background(), "data.t.out", in)
		if err != nil || !got.Defined() || !strings.Contains(got.Value.String(), want) {
			t.Fatalf("at exp%+v: %v, %v; want %s", at.Sub(time.Unix(exp, 0)), got, err, want)
		}
		after, _ := e.AnswersKept()
		return after > before
	}
	if check(start, `"allowed": true`) {
		t.Fatal("the first check was answered from memory")
	}
	if !check(start.Add(time.Second), `"allowed": true`) {
		t.Fatal("a verified token's answer was not kept")
	}
	// A second from exp OPA still verifies the token, but the answer is
	// past its window: evaluated, and not kept.
	if check(time.Unix(exp-1, 0), `"allowed": true`) || check(time.Unix(exp-1, 0).Add(time.Millisecond), `"allowed": true`) {
		t.Fatal("a token a second from its exp was answered from memory")
	}
	for _, at := range []time.Time{time.Unix(exp, 1), time.Unix(exp+1, 0), time.Unix(exp+1, 0)} {
		if check(at, `"allowed": false`) {
			t.Fatal("an expired token was answered from memory")
		}
	}
	// Back inside the window (a clock stepped back), the kept answer holds.
	if !check(start.Add(2*time.Second), `"allowed": true`) {
		t.Fatal("the answer kept for the window was lost")
	}
}

// A refused or malformed token, a token checked at a fixed time, and a
// refused token beside a verified one keep nothing (their verification is
// not bounded); an input with no token is kept as any pure answer.
func TestDecisionMemoKeepsNoUnboundedVerification(t *testing.T) {
	k := &jwtKeys{hmacSecret: "secret"}
	good := k.sign(t, "HS256", map[string]any{"alg": "HS256"}, map[string]any{"sub": "alice"})
	forged := (&jwtKeys{hmacSecret: "another"}).sign(t, "HS256", map[string]any{"alg": "HS256"}, map[string]any{"sub": "eve"})
	malformed := good[:30] + "x"
	for _, c := range []struct {
		name, policy, input, want string
		kept                      bool
	}{
		{"forged", tokenPolicy, fmt.Sprintf(`{"token": %q}`, forged), `"allowed": false`, false},
		{"malformed", tokenPolicy, fmt.Sprintf(`{"token": %q}`, malformed), `"allowed": false`, false},
		{"fixed time", strings.Replace(tokenPolicy, `{"secret": "secret"}`, `{"secret": "secret", "time": 1700000000000000000}`, 1), fmt.Sprintf(`{"token": %q}`, good), `"allowed": true`, false},
		{"no token", tokenPolicy, `{"path": "/"}`, `"allowed": false`, true},
		{"a refused token beside a verified one", `package t

out := {"a": a, "b": b} if {
	[a, _, _] := io.jwt.decode_verify(input.a, {"secret": "secret"})
	[b, _, _] := io.jwt.decode_verify(input.b, {"secret": "secret"})
}
`, fmt.Sprintf(`{"a": %q, "b": %q}`, forged, good), `"a": false, "b": true`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := activateData(t, c.policy, nil)
			in := ast.MustParseTerm(c.input).Value
			for range 3 {
				got, err := e.Eval(context.Background(), "data.t.out", in)
				if err != nil || !got.Defined() || !strings.Contains(got.Value.String(), c.want) {
					t.Fatalf("%v, %v; want %s", got, err, c.want)
				}
			}
			if hits, _ := e.AnswersKept(); (hits == 2) != c.kept {
				t.Fatalf("%d of 3 checks answered from memory; kept = %v", hits, c.kept)
			}
		})
	}
}

// Checks of several tokens at once, verified, forged and expired, each
// get their own token's answer, kept or evaluated.
func TestDecisionMemoConcurrentTokenChecks(t *testing.T) {
	e := activateData(t, tokenPolicy, nil)
	k := &jwtKeys{hmacSecret: "secret"}
	hs := map[string]any{"alg": "HS256"}
	exp := time.Now().Unix() + 3600
	tokens := []string{
		k.sign(t, "HS256", hs, map[string]any{"sub": "alice", "exp": exp}),
		k.sign(t, "HS256", hs, map[string]any{"sub": "bob"}),
		(&jwtKeys{hmacSecret: "another"}).sign(t, "HS256", hs, map[string]any{"sub": "eve"}),
		k.sign(t, "HS256", hs, map[string]any{"sub": "carol", "exp": time.Now().Unix() - 10}),
	}
	want := []string{`"allowed": true, "sub": "alice"`, `"allowed": true, "sub": "bob"`, `"allowed": false`, `"allowed": false`}
	inputs := make([]string, len(tokens))
	for i, tok := range tokens {
		inputs[i] = fmt.Sprintf(`{"token": %q}`, tok)
	}
	concurrentChecks(t, e, inputs, func(n int, got Result) bool { return strings.Contains(got.Value.String(), want[n]) })
	if hits, _ := e.AnswersKept(); hits == 0 {
		t.Fatal("no verified token's answer was kept")
	}
}
