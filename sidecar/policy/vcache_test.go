package policy

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

func TestVirtualCacheContract(t *testing.T) {
	c := getVirtualCache()
	defer c.release()
	a, b := ast.MustParseRef("data.t.a"), ast.MustParseRef("data.t.b")
	if v, undef := c.Get(a); v != nil || undef {
		t.Fatalf("empty cache answered %v %v", v, undef)
	}
	c.Put(a, ast.StringTerm("x"))
	c.Put(b, nil)
	if v, undef := c.Get(ast.MustParseRef("data.t.a")); v == nil || undef || v.Value.Compare(ast.String("x")) != 0 {
		t.Fatalf("a = %v %v", v, undef)
	}
	if v, undef := c.Get(b); v != nil || !undef {
		t.Fatalf("b should be cached as undefined: %v %v", v, undef)
	}
	if keys := c.Keys(); len(keys) != 1 || !keys[0].Equal(a) {
		t.Fatalf("keys = %v", keys)
	}
	c.Push()
	if v, _ := c.Get(a); v != nil {
		t.Fatalf("a pushed frame starts empty, got %v", v)
	}
	c.Put(a, ast.StringTerm("y"))
	c.Pop()
	if v, _ := c.Get(a); v == nil || v.Value.Compare(ast.String("x")) != 0 {
		t.Fatalf("pop must restore the outer frame, got %v", v)
	}
}

// Two references with one hash share a slot: each keeps its own value.
func TestVirtualCacheHashCollision(t *testing.T) {
	c := getVirtualCache()
	defer c.release()
	a, b := ast.MustParseRef("data.t.a"), ast.MustParseRef("data.t.b")
	// b filed under a's hash, as a colliding reference would be.
	c.top()[a.Hash()] = cacheSlot{first: cacheEntry{ref: b, value: ast.StringTerm("b")}}
	c.Put(a, ast.StringTerm("a"))
	if v, undef := c.Get(a); v == nil || undef || v.Value.Compare(ast.String("a")) != 0 {
		t.Fatalf("a = %v %v", v, undef)
	}
	c.Put(a, nil)
	if v, undef := c.Get(a); v != nil || !undef {
		t.Fatalf("a should now be cached as undefined: %v %v", v, undef)
	}
	if s := c.top()[a.Hash()]; !s.first.ref.Equal(b) || s.first.value.Value.Compare(ast.String("b")) != 0 || len(s.more) != 1 {
		t.Fatalf("the colliding entry was disturbed: %+v", s)
	}
	if keys := c.Keys(); len(keys) != 1 || !keys[0].Equal(b) {
		t.Fatalf("keys = %v, want only the defined b", keys)
	}
}

// `with` pushes and pops cache frames; pooled caches must keep values
// from leaking between frames and between evaluations.
func TestPooledCacheAcrossEvaluations(t *testing.T) {
	mod := ast.MustParseModuleWithOpts(`package t
x := input.a
y := v if {
	v := x with input.a as 2
}
decision := [x, y]
`, ast.ParserOptions{RegoVersion: ast.RegoV1})
	e := New(WithQueries("data.t.decision"), WithLogger(slog.New(slog.DiscardHandler)))
	if err := e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"t.rego": mod}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				in := ast.NewObject([2]*ast.Term{ast.StringTerm("a"), ast.IntNumberTerm(g*1000 + i)})
				r, err := e.Eval(context.Background(), "data.t.decision", in)
				if err != nil {
					t.Error(err)
					return
				}
				want := ast.ArrayTerm(ast.IntNumberTerm(g*1000+i), ast.IntNumberTerm(2))
				if r.Value.Value.Compare(want.Value) != 0 {
					t.Errorf("got %v, want %v", r.Value, want)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}

func TestBaseCacheContract(t *testing.T) {
	c := getBaseCache()
	defer c.release()
	doc := ast.MustParseTerm(`{"sections": {"catalog": {"GET": true}}}`).Value
	c.Put(ast.MustParseRef("data.deputy.authz"), doc)
	cases := map[string]string{
		"data.deputy.authz":                      `{"sections": {"catalog": {"GET": true}}}`,
		"data.deputy.authz.sections.catalog.GET": `true`,
		"data.deputy.authz.sections.catalog":     `{"GET": true}`,
		"data.deputy.authz.sections.checkout":    ``,
		"data.deputy.other":                      ``,
		"data.deputy":                            ``,
	}
	for ref, want := range cases {
		got := c.Get(ast.MustParseRef(ref))
		switch {
		case want == "" && got != nil:
			t.Errorf("%s = %v, want nothing cached", ref, got)
		case want != "" && (got == nil || got.Compare(ast.MustParseTerm(want).Value) != 0):
			t.Errorf("%s = %v, want %s", ref, got, want)
		}
	}
	c.Put(ast.MustParseRef("data.deputy.authz"), ast.String("replaced"))
	if got := c.Get(ast.MustParseRef("data.deputy.authz")); got.Compare(ast.String("replaced")) != 0 {
		t.Errorf("Put did not replace: %v", got)
	}
}

// Evaluations that read data through pooled base caches see only their
// own activation's data, one after another and side by side.
func TestPooledBaseCacheAcrossActivations(t *testing.T) {
	mod := ast.MustParseModuleWithOpts("package t\n\ndecision := data.cfg.value\n", ast.ParserOptions{RegoVersion: ast.RegoV1})
	e := New(WithQueries("data.t.decision"), WithLogger(slog.New(slog.DiscardHandler)))
	for i := 0; i < 5; i++ {
		if err := e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"t.rego": mod},
			Data: map[string]any{"cfg": map[string]any{"value": i}}}); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 3; j++ {
			r, err := e.Eval(context.Background(), "data.t.decision", ast.NewObject())
			if err != nil || r.Value.Value.Compare(ast.IntNumberTerm(i).Value) != 0 {
				t.Fatalf("activation %d read %v (%v)", i, r.Value, err)
			}
		}
	}
}

// Reads of base data answered from the activation's root must equal what
// OPA reads from its store: every path, missing ones, the root itself
// (which OPA reads without data.system) and data.system below it.
func TestBaseRootReadsAsStore(t *testing.T) {
	src := `package t

cfg := data.cfg
value := data.cfg.nested.value
item := data.cfg.list[1]
missing := data.cfg.nested.absent
sys := data.system.k
dynamic := data.cfg.nested[input.key]
`
	data := map[string]any{
		"cfg":    map[string]any{"nested": map[string]any{"value": "v", "other": 2}, "list": []any{"a", "b"}},
		"system": map[string]any{"k": 1},
	}
	mod := ast.MustParseModuleWithOpts(src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	queries := []string{"data.t.cfg", "data.t.value", "data.t.item", "data.t.missing", "data.t.sys", "data.t.dynamic", "data", "data.system"}
	e := New(WithQueries(queries...), WithLogger(slog.New(slog.DiscardHandler)))
	if err := e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"t.rego": mod}, Data: data}); err != nil {
		t.Fatal(err)
	}
	input := ast.MustParseTerm(`{"key": "other"}`).Value
	for _, q := range queries {
		t.Run(q, func(t *testing.T) {
			want, err := rego.New(rego.Query(q), rego.Module("t.rego", src), rego.Store(inmem.NewFromObject(data)), rego.ParsedInput(input)).Eval(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.Eval(context.Background(), q, input)
			if err != nil {
				t.Fatal(err)
			}
			if len(want) == 0 {
				if got.Defined() {
					t.Fatalf("got %v, OPA's store read leaves it undefined", got.Value)
				}
				return
			}
			w, err := ast.InterfaceToValue(want[0].Expressions[0].Value)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Defined() || got.Value.Value.Compare(w) != 0 {
				t.Fatalf("got %v, OPA's store read gives %v", got.Value, w)
			}
		})
	}
}
