package policy

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
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
