package decisionlog_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// holdProxy forwards TCP to a redis-server. hold() makes every connection
// open at that moment keep what its client sends (a packet in TCP
// retransmission, a congested link, a proxy queue) instead of forwarding
// it; connections made later forward at once. release() delivers what was
// held and reports once Redis answered it. cut() makes every connection
// open at that moment close when its client next sends.
type holdProxy struct {
	addr   string
	target string
	ln     net.Listener

	mu      sync.Mutex
	conns   []*heldConn
	holding bool
}

type heldConn struct {
	up      net.Conn
	mu      sync.Mutex
	held    []byte
	hold    bool
	cut     bool
	rst     bool          // cut with a TCP reset, else a plain close
	replied chan struct{} // closed when Redis answers after release
	once    sync.Once
	armed   bool
}

func startHoldProxy(t *testing.T, target string) *holdProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{addr: ln.Addr().String(), target: target, ln: ln}
	var all []net.Conn
	var amu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			amu.Lock()
			all = append(all, c, up)
			amu.Unlock()
			hc := &heldConn{up: up, replied: make(chan struct{})}
			p.mu.Lock()
			hc.hold = p.holding
			p.conns = append(p.conns, hc)
			p.mu.Unlock()
			go func() { // client -> redis
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						hc.mu.Lock()
						if hc.cut {
							if hc.rst {
								_ = c.(*net.TCPConn).SetLinger(0)
							}
							hc.mu.Unlock()
							c.Close()
							up.Close()
							return
						}
						if hc.hold {
							hc.held = append(hc.held, buf[:n]...)
							hc.mu.Unlock()
						} else {
							hc.mu.Unlock()
							if _, werr := up.Write(buf[:n]); werr != nil {
								return
							}
						}
					}
					if err != nil {
						return // the client gave up; up stays open for release
					}
				}
			}()
			go func() { // redis -> client
				buf := make([]byte, 64<<10)
				for {
					n, err := up.Read(buf)
					if n > 0 {
						hc.mu.Lock()
						armed := hc.armed
						hc.mu.Unlock()
						if armed {
							hc.once.Do(func() { close(hc.replied) })
						}
						_, _ = c.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		amu.Lock()
		for _, c := range all {
			c.Close()
		}
		amu.Unlock()
	})
	return p
}

func (p *holdProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, hc := range p.conns {
		hc.mu.Lock()
		hc.hold = true
		hc.mu.Unlock()
	}
}

// cut makes every connection open now close, with a reset when rst, on
// the next bytes its client sends, as a load balancer or NAT whose idle
// timeout forgot the flow does; connections made later forward normally.
// go-redis's pool sees nothing wrong with such a connection until it
// writes on it.
func (p *holdProxy) cut(rst bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, hc := range p.conns {
		hc.mu.Lock()
		hc.cut, hc.rst = true, rst
		hc.mu.Unlock()
	}
}

// holdAll holds what every connection sends, also those made later,
// until release.
func (p *holdProxy) holdAll() {
	p.mu.Lock()
	p.holding = true
	p.mu.Unlock()
	p.hold()
}

// release delivers the held bytes and waits (bounded) for Redis's answer.
func (p *holdProxy) release(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	p.holding = false
	conns := append([]*heldConn(nil), p.conns...)
	p.mu.Unlock()
	delivered := 0
	for _, hc := range conns {
		hc.mu.Lock()
		held := hc.held
		hc.held, hc.hold = nil, false
		if len(held) > 0 {
			hc.armed = true
		}
		hc.mu.Unlock()
		if len(held) == 0 {
			continue
		}
		if _, err := hc.up.Write(held); err != nil {
			t.Fatal(err)
		}
		delivered++
		select {
		case <-hc.replied:
		case <-time.After(5 * time.Second):
			t.Fatal("Redis never answered the held command")
		}
	}
	if delivered == 0 {
		t.Fatal("nothing was held: the first attempt never left the client")
	}
}

// logN logs n decisions named prefix-00 on.
func logN(t *testing.T, l *decisionlog.Logger, prefix string, n int) {
	for i := range n {
		l.Log(impersonationDecision(fmt.Sprintf("%s-%02d", prefix, i), requestInput(t)))
	}
}

// A write whose reply is lost may still be on its way to Redis: the
// request, not the reply, was delayed past redis.read_timeout. The sink
// must not take a retry's success for the whole story: had go-redis
// retried the command itself, the sink would see success, the logger
// would settle the batch, the next write would remove its ids from the
// once-set, and the late first attempt, finding no id, would append the
// whole batch again. The sink runs its script once per Write and keeps
// the ids of a batch with an unconfirmed attempt for dedup_window.
func TestRedisSinkLateFirstAttemptAddsNothing(t *testing.T) {
	srv := redistest.Start(t)
	proxy := startHoldProxy(t, srv.Addr)
	cfg := redisConfig(1000)
	sink := deputySink(t, cfg, proxy.addr).sink
	settler := sink.(decisionlog.Settler)
	ctx := context.Background()
	batch := func(prefix string, n int) [][]byte {
		var b [][]byte
		for i := range n {
			b = append(b, fmt.Appendf(nil, `{"decision_id":"%s-%02d","result":"allow"}`, prefix, i))
		}
		return b
	}
	// As the logger's writer does: Write until it succeeds, then Settled.
	write := func(b [][]byte) (unconfirmed int) {
		t.Helper()
		for attempt := 0; ; attempt++ {
			err := sink.Write(ctx, b)
			if err == nil {
				settler.Settled(false)
				return unconfirmed
			}
			if !errors.Is(err, decisionlog.ErrUnconfirmed) || attempt == 5 {
				t.Fatal(err)
			}
			unconfirmed++
		}
	}
	write(batch("warm", 3)) // loads the script, pools a connection

	proxy.hold()
	if n := write(batch("lost", 5)); n != 1 {
		t.Fatalf("the held attempt ended %d writes unconfirmed, want 1: the sink did not see its lost reply", n)
	}
	write(batch("next", 5)) // removes the settled ids it may remove
	proxy.release(t)        // the first attempt of "lost" arrives late
	wantEachOnce(t, srv, cfg.Stream, 13)

	// Confirmed batches still leave the set at the next write: only the
	// ids of the batch with a lost reply stay for the window.
	write(batch("last", 2))
	got, err := srv.Client().ZRange(ctx, "{"+cfg.Stream+"}:once", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := []string{"last-00", "last-01", "lost-00", "lost-01", "lost-02", "lost-03", "lost-04"}
	if !slices.Equal(got, want) {
		t.Errorf("once-set holds %q, want %q", got, want)
	}
}

// The same through the logger, as a running Deputy writes.
func TestLoggerLateFirstAttemptAddsNothing(t *testing.T) {
	srv := redistest.Start(t)
	proxy := startHoldProxy(t, srv.Addr)
	cfg := redisConfig(1000)
	l := startLogger(t, cfg, deputySink(t, cfg, proxy.addr).sink)
	logN(t, l, "warm", 3)
	waitFor(t, "warm-up written", func() bool { return l.Flushed() == 3 })
	proxy.hold()
	logN(t, l, "lost", 5)
	waitFor(t, "the held batch written again", func() bool { return l.Flushed() == 8 })
	logN(t, l, "next", 5)
	waitFor(t, "the next batch written", func() bool { return l.Flushed() == 13 })
	proxy.release(t)
	wantEachOnce(t, srv, cfg.Stream, 13)
}

// The same across a restart: the process whose write lost its reply
// spools the batch and stops; the next one writes it from the spool,
// while the first attempt is still on its way to Redis. The spool marks
// the records such a write held, and the next run keeps only their ids
// for the window, settling the rest of the spool as it goes: replaying a
// spool that holds more records than dedup_max_ids must not push the
// lost batch's ids out of the once-set.
func TestLoggerLateFirstAttemptAcrossRestartAddsNothing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		behind int   // records spooled after the lost batch
		maxIDs int64 // dedup_max_ids, in batches; 0 leaves the default
	}{
		{"the lost batch alone", 0, 0},
		{"a spool larger than dedup_max_ids", 199, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			proxy := startHoldProxy(t, srv.Addr)
			cfg := redisConfig(1000)
			if tc.maxIDs > 0 {
				cfg.DedupMaxIDs = tc.maxIDs * int64(cfg.BatchSize)
			}
			cfg.SpoolDir = t.TempDir()
			l1 := startLogger(t, cfg, deputySink(t, cfg, proxy.addr).sink)
			logN(t, l1, "warm", 3)
			waitFor(t, "warm-up written", func() bool { return l1.Flushed() == 3 })
			proxy.holdAll()
			logN(t, l1, "lost", 5)
			waitFor(t, "a write that lost its reply", func() bool { return l1.SinkErrors() > 0 })
			logN(t, l1, "behind", tc.behind)
			// SIGTERM: a short deadline moves the records to the spool.
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			_ = l1.Stop(ctx)
			cancel()
			if l1.SpoolBytes() == 0 {
				t.Fatal("nothing was spooled at shutdown: the restart retries nothing")
			}

			spooled := uint64(5 + tc.behind)
			l2 := startLogger(t, cfg, deputySink(t, cfg, srv.Addr).sink)
			waitFor(t, "the spool delivered", func() bool { return l2.SpoolBytes() == 0 && l2.Flushed() == spooled })
			logN(t, l2, "next", 5)
			waitFor(t, "the next batch written", func() bool { return l2.Flushed() == spooled+5 })
			logN(t, l2, "last", 1) // removes the ids of "next"
			waitFor(t, "the last batch written", func() bool { return l2.Flushed() == spooled+6 })
			proxy.release(t) // the first process's attempts arrive late
			wantEachOnce(t, srv, cfg.Stream, 3+int(spooled)+6)
		})
	}
}
