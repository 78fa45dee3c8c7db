package envoy_test

import (
	"bufio"
	"context"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/envoy"
)

// Behind Envoy, which removes headers by exact name only, a client's
// header of a family nginx and Caddy clear by prefix (X-Forwarded-*,
// X-Auth-Request-*, Remote-*) under a name the config does not list
// reached the application, which may trust it for the user or the client.
// Deputy lists every such header it is sent for removal on an allow, in
// every spelling, and leaves the ones Envoy sets itself.
func TestEnvoyRemovesClientHeadersOfClearedFamilies(t *testing.T) {
	sent := []string{"x-auth-request-redirect", "x_auth_request_user", "remote-addr", "remote_user", "x-forwarded-uid",
		"x_forwarded_for", "X-Auth-Request-Token"}
	kept := []string{"x-forwarded-for", "x-forwarded-proto", "x-forwarded-client-cert", "remote", "x-remote", "x-forwardedx",
		"cookie", "x-authorized"}
	want := []string{"x-auth-request-redirect", "x_auth_request_user", "remote-addr", "remote_user", "x-forwarded-uid",
		"x_forwarded_for", "x-auth-request-token"}

	removesExactly := func(t *testing.T, removed []string) {
		t.Helper()
		for _, name := range want {
			if !slices.Contains(removed, name) {
				t.Errorf("%s is not removed (removed: %q)", name, removed)
			}
		}
		for _, name := range kept {
			if slices.Contains(removed, name) {
				t.Errorf("%s is removed, but Envoy sets it or it is of no cleared family (removed: %q)", name, removed)
			}
		}
		if len(removed) != len(want) {
			t.Errorf("removed %q, want exactly %q", removed, want)
		}
	}

	t.Run("gRPC", func(t *testing.T) {
		client, _ := startGRPC(t, 1<<20)
		headers := map[string]string{":path": "/scrub", ":method": "GET"}
		var inMap []*corev3.HeaderValue
		for i, name := range append(slices.Clone(sent), kept...) {
			if i%2 == 0 {
				headers[name] = "v"
			} else {
				inMap = append(inMap, &corev3.HeaderValue{Key: name, RawValue: []byte("v")})
			}
		}
		req := check("/scrub", headers)
		req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: inMap}
		resp, err := client.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("not allowed: %v", resp.GetStatus())
		}
		removed := ok.GetHeadersToRemove()
		if !slices.Contains(removed, "x-user-role") {
			t.Errorf("the policy's removal is gone: %q", removed)
		}
		removesExactly(t, slices.DeleteFunc(slices.Clone(removed), func(s string) bool { return s == "x-user-role" }))

		// A denial sends nothing upstream, and removes nothing.
		req.Attributes.Request.Http.Path, req.Attributes.Request.Http.Headers[":path"] = "/nope", "/nope"
		resp, err = client.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOkResponse() != nil {
			t.Fatal("/nope allowed")
		}
	})

	t.Run("http_service", func(t *testing.T) {
		// Over a real connection, as Envoy sends it: Go's server
		// canonicalizes the names (X-Forwarded-For), and Envoy's own must
		// still be told apart.
		srv := httptest.NewServer(envoy.NewHTTPHandler(pipeline(t), envoy.WithPathPrefix("/ext_authz")))
		t.Cleanup(srv.Close)
		raw := "GET /ext_authz/plain HTTP/1.1\r\nhost: shop.example.com\r\nconnection: close\r\n"
		for _, name := range append(slices.Clone(sent), kept...) {
			raw += name + ": v\r\n"
		}
		resp := rawRequest(t, srv.Listener.Addr().String(), raw+"\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		removesExactly(t, strings.Split(resp.Header.Get(envoy.HeadersToRemoveHeader), ","))
	})

	// A header of those families that the answer sets is not listed: Envoy
	// removes after it sets, so the client would delete the policy's
	// value; setting it already replaces the client's copy.
	t.Run("a header the answer sets", func(t *testing.T) {
		const pol = `package t
decision := {"allowed": true, "reason": "fine", "headers": {"x-auth-request-tenant": "acme"}}
`
		p := policyPipeline(t, pol)
		client, _ := serveGRPC(t, p, 1<<20)
		resp, err := client.Check(context.Background(), check("/x", map[string]string{":path": "/x", ":method": "GET",
			"x-auth-request-tenant": "evil", "x_auth_request_tenant": "evil"}))
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetOkResponse().GetHeadersToRemove(); !slices.Equal(got, []string{"x_auth_request_tenant"}) {
			t.Errorf("gRPC: removed %q, want only the other spelling, x_auth_request_tenant", got)
		}
		srv := httptest.NewServer(envoy.NewHTTPHandler(p, envoy.WithEnvoyUpstreamHeaders([]string{"x-auth-request-tenant"})))
		t.Cleanup(srv.Close)
		hr := rawRequest(t, srv.Listener.Addr().String(), "GET /x HTTP/1.1\r\nhost: shop.example.com\r\nconnection: close\r\n"+
			"x-auth-request-tenant: evil\r\n\r\n")
		if hr.StatusCode != http.StatusOK || hr.Header.Get("x-auth-request-tenant") != "acme" || hr.Header.Get(envoy.HeadersToRemoveHeader) != "" {
			t.Errorf("http_service: status %d, x-auth-request-tenant %q, removed %q: want 200, acme, nothing", hr.StatusCode,
				hr.Header.Get("x-auth-request-tenant"), hr.Header.Get(envoy.HeadersToRemoveHeader))
		}
	})

	t.Run("nginx and Caddy clear them themselves", func(t *testing.T) {
		p := pipeline(t)
		for proxy, sets := range map[envoy.Proxy]map[string]string{
			envoy.ProxyNginx: {"X-Original-URI": "/plain", "X-Original-Method": "GET", "X-Forwarded-For": "192.0.2.1"},
			envoy.ProxyCaddy: {"X-Forwarded-Uri": "/plain", "X-Forwarded-Method": "GET", "X-Forwarded-Host": "shop.example.com",
				"X-Forwarded-For": "192.0.2.1"},
		} {
			h := envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(proxy), envoy.WithOwned(p.Owned))
			r := httptest.NewRequest("GET", "/deputy/authz", nil)
			for k, v := range sets {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				t.Fatalf("%v: status %d: %s", proxy, w.Code, w.Body)
			}
			if got := w.Header().Get(envoy.HeadersToRemoveHeader); got != "" {
				t.Errorf("%v: asked to remove %q, which it cannot", proxy, got)
			}
		}
	})
}

// rawRequest sends raw to addr as written (names as given, not as Go's
// client would spell them) and reads the answer.
func rawRequest(t *testing.T, addr, raw string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// Envoy sets and removes a header by its name alone, so a client's
// x_current_user stayed beside the x-current-user a policy set from the
// verified token, and CGI, PHP and WSGI upstreams read both as
// HTTP_X_CURRENT_USER. On an allow Deputy lists for removal every client
// header that is another spelling of one the answer sets ("_" for "-" or
// the reverse, in any letter case); the exact name in another case is
// replaced by the answer's already.
func TestEnvoyRemovesOtherSpellingsOfPolicyHeaders(t *testing.T) {
	const pol = `package t
decision := {"allowed": true, "reason": "fine", "headers": {"x-current-user": "alice", "x_tenant": "acme"}}
`
	sent := map[string]string{"x_current_user": "admin", "X-Current_User": "admin", "x-tenant": "evil", "X_TENANT": "evil",
		"x-current-user": "evil", "X-Tenant-Id": "kept", "x_current_users": "kept"}
	// X_TENANT and x-current-user are the names set, in another case:
	// Envoy replaces them, and removing them would remove the answer's.
	removesExactly(t, policyPipeline(t, pol), sent, []string{"x_current_user", "x-current_user", "x-tenant"},
		envoy.WithEnvoyUpstreamHeaders([]string{"x-current-user", "x_tenant"}))
}

// A policy that removes x-user-role means the client's x_user_role too:
// Envoy removes by name alone, and CGI, PHP and WSGI upstreams read both
// as HTTP_X_USER_ROLE. Each other spelling the client sent is listed.
func TestEnvoyRemovesOtherSpellingsOfPolicyRemovals(t *testing.T) {
	const pol = `package t
decision := {"allowed": true, "reason": "fine", "request_headers_to_remove": ["x-user-role", "x_tenant"]}
`
	sent := map[string]string{"x_user_role": "admin", "X-User_Role": "admin", "x-tenant": "evil", "X-User-Role": "gone anyway",
		"x_user_roles": "kept"}
	removesExactly(t, policyPipeline(t, pol), sent, []string{"x-user-role", "x_tenant", "x_user_role", "x-user_role", "x-tenant"})
}

// removesExactly checks that an allow of p for a request carrying sent
// (names as given) removes exactly want upstream, over gRPC (the headers
// split between headers and header_map) and over http_service.
func removesExactly(t *testing.T, p *authz.Pipeline, sent map[string]string, want []string, opts ...envoy.HTTPOption) {
	t.Helper()
	same := func(got []string) bool {
		return slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want)))
	}
	t.Run("gRPC", func(t *testing.T) {
		client, _ := serveGRPC(t, p, 1<<20)
		headers := map[string]string{":path": "/x", ":method": "GET"}
		var inMap []*corev3.HeaderValue
		i := 0
		for _, name := range slices.Sorted(maps.Keys(sent)) {
			if i++; i%2 == 0 {
				headers[name] = sent[name]
			} else {
				inMap = append(inMap, &corev3.HeaderValue{Key: name, RawValue: []byte(sent[name])})
			}
		}
		req := check("/x", headers)
		req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: inMap}
		resp, err := client.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetOkResponse().GetHeadersToRemove(); !same(got) {
			t.Errorf("removed %q, want exactly %q", got, want)
		}
	})
	t.Run("http_service", func(t *testing.T) {
		srv := httptest.NewServer(envoy.NewHTTPHandler(p, opts...))
		t.Cleanup(srv.Close)
		raw := "GET /x HTTP/1.1\r\nhost: shop.example.com\r\nconnection: close\r\n"
		for _, name := range slices.Sorted(maps.Keys(sent)) {
			raw += name + ": " + sent[name] + "\r\n"
		}
		resp := rawRequest(t, srv.Listener.Addr().String(), raw+"\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := strings.Split(resp.Header.Get(envoy.HeadersToRemoveHeader), ","); !same(got) {
			t.Errorf("removed %q, want exactly %q", got, want)
		}
	})
}
