package examples_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// webSocketHandshake sends a WebSocket handshake for target through the
// proxy at base, with h, and returns the response read from the
// connection; after a 101 the caller goes on reading and writing on br
// and c, which the test closes.
func webSocketHandshake(t *testing.T, base, target string, h http.Header) (*http.Response, *bufio.Reader, net.Conn) {
	t.Helper()
	host := strings.TrimPrefix(base, "http://")
	c, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", target, host)
	for name, vals := range h {
		for _, v := range vals {
			fmt.Fprintf(&req, "%s: %s\r\n", name, v)
		}
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(c, req.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp, br, c
}

// After a 101 the connection is a tunnel to the application that Deputy
// is never asked about again. A WebSocket opened while acting for a
// customer would carry operations no rule judged (a GraphQL mutation sent
// as a socket message, on a handshake whose ?query= was harmless; update
// commands on a socket a look grant opened), and would keep the
// customer's identity after the session ends, consent is withdrawn or the
// grant is revoked. The shipped policy refuses the handshake while a
// delegation applies (delegated_upgrade), through the shipped Caddyfile,
// before it reaches the application.
func TestDelegatedUpgradeRefusedThroughCaddy(t *testing.T) {
	d := startDeputy(t, "caddy")
	app := startUpgradeUpstream(t)
	base := startCaddy(t, d, app)
	session, _, _ := impersonate(t, d, base)
	partner := partnerGrant(t, d, base, "look")
	for _, tc := range []struct {
		name, target, path string
		h                  http.Header
	}{
		{"impersonation, GraphQL with a harmless query", "/graphql?query=%7Bwhoami%7D", "/graphql", http.Header{"Cookie": {"deputy_session=" + session.Value}}},
		{"impersonation, a page staff may open", "/customer/account", "/customer/account", http.Header{"Cookie": {"deputy_session=" + session.Value}}},
		{"partner at look, on a route look reads", "/customers/acme/service-requests", "/customers/acme/service-requests", partner},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The same request without the upgrade is allowed: only the
			// tunnel is refused.
			if resp, body := call(t, "GET", base+tc.target, tc.h, nil); resp.StatusCode != http.StatusOK || resp.Header.Get("x-upstream") != "app" {
				t.Fatalf("plain GET: %d %s", resp.StatusCode, body)
			}
			before := app.count()
			resp, br, c := webSocketHandshake(t, base, tc.target, tc.h)
			if resp.StatusCode == http.StatusSwitchingProtocols {
				line, _ := br.ReadString('\n')
				_, _ = io.WriteString(c, "mutation { changeCustomerPassword }\n")
				echo, _ := br.ReadString('\n')
				t.Fatalf("upgraded while acting for a customer: the application got %s, and the socket carried %q to it", strings.TrimSpace(line), strings.TrimSpace(echo))
			}
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("handshake answered %d, want 403", resp.StatusCode)
			}
			if app.count() != before {
				t.Error("the refused handshake reached the application")
			}
			var reasons []string
			eventually(t, 10*time.Second, func() bool {
				reasons = reasons[:0]
				for _, r := range d.records(t, tc.path) {
					reasons = append(reasons, r.Reason)
				}
				return len(reasons) == 2
			}, func() string {
				return fmt.Sprintf("decisions on %s: %q, want the plain GET's and the handshake's", tc.path, reasons)
			})
			if reasons[1] != "delegated_upgrade" {
				t.Errorf("handshake decided %q, want delegated_upgrade", reasons[1])
			}
		})
	}
}

// The Caddyfile holds the line on its own too: with a policy that allows
// a delegated upgrade (one written before delegated_upgrade, or of one's
// own), Caddy proxies the handshake as a plain request whenever Deputy
// injected a delegated identity, so no tunnel opens as the customer. A
// request acting for no one still upgrades.
func TestCaddyTunnelsNoDelegatedUpgrade(t *testing.T) {
	dir := policyDir(t, "permissive", "package permissive\n\ndecision := {\"allowed\": true, \"reason\": \"permissive\"}\n")
	d := startDeputyWith(t, "caddy", dir, "data.permissive.decision")
	app := startUpgradeUpstream(t)
	base := startCaddy(t, d, app)
	session, _, _ := impersonate(t, d, base)

	resp, br, _ := webSocketHandshake(t, base, "/graphql?query=%7Bwhoami%7D", http.Header{"Cookie": {"deputy_session=" + session.Value}})
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		line, _ := br.ReadString('\n')
		t.Fatalf("tunnelled a delegated upgrade; the application got %s", strings.TrimSpace(line))
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("answered %d %s, want the page as plain HTTP/1.1", resp.StatusCode, body)
	}
	s := decodeSeen(t, resp, body)
	if got := s.Headers.Values("X-Deputy-Mode"); len(got) != 1 || got[0] != "impersonation" {
		t.Fatalf("the application got X-Deputy-Mode %q, want the session's", got)
	}
	for _, name := range []string{"Upgrade", "Connection"} {
		if got := s.Headers.Values(name); len(got) != 0 {
			t.Errorf("the application got %s: %q", name, got)
		}
	}

	// No delegation: the upgrade goes through, as before.
	resp, br, c := webSocketHandshake(t, base, "/catalog/live", nil)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("an upgrade acting for no one answered %d %s, want 101", resp.StatusCode, b)
	}
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatalf("reading the application's first line: %v", err)
	}
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if echo, err := br.ReadString('\n'); err != nil || echo != "ping\n" {
		t.Errorf("over the upgraded connection: %q, %v", echo, err)
	}
}

// records are the decisions Deputy has logged so far on path, in order.
func (d *deputy) records(t *testing.T, path string) []record {
	t.Helper()
	var out []record
	for line := range strings.Lines(d.proc.out.String()) {
		var r record
		if json.Unmarshal([]byte(line), &r) == nil && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}
