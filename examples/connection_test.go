package examples_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// nominated are the headers a hostile client names in its Connection
// header: each one Deputy's answer or the proxy sets on the request to the
// application. A proxy that honours the Connection header removes the
// headers it names after the request is built (Caddy's reverse_proxy does,
// as Go's does), which would take Deputy's actor, mode, actor token and
// cache bypass off an impersonated request: to the application, the
// customer acting alone.
var nominated = []string{
	"X-Deputy-Subject", "X-Deputy-Actor", "x-deputy-mode", "X-Deputy-Level", "X-Deputy-Session",
	"X-Deputy-Store-View", "X-Deputy-Subject-Name", "X-DEPUTY-TOKEN", "X-Deputy-Decision-Id",
	"Cache-Control", "X-On-Behalf-Of", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
}

// A Connection header naming the headers the application relies on from
// Deputy and the proxy changes nothing the application receives: every
// one of them arrives as it does on the same request without those names.
// nginx never honoured such names; Caddy did until the config replaced a
// client's Connection header.
func TestConnectionNamesNoHeaderThroughProxy(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)
			session, _, _ := impersonate(t, d, base)
			staff := http.Header{"Cookie": {"deputy_session=" + session.Value}}
			partner := partnerGrant(t, d, base, "look")
			for _, tc := range []struct {
				name, path string
				h          http.Header
				relied     []string // headers the request without names must carry
			}{
				{"impersonation", "/customer/account", staff,
					[]string{"X-Deputy-Subject", "X-Deputy-Actor", "X-Deputy-Mode", "X-Deputy-Session", "X-Deputy-Token", "X-Deputy-Decision-Id", "Cache-Control", "X-Forwarded-For"}},
				{"partner", "/customers/acme/service-requests/42", partner,
					[]string{"X-Deputy-Subject", "X-Deputy-Actor", "X-Deputy-Level", "X-On-Behalf-Of", "X-Forwarded-For"}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp, body := callRaw(t, base, tc.path, tc.h)
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("without names: %d %s", resp.StatusCode, body)
					}
					want := decodeSeen(t, resp, body).Headers
					for _, name := range tc.relied {
						if len(want.Values(name)) == 0 {
							t.Fatalf("without names the application got no %s: %q", name, want)
						}
					}
					names := strings.Join(nominated, ", ")
					for _, variant := range []struct {
						name string
						send func() (*http.Response, []byte)
					}{
						// callRaw sends "Connection: close" first: the names
						// come in a second field.
						{"in a second field", func() (*http.Response, []byte) {
							h := tc.h.Clone()
							h.Set("Connection", names)
							return callRaw(t, base, tc.path, h)
						}},
						{"in one field after keep-alive", func() (*http.Response, []byte) {
							h := tc.h.Clone()
							h.Set("Connection", "keep-alive, "+names)
							return call(t, "GET", base+tc.path, h, nil)
						}},
					} {
						t.Run(variant.name, func(t *testing.T) {
							resp, body := variant.send()
							if resp.StatusCode != http.StatusOK {
								t.Fatalf("with names: %d %s", resp.StatusCode, body)
							}
							got := decodeSeen(t, resp, body).Headers
							for _, name := range nominated {
								w, g := want.Values(name), got.Values(name)
								switch {
								case len(w) != len(g):
									t.Errorf("the application got %s: %q, without names %q", name, g, w)
								case http.CanonicalHeaderKey(name) == "X-Deputy-Decision-Id" || http.CanonicalHeaderKey(name) == "X-Deputy-Token":
									// Deputy's own per request: present is what counts.
								case strings.Join(w, "\n") != strings.Join(g, "\n"):
									t.Errorf("the application got %s: %q, without names %q", name, g, w)
								}
							}
							if c := got.Values("Connection"); len(c) != 0 {
								t.Errorf("the application got the client's Connection %q", c)
							}
						})
					}
				})
			}
		})
	}
}

// A WebSocket upgrade still works through Caddy for a signed-in customer's
// own socket: the application receives Connection: Upgrade and Upgrade,
// answers 101, and bytes flow both ways over the upgraded connection, also
// when the client names Deputy's headers beside the upgrade token. (While
// a delegation applies no upgrade goes through:
// TestDelegatedUpgradeRefusedThroughCaddy. The shipped nginx config
// proxies no upgrades: it sends the application Connection "" and no
// Upgrade.)
func TestUpgradeThroughCaddy(t *testing.T) {
	d := startDeputy(t, "caddy")
	app := startUpgradeUpstream(t)
	base := startCaddy(t, d, app)
	customer := d.token(t, "--sub", "c42", "--roles", "customer")
	for _, connection := range []string{
		"Upgrade",
		"keep-alive, upgrade",
		"Upgrade, " + strings.Join(nominated, ", "),
	} {
		t.Run(connection, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "GET /customer/account HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
				"Connection: %s\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
				strings.TrimPrefix(base, "http://"), customer, connection)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("upgrade answered %d %s", resp.StatusCode, b)
			}
			// The application's first line on the upgraded connection is
			// what it received.
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the application's first line: %v", err)
			}
			var s seen
			if err := json.Unmarshal([]byte(line), &s); err != nil {
				t.Fatalf("%v: %q", err, line)
			}
			for name, want := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"} {
				if got := s.Headers.Values(name); len(got) != 1 || !strings.EqualFold(got[0], want) {
					t.Errorf("the application got %s: %q, want %q", name, got, want)
				}
			}
			for _, name := range []string{"X-Deputy-Subject", "X-Deputy-Actor", "X-Deputy-Mode", "X-Deputy-Token"} {
				if got := s.Headers.Values(name); len(got) != 0 {
					t.Errorf("the application got %s: %q on a request acting for no one", name, got)
				}
			}
			if _, err := io.WriteString(c, "ping\n"); err != nil {
				t.Fatal(err)
			}
			if echo, err := br.ReadString('\n'); err != nil || echo != "ping\n" {
				t.Errorf("over the upgraded connection: %q, %v", echo, err)
			}
		})
	}
}

// startUpgradeUpstream is an application that takes any upgrade request:
// it answers 101, writes the request it received as one JSON line, then
// echoes what the client sends. Other requests get the usual echo.
func startUpgradeUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hits++
		u.mu.Unlock()
		echo, _ := json.Marshal(seen{Method: r.Method, Path: r.URL.RequestURI(), Headers: r.Header})
		if r.Header.Get("Upgrade") == "" {
			w.Header().Set("content-type", "application/json")
			w.Header().Set("x-upstream", "app")
			_, _ = w.Write(echo)
			return
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\nX-Upstream: app\r\n\r\n%s\n", r.Header.Get("Upgrade"), echo)
		if rw.Flush() != nil {
			return
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(c, rw)
	}))
	t.Cleanup(u.Close)
	return u
}

// An upgrade to anything but WebSocket is dropped at Caddy: after a 101
// the connection is a tunnel to the application that Deputy never sees
// again. An application that takes "Upgrade: h2c" (the upgrade curl
// --http2 asks for on http://) would then read HTTP/2 requests the
// client sends down the tunnel, unchecked, with any x-deputy-* headers
// the client likes. The request goes on as plain HTTP/1.1, which is what
// an upgrade refused by the server means to the client.
func TestUpgradeOtherThanWebSocketDroppedThroughCaddy(t *testing.T) {
	d := startDeputy(t, "caddy")
	app := startUpgradeUpstream(t)
	base := startCaddy(t, d, app)
	for _, tc := range []struct{ connection, upgrade string }{
		// Two Upgrade fields: reverse_proxy upgrades to the first.
		{"Upgrade, HTTP2-Settings", "h2c\r\nUpgrade: websocket"},
		{"Upgrade", "x-private\r\nUpgrade: websocket"},
		{"Upgrade", "websocket\r\nUpgrade: h2c"},
		{"Upgrade", "websocket\r\nUpgrade: websocket"},
		{"Upgrade, HTTP2-Settings", "h2c"},
		{"upgrade", "H2C"},
		{"Upgrade", "websocket, h2c"},
		{"Upgrade", "h2c, websocket"},
		{"Upgrade", "TLS/1.2"},
		{"Upgrade", "x-private"},
	} {
		t.Run(tc.upgrade, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "GET /catalog/shoes HTTP/1.1\r\nHost: %s\r\nConnection: %s\r\nUpgrade: %s\r\n"+
				"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", strings.TrimPrefix(base, "http://"), tc.connection, tc.upgrade)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode == http.StatusSwitchingProtocols {
				t.Fatalf("upgraded to %q through Caddy", resp.Header.Get("Upgrade"))
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("answered %d %s, want the page as plain HTTP/1.1", resp.StatusCode, body)
			}
			var s seen
			if err := json.Unmarshal(body, &s); err != nil {
				t.Fatalf("%v: %q", err, body)
			}
			if got := s.Headers.Values("Upgrade"); len(got) != 0 {
				t.Errorf("the application got Upgrade: %q", got)
			}
		})
	}
}
