// Package redistest starts real redis-server processes for tests: a single
// node on a free loopback port, or a small Redis Cluster. The binaries are
// found on PATH; when they are missing the test fails (make test installs
// them), it never skips.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// startWait bounds how long a server may take to answer PING.
const startWait = 15 * time.Second

// ReplyTimeout is the read and write timeout for a test's store where the
// test is not about faults: a machine loaded by the rest of the test run
// can take longer than the production default (500 ms) to answer, and an
// i/o timeout there would fail a case for a reason it does not test.
const ReplyTimeout = 10 * time.Second

// AckTimeout is the invalidation_ack_timeout for a test's store where the
// test is not about a replica that fails to confirm: the replicas are in
// the test's process, and how soon they confirm a narrowing write on a
// machine loaded by the rest of the test run is that machine's speed.
// The production default (2 s) would answer such a write Unpublished and
// fail a case for a reason it does not test.
const AckTimeout = 10 * time.Second

// Server is one redis-server process owned by a test.
type Server struct {
	Addr string
	Port int

	t    testing.TB
	dir  string
	args []string
	conf string // a Sentinel's config file: redis-server wants it first

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts a redis-server with no persistence on a free loopback port
// and stops it when the test ends. Extra arguments go to redis-server.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	var lastErr error
	for range 5 { // a free port can be taken between probing and binding
		port, err := freePort(false)
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s := &Server{Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), t: t, dir: t.TempDir(), args: args}
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

// StartSentinel starts a Sentinel (redis-server --sentinel) on a free
// loopback port, monitoring master under name with a quorum of one, and
// stops it when the test ends. Clients with master_name name find the
// master through it.
func StartSentinel(t testing.TB, name string, master *Server) *Server {
	t.Helper()
	var lastErr error
	for range 5 {
		port, err := freePort(false)
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		dir := t.TempDir()
		conf := dir + "/sentinel.conf"
		if err := os.WriteFile(conf, []byte("sentinel monitor "+name+" 127.0.0.1 "+strconv.Itoa(master.Port)+" 1\n"), 0o600); err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s := &Server{Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), t: t, dir: dir, conf: conf}
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("redistest: start redis-server --sentinel: %v", lastErr)
	return nil
}

// StartReplica starts a redis-server replicating master, and returns
// once master counts it as an online replica (INFO replication) that has
// caught up: a write to master from then on reaches it, and WAIT counts
// it.
func StartReplica(t testing.TB, master *Server) *Server {
	t.Helper()
	ctx := context.Background()
	mc := goredis.NewClient(&goredis.Options{Addr: master.Addr})
	defer mc.Close()
	// Redis waits 5 s for more replicas before a diskless full sync.
	if err := mc.ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	r := Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	rc := goredis.NewClient(&goredis.Options{Addr: r.Addr})
	defer rc.Close()
	online := "port=" + strconv.Itoa(r.Port) + ",state=online"
	for deadline := time.Now().Add(startWait); ; time.Sleep(20 * time.Millisecond) {
		mi, merr := mc.Info(ctx, "replication").Result()
		ri, rerr := rc.Info(ctx, "replication").Result()
		if merr == nil && rerr == nil && strings.Contains(mi, online) && strings.Contains(ri, "master_link_status:up") {
			// WAIT 1 returns at once only when it has acknowledged
			// everything master wrote so far.
			if n, err := mc.Wait(ctx, 1, time.Second).Result(); err == nil && n >= 1 {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: replica %s of %s not online: %v %v\n%s\n%s", r.Addr, master.Addr, merr, rerr, mi, ri)
		}
	}
}

func binary(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found on PATH (install redis-server; make test does): %w", name, err)
	}
	return p, nil
}

func (s *Server) start() error {
	bin, err := binary("redis-server")
	if err != nil {
		s.t.Fatalf("redistest: %v", err)
	}
	var argv []string
	if s.conf != "" {
		argv = []string{s.conf, "--sentinel"}
	}
	argv = append(argv, "--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--protected-mode", "no", "--logfile", "")
	argv = append(argv, s.args...)
	cmd := exec.Command(bin, argv...)
	out, _ := os.Create(s.dir + "/redis.log")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = out.Close(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	c := goredis.NewClient(&goredis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(startWait)
	for {
		select {
		case <-done:
			log, _ := os.ReadFile(s.dir + "/redis.log")
			return fmt.Errorf("redis-server exited: %s", lastLines(string(log), 5))
		default:
		}
		if err := c.Ping(context.Background()).Err(); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server on %s not answering: %w", s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func (s *Server) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Stop kills the server (as a crash would). Calling it twice is fine.
func (s *Server) Stop() { s.kill() }

// Freeze stops the server process (SIGSTOP) without closing anything:
// connections stay open and commands get no reply, as with a Redis stuck
// on a slow disk or a long command. Thaw resumes it; the test's end
// resumes it too.
func (s *Server) Freeze() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP)
	s.t.Cleanup(s.Thaw)
}

// Thaw resumes a frozen server (SIGCONT). Calling it twice is fine.
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Errorf("redistest: %v to redis-server: %v", sig, err)
	}
}

// Restart starts the server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.kill()
	var err error
	for range 50 { // the port may linger briefly after the kill
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart on %s: %v", s.Addr, err)
}

// Client returns a go-redis client for the server, closed when the test ends.
func (s *Server) Client() *goredis.Client {
	c := goredis.NewClient(&goredis.Options{Addr: s.Addr})
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// freePort finds a free loopback port. For cluster nodes the bus port
// (port+10000) must be free too.
func freePort(cluster bool) (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if !cluster {
			return port, nil
		}
		if port+10000 > 65535 {
			continue
		}
		bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		if err != nil {
			continue
		}
		_ = bus.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port pair for a cluster node")
}

// Cluster is a Redis Cluster of master nodes on loopback.
type Cluster struct {
	Addrs []string
	Nodes []*Server
}

// StartCluster starts n cluster-enabled nodes, joins them with
// redis-cli --cluster create (no replicas) and waits for cluster_state:ok.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	cli, err := binary("redis-cli")
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	c := &Cluster{}
	for range n {
		var node *Server
		for range 5 {
			port, err := freePort(true)
			if err != nil {
				t.Fatalf("redistest: %v", err)
			}
			// A node that answers no gossip for cluster-node-timeout is
			// failed by the others, and with no replicas the cluster
			// answers CLUSTERDOWN until it recovers. On a loaded test
			// machine a node can starve for 5 s; no test here fails a
			// node over, so only a long timeout is right.
			s := &Server{Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), t: t, dir: t.TempDir(),
				args: []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "60000"}}
			if err = s.start(); err == nil {
				node = s
				break
			}
		}
		if node == nil {
			t.Fatalf("redistest: could not start cluster node")
		}
		t.Cleanup(node.Stop)
		c.Nodes = append(c.Nodes, node)
		c.Addrs = append(c.Addrs, node.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(startWait)
	for _, node := range c.Nodes {
		cl := goredis.NewClient(&goredis.Options{Addr: node.Addr})
		for {
			info, err := cl.ClusterInfo(context.Background()).Result()
			if err == nil && clusterOK(info) {
				break
			}
			if time.Now().After(deadline) {
				_ = cl.Close()
				t.Fatalf("redistest: cluster not ok on %s: %v %s", node.Addr, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cl.Close()
	}
	return c
}

func clusterOK(info string) bool {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "cluster_state:ok" {
			return true
		}
	}
	return false
}

// Client returns a cluster client, closed when the test ends.
func (c *Cluster) Client(t testing.TB) *goredis.ClusterClient {
	cl := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs})
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}
