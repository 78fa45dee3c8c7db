package policy_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// stepClock is a clock a test moves forward.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// startPolledAt is startPolled with the source on clock.
func startPolledAt(t *testing.T, cfg policy.Config, clock *stepClock) *polled {
	t.Helper()
	p := &polled{}
	p.engine = policy.New(policy.WithLogger(quiet()))
	src, err := policy.NewSource(cfg, p.engine, policy.WithSourceClock(clock.Now),
		policy.WithSourceLogger(slog.New(slog.NewTextHandler(p, nil))),
		policy.OnAttempt(func(_ policy.Status, err error) {
			if err != nil && !policy.FetchFailed(err) {
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

// logged is what the source logged.
func (p *polled) logged() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// lines counts the log lines holding msg.
func (p *polled) lines(msg string) int {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return strings.Count(p.log.String(), msg)
}

// A bundle server that fails (an error status, or nothing listening)
// fails every poll: each failed fetch is counted, and shows in the
// status as the last error, but the log has the first, then at most one
// line a minute with how many failed since, and one when the server
// answers again. None counts as a refused policy set.
func TestFetchFailuresCountedAndLoggedPaced(t *testing.T) {
	r1 := build(t, "r1", "v1", nil)
	for _, c := range []struct {
		name string
		want string // in the error
		// failing returns the URL of a bundle server failing, and what
		// makes it answer with r1.
		failing func(t *testing.T) (url string, recover func())
	}{
		{"server answering 500", "500", func(t *testing.T) (string, func()) {
			srv := newPollServer(t, r1, true, true)
			srv.fail(http.StatusInternalServerError)
			return srv.URL, func() { srv.serve(r1) }
		}},
		{"nothing listening", "unreachable", func(t *testing.T) (string, func()) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			return "http://" + addr + "/bundle.tar.gz", func() {
				// The same port again, now answering.
				l, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					_, _ = w.Write(r1)
				})}}
				srv.Start()
				t.Cleanup(srv.Close)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			url, recover := c.failing(t)
			clock := &stepClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			p := startPolledAt(t, policy.Config{BundleURL: url, PollInterval: time.Hour}, clock)
			// Polls every second for five minutes (the start was the first).
			polls := 1
			for range 300 {
				clock.add(time.Second)
				if err := p.src.Reload(ctx); err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("reload = %v, want the failure naming %q", err, c.want)
				}
				polls++
			}
			if got := p.src.FetchFailures(); got != uint64(polls) {
				t.Errorf("%d failed fetches counted, want %d: every one", got, polls)
			}
			st := p.src.Status()
			if st.Ready || !strings.Contains(st.LastError, c.want) || st.Failures != polls {
				t.Errorf("status = %+v, want unready, the failure named and %d failures", st, polls)
			}
			if first, later := p.refusals(), p.lines("policy update still failing"); first != 1 || later != 5 {
				t.Errorf("%d failed polls over 5 minutes logged %d first lines and %d later ones, want 1 and one a minute",
					polls, first, later)
			}
			if n := p.lines("failures_since_last_log=60 "); n != 5 {
				t.Errorf("%d later lines count the 60 failures of their minute, want 5:\n%s", n, p.logged())
			}
			if n := p.failures.Load(); n != 0 {
				t.Errorf("%d failed fetches seen as refused policy sets, want none", n)
			}

			recover()
			clock.add(30 * time.Second)
			if err := p.src.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			if st := p.src.Status(); !st.Ready || st.LastError != "" || st.Failures != 0 {
				t.Errorf("status after the server answered = %+v, want ready, no error", st)
			}
			if n := p.lines("policy source answers again"); n != 1 {
				t.Errorf("recovery logged %d times, want once:\n%s", n, p.logged())
			}
			before := p.src.FetchFailures()
			for range 3 {
				clock.add(time.Second)
				if err := p.src.Reload(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if p.src.FetchFailures() != before || p.lines("policy source answers again") != 1 {
				t.Error("polls answered 304 counted as failures, or logged as a recovery")
			}
		})
	}
}

// After failed fetches, a poll that finds what it last found (a 304 to
// the ETag of the bundle serving, or of the bundle refused) shows that
// outcome again: the fetch error is no longer the last one.
func TestStatusAfterFetchRecovers(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	ctx := context.Background()
	r1 := build(t, "r1", "v1", &policy.SignOptions{Key: priv, IssuedAt: time.Now().Add(-time.Minute)})
	clock := &stepClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}

	t.Run("bundle serving", func(t *testing.T) {
		srv := newPollServer(t, r1, true, true)
		p := startPolledAt(t, policy.Config{BundleURL: srv.URL, PublicKey: pub, PollInterval: time.Hour}, clock)
		srv.fail(http.StatusServiceUnavailable)
		for range 3 {
			if err := p.src.Reload(ctx); err == nil {
				t.Fatal("a 503 was not a failure")
			}
		}
		if st := p.src.Status(); !strings.Contains(st.LastError, "503") || st.Failures != 3 {
			t.Fatalf("status = %+v, want the 503 shown", st)
		}
		srv.serve(r1)
		if err := p.src.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		if srv.notMod.Load() == 0 {
			t.Fatal("the server did not answer 304: the test needs it to")
		}
		if st := p.src.Status(); !st.Ready || st.LastError != "" || st.Failures != 0 {
			t.Errorf("status after a 304 to the bundle serving = %+v, want no error", st)
		}
	})

	t.Run("bundle refused", func(t *testing.T) {
		forged := replaced(t, r1, "data.json", []byte(`{"deputy":{"authz":{"label":"forged"}}}`))
		srv := newPollServer(t, forged, true, true)
		p := startPolledAt(t, policy.Config{BundleURL: srv.URL, PublicKey: pub, PollInterval: time.Hour}, clock)
		srv.fail(http.StatusServiceUnavailable)
		if err := p.src.Reload(ctx); err == nil {
			t.Fatal("a 503 was not a failure")
		}
		srv.serve(forged)
		if err := p.src.Reload(ctx); err != nil {
			t.Fatalf("a 304 to the bundle refused: %v", err)
		}
		if st := p.src.Status(); st.Ready || !strings.Contains(st.LastError, "digest mismatch") {
			t.Errorf("status after a 304 to the refused bundle = %+v, want its refusal shown again", st)
		}
		if p.failures.Load() != 1 {
			t.Errorf("the refusal counted %d times, want once", p.failures.Load())
		}
	})
}

// A refusal that lasts (a bundle that fails to verify, one over the
// limits, a 304 that names no bundle) is counted once, and shows as the
// last error for as long as polls bring it.
func TestLastingRefusalStaysShown(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	ctx := context.Background()
	r1 := build(t, "r1", "v1", &policy.SignOptions{Key: priv, IssuedAt: time.Now().Add(-time.Minute)})
	forged := replaced(t, r1, "data.json", []byte(`{"deputy":{"authz":{"label":"forged"}}}`))
	clock := &stepClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	for _, c := range []struct {
		name  string
		set   func(srv *pollServer)
		limit int64
		etag  bool
		want  string
	}{
		{"signature", func(srv *pollServer) { srv.serve(forged) }, 0, true, "digest mismatch"},
		{"signature, no ETag", func(srv *pollServer) { srv.serve(forged) }, 0, false, "digest mismatch"},
		{"over max_bundle_bytes", func(srv *pollServer) { srv.serve(r1) }, 64, true, "max_bundle_bytes"},
		{"304 naming no bundle", func(srv *pollServer) { srv.notModified() }, 0, true, "If-None-Match"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := newPollServer(t, r1, c.etag, c.etag)
			c.set(srv)
			p := startPolledAt(t, policy.Config{BundleURL: srv.URL, PublicKey: pub, PollInterval: time.Hour, MaxBundleBytes: c.limit}, clock)
			for i := range 20 {
				clock.add(time.Second)
				_ = p.src.Reload(ctx)
				if st := p.src.Status(); !strings.Contains(st.LastError, c.want) {
					t.Fatalf("poll %d: status = %+v, want the refusal naming %q", i, st, c.want)
				}
			}
			if p.failures.Load() != 1 || p.refusals() != 1 || p.src.FetchFailures() != 0 {
				t.Errorf("21 polls: %d refusals counted, %d logged, %d failed fetches; want 1, 1, 0",
					p.failures.Load(), p.refusals(), p.src.FetchFailures())
			}
		})
	}
}

// A failure of another kind within a minute of the last line is logged at
// once: a run of 500s that turns into 403s (the server's credentials
// revoked) shows the first 403 when it comes, then the first 500 again,
// while repeats of one kind stay paced.
func TestFetchFailureOfAnotherKindLoggedAtOnce(t *testing.T) {
	ctx := context.Background()
	r1 := build(t, "r1", "v1", nil)
	srv := newPollServer(t, r1, true, true)
	srv.fail(http.StatusInternalServerError)
	clock := &stepClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	p := startPolledAt(t, policy.Config{BundleURL: srv.URL, PollInterval: time.Hour}, clock)
	poll := func(n int) {
		for range n {
			clock.add(time.Second)
			if err := p.src.Reload(ctx); err == nil {
				t.Fatal("a failing server's bundle loaded")
			}
		}
	}
	poll(5)
	srv.fail(http.StatusForbidden)
	poll(10)
	if got := strings.Count(p.logged(), "403 Forbidden"); got != 1 {
		t.Fatalf("10 polls answered 403 after a run of 500s logged the 403 %d times, want once, at the first:\n%s", got, p.logged())
	}
	srv.fail(http.StatusInternalServerError)
	poll(10)
	if got := strings.Count(p.logged(), "500 Internal Server Error"); got != 2 {
		t.Fatalf("500s again after the 403s logged a 500 %d times in all, want twice (the first of each run):\n%s", got, p.logged())
	}
}

// A server chooses its reason phrase, and Go's text of a failed
// connection names its local port: a failure whose message changes at
// every poll ("500 req-1", "500 req-2", ..., a reset from another port
// each time) is still one kind, logged once a minute, not at every
// poll; and a reason phrase of a megabyte is shown cut short.
func TestFetchFailureMessageNotAKind(t *testing.T) {
	for _, c := range []struct {
		name   string
		answer func(c net.Conn, n int)
		want   string // in every failure, and in exactly one line
	}{
		{"reason phrase counting", func(c net.Conn, n int) {
			_, _ = fmt.Fprintf(c, "HTTP/1.1 500 req-%d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", n)
		}, "500 req-"},
		{"connection reset", func(c net.Conn, _ int) {
			_ = c.(*net.TCPConn).SetLinger(0)
		}, "reset"},
		{"reason phrase of a megabyte", func(c net.Conn, _ int) {
			_, _ = fmt.Fprintf(c, "HTTP/1.1 500 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", strings.Repeat("x", 1<<20))
		}, "500 xxx"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() })
			go func() {
				for n := 1; ; n++ {
					conn, err := l.Accept()
					if err != nil {
						return
					}
					_, _ = http.ReadRequest(bufio.NewReader(conn))
					c.answer(conn, n)
					_ = conn.Close()
				}
			}()
			clock := &stepClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			p := startPolledAt(t, policy.Config{BundleURL: "http://" + l.Addr().String() + "/bundle.tar.gz", PollInterval: time.Hour}, clock)
			for range 30 {
				clock.add(time.Second)
				if err := p.src.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("reload = %v, want the failure naming %q", err, c.want)
				}
			}
			if got := strings.Count(p.logged(), c.want); got != 1 {
				t.Fatalf("31 polls, each failing with another message, logged %d lines naming %q, want 1", got, c.want)
			}
			if n := len(p.logged()); n > 4096 {
				t.Fatalf("31 failed polls logged %d bytes", n)
			}
		})
	}
}
