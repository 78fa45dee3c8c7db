package envoy_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/envoy"
)

// Envoy's http_service copies upstream only the headers of an allow that
// its allowed_upstream_headers names (http.envoy_upstream_headers tells
// Deputy which). Deputy's delegated identity is among an allow's headers:
// a name Envoy does not copy is dropped, and the client's own copy of it,
// which Deputy meant to replace, would reach the application. Such an
// allow is refused, as one whose policy sets a header Envoy does not copy.
func TestHTTPServiceRefusesDelegatedIdentityEnvoyDoesNotCopy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     []authz.Option
		upstream []string // nil: envoy.DefaultEnvoyUpstreamHeaders
		forged   string
	}{
		// An Envoy config copying only cache-control.
		{name: "owned names outside the list", upstream: []string{"cache-control"}, forged: "X-Deputy-Subject"},
		// check.owned_prefix changed, the list left at its defaults.
		{name: "configured owned prefix outside the default list", opts: []authz.Option{authz.WithOwnedPrefix("x-auth-")}, forged: "X-Auth-Subject"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &decisionRecorder{}
			opts := []envoy.HTTPOption{}
			if tc.upstream != nil {
				opts = append(opts, envoy.WithEnvoyUpstreamHeaders(tc.upstream))
			}
			h := envoy.NewHTTPHandler(pipeline(t, append(tc.opts, authz.WithDecisionLogger(rec))...), opts...)
			for _, forged := range []string{"", tc.forged} {
				rec.logged = nil
				req := httptest.NewRequest("GET", "/plain", nil)
				req.Header.Set("Cookie", "deputy_session=s1")
				if forged != "" {
					req.Header.Set(forged, "someone-else")
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusForbidden {
					t.Fatalf("forged %q: status %d, want 403 (subject header %q, removed %q)", forged, w.Code,
						w.Header().Get(tc.forged), w.Header().Get(envoy.HeadersToRemoveHeader))
				}
				if len(rec.logged) != 1 || rec.logged[0].Reason != authz.ReasonNotEnforceable {
					t.Fatalf("forged %q: logged %+v, want one %s decision", forged, rec.logged, authz.ReasonNotEnforceable)
				}
				if !strings.Contains(rec.logged[0].Error, strings.ToLower(tc.forged)) {
					t.Errorf("decision error %q does not name %s", rec.logged[0].Error, strings.ToLower(tc.forged))
				}
			}
		})
	}
}

// What Deputy injects reaches the application when the list covers it:
// Envoy copies each name and the allow stands.
func TestHTTPServiceDelegatedIdentityEnvoyCopies(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     []authz.Option
		upstream []string
		subject  string
	}{
		{name: "defaults", subject: "x-deputy-subject"},
		{name: "configured owned prefix in the list", opts: []authz.Option{authz.WithOwnedPrefix("x-auth-")},
			upstream: []string{"X-Auth-*", "cache-control", "x-on-behalf-of"}, subject: "x-auth-subject"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []envoy.HTTPOption{}
			if tc.upstream != nil {
				opts = append(opts, envoy.WithEnvoyUpstreamHeaders(tc.upstream))
			}
			h := envoy.NewHTTPHandler(pipeline(t, tc.opts...), opts...)
			req := httptest.NewRequest("GET", "/plain", nil)
			req.Header.Set("Cookie", "deputy_session=s1")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK || w.Header().Get(tc.subject) != "cust-9" {
				t.Fatalf("status %d, %s %q; want 200 and cust-9", w.Code, tc.subject, w.Header().Get(tc.subject))
			}
		})
	}
}
