package main

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// A connection becomes evictable at the cap only after it has been
// silent (new) or idle this long. Both are short: at the cap each
// newcomer must wait for a connection to become evictable, so with n
// places a flood of m silent or idle connections delays a probe by about
// (m-n)·grace/n. Closing oldest first is what protects a connection in
// use; the graces only cover the moment after accepting and after a
// response.
const (
	// newConnGrace is how long a new connection holds its place before
	// its request headers are in. A client sends its request as soon as
	// it connects; one that sends nothing (or dribbles its headers)
	// would otherwise hold a place for the whole ReadHeaderTimeout.
	newConnGrace = 25 * time.Millisecond
	// minIdle protects a busy kept-alive client: a connection is idle
	// until the server has parsed its next request, so one idle for a
	// moment may already carry a request in its socket, which closing it
	// would lose.
	minIdle = 50 * time.Millisecond
)

// capListener bounds the connections a listener holds open (for gRPC see
// serveGRPCCapped). At the cap it makes room by closing the connection
// that has waited longest without a request in progress: idle kept-alive
// ones (whose clients reconnect cheaply) and new ones still without their
// request headers, each only after minIdle or newConnGrace. With none such it waits for a
// connection to close or age. Refusing or queueing newcomers while
// silent or idle connections hold every place (netutil.LimitListener's
// way) would let anyone who keeps enough of them open starve the
// kubelet's probes, and the probes would restart the pod.
type capListener struct {
	net.Listener
	max int
	// spoken tracks connections itself (see spokenConn), for a server
	// with no ConnState hook.
	spoken bool

	mu     sync.Mutex
	cond   *sync.Cond // signalled on every connection state change
	conns  map[net.Conn]connState
	closed bool
}

// connState is a connection's state and when it entered it.
type connState struct {
	state http.ConnState
	since time.Time
}

func newCapListener(l net.Listener, max int) *capListener {
	c := &capListener{Listener: l, max: max, conns: make(map[net.Conn]connState)}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (l *capListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.conns) >= l.max && !l.closed {
		if wait := l.evictLocked(time.Now()); wait != 0 {
			l.waitLocked(wait)
		}
	}
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if l.spoken {
		c = &spokenConn{Conn: c, l: l}
	}
	l.conns[c] = connState{http.StateNew, time.Now()}
	return c, nil
}

// evictLocked closes the connection that has waited longest without a
// request in progress, if one has waited long enough. Otherwise it says
// how long until one will have, or -1 when none can (all are busy).
func (l *capListener) evictLocked(now time.Time) time.Duration {
	var victim net.Conn
	var oldest time.Time
	wait := time.Duration(-1)
	for c, cs := range l.conns {
		var grace time.Duration
		switch cs.state {
		case http.StateNew:
			grace = newConnGrace
		case http.StateIdle:
			grace = minIdle
		default:
			continue
		}
		if left := cs.since.Add(grace).Sub(now); left > 0 {
			if wait < 0 || left < wait {
				wait = left
			}
			continue
		}
		if victim == nil || cs.since.Before(oldest) {
			victim, oldest = c, cs.since
		}
	}
	if victim == nil {
		return wait
	}
	delete(l.conns, victim)
	if sc, ok := victim.(*spokenConn); ok {
		victim = sc.Conn // its Close would track it, under l.mu
	}
	victim.Close()
	return 0
}

// waitLocked waits for a state change, or for d when d is positive.
func (l *capListener) waitLocked(d time.Duration) {
	if d > 0 {
		t := time.AfterFunc(d, func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.cond.Broadcast()
		})
		defer t.Stop()
	}
	l.cond.Wait()
}

// track is the server's ConnState hook.
func (l *capListener) track(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.conns[c]; ok {
		if st == http.StateClosed || st == http.StateHijacked {
			delete(l.conns, c)
		} else {
			l.conns[c] = connState{st, time.Now()}
		}
	}
	l.cond.Broadcast()
}

func (l *capListener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.cond.Broadcast()
	l.mu.Unlock()
	return l.Listener.Close()
}

// serveCapped serves srv on l, holding at most max connections.
func serveCapped(srv *http.Server, l net.Listener, max int) error {
	cl := newCapListener(l, max)
	srv.ConnState = cl.track
	return srv.Serve(cl)
}

// serveGRPCCapped serves srv on l, holding at most max connections.
// gRPC has no ConnState hook, and a connection that has spoken is one
// Envoy multiplexes its checks on: closing it, even between checks, may
// lose one in flight. So only connections silent since they connected
// make room (after newConnGrace); one that has sent a byte keeps its
// place until it closes (a handshake left unfinished ends at the server's
// ConnectionTimeout).
func serveGRPCCapped(srv *grpc.Server, l net.Listener, max int) error {
	cl := newCapListener(l, max)
	cl.spoken = true
	return srv.Serve(cl)
}

// spokenConn reports to its listener when its client first sends a byte
// (as busy, for good) and when it closes.
type spokenConn struct {
	net.Conn
	l     *capListener
	spoke atomic.Bool
}

func (c *spokenConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.spoke.Load() && c.spoke.CompareAndSwap(false, true) {
		c.l.track(c, http.StateActive)
	}
	return n, err
}

func (c *spokenConn) Close() error {
	err := c.Conn.Close()
	c.l.track(c, http.StateClosed)
	return err
}
