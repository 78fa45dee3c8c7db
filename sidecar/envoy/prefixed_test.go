package envoy_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

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
		h := envoy.NewHTTPHandler(pipeline(t), envoy.WithPathPrefix("/ext_authz"))
		r := httptest.NewRequest("GET", "/ext_authz/plain", nil)
		for _, name := range append(slices.Clone(sent), kept...) {
			r.Header[name] = []string{"v"} // as sent, not canonicalized
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		removesExactly(t, strings.Split(w.Header().Get(envoy.HeadersToRemoveHeader), ","))
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
