package decisionlog_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/policy"
)

const (
	cardPath  = "/input/attributes/request/http/headers/x-card"
	tracePath = "/input/attributes/request/http/headers/x-trace"
)

// maskSet is a policy set of revision rev whose package system.log holds
// rules.
func maskSet(t *testing.T, rev, rules string) *policy.Set {
	t.Helper()
	m, err := ast.ParseModuleWithOpts("mask.rego", "package system.log\n"+rules, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	return &policy.Set{Modules: map[string]*ast.Module{"mask.rego": m}, Revision: rev}
}

func cardDecision(id string, act *policy.Activation) *sidecar.Decision {
	in := map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
		"headers": map[string]any{"x-card": "4111111111111111", "x-trace": "t-1"}}}}}
	return &sidecar.Decision{ID: id, Time: time.Now(), Allowed: true, Method: "GET", Path: "/pay",
		Revision: act.Revision, Policy: act, Input: in}
}

// A record is masked by the rules of the activation that decided it, not
// by those serving when the writer encodes it: a reload between the two
// must not show what the deciding revision hid, nor hide by another
// revision's rules.
func TestMaskPolicyOfTheDecidingRevision(t *testing.T) {
	cases := []struct {
		name  string
		rules string // revision B's, activated after the decision
	}{
		{"next revision masks another header", `mask contains "` + tracePath + `"`},
		// B's mask fails on A's input: A's rules still mask the record,
		// which keeps its input.
		{"next revision's mask fails on the input", `mask contains 42 if input.input.attributes.request.http.headers["x-card"]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			eng := policy.New()
			if err := eng.Activate(ctx, maskSet(t, "A", `mask contains "`+cardPath+`"`)); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig()
			cfg.FlushInterval = time.Hour // the record waits for Stop, after the reload
			var out lines
			l := startLogger(t, cfg, decisionlog.NewWriterSink(&out), decisionlog.WithMaskPolicy())
			l.Log(cardDecision("d1", eng.Current()))
			if err := eng.Activate(ctx, maskSet(t, "B", tc.rules)); err != nil {
				t.Fatal(err)
			}
			if err := l.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			recs := out.records(t)
			if len(recs) != 1 {
				t.Fatalf("%d records, want 1", len(recs))
			}
			rec := recs[0]
			if rec["bundle_revision"] != "A" {
				t.Errorf("bundle_revision = %v, want A", rec["bundle_revision"])
			}
			if strings.Contains(out.String(), "4111111111111111") {
				t.Errorf("x-card in clear although revision A's mask erases it: %s", out.String())
			}
			if rec["mask_error"] != nil || l.MaskErrors() != 0 {
				t.Errorf("mask_error = %v, MaskErrors = %d; want revision A's mask applied", rec["mask_error"], l.MaskErrors())
			}
			if got := fmt.Sprint(rec["erased"]); got != "["+cardPath+"]" {
				t.Errorf("erased = %s, want revision A's [%s]", got, cardPath)
			}
			if !strings.Contains(out.String(), `"x-trace":"t-1"`) {
				t.Errorf("x-trace missing: revision B's rules were applied: %s", out.String())
			}
		})
	}
}

// A decision whose Policy is not an activation has no rules the log can
// trust: its input is dropped, as when a mask fails, rather than masked by
// the serving set's rules.
func TestMaskPolicyOfUnknownDecider(t *testing.T) {
	ctx := context.Background()
	eng := policy.New()
	if err := eng.Activate(ctx, maskSet(t, "A", `mask contains "`+tracePath+`"`)); err != nil {
		t.Fatal(err)
	}
	var out lines
	l := startLogger(t, testConfig(), decisionlog.NewWriterSink(&out), decisionlog.WithMaskPolicy())
	d := cardDecision("d1", eng.Current())
	d.Policy = eng // the serving engine, not the deciding activation
	l.Log(d)
	if err := l.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	rec := out.records(t)[0]
	if _, ok := rec["input"]; ok {
		t.Errorf("input logged without its deciding activation's mask: %s", out.String())
	}
	if !strings.Contains(fmt.Sprint(rec["mask_error"]), "not available") || l.MaskErrors() != 1 {
		t.Errorf("mask_error = %v, MaskErrors = %d; want the missing activation named, counted once", rec["mask_error"], l.MaskErrors())
	}
}
