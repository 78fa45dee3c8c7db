package policy

import (
	"context"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// directQuery is a decision query run on OPA's evaluator (topdown) without
// the rego package around it. For a query that is a plain reference, rego
// adds only its evaluation context, the options that fill it and a result
// set built for callers that want JSON: some fifteen allocations and a
// kilobyte a check, which the garbage collector pays again under load.
// The evaluation itself is the same: the same compiled query, compiler,
// store, builtins and caches, with rego's defaults (rule indexing and
// early exit on, builtin errors not strict, no print hook or tracer).
type directQuery struct {
	body   ast.Body
	qc     ast.QueryCompiler
	result ast.Var
	memo   *decisionMemo // the query's kept answers; nil when it is not pure
}

// directResult names the query's value in its compiled body.
const directResult = ast.Var("__deputy_result__")

// prepareDirect compiles query for evalDirect: nil when it is not a
// ground reference (rego then evaluates it, and collects what it finds).
func prepareDirect(comp *ast.Compiler, query string) (*directQuery, error) {
	ref, err := ast.ParseRef(query)
	if err != nil || !ref.IsGround() {
		return nil, nil // not a plain reference: rego evaluates it
	}
	qc := comp.QueryCompiler()
	body, err := qc.Compile(ast.NewBody(ast.Equality.Expr(ast.NewTerm(directResult), ast.NewTerm(ref))))
	if err != nil {
		return nil, err
	}
	return &directQuery{body: body, qc: qc, result: directResult}, nil
}

var noMetrics = metrics.NoOp()

// evalDirect evaluates d on the activation, as Eval does through rego.
func (a *Activation) evalDirect(ctx context.Context, d *directQuery, input ast.Value) (*ast.Term, error) {
	return a.evalDirectAt(ctx, d, input, time.Time{})
}

// evalDirectAt is evalDirect at the time at, as builtins that read the
// clock see it (io.jwt.decode_verify's exp and nbf); the zero time is the
// time the evaluation starts.
func (a *Activation) evalDirectAt(ctx context.Context, d *directQuery, input ast.Value, at time.Time) (*ast.Term, error) {
	txn, err := a.store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	defer a.store.Abort(ctx, txn)
	vc, bc := getVirtualCache(), getBaseCache()
	vc.memo, bc.root = a.memo, a.root
	defer vc.release()
	defer bc.release()
	q := topdown.NewQuery(d.body).
		WithQueryCompiler(d.qc).
		WithCompiler(a.Compiler).
		WithStore(a.reads).
		WithTransaction(txn).
		WithBuiltins(a.funcs).
		WithMetrics(noMetrics).
		WithIndexing(true).
		WithEarlyExit(true).
		WithInterQueryBuiltinValueCache(a.builtins).
		WithVirtualCache(vc).
		WithBaseCache(bc).
		WithCancel(doneCancel{ctx.Done()}).
		WithInput(ast.NewTerm(input))
	if !at.IsZero() {
		q = q.WithTime(at)
	}
	var out *ast.Term
	err = q.Iter(ctx, func(qr topdown.QueryResult) error {
		if out == nil {
			out = qr[d.result]
		}
		return nil
	})
	if err == nil {
		vc.keepFound()
	}
	return out, err
}
