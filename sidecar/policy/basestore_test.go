package policy

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// baseStore answers every read as the store does: the same value where
// there is one, not found where there is none, whatever stands on the way.
func TestBaseStoreReadsAsStore(t *testing.T) {
	data := map[string]any{
		"cfg": map[string]any{
			"list":   []any{"a", map[string]any{"k": "v"}},
			"empty":  []any{},
			"s":      "text",
			"n":      json.Number("2"),
			"b":      true,
			"null":   nil,
			"typed":  map[string]string{"k": "v"},
			"nested": map[string]any{"k": "v"},
		},
		"system": map[string]any{"k": 1},
	}
	ctx := context.Background()
	inner := inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	s := baseStore{Store: inner, data: data}
	paths := []string{
		"/cfg", "/cfg/nested/k", "/cfg/nested/absent", "/absent", "/absent/deeper",
		"/cfg/list/0", "/cfg/list/1/k", "/cfg/list/1/absent", "/cfg/list/2", "/cfg/list/-1", "/cfg/list/x", "/cfg/list/1.0",
		"/cfg/empty/0", "/cfg/s/0", "/cfg/n/x", "/cfg/b/x", "/cfg/null/x",
		"/cfg/typed/k", "/cfg/typed/absent", "/system/k", "/system/absent", "/",
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			path, ok := storage.ParsePath(p)
			if !ok {
				t.Fatalf("bad path %s", p)
			}
			txn := storage.NewTransactionOrDie(ctx, inner)
			defer inner.Abort(ctx, txn)
			want, wantErr := inner.Read(ctx, txn, path)
			got, gotErr := s.Read(ctx, txn, path)
			if storage.IsNotFound(gotErr) != storage.IsNotFound(wantErr) || (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("error %v, the store's %v", gotErr, wantErr)
			}
			if wantErr == nil && got.(ast.Value).Compare(want.(ast.Value)) != 0 {
				t.Fatalf("%v, the store's %v", got, want)
			}
		})
	}
}

// A rule reading a key that is not in data costs no more allocations than
// one reading a key that is: the store is not asked to build a not-found
// error for it (some six allocations a miss).
func TestMissingDataCostsNoStoreRead(t *testing.T) {
	mod := ast.MustParseModuleWithOpts("package t\n\nout := data.deputy.impersonation.forbidden_routes[input.section]\n", ast.ParserOptions{RegoVersion: ast.RegoV1})
	e := New(WithQueries("data.t.out"), WithLogger(slog.New(slog.DiscardHandler)))
	routes := map[string]any{"customer": []any{"/customer/account/password/"}}
	data := map[string]any{"deputy": map[string]any{"impersonation": map[string]any{"forbidden_routes": routes}}}
	if err := e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"t.rego": mod}, Data: data}); err != nil {
		t.Fatal(err)
	}
	forgetAnswers(e, "data.t.out") // what evaluation costs, not a kept answer
	allocs := func(section string) float64 {
		in := ast.NewObject([2]*ast.Term{ast.StringTerm("section"), ast.StringTerm(section)})
		return testing.AllocsPerRun(100, func() {
			if _, err := e.Eval(context.Background(), "data.t.out", in); err != nil {
				t.Fatal(err)
			}
		})
	}
	hit, miss := allocs("customer"), allocs("account")
	if miss > hit {
		t.Fatalf("a missing key costs %v allocations, a present one %v", miss, hit)
	}
}
