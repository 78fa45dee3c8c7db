package policy

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// An evaluation stops when its context ends, through the callback Eval
// registers on the context instead of a goroutine per evaluation.
func TestEvalStopsWhenContextEnds(t *testing.T) {
	// Four million iterations: seconds of work if nothing stops it.
	mod := ast.MustParseModuleWithOpts(`package t
decision := count([1 |
	some i in numbers.range(1, 2000)
	some j in numbers.range(1, 2000)
	i * j > 0
])
`, ast.ParserOptions{RegoVersion: ast.RegoV1})
	e := New(WithQueries("data.t.decision"), WithLogger(slog.New(slog.DiscardHandler)))
	if err := e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"t.rego": mod}}); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, stop := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer stop()
	for name, ctx := range map[string]context.Context{"cancelled": cancelled, "deadline": expired} {
		t.Run(name, func(t *testing.T) {
			r, err := e.Eval(ctx, "data.t.decision", ast.NewObject())
			var te *topdown.Error
			if !errors.As(err, &te) || te.Code != topdown.CancelErr {
				t.Fatalf("want a cancel error, got value %v, error %v", r.Value, err)
			}
		})
	}
}

// A set whose data a registered check refuses never activates: the last
// good set keeps serving, and every hook hears of the failure.
func TestDataCheckRefusesSet(t *testing.T) {
	var failures int
	e := New(WithQueries("data.t.x"), WithLogger(slog.New(slog.DiscardHandler)),
		WithDataCheck(func(data map[string]any) error {
			if data["bad"] != nil {
				return errors.New("data.bad: refused")
			}
			return nil
		}),
		OnActivate(func(_ *Activation, err error) {
			if err != nil {
				failures++
			}
		}))
	good := &Set{Data: map[string]any{"ok": true}, Revision: "good"}
	if err := e.Activate(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	err := e.Activate(context.Background(), &Set{Data: map[string]any{"bad": true}, Revision: "bad"})
	if err == nil || !strings.Contains(err.Error(), "data.bad: refused") {
		t.Fatalf("Activate = %v, want the check's error", err)
	}
	if rev := e.Current().Revision; rev != "good" {
		t.Fatalf("serving %q, want the last good set", rev)
	}
	if failures != 1 {
		t.Fatalf("hooks heard %d failures, want 1", failures)
	}
}

// RequireRules refuses a set in which no rule can answer a query, wherever
// the rules that can answer it sit: at the query, above it or below it.
func TestRequireRules(t *testing.T) {
	cases := []struct {
		name    string
		src     string
		refused bool
	}{
		{name: "rule at the query", src: "package t.authz\n\ndecision := true\n"},
		{name: "rule above the query", src: "package t\n\nauthz := {\"decision\": true}\n"},
		{name: "rules below the query", src: "package t.authz.decision\n\nallowed := true\n"},
		{name: "rules elsewhere only", src: "package t.other\n\ndecision := true\n", refused: true},
		{name: "no modules", refused: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := New(WithQueries("data.t.authz.decision"), WithLogger(slog.New(slog.DiscardHandler)),
				WithActivationCheck(RequireRules("data.t.authz.decision")))
			set := &Set{Modules: map[string]*ast.Module{}, Data: map[string]any{"t": map[string]any{"label": "x"}}}
			if tc.src != "" {
				set.Modules["t.rego"] = ast.MustParseModuleWithOpts(tc.src, ast.ParserOptions{RegoVersion: ast.RegoV1})
			}
			err := e.Activate(context.Background(), set)
			if tc.refused && (err == nil || !strings.Contains(err.Error(), "no rule defines data.t.authz.decision")) {
				t.Fatalf("Activate = %v, want the set refused naming the query", err)
			}
			if !tc.refused && err != nil {
				t.Fatalf("Activate = %v, want it served", err)
			}
		})
	}
}

// WithKeptRules refuses a reload that takes a query's rules away, and
// nothing before the first activation: a set without them may start.
func TestKeptRules(t *testing.T) {
	mod := func(src string) map[string]*ast.Module {
		return map[string]*ast.Module{"t.rego": ast.MustParseModuleWithOpts(src, ast.ParserOptions{RegoVersion: ast.RegoV1})}
	}
	decideOnly := "package t.authz\n\ndecision := true\n"
	withManage := decideOnly + "\nmanage := {\"allowed\": true}\n"
	e := New(WithQueries("data.t.authz.decision", "data.t.authz.manage"), WithLogger(slog.New(slog.DiscardHandler)),
		WithKeptRules("data.t.authz.manage"))
	ctx := context.Background()
	steps := []struct {
		rev, src string
		refused  bool
	}{
		{rev: "start without manage", src: decideOnly},
		{rev: "manage added", src: withManage},
		{rev: "manage taken away", src: decideOnly, refused: true},
		{rev: "manage kept", src: withManage},
	}
	serving := ""
	for _, s := range steps {
		err := e.Activate(ctx, &Set{Modules: mod(s.src), Revision: s.rev})
		if s.refused {
			if err == nil || !strings.Contains(err.Error(), "no rule defines data.t.authz.manage") {
				t.Fatalf("%s: Activate = %v, want it refused naming the query", s.rev, err)
			}
		} else if err != nil {
			t.Fatalf("%s: Activate = %v, want it served", s.rev, err)
		} else {
			serving = s.rev
		}
		if got := e.Current().Revision; got != serving {
			t.Fatalf("after %s: serving %q, want %q", s.rev, got, serving)
		}
	}
}
