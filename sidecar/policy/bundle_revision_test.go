package policy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// revisionOf is the revision a source for cfg serves once started.
func revisionOf(t *testing.T, cfg policy.Config) string {
	t.Helper()
	_, e, _ := startSource(t, cfg)
	rev, _ := decide(t, e)
	return rev
}

// manifestRevision is the manifest revision of a served revision: what
// precedes its content digest.
func manifestRevision(rev string) string {
	m, _, _ := strings.Cut(rev, "+")
	return m
}

// withManifest is files with its .manifest replaced by manifest.
func withManifest(files map[string]string, manifest string) map[string]string {
	files[".manifest"] = manifest
	return files
}

// An unsigned bundle's revision names its content, not its manifest
// alone: rules edited in place under an untouched .manifest (a bundle
// directory, or a tarball repacked with the old manifest) serve under a
// revision of their own, so the metrics, decision records and deputy eval
// tell the two sets of rules apart. The same content keeps its revision
// across reloads, restarts, places and layouts, so replicas serving the
// same rules report the same revision and the metric label does not churn.
func TestUnsignedBundleRevisionNamesContent(t *testing.T) {
	cases := []struct {
		name string
		// deploy lays out files under dir, the .manifest only when
		// manifest is set, and returns the source's config.
		deploy func(t *testing.T, dir string, files map[string]string, manifest bool) policy.Config
	}{
		{name: "bundle directory", deploy: func(t *testing.T, dir string, files map[string]string, manifest bool) policy.Config {
			for name, body := range files {
				if name != ".manifest" || manifest {
					writeStamped(t, filepath.Join(dir, name), body)
				}
			}
			return policy.Config{BundleFile: dir}
		}},
		{name: "bundle tarball", deploy: func(t *testing.T, dir string, files map[string]string, _ bool) policy.Config {
			path := filepath.Join(dir, "deputy.tar.gz")
			writeStamped(t, path, string(storedTarball(t, files)))
			return policy.Config{BundleFile: path}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := tc.deploy(t, dir, goodFiles(t, "v1"), true)
			cfg.Watch, cfg.PollInterval = true, 10*time.Millisecond
			src, e, _ := startSource(t, cfg)
			v1, l := decide(t, e)
			if l != "v1" || !strings.HasPrefix(v1, "same+") || len(v1) != len("same+")+12 {
				t.Fatalf("first load: revision %q label %q, want same+<12 hex of the content> and v1", v1, l)
			}

			tc.deploy(t, dir, goodFiles(t, "v2"), false) // .manifest left as it is
			waitFor(t, "the edit to be served", func() bool { _, l := decide(t, e); return l == "v2" })
			v2, _ := decide(t, e)
			if v2 == v1 || !strings.HasPrefix(v2, "same+") {
				t.Errorf("rules v1 served as %s, rules v2 (same .manifest) as %s: want two same+ revisions", v1, v2)
			}
			if st := src.Status(); st.Revision != v2 {
				t.Errorf("status revision %q, want %s", st.Revision, v2)
			}

			// A restart on the same files serves the same revision.
			once := cfg
			once.Watch = false
			if again := revisionOf(t, once); again != v2 {
				t.Errorf("restarted on the v2 files: revision %s, want %s", again, v2)
			}
			// Back to the v1 content: back to its revision.
			tc.deploy(t, dir, goodFiles(t, "v1"), false)
			waitFor(t, "the v1 rules to be served again", func() bool { _, l := decide(t, e); return l == "v1" })
			if rev, _ := decide(t, e); rev != v1 {
				t.Errorf("the v1 content again serves as %s, want %s", rev, v1)
			}
			// The same content elsewhere has the same revision.
			if rev := revisionOf(t, tc.deploy(t, t.TempDir(), goodFiles(t, "v1"), true)); rev != v1 {
				t.Errorf("the v1 content in another place serves as %s, want %s", rev, v1)
			}

			// Without a manifest revision, the revision is the content's
			// alone: never empty, so a decision record always names it.
			bare := func(label string) string {
				files := withManifest(goodFiles(t, label), `{"roots":["deputy"]}`)
				return revisionOf(t, tc.deploy(t, t.TempDir(), files, true))
			}
			b1, b2 := bare("v1"), bare("v2")
			if !strings.HasPrefix(b1, "bundle-") || !strings.HasPrefix(b2, "bundle-") || b1 == b2 {
				t.Errorf("without a manifest revision rules v1 serve as %q, v2 as %q: want two bundle- revisions", b1, b2)
			}
		})
	}
}

// A bundle's content revision does not depend on how it is packed: the
// directory a tarball was extracted to, and the same bundle fetched from
// a bundle server, serve under the tarball's revision, so deputy eval
// --bundle on any of them replays a record under the revision it names.
func TestBundleRevisionSameAcrossLayouts(t *testing.T) {
	tarball := build(t, "r1", "v1", nil)
	path := filepath.Join(t.TempDir(), "downloaded.tar.gz")
	if err := os.WriteFile(path, tarball, 0o644); err != nil {
		t.Fatal(err)
	}
	want := revisionOf(t, policy.Config{BundleFile: path})
	if !strings.HasPrefix(want, "r1+") {
		t.Fatalf("unsigned tarball serves as %q, want r1+<content>", want)
	}
	if rev := revisionOf(t, policy.Config{BundleFile: untar(t, tarball)}); rev != want {
		t.Errorf("the tarball extracted serves as %s, want %s", rev, want)
	}
	srv := newBundleServer(t, tarball)
	if rev := revisionOf(t, policy.Config{BundleURL: srv.URL}); rev != want {
		t.Errorf("the tarball from a bundle server serves as %s, want %s", rev, want)
	}
	if rev := revisionOf(t, policy.Config{BundleFile: path, Watch: true}); rev != want {
		t.Errorf("the tarball watched serves as %s, want %s", rev, want)
	}
	// tar spells member names as it was asked to: "/deputy/…" (deputy
	// bundle build), "./deputy/…" (tar -C dir .), "deputy/…".
	for _, prefix := range []string{"./", "", "/./"} {
		repacked := filepath.Join(t.TempDir(), "repacked.tar.gz")
		if err := os.WriteFile(repacked, renamed(t, tarball, prefix), 0o644); err != nil {
			t.Fatal(err)
		}
		if rev := revisionOf(t, policy.Config{BundleFile: repacked}); rev != want {
			t.Errorf("the tarball repacked with members under %q serves as %s, want %s", prefix, rev, want)
		}
	}
}

// renamed is tarball with every member's name under prefix instead of "/".
func renamed(t *testing.T, tarball []byte, prefix string) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tarball))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for tr := tar.NewReader(zr); ; {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		h.Name = prefix + strings.TrimPrefix(h.Name, "/")
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A verified bundle serves under its manifest revision: the signature
// covers the manifest and every file the reader takes, so the key holder
// alone names the content. Without a manifest revision it serves under
// its content's, as an unsigned bundle does.
func TestSignedBundleRevision(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	serve := func(t *testing.T, tarball []byte, publicKey string) string {
		t.Helper()
		path := filepath.Join(t.TempDir(), "deputy.tar.gz")
		if err := os.WriteFile(path, tarball, 0o644); err != nil {
			t.Fatal(err)
		}
		return revisionOf(t, policy.Config{BundleFile: path, PublicKey: publicKey})
	}
	signed := build(t, "r1", "v1", &policy.SignOptions{Key: priv})
	if rev := serve(t, signed, pub); rev != "r1" {
		t.Errorf("signed bundle verified: revision %s, want r1", rev)
	}
	// Unverified (no key), its signature is not checked, so its manifest
	// names nothing: the content is named as for any unsigned bundle.
	if rev, want := serve(t, signed, ""), serve(t, build(t, "r1", "v1", nil), ""); !strings.HasPrefix(rev, "r1+") || rev != want {
		t.Errorf("signed bundle read without a key: revision %s, want %s (the unsigned bundle's)", rev, want)
	}
	v1 := serve(t, build(t, "", "v1", &policy.SignOptions{Key: priv}), pub)
	v2 := serve(t, build(t, "", "v2", &policy.SignOptions{Key: priv}), pub)
	if !strings.HasPrefix(v1, "bundle-") || !strings.HasPrefix(v2, "bundle-") || v1 == v2 {
		t.Errorf("signed bundles without a manifest revision serve as %q and %q: want two bundle- revisions", v1, v2)
	}
}
