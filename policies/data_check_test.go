package policies_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// activateEdited copies the shipped policies with old replaced by new in
// file, and activates the copy as activateCopy does.
func activateEdited(t *testing.T, file, old, new string) error {
	t.Helper()
	return activateCopy(t, func(dir string) {
		path := filepath.Join(dir, file)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), old) {
			t.Fatalf("%s holds no %s", file, old)
		}
		if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	})
}

// activateCopy copies the shipped policies, lets edit change the copy, and
// activates it as `deputy serve` does, its data checked by
// delegation.CheckRules: the activation's error, nil when it is accepted.
func activateCopy(t *testing.T, edit func(dir string)) error {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(".")); err != nil {
		t.Fatal(err)
	}
	edit(dir)
	set, err := policy.LoadPaths([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	e := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)), policy.WithDataCheck(delegation.CheckRules))
	return e.Activate(context.Background(), set)
}

// Policy data the shipped policies would read otherwise than its author
// meant is refused at activation, naming the data path, never served.
func TestActivationRefusesDataThePoliciesMisread(t *testing.T) {
	for _, tc := range []struct {
		name, file, old, new string
		path                 string // named in the refusal
	}{
		{
			// Rego orders every string above every number: a cc rank
			// quoted as YAML and ConfigMap authors quote numbers would
			// let a cc grant through every route, contacts included.
			name: "cc rank as a string", file: "deputy/partner/data.json",
			old: `"level_rank": {"cc": 0,`, new: `"level_rank": {"cc": "0",`,
			path: "data.deputy.partner.level_rank.cc",
		},
		{
			// The policy opens a method whose entry, or "*", is defined
			// and not false: "*" would overrule the explicit false.
			name: "method closed by false beside *", file: "deputy/authz/data.json",
			old: `"catalog": {"GET": true, "HEAD": true}`, new: `"catalog": {"*": true, "DELETE": false}`,
			path: "data.deputy.authz.public.sections.catalog.DELETE",
		},
		{
			name: "method closed by a quoted false", file: "deputy/authz/data.json",
			old: `"catalog": {"GET": true, "HEAD": true}`, new: `"catalog": {"GET": true, "HEAD": true, "POST": "false"}`,
			path: "data.deputy.authz.public.sections.catalog.POST",
		},
		{
			name: "method closed by 0", file: "deputy/authz/data.json",
			old: `"catalog": {"GET": true, "HEAD": true}`, new: `"catalog": {"GET": true, "HEAD": true, "POST": 0}`,
			path: "data.deputy.authz.public.sections.catalog.POST",
		},
		{
			name: "method closed by null", file: "deputy/authz/data.json",
			old: `"/health": {"GET": true, "HEAD": true}`, new: `"/health": {"GET": true, "HEAD": true, "POST": null}`,
			path: "data.deputy.authz.public.paths./health.POST",
		},
		{
			name: "signed-in method closed by false", file: "deputy/authz/data.json",
			old: `"checkout": {"*": true}`, new: `"checkout": {"*": true, "DELETE": false}`,
			path: "data.deputy.authz.authenticated.sections.checkout.DELETE",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := activateEdited(t, tc.file, tc.old, tc.new)
			if err == nil || !strings.Contains(err.Error(), tc.path+":") {
				t.Fatalf("activation: %v, want a refusal naming %s", err, tc.path)
			}
		})
	}
}

// A rule beside the data it shadows is refused: the impersonation policy
// would read max_session from the rule, the session lifecycle, which
// alone applies it, from the data.
func TestActivationRefusesRuleShadowingData(t *testing.T) {
	err := activateCopy(t, func(dir string) {
		rule := "package deputy.impersonation\n\nmax_session := \"15m\"\n"
		if err := os.WriteFile(filepath.Join(dir, "deputy/impersonation/override.rego"), []byte(rule), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	if want := "conflicting rule for data path deputy/impersonation/max_session"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("activation: %v, want %q", err, want)
	}
}
