// Package policy owns the embedded OPA engine: it compiles a policy set
// (Rego modules plus data) once per activation, prepares every query Deputy
// asks, and swaps the whole set atomically so in-flight evaluations finish on
// the set they started with.
package policy

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/cache"

	"github.com/deputyhq/deputy/sidecar"
)

// Default queries.
const (
	DefaultDecisionQuery = "data.deputy.authz.decision"
	DefaultManageQuery   = "data.deputy.manage.decision"
	MaskQuery            = "data.system.log.mask"
)

// Set is a policy set ready to compile: parsed modules, base data and the
// revision that identifies it in logs and metrics.
type Set struct {
	Modules  map[string]*ast.Module
	Data     map[string]any
	Revision string
	Source   string // where it came from: a directory, a bundle file or URL
	// SignedAt is the issue time of the bundle's verified signature; zero
	// when no public key checked it, or the signature carries none.
	SignedAt time.Time
}

// LoadPaths reads Rego and JSON/YAML data files from directories or files,
// skipping test modules (*_test.rego) and hidden files, and refusing Rego
// or data under a hidden name (dirFilter): a serving set never runs its
// tests, and a bundle built from the same paths leaves them out too, so a
// directory and its bundle serve the same set. Kept, the tests would hold
// more memory than the rules they test.
//
// The JSON and YAML files, which the loader parses whole, are bounded as a
// bundle's are (DefaultMaxBundleValues; see valueBudget).
func LoadPaths(paths []string) (*Set, error) {
	return loadPaths(paths, DefaultMaxBundleBytes, DefaultMaxBundleValues)
}

// loadPaths is LoadPaths under policy.max_bundle_bytes (for the bundle
// tarballs among paths) and policy.max_bundle_values.
func loadPaths(paths []string, maxBytes, maxValues int64) (*Set, error) {
	filter := dirFilter{values: newValueBudget("policies", maxValues), maxBytes: maxBytes}
	res, err := loader.NewFileLoader().
		WithProcessAnnotation(true).
		WithRegoVersion(ast.RegoV1).
		Filtered(paths, filter.skip)
	if err := filter.err("policies"); err != nil {
		return nil, err
	}
	if err != nil {
		return nil, sidecar.Invalid("policies", "load %s: %v", strings.Join(paths, ","), err)
	}
	return &Set{Modules: res.ParsedModules(), Data: res.Documents, Source: strings.Join(paths, ",")}, nil
}

// testModule reports whether info is a Rego test module.
func testModule(info fs.FileInfo) bool {
	return !info.IsDir() && strings.HasSuffix(info.Name(), "_test.rego")
}

// Activation is one compiled policy set with its prepared queries. It is
// immutable; the engine replaces it whole.
type Activation struct {
	Revision    string
	Source      string
	ActivatedAt time.Time
	Compiler    *ast.Compiler
	queries     map[string]*rego.PreparedEvalQuery
	needs       map[string]*InputNeeds
	data        map[string]any
	builtins    cache.InterQueryValueCache
	evalCaches  rego.EvalOption // builtins, as an evaluation option built once
	store       storage.Store
	reads       storage.Store               // store as direct evaluations read it: see baseStore
	funcs       map[string]*topdown.Builtin // Deputy's own builtins
	direct      map[string]*directQuery     // queries evaluated without rego
	constant    map[string]Result           // queries no rule can answer: their value from data alone
	root        ast.Value                   // the store's base data as OPA reads data: see baseCache
	memo        *memo                       // results of memoized functions, kept across checks
}

// InputNeeds returns what part of input the query can read.
func (a *Activation) InputNeeds(query string) *InputNeeds {
	if n, ok := a.needs[query]; ok {
		return n
	}
	return AllInput
}

// Data returns the base data of the activation (read-only).
func (a *Activation) Data() map[string]any { return a.data }

// Engine evaluates queries against the active policy set.
type Engine struct {
	queries []string
	logger  *slog.Logger
	clock   sidecar.Clock

	mu      sync.Mutex // serialises activations
	current atomic.Pointer[Activation]

	// OPA's inter-query value caches, shared by every activation (their
	// entries depend only on builtin arguments): one that also keeps JWT
	// checks, for policies where that is safe, and one that does not.
	builtins, builtinsNoJWT cache.InterQueryValueCache
	jwt                     *jwtVerdicts // verified tokens, in front of io.jwt.decode_verify

	onActivate []func(*Activation, error)
	dataChecks []func(map[string]any) error
	checks     []func(context.Context, *Activation) error

	allowBuiltins []string // refused built-ins allowed anyway: policy.allow_builtins

	answers memoCounts // decision memo lookups and hits, over every activation
}

// AnswersKept returns how many checks of a decision query that keeps its
// answers were answered from memory (hits), and how many were looked up
// there, over the engine's life.
func (e *Engine) AnswersKept() (hits, lookups uint64) {
	return e.answers.hits.Load(), e.answers.lookups.Load()
}

// Option configures an Engine.
type Option func(*Engine)

// WithQueries sets the queries prepared on every activation, in addition to
// the defaults. The first query is the decision query.
func WithQueries(q ...string) Option {
	return func(e *Engine) { e.queries = append([]string(nil), q...) }
}

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(e *Engine) { e.logger = l } }

// WithClock sets the clock used for activation times and for the time of
// decisions that verify tokens (see decisionMemo).
func WithClock(c sidecar.Clock) Option { return func(e *Engine) { e.clock = c } }

// OnActivate registers a hook called after every activation attempt (err is
// nil on success, and the activation is the one now serving either way).
func OnActivate(f func(*Activation, error)) Option {
	return func(e *Engine) { e.onActivate = append(e.onActivate, f) }
}

// WithDataCheck registers a check of a set's base data, run before it
// activates: Go code that applies rules from policy data refuses a set
// whose rules it cannot read, and the last good set keeps serving.
func WithDataCheck(f func(data map[string]any) error) Option {
	return func(e *Engine) { e.dataChecks = append(e.dataChecks, f) }
}

// WithActivationCheck registers a check of a compiled set, run before it
// activates, at start and on every reload alike: a set that fails one is
// refused, counted and logged as any set that fails to compile, and the
// last good set keeps serving. Checks that need packages importing this
// one (the decision log's mask check) are given here by the wiring.
func WithActivationCheck(f func(ctx context.Context, a *Activation) error) Option {
	return func(e *Engine) { e.checks = append(e.checks, f) }
}

// WithAllowedBuiltins allows policies to call the named built-ins that
// Deputy refuses by default (policy.allow_builtins; see refusedBuiltins).
func WithAllowedBuiltins(names ...string) Option {
	return func(e *Engine) { e.allowBuiltins = append(e.allowBuiltins, names...) }
}

// New returns an engine with no policy: every evaluation fails until the
// first successful Activate.
func New(opts ...Option) *Engine {
	e := &Engine{
		queries: []string{DefaultDecisionQuery, DefaultManageQuery},
		logger:  slog.Default(),
		clock:   time.Now,

		builtins:      newBuiltinCache(true),
		builtinsNoJWT: newBuiltinCache(false),
		jwt:           newJWTVerdicts(DefaultJWTVerdictEntries),
	}
	for _, o := range opts {
		o(e)
	}
	return e
}

// Current returns the serving activation, or nil before the first one.
func (e *Engine) Current() *Activation { return e.current.Load() }

// Ready reports whether a policy set is serving.
func (e *Engine) Ready() bool { return e.current.Load() != nil }

// Compile builds an activation without installing it, so a caller can
// refuse a bad set while the last good one keeps serving.
func (e *Engine) Compile(ctx context.Context, set *Set) (*Activation, error) {
	data := set.Data
	if data == nil {
		data = map[string]any{}
	}
	store := inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	comp, err := compileModules(ctx, set.Modules, store, e.jwt != nil, e.allowBuiltins)
	if err != nil {
		return nil, err
	}
	for _, check := range e.dataChecks {
		if err := check(data); err != nil {
			return nil, sidecar.Invalid("policies", "data: %v", err)
		}
	}
	root, err := baseRoot(ctx, store)
	if err != nil {
		return nil, sidecar.Invalid("policies", "data: %v", err)
	}
	a := &Activation{
		Revision:    set.Revision,
		Source:      set.Source,
		ActivatedAt: e.clock(),
		Compiler:    comp,
		queries:     make(map[string]*rego.PreparedEvalQuery, len(e.queries)+1),
		needs:       make(map[string]*InputNeeds, len(e.queries)+1),
		data:        data,
		builtins:    e.builtinsNoJWT,
		root:        root,
	}
	if jwtCacheSafe(comp) {
		a.builtins = e.builtins
	}
	if a.memo, err = newMemo(comp); err != nil {
		return nil, sidecar.Invalid("policies", "%v", err)
	}
	a.evalCaches = rego.EvalInterQueryBuiltinValueCache(a.builtins)
	a.store, a.direct = store, map[string]*directQuery{}
	a.reads = baseStore{Store: store, data: data}
	if e.jwt != nil {
		a.funcs = map[string]*topdown.Builtin{decodeVerifyName: e.jwt.builtin()}
	}
	for _, q := range append(e.queries, MaskQuery) {
		opts := []func(*rego.Rego){rego.Query(q), rego.Compiler(comp), rego.Store(store), rego.StoreReadAST(true)}
		if e.jwt != nil {
			opts = append(opts, e.jwt.function())
		}
		pq, err := rego.New(opts...).PrepareForEval(ctx)
		if err != nil {
			return nil, sidecar.Invalid("policies", "prepare %s: %v", q, err)
		}
		a.queries[q] = &pq
		if a.direct[q], err = prepareDirect(comp, q); err != nil {
			return nil, sidecar.Invalid("policies", "prepare %s: %v", q, err)
		}
		a.needs[q] = inputNeeds(comp, q)
		if d := a.direct[q]; d != nil && q != MaskQuery && !a.needs[q].All {
			if pure, verifies := pureQuery(comp, q, e.jwt != nil); pure {
				d.memo = &decisionMemo{total: &e.answers, verifies: verifies, clock: e.clock}
			}
		}
		if noRules(comp, q) {
			// Base data of an activation never changes, so the answer
			// is the same for every input: evaluate once, not per check
			// (the mask query of a policy without mask rules, above all).
			res, err := a.Eval(ctx, q, ast.NewObject())
			if err != nil {
				return nil, sidecar.Invalid("policies", "evaluate %s: %v", q, err)
			}
			if a.constant == nil {
				a.constant = map[string]Result{}
			}
			a.constant[q] = res
		}
	}
	for _, check := range e.checks {
		if err := check(ctx, a); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// baseRoot reads the whole base data of store as OPA reads the root
// document: an AST value, without data.system.
func baseRoot(ctx context.Context, store storage.Store) (ast.Value, error) {
	v, err := storage.ReadOne(ctx, store, storage.RootPath)
	if err != nil {
		return nil, err
	}
	root, ok := v.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("base data is %T, not an object", v)
	}
	return root.Map(func(k, v *ast.Term) (*ast.Term, *ast.Term, error) {
		if ast.SystemDocumentKey.Equal(k.Value) {
			return nil, nil, nil
		}
		return k, v, nil
	})
}

// RequireRules is an activation check refusing a set in which no rule
// can answer one of queries. A bundle without modules (a manifest and
// data alone, or a delta bundle, which Deputy does not apply) compiles,
// and would replace the serving rules with none: every check undefined,
// so denied, until someone notices.
func RequireRules(queries ...string) func(context.Context, *Activation) error {
	return func(_ context.Context, a *Activation) error {
		for _, q := range queries {
			if noRules(a.Compiler, q) {
				return sidecar.Invalid("policies", "no rule defines %s: a set without the rules of its queries decides nothing (a bundle without its Rego modules?)", q)
			}
		}
		return nil
	}
}

// WithKeptRules refuses a set in which no rule answers one of queries
// that the set serving answers: a reload to a bundle that lost, say, its
// management rules would otherwise leave the management API denying
// everything. Before the first activation (at start, and offline) nothing
// is kept, so a set written for another purpose (OPA-Envoy's policies,
// without Deputy's management rules) still serves.
func WithKeptRules(queries ...string) Option {
	return func(e *Engine) {
		e.checks = append(e.checks, func(_ context.Context, a *Activation) error {
			serving := e.current.Load()
			if serving == nil {
				return nil
			}
			for _, q := range queries {
				if noRules(a.Compiler, q) && !noRules(serving.Compiler, q) {
					return sidecar.Invalid("policies", "no rule defines %s, which revision %q serving defines: a reload does not take a query's rules away (restart Deputy to serve a set without them)", q, serving.Revision)
				}
			}
			return nil
		})
	}
}

// noRules reports whether query is a plain reference into data that no
// rule can contribute to, so its value comes from base data alone.
func noRules(c *ast.Compiler, query string) bool {
	ref, err := ast.ParseRef(query)
	if err != nil || !ref.HasPrefix(ast.DefaultRootRef) || !ref.IsGround() {
		return false
	}
	return len(c.GetRulesDynamicWithOpts(ref, ast.RulesOptions{IncludeHiddenModules: true})) == 0
}

func compileModules(ctx context.Context, modules map[string]*ast.Module, data storage.Store, jwtVerdicts bool, allow []string) (*ast.Compiler, error) {
	comp := ast.NewCompiler().
		WithEnablePrintStatements(false).
		WithDefaultRegoVersion(ast.RegoV1)
	if jwtVerdicts {
		comp = comp.WithStageAfterID(ast.StageCheckTypes, ast.CompilerStageDefinition{
			Name: "DeputyDecodeVerify", MetricName: "compile_stage_deputy_decode_verify", Stage: rewriteDecodeVerify,
		})
	}
	if err := compileOver(ctx, comp, modules, data, allow); err != nil {
		return nil, err
	}
	return comp, nil
}

// compileOver compiles modules with comp and Deputy's capabilities (no
// built-in reaching the network or the host, but those allow names),
// refusing a rule at a path base
// data holds (or below a value there that is not an object), as OPA's own
// bundle activation does. Rego would read the rule, and Go code reading
// the data (the impersonation switches, the partner and reseller rules)
// the data: `max_session := "15m"` beside data saying "1h" would have the
// policy and the session lifecycle each apply its own.
func compileOver(ctx context.Context, comp *ast.Compiler, modules map[string]*ast.Module, data storage.Store, allow []string) error {
	txn, err := data.NewTransaction(ctx)
	if err != nil {
		return sidecar.Invalid("policies", "data: %v", err)
	}
	defer data.Abort(ctx, txn)
	comp.WithCapabilities(capabilities(allow)).WithPathConflictsCheck(storage.NonEmpty(ctx, data, txn)).Compile(modules)
	if comp.Failed() {
		if err := refusedBuiltinErr(comp.Errors); err != nil {
			return err
		}
		for _, e := range comp.Errors {
			if strings.HasPrefix(e.Message, "conflicting rule for data path") {
				return sidecar.Invalid("policies", "compile: %v (policy data holds that path, and Deputy's Go code reads the data: define the value in one place)", comp.Errors)
			}
		}
		return sidecar.Invalid("policies", "compile: %v", comp.Errors)
	}
	return nil
}

// Activate compiles set and, when that succeeds, makes it the serving set.
// On failure the previous set keeps serving and the error is returned.
func (e *Engine) Activate(ctx context.Context, set *Set) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	a, err := e.Compile(ctx, set)
	if err == nil {
		e.current.Store(a)
		e.logger.Info("policy activated", "revision", set.Revision, "source", set.Source, "modules", len(set.Modules))
	} else {
		e.logger.Error("policy activation refused", "revision", set.Revision, "source", set.Source, "error", err)
	}
	for _, f := range e.onActivate {
		f(e.current.Load(), err)
	}
	return err
}

// ErrNoPolicy is returned by Eval before any policy is active.
var ErrNoPolicy = sidecar.Errorf(sidecar.EUNAVAILABLE, "no policy loaded")

// Result is the outcome of one evaluation: the query's value as an AST
// term (nil when undefined) and the revision that produced it.
type Result struct {
	Value    *ast.Term
	Revision string
}

// Defined reports whether the query produced a value.
func (r Result) Defined() bool { return r.Value != nil }

// Eval evaluates query against input on the serving activation. The query
// must be one of the engine's queries (or the mask query).
func (e *Engine) Eval(ctx context.Context, query string, input ast.Value, opts ...rego.EvalOption) (Result, error) {
	a := e.current.Load()
	if a == nil {
		return Result{}, ErrNoPolicy
	}
	return a.Eval(ctx, query, input, opts...)
}

// Eval evaluates query on this activation.
func (a *Activation) Eval(ctx context.Context, query string, input ast.Value, opts ...rego.EvalOption) (Result, error) {
	if r, ok := a.constant[query]; ok && len(opts) == 0 {
		return r, nil
	}
	pq, ok := a.queries[query]
	if !ok {
		return Result{Revision: a.Revision}, sidecar.Errorf(sidecar.EINTERNAL, "query %q is not prepared", query)
	}
	if d := a.direct[query]; d != nil && len(opts) == 0 {
		eval := a.evalDirect
		if d.memo != nil {
			eval = a.evalKept
		}
		v, err := eval(ctx, d, input)
		if err != nil {
			return Result{Revision: a.Revision}, &sidecar.Error{Code: sidecar.EINTERNAL, Message: "policy evaluation failed", Err: err}
		}
		return Result{Value: v, Revision: a.Revision}, nil
	}
	vc, bc := getVirtualCache(), getBaseCache()
	bc.root = a.root
	defer vc.release()
	defer bc.release()
	// OPA would start a goroutine per evaluation to watch ctx; reading
	// ctx's done channel where OPA checks for cancellation needs nothing.
	var buf [9]rego.EvalOption
	all := append(append(buf[:0], opts...), rego.EvalParsedInput(input), vc.opt, bc.opt,
		rego.EvalExternalCancel(doneCancel{ctx.Done()}), a.evalCaches, evalKeepTerm, evalNoMetrics)
	rs, err := pq.Eval(ctx, all...)
	if err != nil {
		return Result{Revision: a.Revision}, &sidecar.Error{Code: sidecar.EINTERNAL, Message: "policy evaluation failed", Err: err}
	}
	res := Result{Revision: a.Revision}
	if len(rs) > 0 && len(rs[0].Expressions) > 0 {
		if t, ok := rs[0].Expressions[0].Value.(*ast.Term); ok {
			res.Value = t
		}
	}
	return res, nil
}

// Options shared by every evaluation: built once, they cost nothing per check.
var (
	evalKeepTerm  = rego.EvalGenerateJSON(keepTerm)
	evalNoMetrics = rego.EvalMetrics(metrics.NoOp())
)

// keepTerm skips OPA's conversion of results to Go values: callers read
// the AST directly, which saves most of the allocations of a check.
func keepTerm(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }

// doneCancel is topdown.Cancel read from a context's done channel: an
// evaluation stops at its next expression once the check's context ends
// (a nil channel never does). Deputy never calls Cancel.
type doneCancel struct{ done <-chan struct{} }

var _ topdown.Cancel = doneCancel{}

func (doneCancel) Cancel() {}

func (c doneCancel) Cancelled() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}
