package policy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// untar extracts a bundle tarball into a new directory, as
// `tar -xzf deputy.tar.gz -C dir` would.
func untar(t *testing.T, tarball []byte) string {
	t.Helper()
	dir := t.TempDir()
	zr, err := gzip.NewReader(bytes.NewReader(tarball))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(h.Name, "/")))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, string(body))
	}
}

// A signed bundle unpacked into a directory verifies and serves as its
// tarball does: the signature names files relative to the bundle, wherever
// the directory lies. A file added beside the signed ones is refused.
func TestSignedBundleDirectory(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	dir := untar(t, build(t, "r1", "v1", &policy.SignOptions{Key: priv}))
	opts := policy.ReadOptions{PublicKey: pub}

	if _, err := policy.VerifyBundleFile(dir, opts); err != nil {
		t.Fatalf("verify %s: %v", dir, err)
	}
	e := policy.New(policy.WithLogger(quiet()))
	src, err := policy.NewSource(policy.Config{BundleFile: dir, PublicKey: pub}, e, policy.WithSourceLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatalf("serving the signed directory: %v", err)
	}
	if rev, lbl := decide(t, e); rev != "r1" || lbl != "v1" {
		t.Fatalf("serving %s/%s, want r1/v1", rev, lbl)
	}

	writeFile(t, filepath.Join(dir, "deputy", "authz", "extra.rego"), "package deputy.authz\n\nextra := true\n")
	if _, err := policy.VerifyBundleFile(dir, opts); err == nil || !strings.Contains(err.Error(), "not included in bundle signature") {
		t.Fatalf("verify with an unsigned file added: err = %v, want it refused", err)
	}
	e2 := policy.New(policy.WithLogger(quiet()))
	src2, err := policy.NewSource(policy.Config{BundleFile: dir, PublicKey: pub}, e2, policy.WithSourceLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	if err := src2.Start(context.Background()); err == nil || e2.Ready() {
		t.Fatalf("start with an unsigned file added: err = %v, ready %v; want it refused", err, e2.Ready())
	}
}
