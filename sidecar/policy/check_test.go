package policy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/policy"
)

func TestCheck(t *testing.T) {
	cases := []struct {
		name            string
		path            string
		wantErr         string
		wantUnformatted []string
	}{
		{name: "formatted and strict-clean", path: good},
		{name: "unformatted file is named", path: "testdata/lifecycle/unformatted", wantErr: "not formatted",
			wantUnformatted: []string{"testdata/lifecycle/unformatted/deputy/authz/authz.rego"}},
		{name: "unused import fails strict compile", path: "testdata/lifecycle/strict", wantErr: "unused"},
		{name: "a denial answered with a 2xx", path: "testdata/lifecycle/successdenial", wantErr: "authz.rego:3: http_status 200 on a denial"},
		{name: "a rule shadowing data", path: "testdata/lifecycle/shadowed", wantErr: "conflicting rule for data path deputy/impersonation/max_session"},
		{name: "a memoized function that reads input", path: "testdata/lifecycle/impurememo", wantErr: "data.deputy.authz._public cannot be memoized (deputy_memo): testdata/lifecycle/impurememo/deputy/authz/authz.rego:10: reads input"},
		{name: "missing directory", path: "testdata/lifecycle/nope", wantErr: "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := policy.Check([]string{tc.path}, policy.CheckOptions{})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if rep.Modules == 0 {
					t.Error("no modules checked")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
			}
			if strings.Join(rep.Unformatted, ",") != strings.Join(tc.wantUnformatted, ",") {
				t.Errorf("unformatted = %v, want %v", rep.Unformatted, tc.wantUnformatted)
			}
		})
	}
}

func TestRunTests(t *testing.T) {
	cases := []struct {
		name         string
		path         string
		opts         policy.TestOptions
		passed       int
		failed       int
		wantFailures []string
		wantOutput   string
	}{
		{name: "passing suite counts table cases", path: good, passed: 2, wantOutput: "PASS: 2/2"},
		{name: "verbose lists every test", path: good, opts: policy.TestOptions{Verbose: true}, passed: 2, wantOutput: "test_decision"},
		{name: "failing test is counted and named", path: "testdata/lifecycle/failing", passed: 1, failed: 1,
			wantFailures: []string{"deputy.authz_test.test_post_is_allowed"}, wantOutput: "FAIL: 1/2"},
		{name: "run filter selects tests", path: "testdata/lifecycle/failing", opts: policy.TestOptions{Run: "get"}, passed: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			tc.opts.Output = &out
			rep, err := policy.RunTests(context.Background(), []string{tc.path}, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Passed != tc.passed || rep.Failed != tc.failed {
				t.Errorf("passed %d failed %d, want %d and %d\n%s", rep.Passed, rep.Failed, tc.passed, tc.failed, out.String())
			}
			if strings.Join(rep.Failures, ",") != strings.Join(tc.wantFailures, ",") {
				t.Errorf("failures = %v, want %v", rep.Failures, tc.wantFailures)
			}
			if !strings.Contains(out.String(), tc.wantOutput) {
				t.Errorf("output lacks %q:\n%s", tc.wantOutput, out.String())
			}
		})
	}
}

func TestRunTestsCoverage(t *testing.T) {
	var out bytes.Buffer
	rep, err := policy.RunTests(context.Background(), []string{good}, policy.TestOptions{Output: &out, Coverage: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed != 2 {
		t.Errorf("passed = %d, want 2", rep.Passed)
	}
	var report struct {
		Coverage float64 `json:"coverage"`
	}
	if err := json.Unmarshal(out.Bytes(), &report); err != nil {
		t.Fatalf("coverage report is not JSON: %v\n%s", err, out.String())
	}
	if report.Coverage <= 0 {
		t.Errorf("coverage = %v, want the covered share of the rules", report.Coverage)
	}
}

func TestRunTestsRefusesBrokenPolicies(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir+"/broken.rego", "package deputy.broken\n\nallow := {\n")
	_, err := policy.RunTests(context.Background(), []string{dir}, policy.TestOptions{})
	if err == nil || !strings.Contains(err.Error(), "parse") {
		t.Fatalf("err = %v, want a parse error", err)
	}
}
