package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
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
	if cfg.Metrics.MaxConnections <= 0 || cfg.HTTP.MaxConnections <= 0 || cfg.GRPC.MaxConnections <= 0 {
		t.Fatalf("connection caps default to %d (metrics), %d (http), %d (grpc): want all set", cfg.Metrics.MaxConnections, cfg.HTTP.MaxConnections, cfg.GRPC.MaxConnections)
	}
}

// answered reads the response to a request sent on c, which must come
// within d.
func answered(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
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

// silentClients keeps n connections to addr open that never send a byte,
// reopening each one the server closes, until the test ends.
func silentClients(t *testing.T, addr string, n int) { squatters(t, addr, n, nil) }

// squatters keeps n connections to addr open that say what greet writes
// (nothing when nil) and then nothing, reopening each one the server
// closes, until the test ends. It returns once each has greeted, with
// the number of connections opened so far, counting on.
func squatters(t *testing.T, addr string, n int, greet func(net.Conn) error) *atomic.Int64 {
	t.Helper()
	var (
		mu      sync.Mutex
		open    = map[net.Conn]bool{}
		stopped bool
		wg      sync.WaitGroup
		greeted sync.WaitGroup
		opened  atomic.Int64
	)
	for range n {
		greeted.Add(1)
		wg.Go(func() {
			first := true
			defer func() {
				if first {
					greeted.Done()
				}
			}()
			for {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				mu.Lock()
				if stopped {
					mu.Unlock()
					c.Close()
					return
				}
				open[c] = true
				mu.Unlock()
				opened.Add(1)
				if greet == nil || greet(c) == nil {
					if first {
						first = false
						greeted.Done()
					}
					_, _ = io.Copy(io.Discard, c) // until the server closes it
				}
				mu.Lock()
				delete(open, c)
				mu.Unlock()
				c.Close()
			}
		})
	}
	t.Cleanup(func() {
		mu.Lock()
		stopped = true
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	done := make(chan struct{})
	go func() { greeted.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second): // a hang guard, not a speed bar
		t.Fatalf("%d squatters never all got in: the listener keeps them waiting", n)
	}
	return &opened
}

// http2Handshake sends the HTTP/2 client preface and an empty SETTINGS
// frame on c, and reads until the server acknowledges them: the server
// has read every byte this client will ever send.
func http2Handshake(c net.Conn) error {
	if _, err := c.Write(append([]byte(http2.ClientPreface), 0, 0, 0, byte(http2.FrameSettings), 0, 0, 0, 0, 0)); err != nil {
		return err
	}
	fr := http2.NewFramer(io.Discard, c)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && sf.IsAck() {
			return nil
		}
	}
}

// probeTimeout is the time a probe gives the listener to answer: the
// kubelet's is 1s, doubled here for a loaded machine, and far under the
// ReadHeaderTimeout a silent connection could otherwise hold its place
// for.
const probeTimeout = 2 * time.Second

// At its connection cap a listener makes room by closing the connection
// that has waited longest without a request in progress: whoever holds
// idle or silent connections cannot keep the kubelet's probes out.
// Connections in the middle of a request keep their places, and a
// newcomer waits for one of them to end.
func TestListenersCapConnections(t *testing.T) {
	cfg := startServer(t, func(c *Config) { c.Metrics.MaxConnections, c.HTTP.MaxConnections = 2, 2 })
	for _, tc := range []struct{ name, addr, path string }{
		{"metrics", cfg.Metrics.Addr, "/healthz"},
		{"http", cfg.HTTP.Addr, "/.well-known/jwks.json"},
	} {
		t.Run(tc.name+"/longest idle makes room", func(t *testing.T) {
			// The server marks a connection idle after the client has read
			// its answer: the second is opened well after, so the first
			// has been idle longest whatever the scheduling.
			first := keptAlive(t, tc.addr, tc.path)
			time.Sleep(300 * time.Millisecond)
			idle := []net.Conn{first, keptAlive(t, tc.addr, tc.path)}
			keptAlive(t, tc.addr, tc.path)
			for i, c := range idle {
				if err := c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
					t.Fatal(err)
				}
				_, err := c.Read(make([]byte, 1))
				if closed := errors.Is(err, io.EOF); closed != (i == 0) {
					t.Errorf("idle connection %d closed: %v, want only the one idle longest (0) closed", i, closed)
				}
			}
		})
		t.Run(tc.name+"/silent make room", func(t *testing.T) {
			silentClients(t, tc.addr, 4)
			for range 5 {
				c := sendRaw(t, tc.addr, getRequest(tc.path))
				answered(t, c, probeTimeout)
				c.Close()
			}
		})
		t.Run(tc.name+"/kept-alive client loses nothing", func(t *testing.T) {
			victim := keptAlive(t, tc.addr, tc.path)
			done := make(chan struct{})
			// answeredVictim has a value each time the victim has its
			// answer: a pusher waits for one after its own answer, so
			// when the next pusher comes, the victim has been idle for
			// less time than that pusher, whatever the scheduling, and a
			// connection closed to make room is never the victim for
			// being idle longest. What is tested is that a connection in
			// use keeps its place, not the race every HTTP keep-alive
			// client has with an idle close.
			answeredVictim := make(chan struct{}, 1)
			var wg sync.WaitGroup
			wg.Go(func() {
				// Connections that ask once and stay idle, one after
				// another, each one pushing for a place.
				for {
					select {
					case <-done:
						return
					default:
					}
					c, err := net.Dial("tcp", tc.addr)
					if err != nil {
						return
					}
					_, _ = io.WriteString(c, getRequest(tc.path))
					_ = c.SetReadDeadline(time.Now().Add(probeTimeout))
					if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
						resp.Body.Close()
					}
					defer c.Close()
					// Wait until the server has written the victim an answer
					// after this pusher's: then the victim has been idle for
					// less time than this pusher. A token already waiting
					// does not count, nor does the first one after it: the
					// victim may read an answer the server wrote before this
					// pusher's (a loaded machine delays its reads), and only
					// the answer to the request it sends after that read is
					// surely later.
					select {
					case <-answeredVictim:
					default:
					}
					for range 2 {
						select {
						case <-done:
							return
						case <-answeredVictim:
						}
					}
				}
			})
			defer func() { close(done); wg.Wait() }()
			r := bufio.NewReader(victim)
			for i := range 1000 {
				if _, err := io.WriteString(victim, getRequest(tc.path)); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if err := victim.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(r, nil)
				if err != nil {
					t.Fatalf("request %d on a kept-alive connection lost: %v", i, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				select {
				case answeredVictim <- struct{}{}:
				default:
				}
			}
		})
		t.Run(tc.name+"/busy keep their places", func(t *testing.T) {
			// A body announced and not sent: the server waits for it,
			// in the middle of a request.
			unfinished := "POST " + tc.path + " HTTP/1.1\r\nHost: deputy\r\nContent-Length: 10\r\n\r\n"
			first := sendRaw(t, tc.addr, unfinished)
			sendRaw(t, tc.addr, unfinished)

			third := sendRaw(t, tc.addr, getRequest(tc.path)) // the kernel's backlog takes it
			if err := third.SetReadDeadline(time.Now().Add(newConnGrace + 300*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			if n, err := third.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("third connection over a cap of 2: read %d bytes, %v; want no answer", n, err)
			}
			first.Close()
			answered(t, third, 10*time.Second)
		})
	}
}

// grpcConn opens a gRPC connection to addr and has one check answered on
// it, so that it holds a place at the listener.
func grpcConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := checkVia(conn); err != nil {
		t.Fatalf("check on a new connection: %v", err)
	}
	return conn
}

// The gRPC listener holds at most grpc.max_connections, as the HTTP ones
// do. A connection that has spoken carries Envoy's multiplexed checks and
// keeps its place: checks on it go on being answered, and a newcomer
// over the cap is not served until one closes. A connection silent since
// it connected makes room, so silent ones cannot keep Envoy or the gRPC
// health probe out.
func TestGRPCListenerCapsConnections(t *testing.T) {
	cfg := startServer(t, func(c *Config) { c.GRPC.MaxConnections = 2 })
	addr := cfg.GRPC.Addr

	t.Run("over the cap waits, existing connections keep working", func(t *testing.T) {
		first, second := grpcConn(t, addr), grpcConn(t, addr)
		third, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer third.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err = authv3.NewAuthorizationClient(third).Check(ctx, &authv3.CheckRequest{})
		cancel()
		if status.Code(err) != codes.DeadlineExceeded && status.Code(err) != codes.Unavailable {
			t.Fatalf("check on a third connection over a cap of 2: %v, want it not served", err)
		}
		for i := range 50 {
			for _, c := range []*grpc.ClientConn{first, second} {
				if err := checkVia(c); err != nil {
					t.Fatalf("check %d on an existing connection: %v", i, err)
				}
			}
		}
		first.Close()
		eventually(t, "the third connection served once the first closed", func() bool { return checkVia(third) == nil })
		if err := checkVia(second); err != nil {
			t.Fatalf("check on the second connection: %v", err)
		}
	})
	t.Run("silent make room", func(t *testing.T) {
		silentClients(t, addr, 4)
		for range 5 {
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
			_, err = authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{})
			cancel()
			conn.Close()
			if err != nil {
				t.Fatalf("check with silent connections at the cap: %v", err)
			}
		}
	})
}

// probeGRPC opens a new connection to addr and asks it for a check and
// for its health, each within probeTimeout, as Envoy and the chart's
// readiness probe do.
func probeGRPC(t *testing.T, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	if _, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{}); err != nil {
		t.Fatalf("check on a new connection: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check on a new connection: %v", err)
	}
}

// A gRPC connection holds its place at the cap from its first RPC, not
// its first byte: connections that complete the HTTP/2 handshake and go
// silent, or that ran an RPC once and went idle, make room, so whoever
// opens enough of them cannot keep Envoy or the readiness probe out.
// Connections that keep checking keep their places while such squatters
// come and go.
func TestGRPCListenerClosesConnectionsWithoutRPCs(t *testing.T) {
	const maxConns = 4
	cfg := startServer(t, func(c *Config) { c.GRPC.MaxConnections = maxConns })
	addr := cfg.GRPC.Addr

	t.Run("handshake then silence makes room", func(t *testing.T) {
		sq := squatters(t, addr, maxConns, http2Handshake)
		for range 5 {
			probeGRPC(t, addr)
		}
		if n := sq.Load(); n <= maxConns {
			t.Fatalf("%d squatter connections opened, want some closed and reopened", n)
		}
	})
	t.Run("a connection that ran an RPC keeps its place", func(t *testing.T) {
		// Idle well past the silent grace while squatters push for its
		// place: Envoy may send its next check at any moment, and one in
		// the socket but not yet counted would be lost with it.
		conn := grpcConn(t, addr)
		sq := squatters(t, addr, maxConns, http2Handshake)
		opened := sq.Load()
		ctx, cancel := context.WithTimeout(context.Background(), 4*silentGrace+time.Second)
		defer cancel()
		if conn.WaitForStateChange(ctx, connectivity.Ready) {
			t.Fatalf("a connection that ran a check left READY (now %v) while squatters came and went", conn.GetState())
		}
		if err := checkVia(conn); err != nil {
			t.Fatalf("check on the kept connection: %v", err)
		}
		if sq.Load() == opened {
			t.Fatal("no squatter connection closed and reopened: the cap was never reached")
		}
	})
	t.Run("busy connections keep working while squatters come and go", func(t *testing.T) {
		busy := []*grpc.ClientConn{grpcConn(t, addr), grpcConn(t, addr)}
		sq := squatters(t, addr, maxConns, http2Handshake)
		opened := sq.Load()
		for i := range 50 {
			for _, c := range busy {
				if err := checkVia(c); err != nil {
					t.Fatalf("check %d on a busy connection: %v", i, err)
				}
			}
		}
		probeGRPC(t, addr)
		for i, c := range busy {
			if err := checkVia(c); err != nil {
				t.Fatalf("check on busy connection %d after the probe: %v", i, err)
			}
		}
		if sq.Load() == opened {
			t.Fatal("no squatter connection closed and reopened: the cap was never reached")
		}
	})
}

// BenchmarkCountRPCs is the cap's cost on every gRPC check: it must not
// allocate.
func BenchmarkCountRPCs(b *testing.B) {
	l := newCapListener(nil, 1)
	server, client := net.Pipe()
	defer client.Close()
	rc := l.newRPCConn(server)
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: rc.RemoteAddr()})
	handler := func(context.Context, any) (any, error) { return nil, nil }
	next := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return h(ctx, req)
	}
	count := countRPCs(next)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := count(ctx, nil, nil, handler); err != nil {
			b.Fatal(err)
		}
	}
	if rc.inFlight.Load() != 0 || !rc.used.Load() {
		b.Fatalf("in flight %d, used %v: the RPCs were not counted", rc.inFlight.Load(), rc.used.Load())
	}
}
