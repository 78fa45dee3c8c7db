package policy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// replaced is tarball with the member named name (leading "/" aside)
// holding body instead, or added when it has none.
func replaced(t *testing.T, tarball []byte, name string, body []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tarball))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	write := func(h *tar.Header, b []byte) {
		h.Size = int64(len(b))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	found := false
	for tr := tar.NewReader(zr); ; {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(h.Name, "/") == name {
			b, found = body, true
		}
		write(h, b)
	}
	if !found {
		write(&tar.Header{Name: "/" + name, Mode: 0o644, Typeflag: tar.TypeReg}, body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// repeated is open, then n copies of item separated by sep, then end.
func repeated(open, item, sep, end string, n int) []byte {
	var b bytes.Buffer
	b.Grow(len(open) + n*(len(item)+len(sep)) + len(end))
	b.WriteString(open)
	for i := range n {
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(item)
	}
	b.WriteString(end)
	return b.Bytes()
}

// manyKeys is a JSON object of n members with distinct keys.
func manyKeys(n int) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + strconv.FormatInt(int64(i), 36) + `":0`)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// aliased is a YAML manifest whose metadata names one sequence of n
// numbers k more times through an alias: small, it decodes to n*(k+1)
// values, within go-yaml's own bound on aliasing (26000 and 20: 546,000
// values from 51 KiB).
func aliased(n, k int) []byte {
	return fmt.Appendf(nil, "revision: v1\nroots: [deputy]\nmetadata:\n  a: &a %s\n  b: %s\n",
		repeated("[", "0", ",", "]", n), repeated("[", "*a", ",", "]", k))
}

// hostileFiles are bundle files of a few MiB that compress to a few KiB
// and that parsing would turn into millions of Go values: each replaces
// the file of a validly signed bundle, so its signature no longer matches.
// OPA's reader parsed each whole before comparing it with the signed
// digest (a 60 MiB data.json of zeros took 2.2 GB and 20 s), and decoded
// .signatures.json whole before looking at any signature.
func hostileFiles() []struct {
	name, file string
	body       []byte
	want       string
} {
	return []struct {
		name, file string
		body       []byte
		want       string
	}{
		{"data.json array", "data.json", repeated("[", "0", ",", "]", 2<<20), "max_bundle_values"},
		{"data.json object", "data.json", manyKeys(512 << 10), "max_bundle_values"},
		{"data.json nested", "data.json", repeated("[", "[{}]", ",", "]", 512<<10), "max_bundle_values"},
		{"signatures", ".signatures.json", repeated(`{"signatures":[`, `"a"`, ",", "]}", 512<<10), "larger than"},
		{"manifest", ".manifest", repeated(`{"revision":"v1","roots":["deputy"],"metadata":{"x":[`, "{}", ",", "]}}", 512<<10), "larger than"},
		{"manifest YAML", ".manifest", repeated("revision: v1\nroots: [deputy]\nmetadata:\n  x: [", "0", ",", "]\n", 400<<10), "YAML"},
		{"manifest YAML aliases", ".manifest", aliased(26000, 20), "max_bundle_values"},
	}
}

// allocBound is what refusing a hostile bundle may allocate: reading it
// the old way allocated from 150 MiB to over 1 GiB.
func allocBound() uint64 {
	bound := uint64(48 << 20)
	if raceEnabled {
		bound *= 3 // the race detector allocates beside each allocation
	}
	return bound
}

// A bundle whose structured files would parse into millions of values is
// refused before OPA's reader parses them, having allocated a small part
// of what parsing costs, as a tarball and as a bundle directory alike.
func TestHostileBundleRefusedBeforeParsing(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	signed := build(t, "v1", "v1", &policy.SignOptions{Key: priv})
	opts := policy.ReadOptions{PublicKey: pub}
	for _, c := range hostileFiles() {
		hostile := replaced(t, signed, c.file, c.body)
		dir := untar(t, hostile)
		reads := map[string]func() error{
			"tarball": func() error {
				_, err := policy.ReadBundle(bytes.NewReader(hostile), opts)
				return err
			},
			"directory": func() error {
				_, err := policy.ReadBundleDir(dir, opts)
				return err
			},
		}
		for how, read := range reads {
			t.Run(c.name+"/"+how, func(t *testing.T) {
				var err error
				n := allocated(func() { err = read() })
				t.Logf("%s: %d KiB, %d KiB compressed; allocated %d MiB; %v", c.file, len(c.body)>>10, len(hostile)>>10, n>>20, err)
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Errorf("err = %v, want it refused mentioning %q", err, c.want)
				}
				if n > allocBound() {
					t.Errorf("refusing it allocated %d MiB", n>>20)
				}
			})
		}
	}
}

// Without a public key nothing is verified, but the bound holds: a bundle
// server or file that anyone could write must not take the memory of the
// sidecar either, and data.yaml (read only by an unverified reader, as no
// signature names it here) costs several times what JSON costs per value.
func TestUnsignedHostileBundleRefusedBeforeParsing(t *testing.T) {
	plain := build(t, "v1", "v1", nil)
	cases := []struct {
		name, file string
		body       []byte
		want       string
	}{
		{"data.json array", "data.json", repeated("[", "0", ",", "]", 2<<20), "max_bundle_values"},
		{"data.yaml", "deputy/y/data.yaml", repeated("x: [", "0", ",", "]\n", 1<<20), "max_bundle_values"},
		{"data.yaml block", "deputy/y/data.yaml", repeated("x:\n", "- 0", "\n", "\n", 200<<10), "YAML"},
		{"patch.json", "patch.json", repeated(`{"data":[`, `{"op":"upsert","path":"/deputy/x","value":0}`, ",", "]}", 128<<10), "max_bundle_values"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hostile := replaced(t, plain, c.file, c.body)
			var err error
			n := allocated(func() { _, err = policy.ReadBundle(bytes.NewReader(hostile), policy.ReadOptions{}) })
			t.Logf("%s: %d KiB, %d KiB compressed; allocated %d MiB; %v", c.file, len(c.body)>>10, len(hostile)>>10, n>>20, err)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want it refused mentioning %q", err, c.want)
			}
			if n > allocBound() {
				t.Errorf("refusing it allocated %d MiB", n>>20)
			}
		})
	}
}

// policy.paths reads the same structured files through OPA's file loader,
// which parses every JSON and YAML file whole: the same bound holds there.
func TestPolicyPathsDataBounded(t *testing.T) {
	cases := []struct {
		name, file string
		body       []byte
		want       string
	}{
		{"data.json", "deputy/authz/data.json", repeated(`{"label":"x","zeros":[`, "0", ",", "]}", 2<<20), "max_bundle_values"},
		{"data.yaml", "deputy/y/data.yaml", repeated("x: [", "0", ",", "]\n", 1<<20), "YAML"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			copyTree(t, good, dir)
			p := filepath.Join(dir, filepath.FromSlash(c.file))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, p, string(c.body))
			var err error
			n := allocated(func() { _, err = policy.LoadPaths([]string{dir}) })
			t.Logf("%s: %d KiB; allocated %d MiB; %v", c.file, len(c.body)>>10, n>>20, err)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want it refused mentioning %q", err, c.want)
			}
			if n > allocBound() {
				t.Errorf("refusing it allocated %d MiB", n>>20)
			}
		})
	}
}

// The shipped policies, built and signed as `make bundle` does, verify
// and activate as a bundle within the bounds, as a tarball and unpacked.
func TestShippedPoliciesBundleVerifies(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	b, err := policy.BuildBundle([]string{"../../policies"}, policy.BuildOptions{Revision: "shipped"})
	if err != nil {
		t.Fatal(err)
	}
	if err := policy.SignBundle(b, policy.SignOptions{Key: priv}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "deputy.tar.gz")
	if err := policy.WriteBundleFile(path, b); err != nil {
		t.Fatal(err)
	}
	tarball, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for how, file := range map[string]string{"tarball": path, "directory": untar(t, tarball)} {
		t.Run(how, func(t *testing.T) {
			e := policy.New(policy.WithLogger(quiet()), policy.WithActivationCheck(policy.RequireRules(policy.DefaultDecisionQuery, policy.DefaultManageQuery)))
			src, err := policy.NewSource(policy.Config{BundleFile: file, PublicKey: pub}, e, policy.WithSourceLogger(quiet()))
			if err != nil {
				t.Fatal(err)
			}
			if err := src.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			if a := e.Current(); a == nil || a.Revision != "shipped" {
				t.Fatalf("serving %+v, want revision shipped", a)
			}
		})
	}
}

// etagServer serves one body at a time, with an ETag or without, and
// answers If-None-Match or ignores it, as bundle servers variously do.
type etagServer struct {
	*httptest.Server
	mu       sync.Mutex
	body     []byte
	etag     bool // send an ETag
	honour   bool // answer a matching If-None-Match with 304
	requests atomic.Int64
	notMod   atomic.Int64
}

func newETagServer(t *testing.T, body []byte, etag, honour bool) *etagServer {
	s := &etagServer{body: body, etag: etag, honour: honour}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		body := s.body
		s.mu.Unlock()
		sum := sha256.Sum256(body)
		tag := `"` + hex.EncodeToString(sum[:8]) + `"`
		if s.etag && s.honour && r.Header.Get("If-None-Match") == tag {
			s.notMod.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if s.etag {
			w.Header().Set("ETag", tag)
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *etagServer) serve(body []byte) {
	s.mu.Lock()
	s.body = body
	s.mu.Unlock()
}

// A bundle refused while it was read is remembered by its ETag, or by its
// content's digest when the server sends none: polling again neither
// reads it again nor counts it again, whether the server answers 304 or
// sends the same bundle anyway. A changed bundle is read at once.
func TestRefusedBundleNotReadAgain(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	good := build(t, "r1", "v1", &policy.SignOptions{Key: priv, IssuedAt: time.Now().Add(-time.Minute)})
	refused := replaced(t, good, "data.json", []byte(`{"deputy":{"authz":{"label":"forged"}}}`))
	next := build(t, "r2", "v2", &policy.SignOptions{Key: priv})
	cases := []struct {
		name         string
		etag, honour bool
	}{
		{"ETag answered with 304", true, true},
		{"ETag, If-None-Match ignored", true, false},
		{"no ETag", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := newETagServer(t, good, c.etag, c.honour)
			src, e, failures := startSource(t, policy.Config{BundleURL: srv.URL, PublicKey: pub, PollInterval: time.Hour})
			ctx := context.Background()
			srv.serve(refused)
			if err := src.Reload(ctx); err == nil || !strings.Contains(err.Error(), "digest mismatch") {
				t.Fatalf("reload err = %v, want the forged bundle refused", err)
			}
			for range 3 {
				if err := src.Reload(ctx); err != nil {
					t.Fatalf("polling the bundle refused again: %v", err)
				}
			}
			if n := failures.Load(); n != 1 {
				t.Errorf("the refused bundle was read and counted %d times in 4 polls, want once", n)
			}
			if st := src.Status(); st.Failures != 1 || !strings.Contains(st.LastError, "digest mismatch") {
				t.Errorf("status = %+v, want one failure, the refusal", st)
			}
			if c.etag && c.honour && srv.notMod.Load() != 3 {
				t.Errorf("%d of 3 polls were answered 304, want all: the refused bundle's ETag is sent", srv.notMod.Load())
			}
			srv.serve(next)
			if err := src.Reload(ctx); err != nil {
				t.Fatalf("a changed bundle after the refused one: %v", err)
			}
			if rev, label := decide(t, e); rev != "r2" || label != "v2" {
				t.Errorf("serving %s/%s, want r2/v2 read at once", rev, label)
			}
		})
	}
}

// The bound is on the values of all the data files together, and
// policy.max_bundle_values sets it for a bundle file, a bundle server and
// policy paths alike.
func TestMaxBundleValuesSpansFiles(t *testing.T) {
	zeros := repeated("[", "0", ",", "]", 600)
	two := replaced(t, replaced(t, build(t, "v1", "v1", nil), "deputy/a/data.json", zeros), "deputy/b/data.json", zeros)
	if _, err := policy.ReadBundle(bytes.NewReader(two), policy.ReadOptions{MaxValues: 2000}); err != nil {
		t.Fatalf("1,200 values refused under a bound of 2,000: %v", err)
	}
	if _, err := policy.ReadBundle(bytes.NewReader(two), policy.ReadOptions{MaxValues: 1000}); err == nil || !strings.Contains(err.Error(), "max_bundle_values") {
		t.Fatalf("err = %v, want two files of 600 values refused under a bound of 1,000", err)
	}
	file := filepath.Join(t.TempDir(), "b.tar.gz")
	if err := os.WriteFile(file, two, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := untar(t, two)
	srv := newBundleServer(t, two)
	for name, cfg := range map[string]policy.Config{
		"bundle_file tarball":   {BundleFile: file},
		"bundle_file directory": {BundleFile: dir},
		"bundle_url":            {BundleURL: srv.URL},
		"paths":                 {Paths: []string{dir}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.MaxBundleValues = 1000
			e := policy.New(policy.WithLogger(quiet()))
			src, err := policy.NewSource(cfg, e, policy.WithSourceLogger(quiet()))
			if err != nil {
				t.Fatal(err)
			}
			_ = src.Start(context.Background())
			if st := src.Status(); st.Ready || !strings.Contains(st.LastError, "max_bundle_values") {
				t.Errorf("status = %+v, want the policies refused for their values", st)
			}
		})
	}
}

func TestMaxBundleValuesValidated(t *testing.T) {
	cfg := policy.Config{BundleFile: "b.tar.gz", MaxBundleValues: -1}
	cfg.SetDefaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "policy.max_bundle_values") {
		t.Fatalf("err = %v, want policy.max_bundle_values refused", err)
	}
	cfg = policy.Config{BundleFile: "b.tar.gz"}
	cfg.SetDefaults()
	if cfg.MaxBundleValues != policy.DefaultMaxBundleValues {
		t.Errorf("max_bundle_values defaults to %d, want %d", cfg.MaxBundleValues, policy.DefaultMaxBundleValues)
	}
}
