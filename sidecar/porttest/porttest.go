// Package porttest chooses loopback addresses for servers a test starts.
package porttest

import (
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Free returns a loopback address nothing listens on right now, for a
// server the test binds later (see Pick).
func Free(t testing.TB) string {
	t.Helper()
	addr, err := Pick()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// given holds the addresses Pick has handed out in this process.
var given sync.Map

// Pick returns a loopback address nothing listens on right now and that
// this process was not given before: a server is bound some time after
// its address is chosen, and two chosen before either binds must differ.
// The kernel hands out port 0 from the same range (ip_local_port_range,
// 32768 up by default) as every client connection's local port, and the
// tests and load runs open thousands of those, so one could take the port
// between its choice and the bind. Ports are chosen below that range, at
// random, where no client connection lands; port 0 is the fallback.
func Pick() (string, error) {
	for range 200 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+rand.IntN(22000)))
		if fresh(addr) {
			return addr, nil
		}
	}
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		l.Close()
		if _, dup := given.LoadOrStore(addr, true); !dup {
			return addr, nil
		}
	}
	return "", errors.New("no free loopback port")
}

// fresh reports whether addr binds now and was not given before, and
// marks it given.
func fresh(addr string) bool {
	if _, dup := given.Load(addr); dup {
		return false
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	_, dup := given.LoadOrStore(addr, true)
	return !dup
}
