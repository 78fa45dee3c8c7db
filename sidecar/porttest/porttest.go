// Package porttest chooses loopback addresses for servers a test starts.
package porttest

import (
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
)

// Free returns a loopback address nothing listens on right now, for a
// server the test binds later. The kernel hands out port 0 from the same
// range (ip_local_port_range, 32768 up by default) as every client
// connection's local port, and the tests open thousands of those, in one
// package and in the ones running beside it, so one could take the port
// between its choice and the bind. Ports are chosen below that range, at
// random, where no client connection lands; port 0 is the fallback.
func Free(t testing.TB) string {
	t.Helper()
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+rand.IntN(22000)))
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
