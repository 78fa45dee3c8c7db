package policy

import (
	"bytes"
	"context"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/format"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/deputyhq/deputy/sidecar"
)

// strictCompile compiles modules the way `opa check --strict` does: unused
// imports and variables, shadowed built-ins and deprecated built-ins are
// errors, so mistakes that still evaluate are caught before they ship. A
// rule at a path data holds is refused, as at activation (compileOver),
// and so is a memoized function that is not pure.
func strictCompile(modules map[string]*ast.Module, data map[string]any, allow []string) error {
	comp := ast.NewCompiler().
		WithStrict(true).
		WithDefaultRegoVersion(ast.RegoV1).
		WithEnablePrintStatements(true)
	if data == nil {
		data = map[string]any{}
	}
	if err := compileOver(context.Background(), comp, modules, inmem.NewFromObject(data), allow); err != nil {
		return err
	}
	if _, err := newMemo(comp); err != nil {
		return sidecar.Invalid("policies", "%v", err)
	}
	return nil
}

// CheckOptions tune Check.
type CheckOptions struct {
	// AllowBuiltins are refused built-ins the policies may call anyway:
	// the serving Deputy's policy.allow_builtins.
	AllowBuiltins []string
	// DataChecks are the checks an engine runs on the data before
	// activating it (WithDataCheck), so data a running Deputy would
	// refuse fails here first.
	DataChecks []func(data map[string]any) error
}

// CheckReport is the outcome of Check.
type CheckReport struct {
	Modules     int
	Unformatted []string // files whose `opa fmt` output differs from their content
}

// Check loads every Rego module under paths (tests included), compiles them
// strictly and lists the files that `opa fmt` would change. A compile error
// or an unformatted file is an error naming the files, and so is a denial
// whose constant http_status DenialStatus refuses, and a call of a
// built-in Deputy refuses (see refusedBuiltins).
func Check(paths []string, opts CheckOptions) (CheckReport, error) {
	filter := dirFilter{tests: true, values: newValueBudget("policies", DefaultMaxBundleValues), maxBytes: DefaultMaxBundleBytes}
	res, err := loader.NewFileLoader().
		WithProcessAnnotation(true).
		WithRegoVersion(ast.RegoV1).
		Filtered(paths, filter.skip)
	if err := filter.err("policies"); err != nil {
		return CheckReport{}, err
	}
	if err != nil {
		return CheckReport{}, sidecar.Invalid("policies", "load %s: %v", strings.Join(paths, ","), err)
	}
	rep := CheckReport{Modules: len(res.Modules)}
	modules := make(map[string]*ast.Module, len(res.Modules))
	for name, m := range res.Modules {
		modules[name] = m.Parsed
		want, err := format.SourceWithOpts(name, m.Raw, format.Opts{RegoVersion: ast.RegoV1})
		if err != nil {
			return rep, sidecar.Invalid("policies", "format %s: %v", name, err)
		}
		if !bytes.Equal(want, m.Raw) {
			rep.Unformatted = append(rep.Unformatted, name)
		}
	}
	slices.Sort(rep.Unformatted)
	if err := strictCompile(modules, res.Documents, opts.AllowBuiltins); err != nil {
		return rep, err
	}
	if err := checkDenialStatuses(modules); err != nil {
		return rep, err
	}
	for _, check := range opts.DataChecks {
		if err := check(res.Documents); err != nil {
			return rep, sidecar.Invalid("policies", "data: %v", err)
		}
	}
	if len(rep.Unformatted) > 0 {
		return rep, sidecar.Invalid("policies", "not formatted (run opa fmt -w): %s", strings.Join(rep.Unformatted, ", "))
	}
	return rep, nil
}

// TestOptions tune RunTests.
type TestOptions struct {
	Output   io.Writer     // report destination; discarded when nil
	Verbose  bool          // list every test, with traces of failures
	Coverage bool          // write a JSON coverage report instead of the test list
	Run      string        // regular expression selecting tests; all when empty
	Timeout  time.Duration // per test; 5s when zero
	// AllowBuiltins are refused built-ins the policies may call anyway:
	// the serving Deputy's policy.allow_builtins.
	AllowBuiltins []string
}

// TestReport counts the outcome of a RunTests call.
type TestReport struct {
	Passed, Failed, Skipped int
	Failures                []string // package.test names that failed or errored
}

// count tallies a result as OPA's reporter does: the cases of a
// table-driven test count one by one, so the numbers match the summary
// line `opa test` prints.
func (rep *TestReport) count(r *tester.Result) {
	name := strings.TrimPrefix(r.Package, "data.") + "." + r.Name
	switch {
	case r.Skip:
		rep.Skipped++
		return
	case r.Error != nil:
		rep.Failed++
		rep.Failures = append(rep.Failures, name)
		return
	}
	if len(r.SubResults) == 0 {
		if r.Pass() {
			rep.Passed++
		} else {
			rep.Failed++
			rep.Failures = append(rep.Failures, name)
		}
		return
	}
	for path, sr := range r.SubResults.Iter {
		if len(sr.SubResults) > 0 {
			continue
		}
		if sr.Fail {
			rep.Failed++
			rep.Failures = append(rep.Failures, name+"/"+strings.Join(path, "/"))
		} else {
			rep.Passed++
		}
	}
}

// RunTests runs every Rego test (rules named test_*) under paths with OPA's
// tester, as `opa test` does, and reports to opts.Output in OPA's formats.
// err is set when the tests could not run (load or compile failure); failing
// tests are counted, not returned as an error.
func RunTests(ctx context.Context, paths []string, opts TestOptions) (TestReport, error) {
	var rep TestReport
	out := opts.Output
	if out == nil {
		out = io.Discard
	}
	filter := dirFilter{tests: true}
	modules, store, err := tester.LoadWithRegoVersion(paths, filter.skip, ast.RegoV1)
	if err := filter.err("policies"); err != nil {
		return rep, err
	}
	if err != nil {
		return rep, sidecar.Invalid("policies", "load %s: %v", strings.Join(paths, ","), err)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	var cov *cover.Cover
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return rep, err
	}
	defer store.Abort(ctx, txn)
	comp := ast.NewCompiler().
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)).
		WithEnablePrintStatements(true).
		WithDefaultRegoVersion(ast.RegoV1).
		WithCapabilities(capabilities(opts.AllowBuiltins))
	runner := tester.NewRunner().
		SetCompiler(comp).
		SetStore(store).
		SetModules(modules).
		CapturePrintOutput(true).
		EnableTracing(opts.Verbose).
		SetTimeout(timeout).
		Filter(opts.Run)
	var reporter tester.Reporter = tester.PrettyReporter{Output: out, Verbose: opts.Verbose}
	if opts.Coverage {
		cov = cover.New()
		runner = runner.SetCoverageQueryTracer(cov)
		reporter = tester.JSONCoverageReporter{Cover: cov, Modules: modules, Output: out, Verbose: opts.Verbose}
	}
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		if err := compileErr(err); err != nil {
			return rep, err
		}
		return rep, sidecar.Invalid("policies", "%v", err)
	}
	counted := make(chan *tester.Result)
	go func() {
		defer close(counted)
		for r := range ch {
			rep.count(r)
			counted <- r
		}
	}()
	// The reporters return an error when a test fails; the counts say that
	// already, so only a reporter that could not write is worth returning.
	rerr := reporter.Report(counted)
	for range counted { // a reporter that stopped early leaves results behind
	}
	if rerr != nil && rep.Failed == 0 {
		return rep, rerr
	}
	return rep, nil
}
