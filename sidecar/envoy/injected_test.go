package envoy_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"slices"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
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

// Envoy applies x-envoy-auth-headers-to-remove after the headers it
// copies, so a name Deputy both sets and lists for removal reaches the
// application not at all; listed only, Deputy's value would be lost, and
// not listed, the client's copy stays where Envoy does not copy Deputy's
// (its config and http.envoy_upstream_headers disagreeing). A client that
// sends its own copy of a header Deputy injects, in the spelling Deputy
// injects it, is refused instead; other spellings are listed for removal
// while Deputy's value is set.
func TestHTTPServiceClientCopyOfInjectedHeader(t *testing.T) {
	rec := &decisionRecorder{}
	h := envoy.NewHTTPHandler(pipeline(t, authz.WithDecisionLogger(rec)))
	for _, tc := range []struct {
		name       string
		headers    map[string]string
		wantStatus int
		wantRemove []string
	}{
		{name: "the injected spelling", headers: map[string]string{"X-Deputy-Subject": "someone-else"}, wantStatus: http.StatusForbidden},
		{name: "the injected spelling in other letter case", headers: map[string]string{"x-DEPUTY-actor": "someone-else"}, wantStatus: http.StatusForbidden},
		{name: "another spelling", headers: map[string]string{"x_deputy_subject": "someone-else"}, wantStatus: http.StatusOK,
			wantRemove: []string{"x_deputy_subject"}},
		{name: "an owned name Deputy does not inject here", headers: map[string]string{"X-Deputy-Level": "full_admin"}, wantStatus: http.StatusOK,
			wantRemove: []string{"x-deputy-level"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec.logged = nil
			req := httptest.NewRequest("GET", "/plain", nil)
			req.Header.Set("Cookie", "deputy_session=s1")
			for k, v := range tc.headers {
				req.Header[textproto.CanonicalMIMEHeaderKey(k)] = []string{v}
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d (subject %q, removed %q)", w.Code, tc.wantStatus,
					w.Header().Get("x-deputy-subject"), w.Header().Get(envoy.HeadersToRemoveHeader))
			}
			if tc.wantStatus != http.StatusOK {
				if len(rec.logged) != 1 || rec.logged[0].Reason != authz.ReasonNotEnforceable {
					t.Fatalf("logged %+v, want one %s decision", rec.logged, authz.ReasonNotEnforceable)
				}
				return
			}
			if got := w.Header().Get("x-deputy-subject"); got != "cust-9" {
				t.Errorf("x-deputy-subject %q, want Deputy's cust-9", got)
			}
			removed := strings.Split(w.Header().Get(envoy.HeadersToRemoveHeader), ",")
			for _, name := range tc.wantRemove {
				if !slices.Contains(removed, name) {
					t.Errorf("%s not listed for removal (%q)", name, removed)
				}
			}
		})
	}
}

// The on-behalf-of header is the client's to send: Deputy replaces it
// with the customer it decided on, and a partner's request naming its
// customer stands.
func TestHTTPServiceOnBehalfOfReplaced(t *testing.T) {
	partner := sidecar.DelegationResolverFunc(func(_ context.Context, r *sidecar.Request, _ *sidecar.Identity) (*sidecar.Delegation, error) {
		if len(r.HeaderValues("x-on-behalf-of")) > 0 {
			return &sidecar.Delegation{Mode: sidecar.ModePartner, ID: "g1", Actor: "p-1", Subject: "acme", Level: "look"}, nil
		}
		return nil, nil
	})
	h := envoy.NewHTTPHandler(pipeline(t, authz.WithResolvers(partner)))
	req := httptest.NewRequest("GET", "/plain", nil)
	req.Header.Set("X-On-Behalf-Of", "acme")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusOK || w.Header().Get("x-on-behalf-of") != "acme" || w.Header().Get("x-deputy-subject") != "acme" {
		t.Fatalf("status %d, x-on-behalf-of %q, x-deputy-subject %q; want 200 and acme", w.Code,
			w.Header().Get("x-on-behalf-of"), w.Header().Get("x-deputy-subject"))
	}
}
