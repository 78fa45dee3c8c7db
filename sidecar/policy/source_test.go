package policy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// bundleServer serves one bundle at a time with an ETag, as a bundle
// server (nginx, S3, OPA's own servers) would.
type bundleServer struct {
	*httptest.Server
	mu       sync.Mutex
	body     []byte
	status   int
	requests atomic.Int64
	notMod   atomic.Int64
	auth     atomic.Value // last Authorization header
}

func newBundleServer(t *testing.T, body []byte) *bundleServer {
	return startBundleServer(t, body, (*httptest.Server).Start)
}

// newTLSBundleServer serves over https; its Client trusts it.
func newTLSBundleServer(t *testing.T, body []byte) *bundleServer {
	return startBundleServer(t, body, (*httptest.Server).StartTLS)
}

func startBundleServer(t *testing.T, body []byte, start func(*httptest.Server)) *bundleServer {
	s := &bundleServer{body: body, status: http.StatusOK}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.auth.Store(r.Header.Get("Authorization"))
		s.mu.Lock()
		body, status := s.body, s.status
		s.mu.Unlock()
		if status != http.StatusOK {
			http.Error(w, "unavailable", status)
			return
		}
		sum := sha256.Sum256(body)
		etag := `"` + hex.EncodeToString(sum[:8]) + `"`
		if r.Header.Get("If-None-Match") == etag {
			s.notMod.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(body)
	}))
	start(s.Server)
	t.Cleanup(s.Close)
	return s
}

func (s *bundleServer) serve(body []byte, status int) {
	s.mu.Lock()
	s.body, s.status = body, status
	s.mu.Unlock()
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func decide(t *testing.T, e *policy.Engine) (string, string) {
	t.Helper()
	res, err := e.Eval(context.Background(), policy.DefaultDecisionQuery, input("GET"))
	if err != nil {
		t.Fatal(err)
	}
	return res.Revision, label(res)
}

func TestURLSourceRefusesBadBundles(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	otherPriv, _ := keyPair(t, policy.AlgES256)
	// Each later bundle is signed later: a bundle signed before the one
	// serving would be refused for its age, not for what the case tests.
	t0 := time.Now().Add(-time.Hour)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	signed := func(rev, label string, s int) []byte {
		return build(t, rev, label, &policy.SignOptions{Key: priv, IssuedAt: at(s)})
	}
	first := signed("r1", "v1", 0)
	cases := []struct {
		name    string
		body    []byte
		status  int
		wantErr string
	}{
		{name: "signed syntax error", body: rawBundle(t, []string{"deputy"}, "package deputy.authz\n\ndecision := {", policy.SignOptions{Key: priv, IssuedAt: at(1)}), wantErr: "parse"},
		{name: "signed compile error", body: rawBundle(t, []string{"deputy"}, "package deputy.authz\n\ndecision := data.deputy.nope(1)\n", policy.SignOptions{Key: priv, IssuedAt: at(1)}), wantErr: "compile"},
		{name: "signed but wrong roots", body: rawBundle(t, []string{"acme"}, "package acme\n\ndecision := true\n", policy.SignOptions{Key: priv, IssuedAt: at(1)}), wantErr: "outside"},
		{name: "missing signature", body: build(t, "r2", "v2", nil), wantErr: "missing .signatures.json"},
		{name: "signed by another key", body: build(t, "r2", "v2", &policy.SignOptions{Key: otherPriv, IssuedAt: at(1)}), wantErr: "verif"},
		{name: "truncated tarball", body: first[:len(first)-40], wantErr: "bundle"},
		{name: "server error", body: first, status: http.StatusInternalServerError, wantErr: "500"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newBundleServer(t, first)
			src, e, failures := startSource(t, policy.Config{BundleURL: srv.URL, PublicKey: pub, PollInterval: time.Hour})
			ctx := context.Background()

			srv.serve(tc.body, cmpStatus(tc.status))
			err := src.Reload(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("reload err = %v, want it to mention %q", err, tc.wantErr)
			}
			if rev, lbl := decide(t, e); rev != "r1" || lbl != "v1" {
				t.Errorf("serving revision %s label %s, want the last good r1/v1", rev, lbl)
			}
			st := src.Status()
			if !st.Ready || st.Revision != "r1" || st.LastError == "" || st.Failures != 1 || st.LastAttempt.IsZero() {
				t.Errorf("status = %+v, want ready on r1 with the failure recorded", st)
			}
			if failures.Load() != 1 {
				t.Errorf("OnAttempt saw %d failures, want 1", failures.Load())
			}

			// The server fixes its bundle: the next poll recovers.
			srv.serve(signed("r3", "v3", 2), http.StatusOK)
			if err := src.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			if rev, lbl := decide(t, e); rev != "r3" || lbl != "v3" {
				t.Errorf("after the fix: revision %s label %s, want r3/v3", rev, lbl)
			}
			if st := src.Status(); st.LastError != "" || st.Failures != 0 {
				t.Errorf("status after recovery = %+v, want the error cleared", st)
			}
		})
	}
}

// A bundle without rules (a manifest and data alone) is refused by an
// engine requiring its decision query's rules: it would replace the
// serving rules with none, and every check would be denied.
func TestURLSourceRefusesBundleWithoutRules(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "deputy", "authz"), 0o755); err != nil {
		t.Fatal(err)
	}
	for p, body := range map[string]string{
		".manifest":              `{"revision":"empty","roots":["deputy"]}`,
		"deputy/authz/data.json": `{"label":"v2"}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := newBundleServer(t, build(t, "r1", "v1", nil))
	e := policy.New(policy.WithLogger(quiet()), policy.WithActivationCheck(policy.RequireRules(policy.DefaultDecisionQuery)))
	src, err := policy.NewSource(policy.Config{BundleURL: srv.URL + "/b.tar.gz"}, e, policy.WithSourceLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := src.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	srv.serve(tarDir(t, dir), http.StatusOK)
	if err := src.Reload(ctx); err == nil || !strings.Contains(err.Error(), "no rule defines "+policy.DefaultDecisionQuery) {
		t.Errorf("reload = %v, want the bundle refused for its missing rules", err)
	}
	if rev, lbl := decide(t, e); manifestRevision(rev) != "r1" || lbl != "v1" {
		t.Errorf("serving revision %s label %s, want the last good r1/v1", rev, lbl)
	}
}

// startSource starts a source for cfg feeding a new engine, stopped when
// the test ends, and counts the failed attempts its OnAttempt hook sees.
func startSource(t *testing.T, cfg policy.Config) (*policy.Source, *policy.Engine, *atomic.Int64) {
	t.Helper()
	e := policy.New(policy.WithLogger(quiet()))
	failures := new(atomic.Int64)
	src, err := policy.NewSource(cfg, e, policy.WithSourceLogger(quiet()), policy.OnAttempt(func(_ policy.Status, err error) {
		if err != nil {
			failures.Add(1)
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Stop(context.Background()) })
	return src, e, failures
}

func cmpStatus(s int) int {
	if s == 0 {
		return http.StatusOK
	}
	return s
}

func TestURLSourceRefusesUnsignedFailures(t *testing.T) {
	// Without a public key, bundles are not verified, so the failures left
	// are the bundle's own: syntax, compile and roots.
	first := build(t, "r1", "v1", nil)
	cases := []struct {
		name    string
		body    []byte
		wantErr string
	}{
		{name: "syntax error", body: rawBundle(t, []string{"deputy"}, "package deputy.authz\n\ndecision := {"), wantErr: "parse"},
		{name: "compile error", body: rawBundle(t, []string{"deputy"}, "package deputy.authz\n\ndecision := data.deputy.nope(1)\n"), wantErr: "compile"},
		{name: "wrong roots", body: rawBundle(t, []string{"acme"}, "package acme\n\ndecision := true\n"), wantErr: "outside"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newBundleServer(t, first)
			e := policy.New(policy.WithLogger(quiet()))
			src, err := policy.NewSource(policy.Config{BundleURL: srv.URL, PollInterval: time.Hour}, e, policy.WithSourceLogger(quiet()))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := src.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer src.Stop(ctx)
			srv.serve(tc.body, http.StatusOK)
			if err := src.Reload(ctx); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("reload err = %v, want it to mention %q", err, tc.wantErr)
			}
			if rev, _ := decide(t, e); manifestRevision(rev) != "r1" {
				t.Errorf("serving %s, want the last good r1", rev)
			}
			if st := src.Status(); st.LastError == "" || !strings.Contains(st.LastError, tc.wantErr) {
				t.Errorf("status last error = %q, want it to mention %q", st.LastError, tc.wantErr)
			}
		})
	}
}

func TestURLSourcePollsWithETagAndToken(t *testing.T) {
	srv := newTLSBundleServer(t, build(t, "r1", "v1", nil))
	e := policy.New(policy.WithLogger(quiet()))
	// Polls are watched as the source sends them: a request sent before
	// Stop may still reach the server's handler after Stop returned.
	client := srv.Client()
	sent := &lateTransport{next: client.Transport}
	client.Transport = sent
	src, err := policy.NewSource(policy.Config{BundleURL: srv.URL, BearerToken: "s3cret", PollInterval: 10 * time.Millisecond}, e,
		policy.WithSourceLogger(quiet()), policy.WithHTTPClient(client))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer src.Stop(ctx)

	waitFor(t, "a conditional poll answered 304", func() bool { return srv.notMod.Load() >= 2 })
	if got := srv.auth.Load(); got != "Bearer s3cret" {
		t.Errorf("Authorization = %q, want the bearer token", got)
	}
	srv.serve(build(t, "r2", "v2", nil), http.StatusOK)
	waitFor(t, "revision r2 serving", func() bool { rev, _ := decide(t, e); return manifestRevision(rev) == "r2" })
	if err := src.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// Stop returned: any request sent from now on is one too many. A
	// source still polling sends one every 10ms; five intervals without
	// one is the bounded wait a "never" needs.
	late := sent.stop()
	select {
	case <-late:
		t.Errorf("source kept polling after Stop")
	case <-time.After(5 * 10 * time.Millisecond):
	}
}

// lateTransport, once stopped, signals the first request sent through it.
type lateTransport struct {
	next http.RoundTripper
	late atomic.Pointer[chan struct{}] // set by stop
	once sync.Once
}

// stop returns a channel closed when a request is sent from now on.
func (c *lateTransport) stop() <-chan struct{} {
	ch := make(chan struct{})
	c.late.Store(&ch)
	return ch
}

func (c *lateTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if ch := c.late.Load(); ch != nil {
		c.once.Do(func() { close(*ch) })
	}
	return c.next.RoundTrip(r)
}

func TestURLSourceStartsUnreadyWhenServerIsDown(t *testing.T) {
	srv := newBundleServer(t, nil)
	srv.serve(nil, http.StatusServiceUnavailable)
	e := policy.New(policy.WithLogger(quiet()))
	src, err := policy.NewSource(policy.Config{BundleURL: srv.URL, PollInterval: 10 * time.Millisecond}, e, policy.WithSourceLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := src.Start(ctx); err != nil {
		t.Fatalf("start = %v, want nil: a bundle server is retried", err)
	}
	defer src.Stop(ctx)
	if st := src.Status(); st.Ready || st.LastError == "" {
		t.Errorf("status = %+v, want not ready with the error", st)
	}
	srv.serve(build(t, "r1", "v1", nil), http.StatusOK)
	waitFor(t, "ready once the server answers", func() bool { return src.Status().Ready })
}

// TestSwapKeepsServing swaps revisions under concurrent evaluations: every
// evaluation must succeed and see one complete revision, never a mix.
func TestSwapKeepsServing(t *testing.T) {
	bundles := map[string][]byte{"r1": build(t, "r1", "v1", nil), "r2": build(t, "r2", "v2", nil)}
	srv := newBundleServer(t, bundles["r1"])
	e := policy.New(policy.WithLogger(quiet()))
	src, err := policy.NewSource(policy.Config{BundleURL: srv.URL, PollInterval: time.Hour}, e, policy.WithSourceLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer src.Stop(ctx)

	stop := make(chan struct{})
	var evals, bad atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := e.Eval(ctx, policy.DefaultDecisionQuery, input("GET"))
				evals.Add(1)
				if err != nil || !allowed(res) || "v"+strings.TrimPrefix(manifestRevision(res.Revision), "r") != label(res) {
					bad.Add(1)
				}
			}
		}()
	}
	for i := range 20 {
		rev := []string{"r2", "r1"}[i%2]
		srv.serve(bundles[rev], http.StatusOK)
		if err := src.Reload(ctx); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if evals.Load() == 0 || bad.Load() != 0 {
		t.Fatalf("%d of %d evaluations failed or saw a mixed revision", bad.Load(), evals.Load())
	}
	if rev, _ := decide(t, e); manifestRevision(rev) != "r1" {
		t.Errorf("serving %s after the last swap, want r1", rev)
	}
}

func TestPathSourceWatchesDirectory(t *testing.T) {
	dir := t.TempDir()
	copyTree(t, good, dir)
	e := policy.New(policy.WithLogger(quiet()))
	src, err := policy.NewSource(policy.Config{Paths: []string{dir}, Watch: true, PollInterval: 10 * time.Millisecond}, e,
		policy.WithSourceLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer src.Stop(ctx)
	rev1, lbl := decide(t, e)
	if lbl != "v1" || !strings.HasPrefix(rev1, "local-") {
		t.Fatalf("revision %s label %s, want a local revision with v1", rev1, lbl)
	}

	data := filepath.Join(dir, "deputy", "authz", "data.json")
	writeFile(t, data, `{"label": "v2"}`)
	waitFor(t, "the edit to be served", func() bool { _, l := decide(t, e); return l == "v2" })

	// A broken edit is refused; the previous rules keep serving.
	rules := filepath.Join(dir, "deputy", "authz", "authz.rego")
	writeFile(t, rules, "package deputy.authz\n\ndecision := {\n")
	waitFor(t, "the failure in the status", func() bool { return src.Status().LastError != "" })
	if _, l := decide(t, e); l != "v2" {
		t.Errorf("label %s after a broken edit, want v2 still serving", l)
	}
}

func TestBundleFileSource(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	path := filepath.Join(t.TempDir(), "deputy.tar.gz")
	cases := []struct {
		name    string
		content []byte
		cfg     policy.Config
		wantErr string
	}{
		{name: "signed bundle loads", content: build(t, "r1", "v1", &policy.SignOptions{Key: priv}), cfg: policy.Config{BundleFile: path, PublicKey: pub}},
		{name: "unsigned bundle refused at start", content: build(t, "r1", "v1", nil), cfg: policy.Config{BundleFile: path, PublicKey: pub}, wantErr: "missing .signatures.json"},
		{name: "empty file refused at start", content: []byte{}, cfg: policy.Config{BundleFile: path}, wantErr: "bundle"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, tc.content, 0o644); err != nil {
				t.Fatal(err)
			}
			e := policy.New(policy.WithLogger(quiet()))
			src, err := policy.NewSource(tc.cfg, e, policy.WithSourceLogger(quiet()))
			if err != nil {
				t.Fatal(err)
			}
			err = src.Start(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("start err = %v, want it to mention %q", err, tc.wantErr)
				}
				if e.Ready() {
					t.Error("engine ready after a refused bundle")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rev, _ := decide(t, e); rev != "r1" {
				t.Errorf("revision %s, want r1", rev)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name      string
		cfg       policy.Config
		wantField string
	}{
		{name: "defaults to the policies directory", cfg: policy.Config{}},
		{name: "two sources", cfg: policy.Config{Paths: []string{"p"}, BundleURL: "http://x/b.tar.gz"}, wantField: "policy.paths"},
		{name: "bundle url without scheme", cfg: policy.Config{BundleURL: "bundles.example.com/b.tar.gz"}, wantField: "policy.bundle_url"},
		{name: "watching a url", cfg: policy.Config{BundleURL: "https://x/b.tar.gz", Watch: true}, wantField: "policy.watch"},
		{name: "token without url", cfg: policy.Config{BundleFile: "b.tar.gz", BearerToken: "t"}, wantField: "policy.bearer_token"},
		{name: "token over https", cfg: policy.Config{BundleURL: "https://x/b.tar.gz", BearerToken: "t"}},
		{name: "token over plain http", cfg: policy.Config{BundleURL: "http://x/b.tar.gz", BearerToken: "t"}, wantField: "policy.bearer_token"},
		{name: "token over plain http to loopback", cfg: policy.Config{BundleURL: "http://127.0.0.1:8080/b.tar.gz", BearerToken: "t"}, wantField: "policy.bearer_token"},
		{name: "token over HTTP in capitals", cfg: policy.Config{BundleURL: "HTTP://x/b.tar.gz", BearerToken: "t"}, wantField: "policy.bearer_token"},
		{name: "key on plain paths", cfg: policy.Config{Paths: []string{"p"}, PublicKey: "k.pem"}, wantField: "policy.public_key"},
		{name: "scope without key", cfg: policy.Config{BundleFile: "b.tar.gz", Scope: "prod"}, wantField: "policy.scope"},
		{name: "min_signed_at", cfg: policy.Config{BundleFile: "b", PublicKey: "k", MinSignedAt: "2026-06-01T12:00:00Z"}},
		{name: "min_signed_at without key", cfg: policy.Config{BundleFile: "b", MinSignedAt: "2026-06-01T12:00:00Z"}, wantField: "policy.min_signed_at"},
		{name: "min_signed_at not RFC 3339", cfg: policy.Config{BundleFile: "b", PublicKey: "k", MinSignedAt: "2026-06-01"}, wantField: "policy.min_signed_at"},
		// RFC 3339 offsets stop at 23:59; time.Parse takes +24:00.
		{name: "min_signed_at offset past 23:59", cfg: policy.Config{BundleFile: "b", PublicKey: "k", MinSignedAt: "2026-06-01T12:00:00+24:00"}, wantField: "policy.min_signed_at"},
		{name: "poll too fast", cfg: policy.Config{BundleURL: "https://x/b", PollInterval: time.Millisecond}, wantField: "policy.poll_interval"},
		{name: "unknown algorithm", cfg: policy.Config{BundleFile: "b", PublicKey: "k", KeyAlgorithm: "ROT13"}, wantField: "policy.key_algorithm"},
		{name: "HMAC algorithm HS256", cfg: policy.Config{BundleFile: "b", PublicKey: "k", KeyAlgorithm: "HS256"}, wantField: "policy.key_algorithm"},
		{name: "HMAC algorithm HS384", cfg: policy.Config{BundleFile: "b", PublicKey: "k", KeyAlgorithm: "HS384"}, wantField: "policy.key_algorithm"},
		{name: "HMAC algorithm HS512", cfg: policy.Config{BundleFile: "b", PublicKey: "k", KeyAlgorithm: "HS512"}, wantField: "policy.key_algorithm"},
		{name: "PS256", cfg: policy.Config{BundleFile: "b", PublicKey: "k", KeyAlgorithm: "PS256"}},
		{name: "bad decision query", cfg: policy.Config{DecisionQuery: "data.deputy.["}, wantField: "policy.decision_query"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.SetDefaults()
			err := cfg.Validate()
			if tc.wantField == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantField) {
				t.Fatalf("err = %v, want it to name %s", err, tc.wantField)
			}
		})
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	// Bump the modification time so a coarse file system clock cannot hide
	// the change from the watcher.
	later := time.Now().Add(time.Duration(len(content)) * time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A bundle_url carrying its credential (basic-auth userinfo, or a signed
// URL's query signature as S3/GCS presigned URLs do) must not be repeated in
// logs, the status (served unauthenticated on /readyz) or error messages.
func TestBundleURLCredentialsNotRepeated(t *testing.T) {
	const secret = "s3cretPASS"
	const sig = "SIGxyz123"
	srv := newBundleServer(t, build(t, "r1", "v1", nil))
	srv.serve(nil, http.StatusServiceUnavailable) // first attempt fails
	url := strings.Replace(srv.URL, "http://", "http://ops:"+secret+"@", 1) + "/bundle.tar.gz?X-Amz-Signature=" + sig

	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	e := policy.New(policy.WithLogger(logger))
	src, err := policy.NewSource(policy.Config{BundleURL: url}, e, policy.WithSourceLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	failErr := src.Reload(context.Background())
	if failErr == nil {
		t.Fatal("a 503 from the bundle server activated something")
	}
	srv.serve(build(t, "r1", "v1", nil), http.StatusOK)
	if err := src.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := srv.auth.Load().(string); !strings.HasPrefix(got, "Basic ") {
		t.Errorf("the fetch lost the URL's userinfo: Authorization %v", got)
	}
	st, _ := json.Marshal(src.Status())
	var leaks []string
	for what, text := range map[string]string{"status (/readyz body)": string(st), "process log": logs.String(), "reload error": failErr.Error()} {
		for _, s := range []string{secret, sig} {
			if strings.Contains(text, s) {
				leaks = append(leaks, what+" holds "+s)
			}
		}
	}
	if len(leaks) > 0 {
		t.Errorf("bundle_url credential repeated in clear: %v\nstatus: %s\nlog:\n%s", leaks, st, logs.String())
	}
	if want := `"source":"` + srv.URL + `/bundle.tar.gz?X-Amz-Signature=REDACTED"`; !strings.Contains(string(st), want) {
		t.Errorf("status %s, want it to hold %s", st, want)
	}
}

// bearer_token is a credential: sending it to a plain-http bundle_url puts
// it on the wire in clear (and anyone on the path can then also serve an
// unsigned bundle when no public_key is set). The source refuses to start.
func TestBearerTokenOverPlainHTTPRefused(t *testing.T) {
	srv := newBundleServer(t, build(t, "r1", "v1", nil))
	e := policy.New(policy.WithLogger(quiet()))
	_, err := policy.NewSource(policy.Config{BundleURL: srv.URL + "/b.tar.gz", BearerToken: "tok-s3cret"}, e, policy.WithSourceLogger(quiet()))
	if err == nil || !strings.Contains(err.Error(), "policy.bearer_token") || !strings.Contains(err.Error(), "https") {
		t.Fatalf("NewSource = %v, want a policy.bearer_token error asking for https", err)
	}
	if strings.Contains(err.Error(), "tok-s3cret") {
		t.Errorf("the error repeats the token: %v", err)
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("the bundle server got %d requests (last Authorization %q)", n, srv.auth.Load())
	}
}

// A bundle fetched over TLS never continues over plain http, whatever a
// redirect says: the bearer token would follow it in clear (Go forwards
// Authorization to the same host whatever the scheme), and the bundle
// would come from wherever the path answers.
func TestBundleNeverRedirectedToPlainHTTP(t *testing.T) {
	plain := newBundleServer(t, build(t, "r1", "v1", nil))
	tlsSrv := httptest.NewTLSServer(http.RedirectHandler(plain.URL+"/b.tar.gz?sig=s3cret", http.StatusFound))
	t.Cleanup(tlsSrv.Close)
	e := policy.New(policy.WithLogger(quiet()))
	src, err := policy.NewSource(policy.Config{BundleURL: tlsSrv.URL + "/b.tar.gz", BearerToken: "tok"}, e,
		policy.WithSourceLogger(quiet()), policy.WithHTTPClient(tlsSrv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	err = src.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not https") {
		t.Fatalf("Reload = %v, want the downgrade refused", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("the error repeats the redirect's query: %v", err)
	}
	if n := plain.requests.Load(); n != 0 {
		t.Fatalf("the plain http server was asked %d times (Authorization %q)", n, plain.auth.Load())
	}
}

// Nor is an unsigned bundle from loopback redirected across the network
// in clear: whoever answered there would choose the policy.
func TestUnsignedBundleNeverRedirectedInClearToAnotherHost(t *testing.T) {
	srv := httptest.NewServer(http.RedirectHandler("http://192.0.2.1/b.tar.gz", http.StatusFound))
	t.Cleanup(srv.Close)
	e := policy.New(policy.WithLogger(quiet()))
	src, err := policy.NewSource(policy.Config{BundleURL: srv.URL + "/b.tar.gz"}, e,
		policy.WithSourceLogger(quiet()), policy.WithHTTPClient(&http.Client{Timeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "plain http to a host that is not loopback") {
		t.Fatalf("Reload = %v, want the redirect refused", err)
	}
}
