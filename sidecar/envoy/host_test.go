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
func sessionPipeline(t *testing.T, cfg delegation.ImpersonationConfig, opts ...authz.Option) *authz.Pipeline {
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
	return policyPipeline(t, testPolicy, append([]authz.Option{authz.WithResolvers(sessions)}, opts...)...)
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

// askRaw writes raw, a whole request, to addr over loopback and returns
// the status and the subject Deputy's answer names.
func askRaw(t *testing.T, addr, raw string) (status int, subject, body string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
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
	return resp.StatusCode, resp.Header.Get("x-deputy-subject"), string(b)
}

// On the forwarded check (nginx, Caddy, Traefik) the host is the proxy's
// X-Forwarded-Host alone: without one, or with an empty one (Caddy's for
// a request naming none), the request named no host and is decided on
// none, as Envoy's check naming none is, never on the check's own Host,
// which is the proxy's subrequest's (nginx's upstream name, Caddy's and
// Traefik's address for Deputy). No session is honoured on it, whatever
// that Host says. Envoy's http_service passes the original host as the
// check's Host, and only that is read there.
func TestForwardedCheckHostIsTheProxysAlone(t *testing.T) {
	rec := &lockedRecorder{}
	p := sessionPipeline(t, delegation.ImpersonationDefaults(), authz.WithDecisionLogger(rec))
	cookie := "Cookie: deputy_session=" + hostSession + "\r\n"
	type probe struct {
		name, head string
		status     int
		subject    string
		logged     string
	}
	forwarded := func(request string) []probe {
		return []probe{
			{name: "X-Forwarded-Host names the host", head: "HTTP/1.1\r\nHost: deputy\r\n" + request + "X-Forwarded-Host: shop.example\r\n",
				status: http.StatusOK, subject: "cust-9", logged: "shop.example"},
			{name: "no X-Forwarded-Host, the subrequest's Host the session's", head: "HTTP/1.1\r\nHost: shop.example\r\n" + request,
				status: http.StatusOK, logged: ""},
			{name: "an empty X-Forwarded-Host", head: "HTTP/1.1\r\nHost: shop.example\r\n" + request + "X-Forwarded-Host: \r\n",
				status: http.StatusOK, logged: ""},
			{name: "HTTP/1.0 naming no host at all", head: "HTTP/1.0\r\n" + request,
				status: http.StatusOK, logged: ""},
			{name: "two X-Forwarded-Host", head: "HTTP/1.1\r\nHost: deputy\r\n" + request + "X-Forwarded-Host: shop.example\r\nX-Forwarded-Host: \r\n",
				status: http.StatusBadRequest},
		}
	}
	for _, tc := range []struct {
		name    string
		handler http.Handler
		target  string
		probes  []probe
	}{
		{"nginx", envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyNginx), envoy.WithOwned(p.Owned)),
			"/deputy/authz", forwarded("X-Original-URI: /plain\r\nX-Original-Method: GET\r\n")},
		{"caddy", envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyCaddy), envoy.WithOwned(p.Owned)),
			"/deputy/authz", forwarded("X-Forwarded-Uri: /plain\r\nX-Forwarded-Method: GET\r\n")},
		{"traefik", envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyTraefik), envoy.WithOwned(p.Owned)),
			"/deputy/authz", forwarded("X-Forwarded-Uri: /plain\r\nX-Forwarded-Method: GET\r\n")},
		{"envoy http_service", envoy.NewHTTPHandler(p, envoy.WithPathPrefix("/ext_authz")), "/ext_authz/plain", []probe{
			{name: "Host names the host", head: "HTTP/1.1\r\nHost: shop.example\r\n",
				status: http.StatusOK, subject: "cust-9", logged: "shop.example"},
			{name: "X-Forwarded-Host is not read", head: "HTTP/1.1\r\nHost: other.example\r\nX-Forwarded-Host: shop.example\r\n",
				status: http.StatusOK, logged: "other.example"},
			{name: "HTTP/1.0 naming no host", head: "HTTP/1.0\r\n",
				status: http.StatusOK, logged: ""},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			t.Cleanup(srv.Close)
			for _, pr := range tc.probes {
				rec.take()
				status, subject, body := askRaw(t, strings.TrimPrefix(srv.URL, "http://"),
					"GET "+tc.target+" "+pr.head+cookie+"Connection: close\r\n\r\n")
				if status != pr.status || subject != pr.subject {
					t.Errorf("%s: %d subject %q, want %d subject %q: %s", pr.name, status, subject, pr.status, pr.subject, body)
				}
				logged := rec.take()
				if len(logged) != 1 {
					t.Fatalf("%s: %d decisions logged, want 1", pr.name, len(logged))
				}
				if pr.status == http.StatusOK && logged[0].Host != pr.logged {
					t.Errorf("%s: decided on host %q, want %q", pr.name, logged[0].Host, pr.logged)
				}
			}
		})
	}
}
