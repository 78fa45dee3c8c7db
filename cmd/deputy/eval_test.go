package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

func runEvalCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runEvalStdin(t, "", args...)
}

func runEvalStdin(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	return runEvalOn(t, "testdata/eval/policies", stdin, args...)
}

func runEvalOn(t *testing.T, policies, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := newEvalCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(append([]string{"--policies", policies}, args...))
	err := cmd.Execute()
	return out.String(), err
}

func TestEvalDecides(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{name: "HTTP description on a public route strips forged owned headers", args: []string{"--input", "testdata/eval/http_get.json"},
			want: []string{"decision: allow", "reason:   public", "upstream headers to remove: x-deputy-subject"}},
		{name: "CheckRequest without identity is denied with the policy's status", args: []string{"--input", "testdata/eval/checkrequest.json"},
			want: []string{"decision: deny", "status:   401", "reason:   no_identity"}},
		{name: "identity and delegation inject the delegated identity", args: []string{"--input", "testdata/eval/checkrequest.json",
			"--identity", "testdata/eval/identity.json", "--delegation", "testdata/eval/delegation.json"},
			want: []string{"decision: allow", "reason:   delegated", "x-deputy-subject: cust-9", "x-deputy-actor: staff-1",
				"x-deputy-mode: impersonation", "x-policy: yes"}},
		{name: "dry run lets a denial through and says so", args: []string{"--input", "testdata/eval/checkrequest.json", "--dry-run"},
			want: []string{"decision: allow", "reason:   no_identity", "dry run:  on"}},
		{name: "explain prints the rule trace", args: []string{"--input", "testdata/eval/http_get.json", "--explain"},
			want: []string{"trace:", "data.deputy.authz.decision"}},
		{name: "inline JSON for input, identity and delegation", args: []string{"--input", `{"attributes": {"request": {"http": {"method": "GET", "path": "/account"}}}}`,
			"--identity", `{"sub": "staff-1"}`, "--delegation", `{"mode": "impersonation", "id": "s-1", "actor": "staff-1", "subject": "cust-2"}`},
			want: []string{"decision: allow", "reason:   delegated", "x-deputy-subject: cust-2"}},
		{name: "an HTTP description is decided as serve's http_service endpoint: an allow setting a header Envoy does not copy is refused",
			args: []string{"--input", `{"method": "GET", "path": "/account"}`,
				"--identity", `{"sub": "staff-1"}`, "--delegation", `{"mode": "impersonation", "id": "s-1", "actor": "staff-1", "subject": "cust-2"}`},
			want: []string{"decision: deny", "reason:   result_not_enforceable", "x-policy is not among the headers Envoy's http_service copies upstream"}},
		{name: "@file arguments", args: []string{"--input", "@testdata/eval/checkrequest.json",
			"--identity", "@testdata/eval/identity.json", "--delegation", "@testdata/eval/delegation.json"},
			want: []string{"decision: allow", "reason:   delegated"}},
		{name: "OPA-Envoy's slash form of the query", args: []string{"--input", "testdata/eval/http_get.json", "--query", "deputy/authz/decision"},
			want: []string{"decision: allow", "reason:   public"}},
		{name: "a decision-log record is replayed on its recorded input", args: []string{"--input", "@testdata/eval/record.json"},
			want: []string{"replayed: 5f0c1d9e2a7b4c3d8e6f1a2b3c4d5e6f", "recorded allow (delegated)", "same as recorded", "decision: allow", "reason:   delegated"}},
		{name: "a replay that no longer matches says so", args: []string{"--input", "testdata/eval/record_changed.json"},
			want: []string{"recorded deny (closed) with revision older: DIFFERS from the record", "decision: allow", "reason:   public"}},
		{name: "a replay with another identity", args: []string{"--input", "testdata/eval/record.json", "--identity", `{"sub": "staff-2"}`},
			want: []string{"DIFFERS from the record", "decision: deny", "reason:   no_identity"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runEvalCmd(t, tc.args...)
			if err != nil {
				t.Fatalf("eval: %v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestEvalJSON(t *testing.T) {
	out, err := runEvalCmd(t, "--input", "testdata/eval/checkrequest.json", "--json",
		"--identity", "testdata/eval/identity.json", "--delegation", "testdata/eval/delegation.json")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Allowed  bool              `json:"allowed"`
		Status   int               `json:"http_status"`
		Injected map[string]string `json:"injected"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if !got.Allowed || got.Status != 200 || got.Injected["x-deputy-subject-name"] != "Ann%20M%C3%BCller" {
		t.Errorf("decision = %+v", got)
	}
}

func TestEvalRefusesMalformedInput(t *testing.T) {
	cases := []struct {
		name, input, want string
	}{
		{name: "unknown field in HTTP description", input: "testdata/eval/typo.json", want: "heders"},
		{name: "unknown field in CheckRequest", input: "testdata/eval/bad_checkrequest.json", want: "methd"},
		{name: "truncated JSON", input: "testdata/eval/truncated.json", want: "not a JSON object"},
		{name: "JSON array", input: "testdata/eval/array.json", want: "not a JSON object"},
		{name: "relative path", input: "testdata/eval/relative.json", want: "must start with /"},
		{name: "missing file", input: "testdata/eval/nope.json", want: "no such file"},
		{name: "neither form", input: "testdata/eval/identity.json", want: "want a CheckRequest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runEvalCmd(t, "--input", tc.input)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q\n%s", err, tc.want, out)
			}
			if strings.Contains(out, "decision:") {
				t.Errorf("a decision was printed for malformed input:\n%s", out)
			}
		})
	}
}

// check.max_path_segments and check.max_route_dirs_bytes shape eval's
// pipeline as serve's: a path past either is refused before policy.
func TestEvalHonoursPathBounds(t *testing.T) {
	input := `{"method": "GET", "path": "/catalog/a/b/c"}`
	out, err := runEvalCmd(t, "--input", input)
	if err != nil || !strings.Contains(out, "decision: allow") {
		t.Fatalf("4 segments, 30 bytes of route_dirs, with the default bounds: %v\n%s", err, out)
	}
	for _, tc := range []struct{ env, value, refusal string }{
		{"DEPUTY_CHECK_MAX_PATH_SEGMENTS", "3", "more segments than check.max_path_segments (3) allows"},
		{"DEPUTY_CHECK_MAX_ROUTE_DIRS_BYTES", "29", "longer than check.max_route_dirs_bytes (29) allows"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			out, err := runEvalCmd(t, "--input", input)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range []string{"decision: deny", "status:   400", "reason:   malformed_request", tc.refusal} {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// FuzzParseEvalInput: any bytes give either an error or exactly one
// request to decide, never a panic.
func FuzzParseEvalInput(f *testing.F) {
	for _, name := range []string{"http_get", "checkrequest", "typo", "bad_checkrequest", "truncated", "array", "relative"} {
		b, err := os.ReadFile("testdata/eval/" + name + ".json")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, httpReq, err := parseEvalInput(raw)
		if err != nil {
			if req != nil || httpReq != nil {
				t.Fatal("a request came back with an error")
			}
			return
		}
		if (req == nil) == (httpReq == nil) {
			t.Fatalf("want exactly one request form, got %v and %v", req, httpReq)
		}
	})
}

func TestEvalReadsStdin(t *testing.T) {
	for _, arg := range []string{"-", "@-"} {
		out, err := runEvalStdin(t, `{"path": "/catalog/x"}`, "--input", arg)
		if err != nil || !strings.Contains(out, "reason:   public") {
			t.Fatalf("--input %s: %v\n%s", arg, err, out)
		}
	}
}

func TestEvalFailFlags(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		fails    bool
		decision string
	}{
		{name: "undefined without --fail exits 0", args: []string{"--query", "deputy/authz/never"}, decision: "undefined_decision"},
		{name: "undefined with --fail", args: []string{"--query", "data.deputy.authz.never", "--fail"}, fails: true, decision: "undefined_decision"},
		{name: "undefined with --fail-defined", args: []string{"--query", "deputy/authz/never", "--fail-defined"}, decision: "undefined_decision"},
		{name: "defined with --fail", args: []string{"--fail"}, decision: "reason:   public"},
		{name: "defined with --fail-defined", args: []string{"--fail-defined"}, fails: true, decision: "reason:   public"},
		{name: "a denial is defined", args: []string{"--input", "testdata/eval/checkrequest.json", "--fail-defined"}, fails: true, decision: "no_identity"},
		{name: "an invalid decision fails --fail", args: []string{"--query", "deputy/authz/not_a_decision", "--fail"}, fails: true, decision: "invalid_decision"},
		{name: "an invalid decision fails --fail-defined", args: []string{"--query", "deputy/authz/not_a_decision", "--fail-defined"}, fails: true, decision: "invalid_decision"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--input", "testdata/eval/http_get.json"}, tc.args...)
			out, err := runEvalCmd(t, args...)
			if tc.fails != (err != nil) {
				t.Fatalf("err = %v, want failure %v\n%s", err, tc.fails, out)
			}
			if err != nil && !errors.Is(err, errFail) {
				t.Fatalf("err = %v is not the --fail exit", err)
			}
			if !strings.Contains(out, tc.decision) {
				t.Fatalf("decision not printed before exiting:\n%s", out)
			}
		})
	}
}

func TestEvalRefusesBadArguments(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{name: "record logged without input", args: []string{"--input", "testdata/eval/record_no_input.json"}, want: "include_input off"},
		{name: "record logged without its oversized input", args: []string{"--input", "testdata/eval/record_oversized.json"}, want: "decision_log.max_record_bytes"},
		{name: "identity with a typo", args: []string{"--input", "testdata/eval/http_get.json", "--identity", `{"sbu": "x"}`}, want: "sbu"},
		{name: "identity exp of the wrong kind", args: []string{"--input", "testdata/eval/http_get.json", "--identity", `{"sub": "x", "exp": true}`}, want: "identity.exp"},
		{name: "inline JSON cut short", args: []string{"--input", `{"path": "/a"`}, want: "not a JSON object"},
		{name: "missing @file", args: []string{"--input", "@testdata/eval/nope.json"}, want: "no such file"},
		{name: "a length the body does not have", args: []string{"--input", `{"method": "POST", "path": "/a", "headers": {"content-length": "5"}, "body": "too long"}`}, want: "input.headers.content-length"},
		{name: "query neither form", args: []string{"--input", "testdata/eval/http_get.json", "--query", "deputy.authz.decision"}, want: "data.deputy.authz.decision"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runEvalCmd(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q\n%s", err, tc.want, out)
			}
			if strings.Contains(out, "decision:") {
				t.Errorf("a decision was printed:\n%s", out)
			}
		})
	}
}

// The README's eval commands, on examples/eval and the shipped policies.
func TestEvalExamples(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{name: "no identity", args: []string{"--input", "../../examples/eval/request.json"},
			want: []string{"decision: deny", "status:   401", "reason:   authentication_required"}},
		{name: "customer", args: []string{"--input", "../../examples/eval/request.json", "--identity", "@../../examples/eval/identity.json"},
			want: []string{"decision: allow", "reason:   authenticated_route"}},
		{name: "staff acting as the customer", args: []string{"--input", "../../examples/eval/request.json",
			"--identity", "@../../examples/eval/staff.json", "--delegation", "@../../examples/eval/delegation.json"},
			want: []string{"decision: allow", "reason:   impersonation", "x-deputy-actor: staff-17", "x-deputy-subject: alice"}},
		{name: "record replay", args: []string{"--input", "@../../examples/eval/record.json", "--fail"},
			want: []string{"same as recorded", "decision: allow"}},
		// eval builds input.deputy.request with the serving pipeline, so the
		// tricks the check refuses or sees through fare the same offline.
		{name: "canonical path: // and case", args: []string{"--input", `{"method": "GET", "path": "//Customer/account;x"}`},
			want: []string{"decision: deny", "status:   401", "reason:   authentication_required"}},
		{name: "method override on a public route", args: []string{"--input", `{"method": "GET", "path": "/catalog/shoes", "headers": {"X-HTTP-Method-Override": "POST"}}`},
			want: []string{"decision: deny", "reason:   no_rule_matched"}},
		{name: "encoded slash refused", args: []string{"--input", `{"method": "GET", "path": "/catalog%2Fshoes"}`},
			want: []string{"decision: deny", "status:   400", "reason:   malformed_request"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runEvalOn(t, "../../policies", "", tc.args...)
			if err != nil {
				t.Fatalf("eval: %v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
