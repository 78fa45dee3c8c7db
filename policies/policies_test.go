// Package policies_test runs the shipped Rego policies' own tests and the
// checks CI gates on, so `go test ./...` (and `make test`) fails when a rule
// or its test breaks, when a file is not `opa fmt` clean, or when a module
// does not compile strictly.
package policies_test

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// regoTestTimeout bounds each Rego test. `deputy policy test` allows 5s,
// which catches a rule that never ends; here the tests share two cores
// with every other package of `make test`, and the longest table-driven
// ones, about a second alone, went past 5s on a busy machine.
const regoTestTimeout = time.Minute

func TestRegoTests(t *testing.T) {
	var out bytes.Buffer
	rep, err := policy.RunTests(context.Background(), []string{"."}, policy.TestOptions{Output: &out, Timeout: regoTestTimeout})
	if err != nil {
		t.Fatalf("Rego tests could not run: %v", err)
	}
	if rep.Failed > 0 {
		t.Errorf("%d Rego tests failed: %v\n%s", rep.Failed, rep.Failures, out.String())
	}
	if rep.Passed == 0 {
		t.Error("no Rego tests found under policies/")
	}
	t.Logf("%d Rego tests passed", rep.Passed)
}

func TestFormattedAndStrict(t *testing.T) {
	rep, err := policy.Check([]string{"."}, policy.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Modules == 0 {
		t.Error("no Rego modules found under policies/")
	}
}

func TestBuildsAsBundle(t *testing.T) {
	// What `make bundle` ships must load in a serving Deputy: within the
	// roots, compiling, with the decision queries defined.
	b, err := policy.BuildBundle([]string{"."}, policy.BuildOptions{Revision: "test"})
	if err != nil {
		t.Fatal(err)
	}
	e := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err := e.Activate(context.Background(), policy.SetFromBundle(b, "policies")); err != nil {
		t.Fatal(err)
	}
}
