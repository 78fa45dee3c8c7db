package porttest

import (
	"net"
	"testing"
)

// A process never gets the same address twice: a server started on the
// first would otherwise take the port another was given, as a load run
// giving one Deputy its gRPC and metrics ports saw.
func TestPickNeverRepeats(t *testing.T) {
	seen := map[string]bool{}
	for range 3000 {
		addr, err := Pick()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
	}
}

// An address in use is never handed out.
func TestPickSkipsBoundPorts(t *testing.T) {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	bound := map[string]bool{}
	for range 200 {
		addr, err := Pick()
		if err != nil {
			t.Fatal(err)
		}
		if bound[addr] {
			t.Fatalf("%s is in use and was handed out", addr)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s was handed out but does not bind: %v", addr, err)
		}
		held = append(held, l)
		bound[addr] = true
	}
}
