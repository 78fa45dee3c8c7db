package envoy_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/envoy"
)

// lockedRecorder records the decisions a server's handlers log.
type lockedRecorder struct {
	mu     sync.Mutex
	logged []*sidecar.Decision
}

func (r *lockedRecorder) Log(d *sidecar.Decision) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logged = append(r.logged, d)
}

func (r *lockedRecorder) take() []*sidecar.Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.logged
	r.logged = nil
	return l
}

// Envoy's http_service prepends path_prefix to the request's path, which
// starts with "/": the check path is always the prefix, then "/". Trimmed
// without that boundary, /ext_authzplain was decided as /plain, and a
// path without the prefix at all as itself; neither comes from Envoy, and
// both are refused as malformed, never allowed. A prefix ending in "/" is
// followed by the path's own "/".
func TestHTTPServicePathPrefixBoundary(t *testing.T) {
	malformed := sidecar.HTTPStatus(sidecar.Invalid("x", "y"))
	for _, tc := range []struct {
		prefix, target string
		status         int
		decided        string // the path decided, or "" when refused
	}{
		{"/ext_authz", "/ext_authz/plain", http.StatusOK, "/plain"},
		{"/ext_authz", "/ext_authz/", http.StatusForbidden, "/"},
		{"/ext_authz", "/ext_authz/ext_authz/plain", http.StatusForbidden, "/ext_authz/plain"},
		{"/ext_authz/", "/ext_authz//plain", http.StatusOK, "/plain"},
		{"/ext_authz", "/ext_authzplain", malformed, ""},
		{"/ext_authz", "/plain", malformed, ""},
		{"/ext_authz", "/ext_authz", malformed, ""},
		{"/ext_authz", "/ext_authz?a=1", malformed, ""},
		{"/ext_authz", "/EXT_AUTHZ/plain", malformed, ""},
		{"/ext_authz/", "/ext_authz/plain", malformed, ""},
	} {
		t.Run(tc.prefix+" "+tc.target, func(t *testing.T) {
			rec := &lockedRecorder{}
			p := pipeline(t, authz.WithDecisionLogger(rec))
			srv := httptest.NewServer(envoy.NewHTTPHandler(p, envoy.WithPathPrefix(tc.prefix)))
			t.Cleanup(srv.Close)
			resp := rawRequest(t, srv.Listener.Addr().String(), "GET "+tc.target+" HTTP/1.1\r\nhost: shop.example.com\r\nconnection: close\r\n\r\n")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			logged := rec.take()
			if len(logged) != 1 {
				t.Fatalf("%d decisions logged, want 1", len(logged))
			}
			d := logged[0]
			if tc.decided != "" {
				if d.Path != tc.decided {
					t.Errorf("decided %q, want %q", d.Path, tc.decided)
				}
				return
			}
			if d.Allowed || d.Reason != authz.ReasonMalformedRequest || !strings.Contains(d.Error, "path_prefix") {
				t.Errorf("decision allowed=%v reason %q error %q, want malformed_request naming path_prefix", d.Allowed, d.Reason, d.Error)
			}
		})
	}
}

// http.envoy_upstream_headers mirrors Envoy's allowed_upstream_headers,
// which Envoy compares in any letter case but with "_" and "-" apart:
// listed as x_user_role, a policy's x-user-role is not copied, and the
// client's x-user-role would reach the application. Unlike the names
// Deputy reads, the list is compared as Envoy compares it, so such an
// allow is refused rather than answered as if Envoy applied it.
func TestEnvoyUpstreamHeadersCompareAsEnvoyDoes(t *testing.T) {
	const pol = `package t
decision := {"allowed": true, "reason": "fine", "headers": {"x-user-role": "viewer"}}
`
	p := policyPipeline(t, pol)
	for _, tc := range []struct {
		listed  []string
		allowed bool
	}{
		{[]string{"x-user-role"}, true},
		{[]string{"X-User-Role"}, true},
		{[]string{"x-user-*"}, true},
		{[]string{"x_user_role"}, false},
		{[]string{"x_user_*"}, false},
		{[]string{"x-user_role"}, false},
	} {
		t.Run(strings.Join(tc.listed, ","), func(t *testing.T) {
			srv := httptest.NewServer(envoy.NewHTTPHandler(p, envoy.WithEnvoyUpstreamHeaders(tc.listed)))
			t.Cleanup(srv.Close)
			resp := rawRequest(t, srv.Listener.Addr().String(), "GET /x HTTP/1.1\r\nhost: shop.example.com\r\nconnection: close\r\nx-user-role: admin\r\n\r\n")
			if allowed := resp.StatusCode == http.StatusOK; allowed != tc.allowed {
				t.Fatalf("status %d, want allowed %v", resp.StatusCode, tc.allowed)
			}
			if got := resp.Header.Get("x-user-role"); tc.allowed != (got == "viewer") {
				t.Errorf("x-user-role %q in the answer", got)
			}
		})
	}
}
