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
