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
			since, used := rc.silentSince()
			if used {
				continue // keeps its place: see silentGrace
			}
			cs.since, grace = l.epoch.Add(time.Duration(since)), silentGrace
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
		// GOAWAY for one connection. take made sure no RPC began on it;
		// it has been silent for silentGrace, and a read since is
		// looked at again.
		if since, used := rc.silentSince(); used || l.epoch.Add(time.Duration(since)).Add(silentGrace).After(time.Now()) {
			rc.inFlight.Store(0)
			return 0
		}
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

// A gRPC connection that has never run an RPC becomes evictable once
// nothing has been read from it for this long. The window it covers: a
// check's bytes read by the transport but not yet counted by countRPCs,
// on the way to a stream worker. A client that completes the HTTP/2
// handshake and goes silent makes room after it; one still sending keeps
// its place.
//
// A connection that has run an RPC is never closed to make room: Envoy
// sends its next check on it at any moment, and a check that has reached
// the socket but not countRPCs would be lost with it (Envoy then denies,
// or allows under failure_mode_allow). Such a connection leaves when its
// client closes it or when keepalive's MaxConnectionIdle ends it with a
// GOAWAY, which loses nothing. So a client that runs RPCs on every
// connection holds the cap: keep the gRPC listener on loopback, a unix
// socket or behind mTLS and the NetworkPolicy, as the chart does.
const silentGrace = 250 * time.Millisecond

// rpcConn is a gRPC connection with its RPC count, kept by countRPCs
// and read by the cap without locks: RPCs are the hot path.
type rpcConn struct {
	net.Conn
	l    *capListener
	addr *rpcAddr
	// accepted and lastRead are nanoseconds since l.epoch (monotonic);
	// lastRead is 0 until a read returns bytes.
	accepted int64
	lastRead atomic.Int64
	// used is set by an RPC's start: the connection keeps its place.
	used atomic.Bool
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

// Read notes when c last gave the transport bytes.
func (c *rpcConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.lastRead.Store(c.l.since())
	}
	return n, err
}

// silentSince says since when nothing has been read from c (its accept,
// if nothing ever was); used when an RPC has run on it, or one is in
// progress, so that it keeps its place.
func (c *rpcConn) silentSince() (since int64, used bool) {
	if c.used.Load() || c.inFlight.Load() > 0 {
		return 0, true
	}
	if r := c.lastRead.Load(); r != 0 {
		return r, false
	}
	return c.accepted, false
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
		c.used.Store(true) // first: the cap looks at it again after taking c
		for {
			n := c.inFlight.Load()
			if n < 0 { // taken by the cap: the connection is closing
				return next(ctx, req, info, handler)
			}
			if c.inFlight.CompareAndSwap(n, n+1) {
				break
			}
		}
		defer c.inFlight.Add(-1)
		return next(ctx, req, info, handler)
	}
}
