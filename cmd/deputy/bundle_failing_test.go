package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/metrics"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// value is the value of the metric family name, with one series.
func (s servingPolicy) value(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != metrics.Namespace+"_"+name {
			continue
		}
		if ms := mf.GetMetric(); len(ms) == 1 {
			if g := ms[0].GetGauge(); g != nil {
				return g.GetValue()
			}
			return ms[0].GetCounter().GetValue()
		}
		t.Fatalf("%s: %v, want one series", name, mf.GetMetric())
	}
	t.Fatalf("no %s", name)
	return 0
}

// switchedServer is a bundle server with ETags, answering 304 to
// If-None-Match of the bundle it serves, whose answer the test switches.
type switchedServer struct {
	*httptest.Server
	mu     sync.Mutex
	body   []byte
	status int  // 0: the bundle
	bare   bool // 304 to every request
}

func newSwitchedServer(t *testing.T, body []byte) *switchedServer {
	s := &switchedServer{body: body}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		body, status, bare := s.body, s.status, s.bare
		s.mu.Unlock()
		sum := sha256.Sum256(body)
		tag := `"` + hex.EncodeToString(sum[:8]) + `"`
		switch {
		case status != 0:
			http.Error(w, "unavailable", status)
		case bare, r.Header.Get("If-None-Match") == tag:
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("ETag", tag)
			_, _ = w.Write(body)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *switchedServer) set(body []byte, status int, bare bool) {
	s.mu.Lock()
	s.body, s.status, s.bare = body, status, bare
	s.mu.Unlock()
}

// A failure that lasts keeps deputy_bundle_failing at 1 at every poll
// for as long as it lasts, however often it was counted, and a bundle
// that activates, or a server answering again about the bundle serving,
// brings it back to 0. Failed fetches are counted at every poll, apart
// from refused policy sets.
func TestBundleFailingGauge(t *testing.T) {
	ctx := context.Background()
	priv, pub := devKeys(t)
	otherPriv, _ := devKeys(t)
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := read(signedBundleOf(t, shippedPolicies(t), priv))
	forged := read(signedBundleOf(t, shippedPolicies(t), otherPriv))
	polls := func(t *testing.T, p servingPolicy, n int, failing float64, what string) {
		t.Helper()
		for i := range n {
			_ = p.source.Reload(ctx)
			if got := p.value(t, "bundle_failing"); got != failing {
				t.Fatalf("%s, poll %d: deputy_bundle_failing = %v, want %v (status %+v)", what, i, got, failing, p.source.Status())
			}
		}
	}
	cfg := func(url string) policy.Config {
		return policy.Config{BundleURL: url, PublicKey: pub, PollInterval: time.Hour, Roots: []string{"deputy", "system"}}
	}

	t.Run("refused bundle, then failed fetches", func(t *testing.T) {
		srv := newSwitchedServer(t, forged)
		p := newServingPolicyOn(t, cfg(srv.URL))
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if p.value(t, "bundle_failing") != 1 {
			t.Fatalf("deputy_bundle_failing = %v after a refused bundle, want 1", p.value(t, "bundle_failing"))
		}
		polls(t, p, 20, 1, "the refused bundle again")
		if got := p.value(t, "bundle_activation_failures_total"); got != 1 {
			t.Errorf("the refused bundle was counted %v times, want once", got)
		}
		if !strings.Contains(p.source.Status().LastError, "verif") {
			t.Errorf("status = %+v, want the refusal shown", p.source.Status())
		}
		srv.set(good, 0, false)
		polls(t, p, 1, 0, "a good bundle")
		polls(t, p, 5, 0, "the good bundle unchanged")

		srv.set(good, http.StatusInternalServerError, false)
		polls(t, p, 10, 1, "the server answering 500")
		if got := p.value(t, "bundle_fetch_failures_total"); got != 10 {
			t.Errorf("deputy_bundle_fetch_failures_total = %v after 10 failed polls, want 10", got)
		}
		if got := p.value(t, "bundle_activation_failures_total"); got != 1 {
			t.Errorf("failed fetches counted as refused policy sets: %v, want 1", got)
		}
		srv.set(good, 0, false)
		polls(t, p, 3, 0, "the server answering 304 for the bundle serving")
	})

	t.Run("304 naming no bundle", func(t *testing.T) {
		srv := newSwitchedServer(t, good)
		srv.set(good, 0, true)
		p := newServingPolicyOn(t, cfg(srv.URL))
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		polls(t, p, 20, 1, "a 304 to a request without If-None-Match")
		srv.set(good, 0, false)
		polls(t, p, 1, 0, "the bundle")
	})

	t.Run("bundle over max_bundle_bytes", func(t *testing.T) {
		srv := newSwitchedServer(t, good)
		c := cfg(srv.URL)
		c.MaxBundleBytes = int64(len(good)) / 2
		p := newServingPolicyOn(t, c)
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		polls(t, p, 20, 1, "a bundle over max_bundle_bytes")
		if got := p.value(t, "bundle_activation_failures_total"); got != 1 {
			t.Errorf("the refused bundle was counted %v times, want once", got)
		}
	})
}
