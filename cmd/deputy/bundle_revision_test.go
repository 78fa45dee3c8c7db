package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/metrics"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// bundleInfo is the revision label of deputy_bundle_info.
func (s servingPolicy) bundleInfo(t *testing.T) string {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != metrics.Namespace+"_bundle_info" {
			continue
		}
		if ms := mf.GetMetric(); len(ms) == 1 {
			for _, l := range ms[0].GetLabel() {
				if l.GetName() == "revision" {
					return l.GetValue()
				}
			}
		}
		t.Fatalf("deputy_bundle_info: %v, want one series with a revision", mf.GetMetric())
	}
	t.Fatal("no deputy_bundle_info")
	return ""
}

// evalBundle decides GET path with deputy eval --bundle dir and returns
// the reason and the revision it decided on.
func evalBundle(t *testing.T, dir, path string) (reason, revision string) {
	t.Helper()
	cmd := newEvalCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(`{"method": "GET", "path": "` + path + `"}`))
	cmd.SetArgs([]string{"--bundle", dir, "--input", "-", "--json"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("eval: %v\n%s", err, out.String())
	}
	var got struct{ Reason, Revision string }
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("eval output: %v\n%s", err, out.String())
	}
	return got.Reason, got.Revision
}

// An unsigned bundle directory whose rules are edited while its .manifest
// is left as it is serves the new rules under a revision of their own:
// deputy_bundle_info (and so /readyz and decision records, which name the
// same activation's revision) no longer names two sets of rules alike,
// deputy eval --bundle on the files decides on the revision serve reports,
// and a restart on the same files reports the same revision.
func TestBundleDirectoryEditedUnderItsManifest(t *testing.T) {
	ctx := context.Background()
	dir := shippedPolicies(t)
	writePolicyFile(t, dir, ".manifest", `{"revision":"v1","roots":["deputy","system"]}`)
	p := newServingPolicyOn(t, policy.Config{BundleFile: dir})
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	a := p.bundleInfo(t)
	if !strings.HasPrefix(a, "v1+") {
		t.Fatalf("deputy_bundle_info{revision=%q}, want v1+<content>", a)
	}
	if reason, rev := evalBundle(t, dir, "/health"); reason != "public_route" || rev != a {
		t.Fatalf("eval on rules A: %s on revision %q, want public_route on %s", reason, rev, a)
	}

	data := filepath.Join(dir, "deputy", "authz", "data.json")
	body, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(body), `"/health": {"GET": true, "HEAD": true}`, `"/status": {"GET": true, "HEAD": true}`, 1)
	if edited == string(body) {
		t.Fatal("the shipped data no longer opens /health: update the edit")
	}
	writePolicyFile(t, dir, "deputy/authz/data.json", edited)
	if err := p.source.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	b := p.bundleInfo(t)
	if b == a || !strings.HasPrefix(b, "v1+") {
		t.Errorf("rules A served as %s, rules B (same .manifest) as %s: want two v1+ revisions", a, b)
	}
	if st := p.source.Status(); st.Revision != b {
		t.Errorf("status (/readyz) revision %q, want %s", st.Revision, b)
	}
	if reason, rev := evalBundle(t, dir, "/health"); reason != "no_rule_matched" || rev != b {
		t.Errorf("eval on rules B: %s on revision %q, want no_rule_matched on %s", reason, rev, b)
	}

	restarted := newServingPolicyOn(t, policy.Config{BundleFile: dir})
	if err := restarted.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if again := restarted.bundleInfo(t); again != b {
		t.Errorf("restarted on rules B: deputy_bundle_info{revision=%q}, want %s", again, b)
	}
}
