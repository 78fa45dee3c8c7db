package policy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// pollServer is a bundle server whose answer a test switches: a bundle
// (with an ETag or without, If-None-Match answered or ignored), a 304 to
// every request, as a broken cache in front of a bundle server would send,
// or an error status.
type pollServer struct {
	*httptest.Server
	mu      sync.Mutex
	body    []byte
	status  int  // 0: the body
	etag    bool // send an ETag
	honour  bool // answer a matching If-None-Match with 304
	always  bool // answer 304 to every request
	notMod  atomic.Int64
	bodies  atomic.Int64 // bundles sent
	matched atomic.Int64 // requests carrying If-None-Match
}

func newPollServer(t *testing.T, body []byte, etag, honour bool) *pollServer {
	s := &pollServer{body: body, etag: etag, honour: honour}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		body, status, always := s.body, s.status, s.always
		s.mu.Unlock()
		if r.Header.Get("If-None-Match") != "" {
			s.matched.Add(1)
		}
		sum := sha256.Sum256(body)
		tag := `"` + hex.EncodeToString(sum[:8]) + `"`
		switch {
		case status != 0 && !always:
			// Failing, it fails conditional requests too.
			http.Error(w, "unavailable", status)
			return
		case always, s.etag && s.honour && r.Header.Get("If-None-Match") == tag:
			s.notMod.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if s.etag {
			w.Header().Set("ETag", tag)
		}
		s.bodies.Add(1)
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *pollServer) serve(body []byte) {
	s.mu.Lock()
	s.body, s.status, s.always = body, 0, false
	s.mu.Unlock()
}

func (s *pollServer) fail(status int) {
	s.mu.Lock()
	s.status, s.always = status, false
	s.mu.Unlock()
}

func (s *pollServer) notModified() {
	s.mu.Lock()
	s.always = true
	s.mu.Unlock()
}

// polled is a source started on a new engine, with what its hooks and
// its log saw.
type polled struct {
	src                   *policy.Source
	engine                *policy.Engine
	activations, failures atomic.Int64
	logMu                 sync.Mutex
	log                   bytes.Buffer
}

func (p *polled) Write(b []byte) (int, error) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.Write(b)
}

// refusals counts the "policy update refused" lines logged.
func (p *polled) refusals() int {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return strings.Count(p.log.String(), "policy update refused")
}

func startPolled(t *testing.T, cfg policy.Config) *polled {
	t.Helper()
	p := &polled{}
	p.engine = policy.New(policy.WithLogger(quiet()), policy.OnActivate(func(_ *policy.Activation, err error) {
		if err == nil {
			p.activations.Add(1)
		}
	}))
	src, err := policy.NewSource(cfg, p.engine, policy.WithSourceLogger(slog.New(slog.NewTextHandler(p, nil))),
		policy.OnAttempt(func(_ policy.Status, err error) {
			if err != nil {
				p.failures.Add(1)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Stop(context.Background()) })
	p.src = src
	return p
}

// A 304 answers a request that named a bundle held (If-None-Match): to
// one that named none (the first after a start, or any to a server that
// sends no ETag) it cannot mean "keep it". It is an error, logged,
// counted and shown once for as long as it lasts, and nothing is
// activated.
func TestNotModifiedWithoutIfNoneMatch(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	r1 := build(t, "r1", "v1", &policy.SignOptions{Key: priv, IssuedAt: time.Now().Add(-time.Minute)})
	ctx := context.Background()

	t.Run("first request after a restart", func(t *testing.T) {
		srv := newPollServer(t, r1, true, true)
		first := startPolled(t, policy.Config{BundleURL: srv.URL, PublicKey: pub, PollInterval: time.Hour})
		if rev, _ := decide(t, first.engine); rev != "r1" {
			t.Fatalf("serving %q, want r1", rev)
		}
		// Restarted, Deputy holds nothing, and a cache in front of the
		// bundle server answers 304 all the same.
		srv.notModified()
		p := startPolled(t, policy.Config{BundleURL: srv.URL, PublicKey: pub, PollInterval: time.Hour})
		st := p.src.Status()
		if st.Ready || !strings.Contains(st.LastError, "304") || !strings.Contains(st.LastError, "If-None-Match") || st.Failures != 1 {
			t.Fatalf("status = %+v, want unready with the 304 named as the error", st)
		}
		for range 3 {
			if err := p.src.Reload(ctx); err != nil {
				t.Fatalf("a 304 again, already reported: %v", err)
			}
		}
		if n, logged := p.failures.Load(), p.refusals(); n != 1 || logged != 1 {
			t.Errorf("4 polls answered 304 counted %d failures and logged %d, want 1 and 1", n, logged)
		}
		if st := p.src.Status(); st.Ready || st.Failures != 1 || !strings.Contains(st.LastError, "304") {
			t.Errorf("status after more 304s = %+v, want the error still shown", st)
		}
		if p.activations.Load() != 0 || p.engine.Current() != nil {
			t.Errorf("a 304 activated %v", p.engine.Current())
		}
		// The server recovers: its bundle activates at once.
		srv.serve(r1)
		if err := p.src.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		if st := p.src.Status(); !st.Ready || st.Revision != "r1" || st.LastError != "" || st.Failures != 0 {
			t.Errorf("status after the server recovered = %+v, want r1 serving, no error", st)
		}
	})

	t.Run("each time it begins", func(t *testing.T) {
		srv := newPollServer(t, r1, false, false)
		srv.notModified()
		p := startPolled(t, policy.Config{BundleURL: srv.URL, PublicKey: pub, PollInterval: time.Hour})
		srv.fail(http.StatusServiceUnavailable)
		if err := p.src.Reload(ctx); err == nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("reload = %v, want the 503", err)
		}
		srv.notModified()
		if err := p.src.Reload(ctx); err == nil || !strings.Contains(err.Error(), "304") {
			t.Fatalf("reload = %v, want the 304 reported again after another error", err)
		}
		if n, logged := p.failures.Load(), p.refusals(); n != 3 || logged != 3 {
			t.Errorf("304, 503, 304: %d failures counted and %d logged, want 3 and 3", n, logged)
		}
	})

	t.Run("serving, from a server without ETag", func(t *testing.T) {
		srv := newPollServer(t, r1, false, false)
		p := startPolled(t, policy.Config{BundleURL: srv.URL, PublicKey: pub, PollInterval: time.Hour})
		srv.notModified()
		if err := p.src.Reload(ctx); err == nil || !strings.Contains(err.Error(), "304") {
			t.Fatalf("reload = %v, want the 304 refused", err)
		}
		if err := p.src.Reload(ctx); err != nil {
			t.Fatalf("a 304 again, already reported: %v", err)
		}
		if rev, lbl := decide(t, p.engine); rev != "r1" || lbl != "v1" || p.failures.Load() != 1 {
			t.Errorf("serving %s/%s with %d failures, want r1/v1 kept and the 304 counted once", rev, lbl, p.failures.Load())
		}
	})

	// After a refused bundle the server's 304 means that bundle: the set
	// serving (here none) stays, and nothing is counted again.
	t.Run("after a refused bundle", func(t *testing.T) {
		forged := replaced(t, r1, "data.json", []byte(`{"deputy":{"authz":{"label":"forged"}}}`))
		srv := newPollServer(t, forged, true, true)
		p := startPolled(t, policy.Config{BundleURL: srv.URL, PublicKey: pub, PollInterval: time.Hour})
		srv.notModified()
		for range 3 {
			if err := p.src.Reload(ctx); err != nil {
				t.Fatalf("a 304 for the refused bundle: %v", err)
			}
		}
		st := p.src.Status()
		if st.Ready || p.engine.Current() != nil || !strings.Contains(st.LastError, "digest mismatch") || p.failures.Load() != 1 {
			t.Errorf("status = %+v with %d failures, want unready, the refusal shown and counted once", st, p.failures.Load())
		}
		if srv.matched.Load() != 3 {
			t.Errorf("%d of 3 polls sent If-None-Match, want all: the refused bundle's ETag", srv.matched.Load())
		}
	})
}

// A bundle server that sends no ETag, or ignores If-None-Match, sends the
// bundle serving at every poll: the same bytes are neither verified, read
// nor activated again, and a changed bundle is activated at the next poll.
func TestSameBundleNotActivatedAgain(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	t0 := time.Now().Add(-time.Hour)
	cases := []struct {
		name   string
		etag   bool
		signed bool
	}{
		{"no ETag, signed", false, true},
		{"no ETag, unsigned", false, false},
		{"ETag, If-None-Match ignored", true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bundle := func(rev, label string, at int) []byte {
				if !c.signed {
					return build(t, rev, label, nil)
				}
				return build(t, rev, label, &policy.SignOptions{Key: priv, IssuedAt: t0.Add(time.Duration(at) * time.Minute)})
			}
			r1, r2 := bundle("r1", "v1", 0), bundle("r2", "v2", 1)
			cfg := policy.Config{BundleURL: "", PollInterval: time.Hour}
			if c.signed {
				cfg.PublicKey = pub
			}
			srv := newPollServer(t, r1, c.etag, false)
			cfg.BundleURL = srv.URL
			p := startPolled(t, cfg)
			ctx := context.Background()
			first := p.engine.Current()
			for range 3 {
				if err := p.src.Reload(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if n := p.activations.Load(); n != 1 || p.engine.Current() != first {
				t.Errorf("the same bundle sent 4 times was activated %d times, want once", n)
			}
			if srv.bodies.Load() != 4 {
				t.Fatalf("the server sent %d bundles, want 4: the test needs one resending it", srv.bodies.Load())
			}

			// A refused bundle, then the one serving again: no activation,
			// and the refusal no longer shows as the last attempt's error.
			srv.serve(replaced(t, r1, "deputy/authz/authz.rego", []byte("package deputy.authz\n\ndecision := {")))
			if err := p.src.Reload(ctx); err == nil {
				t.Fatal("a broken bundle was not refused")
			}
			srv.serve(r1)
			if err := p.src.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			if st := p.src.Status(); p.activations.Load() != 1 || st.LastError != "" || st.Failures != 0 {
				t.Errorf("back to the bundle serving: %d activations, status %+v; want 1, no error", p.activations.Load(), st)
			}

			srv.serve(r2)
			if err := p.src.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			if rev, lbl := decide(t, p.engine); manifestRevision(rev) != "r2" || lbl != "v2" || p.activations.Load() != 2 {
				t.Errorf("serving %s/%s after %d activations, want r2/v2 activated at the next poll", rev, lbl, p.activations.Load())
			}
		})
	}
}

// The bundle serving was verified with the key configured then. When the
// key's file is replaced, the next poll verifies the bundle again, even
// when the bundle's bytes are the same, the server answers 304 or the
// watched bundle file is unchanged, and one signed with the new key
// activates.
func TestKeyChangeVerifiesAgain(t *testing.T) {
	oldPriv, oldPub := keyPair(t, policy.AlgES256)
	newPriv, newPub := keyPair(t, policy.AlgES256)
	t0 := time.Now().Add(-time.Hour)
	r1 := build(t, "r1", "v1", &policy.SignOptions{Key: oldPriv, IssuedAt: t0})
	r2 := build(t, "r2", "v2", &policy.SignOptions{Key: newPriv, IssuedAt: t0.Add(time.Minute)})
	readKey := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		name         string
		etag, honour bool
		file         bool // a watched bundle_file, not bundle_url
	}{
		{"no ETag", false, false, false},
		{"ETag answered with 304", true, true, false},
		{"watched bundle_file", false, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			key := filepath.Join(t.TempDir(), "bundle.pem")
			if err := os.WriteFile(key, readKey(oldPub), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := policy.Config{PublicKey: key, PollInterval: time.Hour}
			var serve func([]byte)
			if c.file {
				cfg.BundleFile, cfg.Watch = filepath.Join(t.TempDir(), "bundle.tar.gz"), true
				serve = func(b []byte) {
					if err := os.WriteFile(cfg.BundleFile, b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				serve(r1)
			} else {
				srv := newPollServer(t, r1, c.etag, c.honour)
				cfg.BundleURL, serve = srv.URL, srv.serve
			}
			p := startPolled(t, cfg)
			ctx := context.Background()
			if err := p.src.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(key, readKey(newPub), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := p.src.Reload(ctx); err == nil || !strings.Contains(err.Error(), "verif") {
				t.Fatalf("reload after the key changed = %v, want r1 verified again and refused", err)
			}
			for range 2 {
				if err := p.src.Reload(ctx); err != nil {
					t.Fatalf("polling the bundle refused under the new key: %v", err)
				}
			}
			if p.failures.Load() != 1 || p.activations.Load() != 1 {
				t.Errorf("%d failures, %d activations; want the refusal counted once, r1 activated once", p.failures.Load(), p.activations.Load())
			}
			serve(r2)
			if err := p.src.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			if rev, lbl := decide(t, p.engine); rev != "r2" || lbl != "v2" {
				t.Errorf("serving %s/%s, want r2/v2 signed with the new key", rev, lbl)
			}
		})
	}
}
