package main

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
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
	// rpcs tracks connections by their RPCs (see rpcConn), for the gRPC
	// server, which has no ConnState hook.
	rpcs  bool
	epoch time.Time

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
	c := &capListener{Listener: l, max: max, conns: make(map[net.Conn]connState), epoch: time.Now()}
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
	if l.rpcs {
		c = l.newRPCConn(c)
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
		switch rc, _ := c.(*rpcConn); {
		case rc != nil:
			since, g, busy := rc.idleSince()
			if busy {
				// Its RPC's end signals nothing: look again then.
				if wait < 0 || usedIdleGrace < wait {
					wait = usedIdleGrace
				}
				continue
			}
			cs.since, grace = l.epoch.Add(time.Duration(since)), g
		case cs.state == http.StateNew:
			grace = newConnGrace
		case cs.state == http.StateIdle:
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
	if rc, ok := victim.(*rpcConn); ok {
		if !rc.take() { // an RPC began since: look again
			return 0
		}
		// Closed under the transport, not through it: gRPC offers no
		// GOAWAY for one connection. take made sure no counted RPC is in
		// progress; usedIdleGrace covers one not counted yet.
		delete(l.conns, victim)
		rc.Conn.Close() // rc.Close would track it, under l.mu
		return 0
	}
	delete(l.conns, victim)
	victim.Close()
	return 0
}

// since is the time since the listener opened, in nanoseconds, never 0.
func (l *capListener) since() int64 { return int64(time.Since(l.epoch)) + 1 }

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
// gRPC has no ConnState hook: each connection is an rpcConn, whose
// RPCs countRPCs counts. A connection counts as in use from its first
// RPC, not its first byte, so one that completes the HTTP/2 handshake and
// goes silent makes room as one that never spoke does.
func serveGRPCCapped(srv *grpc.Server, l net.Listener, max int) error {
	cl := newCapListener(l, max)
	cl.rpcs = true
	return srv.Serve(cl)
}

// A gRPC connection that has run an RPC becomes evictable only after it
// has been idle this long since its last one ended. It is longer than
// minIdle because the window it covers is wider: a check's HEADERS and
// message may sit in the socket, or on the way to a stream worker, before
// countRPCs sees it. A busy Envoy connection is never idle that long; one
// that ran a single RPC and went quiet delays a newcomer at most once by
// it (every older one is past it by then).
const usedIdleGrace = time.Second

// rpcConn is a gRPC connection with its RPC count, kept by countRPCs
// and read by the cap without locks: RPCs are the hot path.
type rpcConn struct {
	net.Conn
	l    *capListener
	addr *rpcAddr
	// accepted and lastEnd are nanoseconds since l.epoch (monotonic);
	// lastEnd is 0 until an RPC ends.
	accepted int64
	lastEnd  atomic.Int64
	// inFlight counts RPCs in progress; -1 once the cap has taken the
	// connection, so that no RPC starts on it after the cap saw it idle.
	inFlight atomic.Int32
}

func (l *capListener) newRPCConn(c net.Conn) *rpcConn {
	rc := &rpcConn{Conn: c, l: l, accepted: l.since()}
	rc.addr = &rpcAddr{remote: c.RemoteAddr(), c: rc}
	return rc
}

// RemoteAddr is how countRPCs finds the connection: gRPC puts it, through
// TLS too, in each RPC's peer.
func (c *rpcConn) RemoteAddr() net.Addr { return c.addr }

func (c *rpcConn) Close() error {
	err := c.Conn.Close()
	c.l.track(c, http.StateClosed)
	return err
}

// idleSince says since when c has had no RPC in progress (its accept, if
// it never ran one) and how long it keeps its place from then; busy when
// an RPC is in progress.
func (c *rpcConn) idleSince() (since int64, grace time.Duration, busy bool) {
	if c.inFlight.Load() != 0 {
		return 0, 0, true
	}
	if end := c.lastEnd.Load(); end != 0 {
		return end, usedIdleGrace, false
	}
	return c.accepted, newConnGrace, false
}

// take claims c for eviction if no RPC is in progress on it.
func (c *rpcConn) take() bool { return c.inFlight.CompareAndSwap(0, -1) }

// rpcAddr is an rpcConn's remote address, carrying the connection.
type rpcAddr struct {
	remote net.Addr // nil for an unnamed unix socket peer
	c      *rpcConn
}

func (a *rpcAddr) Network() string {
	if a.remote == nil {
		return "unix"
	}
	return a.remote.Network()
}

func (a *rpcAddr) String() string {
	if a.remote == nil {
		return ""
	}
	return a.remote.String()
}

// countRPCs wraps next, a unary interceptor, with the count each rpcConn
// keeps of its RPCs. It wraps one rather than joining the chain, where
// each link costs every check an allocation. Streams (the health Watch)
// are not counted: one can stay open for good, and would hold a place
// for good; its client reopens it.
func countRPCs(next grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		p, ok := peer.FromContext(ctx)
		if !ok {
			return next(ctx, req, info, handler)
		}
		a, ok := p.Addr.(*rpcAddr)
		if !ok {
			return next(ctx, req, info, handler)
		}
		c := a.c
		for {
			n := c.inFlight.Load()
			if n < 0 { // taken by the cap: the connection is closing
				return next(ctx, req, info, handler)
			}
			if c.inFlight.CompareAndSwap(n, n+1) {
				break
			}
		}
		defer func() {
			c.lastEnd.Store(c.l.since())
			c.inFlight.Add(-1)
		}()
		return next(ctx, req, info, handler)
	}
}
