package policy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// fixedStamp is the modification time a reproducible archive gives every
// file (Bazel's pkg_tar, tar --mtime, SOURCE_DATE_EPOCH builds).
var fixedStamp = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// writeStamped writes content at path and sets its modification time to
// fixedStamp, as extracting a reproducible archive (or cp -p, rsync -a)
// leaves it. The file is written and stamped beside the watched tree and
// renamed into place, so a poll never reads it half written (a poll that
// did would fail that attempt, which the tests count).
func writeStamped(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	staged := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(staged, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(staged, fixedStamp, fixedStamp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(staged, path); err != nil {
		t.Fatal(err)
	}
}

// storedTarball packs files into a bundle tarball without compressing
// them, every entry stamped fixedStamp, so two bundles whose files have
// the same sizes are tarballs of the same size.
func storedTarball(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(gz)
	for _, name := range []string{".manifest", "deputy/authz/authz.rego", "deputy/authz/data.json"} {
		body := files[name]
		h := &tar.Header{Name: "/" + name, Mode: 0o644, Size: int64(len(body)), ModTime: fixedStamp, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func goodFiles(t *testing.T, label string) map[string]string {
	t.Helper()
	rules, err := os.ReadFile(filepath.Join(good, "deputy", "authz", "authz.rego"))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		".manifest":               `{"revision":"same","roots":["deputy"]}`,
		"deputy/authz/authz.rego": string(rules),
		"deputy/authz/data.json":  `{"label": "` + label + `"}`,
	}
}

// A watched source serves an edit that keeps every file's size and
// modification time at the next poll: policies deployed from a
// reproducible archive, or copied with cp -p or rsync -a, carry the
// archive's time, and a narrowing edit ("1h" to "5m", one route for
// another) often keeps the size. Noticing changes by size and time alone
// kept the old rules serving with every signal green.
func TestWatchServesEditKeepingSizeAndTime(t *testing.T) {
	cases := []struct {
		name string
		// deploy lays out the files of label under dir and returns the
		// source's config.
		deploy func(t *testing.T, dir, label string) policy.Config
	}{
		{name: "policy directory", deploy: func(t *testing.T, dir, label string) policy.Config {
			for name, body := range goodFiles(t, label) {
				if name != ".manifest" {
					writeStamped(t, filepath.Join(dir, name), body)
				}
			}
			return policy.Config{Paths: []string{dir}}
		}},
		{name: "bundle directory", deploy: func(t *testing.T, dir, label string) policy.Config {
			for name, body := range goodFiles(t, label) {
				writeStamped(t, filepath.Join(dir, name), body)
			}
			return policy.Config{BundleFile: dir}
		}},
		{name: "bundle tarball", deploy: func(t *testing.T, dir, label string) policy.Config {
			path := filepath.Join(dir, "deputy.tar.gz")
			writeStamped(t, path, string(storedTarball(t, goodFiles(t, label))))
			return policy.Config{BundleFile: path}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := tc.deploy(t, dir, "v1")
			cfg.Watch, cfg.PollInterval = true, 10*time.Millisecond
			src, e, failures := startSource(t, cfg)
			if _, l := decide(t, e); l != "v1" {
				t.Fatalf("first load: label %q, want v1", l)
			}
			before := src.Status().LastAttempt

			tc.deploy(t, dir, "v2") // the same sizes, the same times
			waitFor(t, "the edit to be served", func() bool { _, l := decide(t, e); return l == "v2" })
			// The attempt that activated the edit records itself in the
			// status just after the activation.
			waitFor(t, "a poll recorded after the first load", func() bool { return src.Status().LastAttempt.After(before) })
			if failures.Load() != 0 {
				t.Errorf("%d failed attempts, want none (status %+v)", failures.Load(), src.Status())
			}
		})
	}
}

// The revision of a policy directory names its content: two sets of
// rules never share one, whatever the files' sizes and times, and the same
// files give the same revision wherever and whenever they are loaded, so
// replicas serving the same rules report the same revision.
func TestLocalRevisionNamesContent(t *testing.T) {
	revision := func(t *testing.T, dir string) string {
		t.Helper()
		_, e, _ := startSource(t, policy.Config{Paths: []string{dir}})
		rev, _ := decide(t, e)
		if !strings.HasPrefix(rev, "local-") {
			t.Fatalf("revision %q, want a local- revision", rev)
		}
		return rev
	}
	deploy := func(t *testing.T, dir, label string) {
		for name, body := range goodFiles(t, label) {
			if name != ".manifest" {
				writeStamped(t, filepath.Join(dir, name), body)
			}
		}
	}
	dir := t.TempDir()
	deploy(t, dir, "v1")
	v1 := revision(t, dir)
	deploy(t, dir, "v2")
	v2 := revision(t, dir)
	if v1 == v2 {
		t.Errorf("v1 and v2 rules (same sizes, same times) both served as revision %s", v1)
	}
	other := t.TempDir()
	deploy(t, other, "v1")
	if again := revision(t, other); again != v1 {
		t.Errorf("the v1 files in another directory serve as %s, want %s as where they were first loaded", again, v1)
	}
}

// A watch reads the files on every poll, so how much it reads is bounded:
// policy files adding up to more than policy.max_bundle_bytes are
// refused, as a bundle that large is.
func TestPathsBoundedByMaxBundleBytes(t *testing.T) {
	dir := t.TempDir()
	copyTree(t, good, dir)
	e := policy.New(policy.WithLogger(quiet()))
	src, err := policy.NewSource(policy.Config{Paths: []string{dir}, MaxBundleBytes: 64}, e, policy.WithSourceLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "max_bundle_bytes") || e.Ready() {
		t.Fatalf("start over the bound: err = %v, ready %v; want it refused naming max_bundle_bytes", err, e.Ready())
	}
}

// Only the files the loader reads count toward policy.max_bundle_bytes
// and name the revision: a large file beside the policies that no loader
// reads (a GeoIP database, a log) neither stops the source from starting,
// nor changes the revision, nor makes a watch refuse the edits made after
// it appeared. A policy file over the bound is still refused.
func TestPathsBoundCountsOnlyLoadedFiles(t *testing.T) {
	const bound = 64 << 10
	large := strings.Repeat("x", 2*bound)
	deploy := func(t *testing.T, dir string) {
		for name, body := range goodFiles(t, "v1") {
			if name != ".manifest" {
				writeStamped(t, filepath.Join(dir, name), body)
			}
		}
	}
	plain := t.TempDir()
	deploy(t, plain)
	_, e, _ := startSource(t, policy.Config{Paths: []string{plain}, MaxBundleBytes: bound})
	want, _ := decide(t, e)

	dir := t.TempDir()
	deploy(t, dir)
	writeStamped(t, filepath.Join(dir, "geoip.mmdb"), large)
	writeStamped(t, filepath.Join(dir, "deputy", "authz", "authz_test.rego"), "package deputy.authz_test\n#"+large)
	writeStamped(t, filepath.Join(dir, "deputy", ".cache", "data.bin"), large)
	src, e, failures := startSource(t, policy.Config{Paths: []string{dir}, MaxBundleBytes: bound, Watch: true, PollInterval: 10 * time.Millisecond})
	if rev, l := decide(t, e); rev != want || l != "v1" {
		t.Fatalf("served revision %s label %q, want %s (the same files without the unread ones) and v1", rev, l, want)
	}

	writeStamped(t, filepath.Join(dir, "app.log"), large)
	rules := filepath.Join(dir, "deputy", "authz", "authz.rego")
	body, err := os.ReadFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	writeStamped(t, rules, strings.Replace(string(body), "data.deputy.authz.label", `"edited"`, 1))
	waitFor(t, "the edited rules to be served", func() bool { _, l := decide(t, e); return l == "edited" })
	if failures.Load() != 0 {
		t.Fatalf("%d failed attempts, want none (status %+v)", failures.Load(), src.Status())
	}

	writeStamped(t, filepath.Join(dir, "deputy", "authz", "padding.rego"), "package deputy.authz\n#"+large)
	waitFor(t, "a policy file over the bound to be refused", func() bool {
		return strings.Contains(src.Status().LastError, "max_bundle_bytes")
	})
	if _, l := decide(t, e); l != "edited" {
		t.Errorf("label %q after a refused update, want the edited rules still serving", l)
	}
}
