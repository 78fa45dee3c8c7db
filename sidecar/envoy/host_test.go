package envoy_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/envoy"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// hostSession is the cookie of a live impersonation session of staff-1 as
// cust-9, redeemed on shop.example.
const hostSession = "host-session-token-0123456789abcdef01234567"

// sessionPipeline decides with testPolicy, resolving impersonation
// sessions from a store that holds hostSession, bound to shop.example.
func sessionPipeline(t *testing.T, cfg delegation.ImpersonationConfig) *authz.Pipeline {
	t.Helper()
	store := memory.New()
	now := time.Now()
	s := &sidecar.Session{ID: "imp_1", Actor: "staff-1", ActorRoles: []string{"support_agent"}, Customer: "cust-9",
		StartedAt: now, ExpiresAt: now.Add(time.Hour), Host: "shop.example"}
	if err := storetest.StartRedeemed(context.Background(), store, s, delegation.HashSecret(hostSession)); err != nil {
		t.Fatal(err)
	}
	sessions := resolve.NewSessionResolver(store, cfg)
	t.Cleanup(func() { sessions.Close() })
	return policyPipeline(t, testPolicy, authz.WithResolvers(sessions))
}

// Hosts that a front end and an application read apart. Go's HTTP server
// (Caddy) accepts "," and ";" in Host and forwards it as X-Forwarded-Host;
// Rails' request.host and werkzeug's ProxyFix take its last
// comma-separated value (admin.example), while a reader cutting at the last
// ":" finds shop.example, where the session was redeemed.
var splitHosts = []string{
	"shop.example:1,admin.example",
	"shop.example:,admin.example",
	"shop.example,admin.example",
	"shop.example:80 admin.example",
	"shop.example:1;admin.example",
	"shop.example:80:81",
	"shop.example:",
	"shop.example:0",
	"shop.example..",
}

// Over gRPC (Envoy's :authority, the check's host) the session is honoured
// on the host it was redeemed on, in any letter case, with a port or a
// trailing dot; a host in a form no client sends is refused with 400
// before policy, never read as the session's host.
func TestHostReadStrictlyOverGRPC(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  delegation.ImpersonationConfig
	}{
		{"bound to the redeem host", delegation.ImpersonationDefaults()},
		{"storefront_hosts", func() delegation.ImpersonationConfig {
			c := delegation.ImpersonationDefaults()
			c.StorefrontHosts = []string{"shop.example"}
			return c
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, _ := serveGRPC(t, sessionPipeline(t, tc.cfg), 64<<10)
			ask := func(t *testing.T, host string) (subject string, status int32) {
				t.Helper()
				req := check("/ok", map[string]string{"cookie": "deputy_session=" + hostSession, ":authority": host})
				req.Attributes.Request.Http.Host = host
				resp, err := client.Check(context.Background(), req)
				if err != nil {
					t.Fatal(err)
				}
				for _, h := range resp.GetOkResponse().GetHeaders() {
					if h.GetHeader().GetKey() == "x-deputy-subject" {
						subject = h.GetHeader().GetValue()
					}
				}
				return subject, int32(resp.GetDeniedResponse().GetStatus().GetCode())
			}
			for _, host := range []string{"shop.example", "SHOP.example.", "shop.example:8443"} {
				if subject, status := ask(t, host); subject != "cust-9" {
					t.Errorf("%q: subject %q (denied %d), want the session's cust-9", host, subject, status)
				}
			}
			if subject, _ := ask(t, "admin.example"); subject != "" {
				t.Errorf("admin.example: the session is honoured as %q", subject)
			}
			for _, host := range splitHosts {
				if subject, status := ask(t, host); subject != "" || status != http.StatusBadRequest {
					t.Errorf("%q: subject %q, denied %d; want a 400 refusal", host, subject, status)
				}
			}
		})
	}
}

// The HTTP check reads the host from the header the configured proxy sets
// (X-Forwarded-Host behind nginx and Caddy, Host for Envoy's http_service),
// over a real loopback listener: Go's server takes the comma host as sent.
// A form no client sends is refused with 400 naming the header, whatever
// the proxy.
func TestHostReadStrictlyOverHTTP(t *testing.T) {
	p := sessionPipeline(t, delegation.ImpersonationDefaults())
	handlers := map[string]http.Handler{
		"envoy": envoy.NewHTTPHandler(p, envoy.WithPathPrefix("/ext_authz")),
		"nginx": envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyNginx), envoy.WithOwned(p.Owned)),
		"caddy": envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyCaddy), envoy.WithOwned(p.Owned)),
	}
	for name, handler := range handlers {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(handler)
			t.Cleanup(srv.Close)
			ask := func(t *testing.T, host string) (subject string, status int, body string) {
				t.Helper()
				var raw string
				switch name {
				case "envoy":
					raw = "GET /ext_authz/plain HTTP/1.1\r\nHost: " + host + "\r\n"
				case "nginx":
					raw = "GET /deputy/authz HTTP/1.1\r\nHost: deputy\r\nX-Original-URI: /plain\r\nX-Original-Method: GET\r\nX-Forwarded-Host: " + host + "\r\n"
				case "caddy":
					raw = "GET /deputy/authz HTTP/1.1\r\nHost: 127.0.0.1:8181\r\nX-Forwarded-Uri: /plain\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Host: " + host + "\r\n"
				}
				raw += "Cookie: deputy_session=" + hostSession + "\r\nConnection: close\r\n\r\n"
				conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if _, err := io.WriteString(conn, raw); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.Header.Get("x-deputy-subject"), resp.StatusCode, string(b)
			}
			if subject, status, body := ask(t, "Shop.Example:8080"); status != http.StatusOK || subject != "cust-9" {
				t.Fatalf("on the session's host: %d subject %q %s", status, subject, body)
			}
			header := "X-Forwarded-Host"
			if name == "envoy" {
				header = "host"
			}
			for _, host := range splitHosts {
				subject, status, body := ask(t, host)
				if name == "envoy" && status == http.StatusBadRequest && strings.HasPrefix(body, "400 Bad Request") {
					continue // Go's server refused it before the check
				}
				if status != http.StatusBadRequest || subject != "" || !strings.Contains(body, header) {
					t.Errorf("%q: %d subject %q body %q; want a 400 naming %s", host, status, subject, body, header)
				}
			}
		})
	}
}
