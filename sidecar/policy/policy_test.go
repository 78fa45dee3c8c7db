package policy

import (
	"context"
	"errors"
	"log/slog"
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
