package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func runEvalCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newEvalCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"--policies", "testdata/eval/policies"}, args...))
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
