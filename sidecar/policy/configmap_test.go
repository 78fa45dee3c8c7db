package policy_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// kubeletWrite lays files out as the kubelet's atomic writer does for a
// mounted ConfigMap: the content in a hidden timestamped directory, ..data
// pointing at it, and every top-level entry a symlink through ..data. An
// update writes a new directory and swaps ..data with a rename.
func kubeletWrite(t *testing.T, dir, version string, files map[string]string) {
	t.Helper()
	ts := "..2026_11_29_" + version
	for rel, body := range files {
		p := filepath.Join(dir, ts, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		top := filepath.Join(dir, firstElem(rel))
		if _, err := os.Lstat(top); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", firstElem(rel)), top); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func firstElem(rel string) string {
	for i := 0; i < len(rel); i++ {
		if rel[i] == '/' {
			return rel[:i]
		}
	}
	return rel
}

// With policy.watch (as the chart sets for source: configMap), an update of
// the mounted ConfigMap must activate: a policy fix that tightens access
// must not be silently ignored while /readyz reports ready.
func TestWatchFollowsConfigMapUpdate(t *testing.T) {
	for _, layout := range []struct{ name, file string }{
		{"flat keys (source: configMap)", "authz.rego"},
		{"items with paths (source: files, configMap items)", "deputy/authz/authz.rego"},
	} {
		t.Run(layout.name, func(t *testing.T) {
			dir := t.TempDir()
			kubeletWrite(t, dir, "v1", map[string]string{layout.file: "package deputy.authz\n\ndecision := {\"allowed\": true, \"reason\": \"v1-open\"}\n"})
			e := policy.New(policy.WithLogger(quiet()))
			src, err := policy.NewSource(policy.Config{Paths: []string{dir}, Watch: true}, e, policy.WithSourceLogger(quiet()))
			if err != nil {
				t.Fatal(err)
			}
			if err := src.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, l := decide(t, e); l != "v1-open" {
				t.Fatalf("first load: reason %q, want v1-open", l)
			}
			kubeletWrite(t, dir, "v2", map[string]string{layout.file: "package deputy.authz\n\ndecision := {\"allowed\": false, \"reason\": \"v2-closed\"}\n"})
			if err := os.RemoveAll(filepath.Join(dir, "..2026_11_29_v1")); err != nil {
				t.Fatal(err)
			}
			if err := src.Reload(context.Background()); err != nil {
				t.Fatalf("reload: %v", err)
			}
			if _, l := decide(t, e); l != "v2-closed" {
				t.Errorf("after the ConfigMap update the decision is still %q (status %+v): the update was not noticed", l, src.Status())
			}
		})
	}
}

// The same for a bundle_file mounted from a ConfigMap or Secret.
func TestWatchFollowsMountedBundleFile(t *testing.T) {
	dir := t.TempDir()
	kubeletWrite(t, dir, "v1", map[string]string{"deputy.tar.gz": string(build(t, "r1", "v1", nil))})
	e := policy.New(policy.WithLogger(quiet()))
	src, err := policy.NewSource(policy.Config{BundleFile: filepath.Join(dir, "deputy.tar.gz"), Watch: true}, e, policy.WithSourceLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	kubeletWrite(t, dir, "v2", map[string]string{"deputy.tar.gz": string(build(t, "r2", "v2", nil))})
	if err := os.RemoveAll(filepath.Join(dir, "..2026_11_29_v1")); err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(context.Background()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if rev, _ := decide(t, e); manifestRevision(rev) != "r2" {
		t.Errorf("after the mounted bundle changed the serving revision is still %q", rev)
	}
}
