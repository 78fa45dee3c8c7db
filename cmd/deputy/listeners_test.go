package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// sendRaw opens a connection to addr and writes req on it as is; the
// connection closes when the test ends.
func sendRaw(t *testing.T, addr, req string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return c
}

func getRequest(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: deputy\r\n\r\n" }

// keptAlive opens a connection to addr and has one request on path
// answered on it, leaving the connection open.
func keptAlive(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	c := sendRaw(t, addr, getRequest(path))
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d", path, resp.StatusCode)
	}
	return c
}

// An idle connection to the metrics listener is closed after the
// listener's own idle timeout, not the HTTP listener's hour: each one
// held open is memory anyone on the pod network can make Deputy keep.
func TestMetricsListenerClosesIdleConnections(t *testing.T) {
	cfg := startServer(t, func(c *Config) { c.Metrics.IdleTimeout = 200 * time.Millisecond })
	if cfg.HTTP.IdleTimeout < time.Minute {
		t.Fatalf("http.idle_timeout %s: the test wants the metrics listener's own", cfg.HTTP.IdleTimeout)
	}
	c := keptAlive(t, cfg.Metrics.Addr, "/healthz")
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read %d bytes, %v; want it closed by the server", n, err)
	}
}

func TestMetricsIdleTimeoutDefaultIsShort(t *testing.T) {
	var cfg Config
	cfg.SetDefaults()
	if cfg.Metrics.IdleTimeout <= 0 || cfg.Metrics.IdleTimeout > 2*time.Minute {
		t.Fatalf("metrics.idle_timeout defaults to %s, want at most 2m", cfg.Metrics.IdleTimeout)
	}
	if cfg.Metrics.MaxConnections <= 0 || cfg.HTTP.MaxConnections <= 0 {
		t.Fatalf("connection caps default to %d (metrics), %d (http): want both set", cfg.Metrics.MaxConnections, cfg.HTTP.MaxConnections)
	}
}

// answered reads the response to a request sent on c.
func answered(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("answer %d", resp.StatusCode)
	}
}

// At its connection cap a listener makes room by closing an idle
// kept-alive connection: whoever holds idle connections cannot keep the
// kubelet's probes out. Connections in the middle of a request keep their
// places, and a newcomer waits for one of them to end.
func TestListenersCapConnections(t *testing.T) {
	cfg := startServer(t, func(c *Config) { c.Metrics.MaxConnections, c.HTTP.MaxConnections = 2, 2 })
	for _, tc := range []struct{ name, addr, path string }{
		{"metrics", cfg.Metrics.Addr, "/healthz"},
		{"http", cfg.HTTP.Addr, "/.well-known/jwks.json"},
	} {
		t.Run(tc.name+"/idle make room", func(t *testing.T) {
			idle := []net.Conn{keptAlive(t, tc.addr, tc.path), keptAlive(t, tc.addr, tc.path)}
			keptAlive(t, tc.addr, tc.path)
			closed := 0
			for _, c := range idle {
				if err := c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Read(make([]byte, 1)); errors.Is(err, io.EOF) {
					closed++
				}
			}
			if closed != 1 {
				t.Errorf("%d idle connections closed to make room, want 1", closed)
			}
		})
		t.Run(tc.name+"/busy keep their places", func(t *testing.T) {
			// Headers begun, not finished: in the middle of a request.
			first := sendRaw(t, tc.addr, "GET "+tc.path+" HTTP/1.1\r\n")
			sendRaw(t, tc.addr, "GET "+tc.path+" HTTP/1.1\r\n")

			third := sendRaw(t, tc.addr, getRequest(tc.path)) // the kernel's backlog takes it
			if err := third.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			if n, err := third.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("third connection over a cap of 2: read %d bytes, %v; want no answer", n, err)
			}
			first.Close()
			answered(t, third)
		})
	}
}
