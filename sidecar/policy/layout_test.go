package policy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// tarDir packs dir into a gzipped tarball, as `tar -czf b.tar.gz -C dir .`
// would: a bundle made by hand rather than by BuildBundle.
func tarDir(t *testing.T, dir string) []byte {
	t.Helper()
	return tarDirAs(t, dir, "/")
}

// tarDirAs is tarDir with each name under prefix: "./" as
// `tar -czf b.tar.gz -C dir .` names them.
func tarDirAs(t *testing.T, dir, prefix string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if err := tw.WriteHeader(&tar.Header{Name: prefix + filepath.ToSlash(rel), Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = tw.Write(body)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// policyDir writes a small policy directory laid out as a bundle (with a
// .manifest), its data in the files given, and returns it.
func policyDir(t *testing.T, data map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		".manifest":                      `{"roots": ["deputy", "system"], "revision": "r1"}`,
		".regal/config.yaml":             "rules: {}\n", // hidden: neither loader reads it
		"deputy/authz/authz.rego":        "package deputy.authz\n\ndefault allow := false\n\nallow if input.method in data.deputy.authz.methods\n",
		"deputy/authz/authz_test.rego":   "package deputy.authz_test\n\nimport data.deputy.authz\n\ntest_get if authz.allow with input as {\"method\": \"GET\"}\n",
		"deputy/authz/data.json":         `{"methods": ["GET"]}`,
		"deputy/authz/reasons/data.yaml": "denied: no\n",
	}
	for name, body := range data {
		files[name] = body
	}
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, body)
	}
	return dir
}

// Every way Deputy reads a policy directory or bundle, by the command that
// reads it that way.
var policyReaders = []struct {
	name string
	read func(t *testing.T, dir string) error
}{
	{"serve and eval, policy.paths", func(t *testing.T, dir string) error {
		return reload(t, policy.Config{Paths: []string{dir}})
	}},
	{"serve and eval, policy.bundle_file directory", func(t *testing.T, dir string) error {
		return reload(t, policy.Config{BundleFile: dir})
	}},
	{"serve and eval, policy.bundle_file tarball", func(t *testing.T, dir string) error {
		file := filepath.Join(t.TempDir(), "b.tar.gz")
		if err := os.WriteFile(file, tarDir(t, dir), 0o644); err != nil {
			t.Fatal(err)
		}
		return reload(t, policy.Config{BundleFile: file})
	}},
	{"serve and eval, policy.bundle_file tarball of tar -C dir .", func(t *testing.T, dir string) error {
		file := filepath.Join(t.TempDir(), "b.tar.gz")
		if err := os.WriteFile(file, tarDirAs(t, dir, "./"), 0o644); err != nil {
			t.Fatal(err)
		}
		return reload(t, policy.Config{BundleFile: file})
	}},
	{"serve, policy.bundle_url", func(t *testing.T, dir string) error {
		return reload(t, policy.Config{BundleURL: newBundleServer(t, tarDir(t, dir)).URL + "/b.tar.gz"})
	}},
	{"policy check", func(t *testing.T, dir string) error {
		_, err := policy.Check([]string{dir}, policy.CheckOptions{})
		return err
	}},
	{"policy test", func(t *testing.T, dir string) error {
		rep, err := policy.RunTests(context.Background(), []string{dir}, policy.TestOptions{})
		if err == nil && rep.Passed != 1 {
			t.Fatalf("policy test: %+v, want the one test passed", rep)
		}
		return err
	}},
	{"bundle build", func(t *testing.T, dir string) error {
		_, err := policy.BuildBundle([]string{dir}, policy.BuildOptions{Revision: "r1"})
		return err
	}},
	{"bundle verify and sign, a tarball", func(t *testing.T, dir string) error {
		_, err := policy.ReadBundle(bytes.NewReader(tarDir(t, dir)), policy.ReadOptions{})
		return err
	}},
}

func reload(t *testing.T, cfg policy.Config) error {
	t.Helper()
	src, err := policy.NewSource(cfg, policy.New(policy.WithLogger(quiet())), policy.WithSourceLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	return src.Reload(context.Background())
}

// OPA's file loader reads every JSON and YAML file of a directory as
// data, its bundle reader only data.json and data.yaml: rules kept in
// methods.json would hold for a directory served as policy.paths and be
// dropped, silently, for the same directory served as a bundle. Each way
// of reading policies refuses such a file by name, so one directory has
// one rule set however it is served.
func TestPolicyDataOnlyInDataFiles(t *testing.T) {
	misread := []struct{ file, body string }{
		{"deputy/authz/methods.json", `{"methods": ["POST"]}`},
		{"deputy/authz/limits.yaml", "limits: {}\n"},
		{"deputy/partner/levels.yml", "levels: {}\n"},
		{"deputy/plan.json", `{}`},
	}
	for _, r := range policyReaders {
		t.Run(r.name, func(t *testing.T) {
			if err := r.read(t, policyDir(t, nil)); err != nil {
				t.Fatalf("data only in data.json and data.yaml: %v", err)
			}
			for _, m := range misread {
				err := r.read(t, policyDir(t, map[string]string{m.file: m.body}))
				if err == nil || !strings.Contains(err.Error(), m.file) || !strings.Contains(err.Error(), "data.json") {
					t.Errorf("with %s: err = %v, want it refused by name, pointing to data.json", m.file, err)
				}
			}
		})
	}
}

// OPA's file loader passes over hidden files and directories, its bundle
// reader loads them: deputy/authz/.override.rego would open a route for a
// directory served as a bundle and not as policy.paths, nor in policy
// check and test or the bundle built from it. Each way of reading
// policies refuses Rego and data under a hidden name, naming the file; the
// bundle's own .manifest and other hidden files (.regal/config.yaml in
// policyDir) still load.
func TestPolicyNotUnderHiddenNames(t *testing.T) {
	hidden := []struct{ file, body string }{
		{"deputy/authz/.override.rego", "package deputy.authz\n\nallow if input.method == \"POST\"\n"},
		{"deputy/authz/.d/extra.rego", "package deputy.authz\n\nallow if input.method == \"PUT\"\n"},
		{"deputy/.h/data.json", `{"methods": ["POST"]}`},
		{".h/data.yaml", "methods: [POST]\n"},
		{"..extra/deputy/authz/data.json", `{"methods": ["POST"]}`},
		{"deputy/authz/.old_test.rego", "package deputy.authz_test\n\ntest_nothing if true\n"},
	}
	for _, r := range policyReaders {
		t.Run(r.name, func(t *testing.T) {
			for _, h := range hidden {
				err := r.read(t, policyDir(t, map[string]string{h.file: h.body}))
				if err == nil || !strings.Contains(err.Error(), h.file) || !strings.Contains(err.Error(), "hidden") {
					t.Errorf("with %s: err = %v, want it refused by name as hidden", h.file, err)
				}
			}
		})
	}
}

// OPA's bundle reader takes any file whose path ends in ".manifest" (or
// ".manifest.pb") as the bundle's manifest, and any .signatures.json as
// its signatures, at any depth and under a visible name; the file loader
// reads neither. deputy/authz/release.manifest stating rego_version 0 had
// a bundle serve a v0 module that policy.paths refuses. Each reader
// refuses such a file by name; the root's own stay the bundle's.
func TestStrayManifestsRefused(t *testing.T) {
	manifest := `{"revision":"nested","roots":["deputy"],"rego_version":0}`
	for _, stray := range []string{"deputy/authz/release.manifest", "deputy/.manifest", "deputy/authz/x.manifest.pb", "deputy/.signatures.json"} {
		for _, r := range policyReaders {
			t.Run(r.name+"/"+stray, func(t *testing.T) {
				err := r.read(t, policyDir(t, map[string]string{stray: manifest}))
				if err == nil || !strings.Contains(err.Error(), stray) || !strings.Contains(err.Error(), "manifest or signatures") {
					t.Errorf("err = %v, want %s refused by name", err, stray)
				}
			})
		}
	}
	// policyDir's own root .manifest is the bundle's: every reader reads it.
	for _, r := range policyReaders {
		if err := r.read(t, policyDir(t, nil)); err != nil {
			t.Errorf("%s: the root .manifest refused: %v", r.name, err)
		}
	}
}

// The shipped policies and the chart's copy of them keep their data in
// data.json files, and load every way.
func TestShippedPoliciesLoadEveryWay(t *testing.T) {
	for _, dir := range []string{"../../policies", "../../charts/deputy/files/policies"} {
		if _, err := policy.LoadPaths([]string{dir}); err != nil {
			t.Errorf("load %s: %v", dir, err)
		}
		b, err := policy.BuildBundle([]string{dir}, policy.BuildOptions{Revision: "r1"})
		if err != nil {
			t.Fatalf("build %s: %v", dir, err)
		}
		var buf bytes.Buffer
		if err := policy.WriteBundle(&buf, b); err != nil {
			t.Fatal(err)
		}
		if _, err := policy.ReadBundle(&buf, policy.ReadOptions{}); err != nil {
			t.Errorf("read the bundle of %s: %v", dir, err)
		}
	}
}

// A test module is never served, from a directory or from a bundle: one
// that declares a rule of the package it tests (here opening POST) would
// otherwise hold for the directory served as a bundle and not as
// policy.paths.
func TestTestModulesNeverServed(t *testing.T) {
	dir := policyDir(t, map[string]string{
		"deputy/authz/decision.rego":  "package deputy.authz\n\ndefault decision := {\"allowed\": false, \"reason\": \"closed\"}\n",
		"deputy/authz/open_test.rego": "package deputy.authz\n\ndecision := {\"allowed\": true, \"reason\": \"opened\"} if input.attributes.request.http.method == \"POST\"\n",
	})
	tarball := filepath.Join(t.TempDir(), "b.tar.gz")
	if err := os.WriteFile(tarball, tarDir(t, dir), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []policy.Config{{Paths: []string{dir}}, {BundleFile: dir}, {BundleFile: tarball}} {
		e := policy.New(policy.WithLogger(quiet()))
		src, err := policy.NewSource(cfg, e, policy.WithSourceLogger(quiet()))
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Reload(context.Background()); err != nil {
			t.Fatalf("%+v: %v", cfg, err)
		}
		res, err := e.Eval(context.Background(), policy.DefaultDecisionQuery, input("POST"))
		if err != nil {
			t.Fatal(err)
		}
		if allowed(res) {
			t.Errorf("%+v serves the rule of a test module: %v", cfg, res.Value)
		}
	}
}
