package policy_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// A rule at a path policy data holds is refused, whether the set comes
// from a directory or a bundle, as OPA's own bundle activation refuses it:
// Rego would read the rule ("15m") and Deputy's Go code, which applies
// max_session, the data ("1h").
func TestRuleShadowingDataRefused(t *testing.T) {
	const dir = "testdata/lifecycle/shadowed"
	const want = "conflicting rule for data path deputy/impersonation/max_session"
	fromDir, err := policy.LoadPaths([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	b, err := policy.ReadBundleDir(dir, policy.ReadOptions{Roots: []string{"deputy"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, set := range map[string]*policy.Set{"directory": fromDir, "bundle": policy.SetFromBundle(b, dir)} {
		t.Run(name, func(t *testing.T) {
			e := policy.New(policy.WithQueries("data.deputy.impersonation.max_session"), policy.WithLogger(slog.New(slog.DiscardHandler)))
			err := e.Activate(context.Background(), set)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Activate = %v, want %q", err, want)
			}
			if e.Ready() {
				t.Fatal("the set is serving")
			}
		})
	}
	if _, err := policy.BuildBundle([]string{dir}, policy.BuildOptions{Revision: "test"}); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("BuildBundle = %v, want %q", err, want)
	}
}
