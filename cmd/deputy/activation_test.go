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
	copyTree(t, "../../policies/deputy", filepath.Join(dir, "deputy"))
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
	return newServingPolicyOn(t, policy.Config{Paths: []string{dir}})
}

func newServingPolicyOn(t *testing.T, cfg policy.Config) servingPolicy {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cfg.DecisionQuery = policy.DefaultDecisionQuery
	p, err := newPolicyPart(cfg, slog.New(slog.NewTextHandler(&log, nil)), m)
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

// removeRules deletes every Rego file under dir, leaving its data.
func removeRules(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".rego") {
			err = os.Remove(p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
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
		{"no rules", removeRules, "no rule defines " + policy.DefaultDecisionQuery},
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

// signedBundleOf signs the bundle directory dir (a .manifest beside the
// policies) without compiling it, as a careless pipeline could, and
// writes it as a tarball.
func signedBundleOf(t *testing.T, dir, key string) string {
	t.Helper()
	writePolicyFile(t, dir, ".manifest", `{"revision":"r1","roots":["deputy","system"]}`)
	b, err := policy.ReadBundleFile(dir, policy.ReadOptions{Roots: []string{"deputy", "system"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := policy.SignBundle(b, policy.SignOptions{Key: key}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "deputy.tar.gz")
	if err := policy.WriteBundleFile(out, b); err != nil {
		t.Fatal(err)
	}
	return out
}

// `deputy bundle verify` ("as a serving Deputy would") passes exactly the
// signed bundles serve activates, and `deputy policy check` and `deputy
// bundle build` the directories it does: each runs serve's activation
// checks after its own.
func TestOfflineToolsRefuseWhatServeRefuses(t *testing.T) {
	priv, pub := devKeys(t)
	cases := []struct {
		name   string
		change func(t *testing.T, dir string)
		want   string // empty: every tool and serve accept the set
	}{
		{"shipped policies", func(*testing.T, string) {}, ""},
		{"mask that cannot run", func(t *testing.T, dir string) {
			writePolicyFile(t, dir, "system/log/mask.rego", badMask)
		}, decisionlog.MaskField},
		{"no rules for the decision", func(t *testing.T, dir string) {
			removeRules(t, dir)
			writePolicyFile(t, dir, "deputy/other/other.rego", "package deputy.other\n\nx := 1\n")
		}, "no rule defines " + policy.DefaultDecisionQuery},
		{"module that does not compile", func(t *testing.T, dir string) {
			writePolicyFile(t, dir, "deputy/authz/broken.rego", "package deputy.authz\n\nbroken := {\"allow\": nosuchfunc(1)}\n")
		}, "nosuchfunc"},
		{"rule data serve cannot read", func(t *testing.T, dir string) {
			editData(t, dir, "deputy/impersonation/data.json", func(d map[string]any) { delete(d, "max_session") })
		}, "data.deputy.impersonation.max_session"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := shippedPolicies(t)
			tc.change(t, dir)
			judged := func(tool string, err error) {
				t.Helper()
				if tc.want == "" && err != nil {
					t.Errorf("%s: %v, want the set accepted", tool, err)
				}
				if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
					t.Errorf("%s: %v, want the set refused naming %q", tool, err, tc.want)
				}
			}
			_, err := run(t, newPolicyCmd(), "check", dir)
			judged("policy check", err)
			_, err = run(t, newBundleCmd(), "build", dir, "-o", filepath.Join(t.TempDir(), "b.tar.gz"), "--revision", "r1", "--root", "deputy", "--root", "system")
			judged("bundle build", err)

			signed := signedBundleOf(t, dir, priv)
			_, err = run(t, newBundleCmd(), "verify", signed, "--public-key", pub, "--root", "deputy", "--root", "system")
			judged("bundle verify", err)
			judged("serve", newServingPolicyOn(t, policy.Config{BundleFile: signed, PublicKey: pub, Roots: []string{"deputy", "system"}}).Start(context.Background()))
		})
	}
}

// A reload never takes the management rules away: the management API
// would deny every call. A set without them may still start (policies
// written for OPA-Envoy have none).
func TestReloadKeepsManagementRules(t *testing.T) {
	ctx := context.Background()
	without := func(t *testing.T, dir string) {
		t.Helper()
		if err := os.RemoveAll(filepath.Join(dir, "deputy", "manage")); err != nil {
			t.Fatal(err)
		}
	}
	bare := shippedPolicies(t)
	without(t, bare)
	if err := newServingPolicy(t, bare).Start(ctx); err != nil {
		t.Fatalf("start without management rules: %v", err)
	}

	dir := shippedPolicies(t)
	p := newServingPolicy(t, dir)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	before := p.engine.Current().Revision
	without(t, dir)
	want := "no rule defines " + policy.DefaultManageQuery
	if err := p.source.Reload(ctx); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("reload without management rules: %v, want it refused naming %q", err, want)
	}
	if now := p.engine.Current().Revision; now != before {
		t.Errorf("serving revision %s after the refused reload, want %s still", now, before)
	}
	if got := p.failures(t); got != 1 {
		t.Errorf("activation failures counted = %v, want 1", got)
	}
}
