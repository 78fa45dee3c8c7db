package policy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// inflating is a bundle tarball whose data files inflate to n bytes each,
// from a few hundred KiB compressed.
func inflating(t *testing.T, files, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	add := func(name string, body []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	add("/.manifest", []byte(`{"revision":"big","roots":["deputy"]}`))
	add("/deputy/authz/authz.rego", []byte("package deputy.authz\n\ndecision := {\"allow\": true, \"label\": \"big\"}\n"))
	for i := range files {
		add("/deputy/d"+string(rune('a'+i))+"/data.json", []byte(`{"x":"`+strings.Repeat("a", n)+`"}`))
	}
	_ = tw.Close()
	_ = gz.Close()
	return buf.Bytes()
}

// manyFiles is a stored (uncompressed) bundle tarball of n one-byte files:
// the files add up to n bytes, the tarball to over 1 KiB each.
func manyFiles(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	tw := tar.NewWriter(gz)
	for i := range n {
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("/deputy/f%d/data.json", i), Mode: 0o644, Size: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte("1")); err != nil {
			t.Fatal(err)
		}
	}
	_ = tw.Close()
	_ = gz.Close()
	return buf.Bytes()
}

// allocated returns the bytes allocated while f runs.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A bundle is bounded by its declared sizes before its files are read: a
// tarball of a few hundred KiB that inflates to 150 MiB, in files each
// below the bound, is refused having allocated no more than the bound, even
// when the refusal would otherwise come from its missing signature after
// everything was read (which held the whole 150 MiB, and more in copies).
func TestBundleInflationBounded(t *testing.T) {
	body := inflating(t, 3, 50<<20)
	_, pub := keyPair(t, policy.AlgES256)
	var err error
	n := allocated(func() {
		_, err = policy.ReadBundle(bytes.NewReader(body), policy.ReadOptions{PublicKey: pub})
	})
	t.Logf("compressed %d KiB; allocated %d MiB; %v", len(body)>>10, n>>20, err)
	if err == nil || !strings.Contains(err.Error(), "max_bundle_bytes") {
		t.Fatalf("err = %v, want the bundle refused for its size", err)
	}
	if n > policy.DefaultMaxBundleBytes+8<<20 {
		t.Errorf("reading a %d KiB bundle that inflates to 150 MiB allocated %d MiB before refusing it", len(body)>>10, n>>20)
	}
}

// The bound is on the bundle's total: files each below it that add up to
// more are refused too, and the same files within it read.
func TestBundleTotalSizeBounded(t *testing.T) {
	body := inflating(t, 4, 300<<10)
	if _, err := policy.ReadBundle(bytes.NewReader(body), policy.ReadOptions{MaxBytes: 4 << 20}); err != nil {
		t.Fatalf("a 1.2 MiB bundle refused under a 4 MiB bound: %v", err)
	}
	var err error
	n := allocated(func() {
		_, err = policy.ReadBundle(bytes.NewReader(body), policy.ReadOptions{MaxBytes: 1 << 20})
	})
	if err == nil || !strings.Contains(err.Error(), "max_bundle_bytes") {
		t.Fatalf("err = %v, want four 300 KiB files refused under a 1 MiB bound", err)
	}
	if n > 8<<20 {
		t.Errorf("refusing a 1.2 MiB bundle allocated %d MiB", n>>20)
	}
}

// A bundle server answering an oversized bundle (compressed or inflated)
// gets it refused; the set already serving stays.
func TestURLSourceRefusesOversizedBundle(t *testing.T) {
	srv := newBundleServer(t, build(t, "r1", "v1", nil))
	e := policy.New(policy.WithLogger(quiet()))
	src, err := policy.NewSource(policy.Config{BundleURL: srv.URL, MaxBundleBytes: 1 << 20}, e, policy.WithSourceLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := src.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{
		"inflates past the bound": inflating(t, 4, 300<<10),
		"tarball past the bound":  manyFiles(t, 2500),
	} {
		t.Run(name, func(t *testing.T) {
			srv.serve(body, http.StatusOK)
			err := src.Reload(ctx)
			if err == nil || !strings.Contains(err.Error(), "max_bundle_bytes") {
				t.Fatalf("err = %v, want the bundle refused for its size", err)
			}
			if rev, label := decide(t, e); manifestRevision(rev) != "r1" || label != "v1" {
				t.Errorf("serving %s/%s after an oversized bundle, want r1/v1", rev, label)
			}
		})
	}
}

func TestMaxBundleBytesValidated(t *testing.T) {
	cfg := policy.Config{BundleFile: "b.tar.gz", MaxBundleBytes: -1}
	cfg.SetDefaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "policy.max_bundle_bytes") {
		t.Fatalf("err = %v, want policy.max_bundle_bytes refused", err)
	}
	cfg = policy.Config{BundleFile: "b.tar.gz"}
	cfg.SetDefaults()
	if cfg.MaxBundleBytes != policy.DefaultMaxBundleBytes {
		t.Errorf("max_bundle_bytes defaults to %d, want %d", cfg.MaxBundleBytes, policy.DefaultMaxBundleBytes)
	}
}

// entries is a bundle tarball of n empty files (or directories) whose
// names are name(i); long names go in PAX headers.
func entries(t *testing.T, n int, typ byte, name func(i int) string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	for i := range n {
		if err := tw.WriteHeader(&tar.Header{Name: name(i), Typeflag: typ, Mode: 0o644, Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
	}
	_ = tw.Close()
	_ = gz.Close()
	return buf.Bytes()
}

// Entry names count against the bound: OPA holds the name of every file,
// whatever its size, and PAX headers carry names up to 1 MiB. A 327 KiB
// tarball of 300 empty files named so made a verifying Deputy hold over
// 300 MiB under a 16 MiB bound, before its signature was looked at; 40 of
// them make the point.
func TestBundleEntryNamesBounded(t *testing.T) {
	_, pub := keyPair(t, policy.AlgES256)
	cases := []struct {
		name    string
		body    []byte
		maxAt   int64 // policy.max_bundle_bytes
		wantErr string
	}{
		{
			name: "names of 1 MiB",
			body: entries(t, 40, tar.TypeReg, func(i int) string {
				return fmt.Sprintf("/deputy/%s%d.txt", strings.Repeat("a", 1<<20-4096), i)
			}),
			maxAt:   16 << 20,
			wantErr: "name longer than 4096 bytes",
		},
		{
			name: "names of 4000 bytes past the bound",
			body: entries(t, 2000, tar.TypeReg, func(i int) string {
				return fmt.Sprintf("/deputy/%s%d.txt", strings.Repeat("a", 3980), i)
			}),
			maxAt:   1 << 20,
			wantErr: "max_bundle_bytes",
		},
		{
			name: "names in directories past the bound",
			body: entries(t, 2000, tar.TypeDir, func(i int) string {
				return fmt.Sprintf("/deputy/%s%d/", strings.Repeat("a", 3980), i)
			}),
			maxAt:   1 << 20,
			wantErr: "max_bundle_bytes",
		},
		{
			name: "too many entries",
			body: entries(t, policy.MaxBundleEntries+1, tar.TypeDir, func(i int) string {
				return fmt.Sprintf("/deputy/d%d/", i)
			}),
			wantErr: fmt.Sprintf("more than %d entries", policy.MaxBundleEntries),
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var err error
			n := allocated(func() {
				_, err = policy.ReadBundle(bytes.NewReader(c.body), policy.ReadOptions{PublicKey: pub, MaxBytes: c.maxAt})
			})
			t.Logf("compressed %d KiB; allocated %d MiB; %v", len(c.body)>>10, n>>20, err)
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
			bound := uint64(16 << 20)
			if raceEnabled {
				// The race detector allocates beside each allocation; the
				// refusals this bounds allocated 54 to 250 MiB before.
				bound *= 3
			}
			if n > bound {
				t.Errorf("refusing a %d KiB bundle allocated %d MiB", len(c.body)>>10, n>>20)
			}
		})
	}
}
