package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/metrics"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// badMask is a mask policy that evaluates but is no list of paths: the
// decision log would drop every record's input under it.
const badMask = "package system.log\n\nmask := \"not a list of paths\"\n"

// shippedPolicies is a copy of the shipped policies the test may change.
func shippedPolicies(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "deputy"), os.DirFS("../../policies/deputy")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writePolicyFile(t *testing.T, dir, name, body string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// servingPolicy is serve's policy component on dir, with its metrics
// registry and log.
type servingPolicy struct {
	*policyPart
	reg *prometheus.Registry
	log *bytes.Buffer
}

func newServingPolicy(t *testing.T, dir string) servingPolicy {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	p, err := newPolicyPart(policy.Config{Paths: []string{dir}, DecisionQuery: policy.DefaultDecisionQuery}, slog.New(slog.NewTextHandler(&log, nil)), m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	return servingPolicy{policyPart: p, reg: reg, log: &log}
}

// failures is the bundle activation failure count.
func (s servingPolicy) failures(t *testing.T) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == metrics.Namespace+"_bundle_activation_failures_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no bundle activation failure metric")
	return 0
}

// A set refused at start is refused on a reload too, before it serves:
// the set serving keeps serving, and the refusal is counted and logged.
func TestReloadRefusesWhatStartRefuses(t *testing.T) {
	cases := []struct {
		name   string
		change func(t *testing.T, dir string)
		want   string
	}{
		// A mask policy that cannot run: every decision record would
		// drop its input.
		{"mask that cannot run", func(t *testing.T, dir string) {
			writePolicyFile(t, dir, "system/log/mask.rego", badMask)
		}, decisionlog.MaskField},
		// Data without rules: every check would be undefined, so denied.
		{"no rules", func(t *testing.T, dir string) {
			err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err == nil && strings.HasSuffix(p, ".rego") {
					err = os.Remove(p)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}, "no rule defines " + policy.DefaultDecisionQuery},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			bad := shippedPolicies(t)
			tc.change(t, bad)
			if err := newServingPolicy(t, bad).Start(ctx); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("start: %v, want it refused naming %q", err, tc.want)
			}

			dir := shippedPolicies(t)
			p := newServingPolicy(t, dir)
			if err := p.Start(ctx); err != nil {
				t.Fatal(err)
			}
			before := p.engine.Current().Revision
			tc.change(t, dir)
			if err := p.source.Reload(ctx); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("reload: %v, want it refused naming %q", err, tc.want)
			}
			if now := p.engine.Current().Revision; now != before {
				t.Errorf("serving revision %s after the refused reload, want %s still", now, before)
			}
			if err := decisionlog.ValidateMask(ctx, p.engine); err != nil {
				t.Errorf("the serving set's mask: %v", err)
			}
			if got := p.failures(t); got != 1 {
				t.Errorf("activation failures counted = %v, want 1", got)
			}
			if log := p.log.String(); !strings.Contains(log, "policy activation refused") || !strings.Contains(log, tc.want) {
				t.Errorf("log does not report the refusal naming %q:\n%s", tc.want, log)
			}
		})
	}
}
