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
