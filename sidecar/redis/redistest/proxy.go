package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy in front of a real redis-server that counts the
// commands clients send and can cut every connection at a chosen command,
// to test what a management write leaves behind when Redis goes away in
// the middle of it.
//
// Commands are counted as Redis reads them: each element of a pipeline,
// and MULTI, every queued command and EXEC each count as one. The
// connection handshake (HELLO, CLIENT SETINFO) counts too, so a test
// sweeps every cut point of an operation rather than guessing one.
type Proxy struct {
	Addr string

	t      testing.TB
	target string
	ln     net.Listener

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	count   int                   // commands forwarded since the last Reset
	cutAt   int                   // forward this many commands, then cut; -1: never
	cutOn   string                // cut at the first command holding this; "": never
	cut     bool                  // cut happened: refuse connections until Reset
	deaf    bool                  // Deafen: no subscription until Reset
	subs    map[net.Conn]struct{} // client connections that subscribed
	server  map[net.Conn]net.Conn // each client connection's server side
	silent  bool                  // Silence: subscriptions dropped unheard until Reset
	hold    int                   // Hold: new connections still to hold
	held    []net.Conn            // accepted, never answered
	lose    string                // LoseReply: the command whose reply to lose
	muted   map[net.Conn]struct{} // client connections whose replies are dropped
	stallOn []byte                // StallOn: what a command holds to stall its connection
	stalled map[net.Conn]struct{} // client connections stalled by StallOn, still open
	nstalls int                   // connections StallOn stalled since the last Reset
	delayOn []byte                // DelayOn: what the command to hold late holds
	delay   time.Duration         // DelayOn: how long to hold it
	stopped bool
	done    chan struct{} // closed by Stop: ends a DelayOn hold
	wg      sync.WaitGroup
}

// StartProxy listens on a free loopback port in front of target (host:port
// of a redis-server) and stops when the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: proxy listen: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), t: t, target: target, ln: ln, conns: map[net.Conn]struct{}{}, subs: map[net.Conn]struct{}{},
		muted: map[net.Conn]struct{}{}, stalled: map[net.Conn]struct{}{}, server: map[net.Conn]net.Conn{}, cutAt: -1, done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Stop)
	return p
}

// CutAfter lets n more commands through (counted from the last Reset),
// then closes every connection instead of forwarding the next one, and
// refuses new connections until Reset: Redis is gone from the client's
// point of view, after exactly n commands reached it.
func (p *Proxy) CutAfter(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutAt = p.count + n
	if n == 0 {
		p.cutLocked()
	}
}

// CutOn closes every connection instead of forwarding the first command
// (but a handshake) that holds part, and refuses new connections until
// Reset: Redis is gone from the client's point of view right before that
// command, after everything the client sent before it.
func (p *Proxy) CutOn(part string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutOn = part
}

// Reset heals the proxy: connections are accepted again, no cut is
// planned and the command count starts from zero.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.count, p.cutAt, p.cutOn, p.cut, p.deaf, p.hold, p.lose, p.stallOn, p.delayOn = 0, -1, "", false, false, 0, "", nil, nil
	p.silent = false
	p.releaseHeld()
	for c := range p.stalled {
		_ = c.Close()
	}
	clear(p.stalled)
	p.nstalls = 0
}

// StallOn stalls, until Reset, every connection that sends a command
// holding s (a key name, say): that command and every later one on the
// connection are swallowed, never reaching Redis, and the connection
// stays open, as to a Redis that stopped answering that client alone.
// Other connections keep working. Reset closes the stalled ones.
func (p *Proxy) StallOn(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stallOn = []byte(s)
}

// DelayOn holds the next command holding s (a key name, say) for d, then
// forwards it to Redis, which runs it, whether or not its client still
// waits: a client that gave up meanwhile (its read timeout) has closed
// its side, and the server side stays open long enough for Redis to run
// the command. Commands after it on that connection wait behind it;
// other connections keep working. The write arrives late, as over a
// stalled link or through a stalling middlebox, after its client was
// told it failed.
func (p *Proxy) DelayOn(s string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delayOn, p.delay = []byte(s), d
}

// Stalled is how many connections StallOn stalled since the last Reset,
// those their client has closed since (after its timeout) included.
func (p *Proxy) Stalled() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nstalls
}

// Deafen closes every connection that subscribed to a channel and closes
// any that tries again, until Reset; other connections keep working: the
// client is cut from pub/sub while Redis still answers its commands.
func (p *Proxy) Deafen() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deaf = true
	for c := range p.subs {
		_ = c.Close()
	}
}

// Silence drops every subscription from Redis without its client
// hearing of it, until Reset: the server side of each connection that
// subscribed is closed, so Redis forgets the subscription (a PUBLISH no
// longer counts it), while the client side stays open and silent,
// swallowing what the client sends, as StallOn does. A connection that
// subscribes meanwhile is silenced as it subscribes. The client learns
// only from its own pings going unanswered: as a replica does that was
// paused, or cut by a partition, while Redis dropped its subscription
// (CLIENT KILL, an output buffer limit, a restart). Reset closes the
// silenced connections.
func (p *Proxy) Silence() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.silent = true
	for c := range p.subs {
		p.silenceLocked(c)
	}
}

// silenceLocked stalls client c and closes its server side; p.mu is
// held.
func (p *Proxy) silenceLocked(c net.Conn) {
	p.stalled[c] = struct{}{}
	if srv := p.server[c]; srv != nil {
		_ = srv.Close()
	}
}

// Hold closes every connection that subscribed to a channel and holds
// the next n new connections (accepted, never answered, as by a Redis
// that does not get to them) until Reset or Stop; connections after
// those are forwarded as usual, and the others keep working. A client
// whose subscription closed then hangs if it dials again.
func (p *Proxy) Hold(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = n
	for c := range p.subs {
		_ = c.Close()
	}
}

// LoseReply makes the next command named name (any case: "exec" for a
// transaction) reach Redis, which runs it, while the connection that sent
// it never gets its reply: that connection closes as the command is
// forwarded, and its server side is kept open until Redis had time to
// answer, so the command is not cut short. Other connections keep
// working: one reply is lost, as when a connection breaks after Redis
// applied a write, and the client cannot tell whether the write happened.
func (p *Proxy) LoseReply(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lose = name
}

// LosingReply reports whether the command LoseReply named is still to
// come: false once its reply was lost (or after Reset).
func (p *Proxy) LosingReply() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lose != ""
}

// Commands is how many commands were forwarded since the last Reset.
func (p *Proxy) Commands() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

// WasCut reports whether the planned cut happened.
func (p *Proxy) WasCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

// Stop closes the listener and every connection.
func (p *Proxy) Stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	close(p.done)
	_ = p.ln.Close()
	for c := range p.conns {
		_ = c.Close()
	}
	p.releaseHeld()
	p.mu.Unlock()
	p.wg.Wait()
}

// releaseHeld closes the held connections; p.mu is held.
func (p *Proxy) releaseHeld() {
	for _, c := range p.held {
		_ = c.Close()
	}
	p.held = nil
}

// cutLocked closes every open connection; p.mu is held.
func (p *Proxy) cutLocked() {
	p.cut = true
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.cut || p.stopped
		hold := !refuse && p.hold > 0
		if hold {
			p.hold--
			p.held = append(p.held, client)
		}
		p.mu.Unlock()
		if refuse {
			_ = client.Close()
			continue
		}
		if hold {
			continue
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		if p.stopped || p.cut {
			p.mu.Unlock()
			_ = client.Close()
			_ = server.Close()
			continue
		}
		p.conns[client], p.conns[server] = struct{}{}, struct{}{}
		p.server[client] = server
		p.wg.Add(2)
		p.mu.Unlock()
		go p.replies(client, server)
		go p.commands(client, server)
	}
}

func (p *Proxy) forget(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
		delete(p.conns, c)
		delete(p.subs, c)
		delete(p.muted, c)
		delete(p.stalled, c)
		delete(p.server, c)
	}
}

// replies copies the server's answers back unchanged, or drops them once
// the connection is muted by LoseReply.
func (p *Proxy) replies(client, server net.Conn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		_, silenced := p.stalled[client]
		p.mu.Unlock()
		if silenced {
			// Silence closed the server side: the client side stays
			// open and silent; commands forgets both when it closes.
			_ = server.Close()
			return
		}
		p.forget(client, server)
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			p.mu.Lock()
			_, muted := p.muted[client]
			p.mu.Unlock()
			if !muted {
				if _, werr := client.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// lostReplyGrace is how long the server side of a connection whose reply
// is lost stays open after the command: far more than Redis takes to run
// it on loopback.
const lostReplyGrace = time.Second

// commands forwards the client's commands one at a time, counting them,
// and cuts when the planned count is reached.
func (p *Proxy) commands(client, server net.Conn) {
	defer p.wg.Done()
	lost, late := false, false
	defer func() {
		switch {
		case lost:
		case late:
			// As for a lost reply: the client is gone, replies closes
			// both once Redis had time to run the late command.
			_ = server.SetReadDeadline(time.Now().Add(lostReplyGrace))
			_ = client.Close()
		default:
			p.forget(client, server)
		}
	}()
	r := bufio.NewReader(client)
	for {
		cmd, err := readCommand(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				p.t.Logf("redistest: proxy: %v", err)
			}
			return
		}
		handshake := isHandshake(cmd)
		subscribe := false
		switch strings.ToLower(commandName(cmd)) {
		case "subscribe", "ssubscribe", "psubscribe":
			subscribe = true
		}
		p.mu.Lock()
		if subscribe {
			if p.deaf {
				p.mu.Unlock()
				return
			}
			p.subs[client] = struct{}{}
			if p.silent {
				p.silenceLocked(client)
			}
		}
		if p.cut || (!handshake && p.cutAt >= 0 && p.count >= p.cutAt) ||
			(!handshake && p.cutOn != "" && bytes.Contains(cmd, []byte(p.cutOn))) {
			p.cutLocked()
			p.mu.Unlock()
			return
		}
		if _, ok := p.stalled[client]; ok || (len(p.stallOn) > 0 && bytes.Contains(cmd, p.stallOn)) {
			if !ok {
				p.nstalls++
			}
			p.stalled[client] = struct{}{}
			p.mu.Unlock()
			continue
		}
		if !handshake {
			p.count++
		}
		if !handshake && p.lose != "" && strings.EqualFold(commandName(cmd), p.lose) {
			p.lose, lost = "", true
			p.muted[client] = struct{}{}
		}
		var delay time.Duration
		if !handshake && len(p.delayOn) > 0 && bytes.Contains(cmd, p.delayOn) {
			p.delayOn, delay = nil, p.delay
		}
		p.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-p.done:
				return
			}
			late = true
		}
		if _, err := server.Write(cmd); err != nil {
			return
		}
		if lost {
			// replies drops the answer and closes both sides once the
			// server side has been quiet for the grace.
			_ = server.SetReadDeadline(time.Now().Add(lostReplyGrace))
			_ = client.Close()
			return
		}
	}
}

// isHandshake reports whether cmd is one of the commands a client sends
// when it opens a connection.
func isHandshake(cmd []byte) bool {
	name := commandName(cmd)
	for _, h := range []string{"hello", "auth", "client", "select", "readonly"} {
		if strings.EqualFold(name, h) {
			return true
		}
	}
	return false
}

// commandName is the first word of a command read by readCommand.
func commandName(cmd []byte) string {
	if cmd[0] != '*' {
		name, _, _ := strings.Cut(strings.TrimSpace(string(cmd)), " ")
		return name
	}
	// *n\r\n$len\r\nname\r\n
	_, rest, _ := strings.Cut(string(cmd), "\r\n")
	_, rest, _ = strings.Cut(rest, "\r\n")
	name, _, _ := strings.Cut(rest, "\r\n")
	return name
}

// readCommand reads one client command in RESP: an array of bulk strings
// (what every client library sends) or an inline command line.
func readCommand(r *bufio.Reader) ([]byte, error) {
	head, err := readLine(r)
	if err != nil {
		return nil, err
	}
	if head[0] != '*' {
		return head, nil // inline command: one line
	}
	n, err := strconv.Atoi(string(head[1 : len(head)-2]))
	if err != nil || n < 0 {
		return nil, fmt.Errorf("malformed array header %q", head)
	}
	out := head
	for range n {
		line, err := readLine(r)
		if err != nil {
			return nil, err
		}
		if line[0] != '$' {
			return nil, fmt.Errorf("expected a bulk string, got %q", line)
		}
		size, err := strconv.Atoi(string(line[1 : len(line)-2]))
		if err != nil || size < 0 {
			return nil, fmt.Errorf("malformed bulk header %q", line)
		}
		out = append(out, line...)
		body := make([]byte, size+2)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, err
		}
		out = append(out, body...)
	}
	return out, nil
}

// readLine reads up to and including "\r\n" (a copy, safe to keep).
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("malformed line %q", line)
	}
	return line, nil
}
