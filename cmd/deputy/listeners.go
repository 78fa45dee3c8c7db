package main

import (
	"net"
	"net/http"
	"sync"
)

// capListener bounds the connections an HTTP listener holds open. At the
// cap it makes room by closing an idle kept-alive connection, whose
// client reconnects cheaply; with none idle it waits for a connection to
// close or go idle. Refusing or queueing newcomers while idle connections
// hold every place (netutil.LimitListener's way) would let anyone who
// keeps enough of them open starve the kubelet's probes, and the probes
// would restart the pod.
type capListener struct {
	net.Listener
	max int

	mu     sync.Mutex
	cond   *sync.Cond // signalled on every connection state change
	conns  map[net.Conn]http.ConnState
	closed bool
}

func newCapListener(l net.Listener, max int) *capListener {
	c := &capListener{Listener: l, max: max, conns: make(map[net.Conn]http.ConnState)}
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
		if !l.closeIdleLocked() {
			l.cond.Wait()
		}
	}
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	l.conns[c] = http.StateNew
	return c, nil
}

// closeIdleLocked closes one idle connection, if there is one.
func (l *capListener) closeIdleLocked() bool {
	for c, st := range l.conns {
		if st == http.StateIdle {
			delete(l.conns, c)
			c.Close()
			return true
		}
	}
	return false
}

// track is the server's ConnState hook.
func (l *capListener) track(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.conns[c]; ok {
		if st == http.StateClosed || st == http.StateHijacked {
			delete(l.conns, c)
		} else {
			l.conns[c] = st
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
