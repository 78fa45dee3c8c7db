package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// viaRego forces Eval through rego: any evaluation option does.
var viaRego = rego.EvalMetrics(metrics.NoOp())

// Queries evaluated on topdown directly decide exactly as through rego:
// the same value, the same undefined, the same error.
func TestDirectEvalAnswersAsRego(t *testing.T) {
	k := newJWTKeys(t)
	valid := k.sign(t, "HS256", map[string]any{"alg": "HS256"}, map[string]any{"sub": "alice", "role": "admin"})
	guest := k.sign(t, "HS256", map[string]any{"alg": "HS256"}, map[string]any{"sub": "bob", "role": "guest", "exp": 1})
	forged := k.sign(t, "HS256", map[string]any{"alg": "HS256"}, map[string]any{"sub": "eve", "role": "admin"})[:20] + "x"
	dir := "../../cmd/deputy-bench/testdata/opa-envoy"
	policies := []struct{ dir, query string }{
		{"paths", "data.envoy.authz.allow"},
		{"jwt", "data.envoy.authz.result"},
		{"principal", "data.envoy.authz.allow"},
	}
	inputs := []string{
		`{}`,
		`{"attributes": {"request": {"http": {"method": "GET", "path": "/people/1", "headers": {"authorization": "Bearer ` + valid + `"}}}}, "parsed_path": ["people", "1"]}`,
		`{"attributes": {"request": {"http": {"method": "POST", "path": "/people", "headers": {"authorization": "Bearer ` + valid + `"}}}}, "parsed_path": ["people"]}`,
		`{"attributes": {"request": {"http": {"method": "GET", "path": "/people", "headers": {"authorization": "Bearer ` + guest + `"}}}}, "parsed_path": ["people"]}`,
		`{"attributes": {"request": {"http": {"method": "GET", "path": "/people", "headers": {"authorization": "Bearer ` + forged + `"}}}}, "parsed_path": ["people"]}`,
		`{"attributes": {"request": {"http": {"method": "GET", "path": "/people", "headers": {"authorization": "Bearer"}}}}}`,
		`{"attributes": {"source": {"principal": "spiffe://cluster.local/ns/default/sa/frontend"}, "request": {"http": {"method": "GET"}}}, "parsed_path": ["catalog", "shoes"]}`,
		`{"attributes": {"source": {"principal": "spiffe://cluster.local/ns/default/sa/backoffice"}, "request": {"http": {"method": "HEAD"}}}, "parsed_path": ["catalog"]}`,
		`{"attributes": {"request": {"http": {"method": "GET"}}}, "parsed_path": ["api", "v1", "products", "7"]}`,
		`{"attributes": {"request": {"http": {"method": "GET"}}}, "parsed_path": "not a list"}`,
	}
	for _, p := range policies {
		set, err := LoadPaths([]string{filepath.Join(dir, p.dir, "policy.rego")})
		if err != nil {
			t.Fatal(err)
		}
		e := New(WithQueries(p.query), WithLogger(slog.New(slog.DiscardHandler)))
		if err := e.Activate(context.Background(), set); err != nil {
			t.Fatal(err)
		}
		if e.Current().direct[p.query] == nil {
			t.Fatalf("%s: %s is not evaluated directly", p.dir, p.query)
		}
		for i, in := range inputs {
			t.Run(fmt.Sprintf("%s/%d", p.dir, i), func(t *testing.T) {
				sameEval(t, e, p.query, ast.MustParseTerm(in).Value)
			})
		}
	}
}

// Conflicts, builtin errors and cancellation come out alike too.
func TestDirectEvalErrorsAsRego(t *testing.T) {
	e := activate(t, `package t

x := input.a
x := input.b

y := to_number(input.s)

out := {"x": x, "y": y}
`)
	for in, conflict := range map[string]bool{
		`{"a": 1, "b": 1, "s": "2"}`: false,
		`{"a": 1, "b": 2, "s": "2"}`: true,  // two values for x
		`{"a": 1, "b": 1, "s": "x"}`: false, // to_number fails: y undefined
		`{}`:                         false,
	} {
		t.Run(in, func(t *testing.T) {
			if err := sameEval(t, e, "data.t.out", ast.MustParseTerm(in).Value); (err != nil) != conflict {
				t.Fatalf("error %v, want one: %v", err, conflict)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e.Eval(ctx, "data.t.out", ast.MustParseTerm(`{"a": 1, "b": 1, "s": "2"}`).Value)
	var te *topdown.Error
	if !errors.As(err, &te) || te.Code != topdown.CancelErr {
		t.Fatalf("cancelled evaluation: %v", err)
	}
}

// sameEval evaluates directly and through rego, fails unless both agree,
// and returns the error.
func sameEval(t *testing.T, e *Engine, query string, in ast.Value) error {
	t.Helper()
	got, gotErr := e.Eval(context.Background(), query, in)
	want, wantErr := e.Eval(context.Background(), query, in, viaRego)
	switch {
	case (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error():
		t.Fatalf("error %v, through rego %v", gotErr, wantErr)
	case got.Defined() != want.Defined() || got.Defined() && !got.Value.Equal(want.Value):
		t.Fatalf("%v, through rego %v", got.Value, want.Value)
	}
	if gotErr != nil {
		var a, b *topdown.Error
		if !errors.As(gotErr, &a) || !errors.As(wantErr, &b) || a.Code != b.Code {
			t.Fatalf("error %#v, through rego %#v", gotErr, wantErr)
		}
	}
	return gotErr
}
