package authz_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// A header a policy sets (on an allow or a denial, for the upstream or the
// client) whose name is not a token or whose value holds CR, LF, NUL or
// another control byte is no decision Deputy can carry out: behind nginx
// the denial's headers are replayed byte for byte, so a value built from
// the request ("/login?next=" + a decoded parameter) would add response
// headers of the client's choosing (Set-Cookie). It is invalid_decision.
func TestPolicyHeadersWithControlBytesAreInvalid(t *testing.T) {
	for _, tc := range []struct{ name, result string }{
		{"denial header value with CRLF", `{"allowed": false, "http_status": 302, "headers": {"location": "/login?next=/x\r\nSet-Cookie: pwned=1"}}`},
		{"denial header value with LF", `{"allowed": false, "headers": {"x-reason": "a\nb"}}`},
		{"denial header value with NUL", `{"allowed": false, "headers": {"x-reason": "a\u0000b"}}`},
		{"denial header name with a space", `{"allowed": false, "headers": {"x reason": "a"}}`},
		{"upstream header value with CR", `{"allowed": true, "headers": {"x-user": "a\rb"}}`},
		{"client header value with LF", `{"allowed": true, "response_headers_to_add": {"x-a": "a\nb"}}`},
		{"header in a list with CRLF", `{"allowed": true, "headers": [{"x-user": ["ok", "a\r\nb"]}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := checkWithResult(t, tc.result)
			if resp.Allowed || resp.Reason != authz.ReasonInvalidDecision {
				t.Errorf("allowed %v reason %q, want denied %s", resp.Allowed, resp.Reason, authz.ReasonInvalidDecision)
			}
		})
	}
	// A tab is a value's own byte.
	if resp := checkWithResult(t, `{"allowed": true, "headers": {"x-user": "a\tb"}}`); !resp.Allowed {
		t.Errorf("a tab in a value: %s", resp.Reason)
	}
}

// Headers that frame or route a message are the proxy's, never a
// decision's: an allow that set Host would have Envoy send the request to
// another virtual host than the one Deputy decided on, one that set
// Content-Length or Transfer-Encoding would give the upstream a second
// idea of where the body ends (request smuggling), and one that set
// Upgrade or Connection would ask the upstream for a tunnel Deputy never
// sees into. They are invalid_decision in every headers field, in any
// case and with "_" for "-", and so is removing Host or the body's
// framing.
func TestPolicyFramingHeadersAreInvalid(t *testing.T) {
	for _, tc := range []struct{ name, result string }{
		{"upstream host", `{"allowed": true, "headers": {"host": "admin.internal"}}`},
		{"upstream Host in another case", `{"allowed": true, "headers": {"HoSt": "admin.internal"}}`},
		{"upstream content-length", `{"allowed": true, "headers": {"content-length": "0"}}`},
		{"upstream content_length", `{"allowed": true, "headers": {"Content_Length": "0"}}`},
		{"upstream transfer-encoding", `{"allowed": true, "headers": {"transfer-encoding": "chunked"}}`},
		{"upstream upgrade", `{"allowed": true, "headers": {"upgrade": "websocket"}}`},
		{"upstream connection", `{"allowed": true, "headers": {"connection": "upgrade"}}`},
		{"upstream te", `{"allowed": true, "headers": {"te": "trailers"}}`},
		{"upstream trailer", `{"allowed": true, "headers": {"trailer": "x-a"}}`},
		{"upstream keep-alive", `{"allowed": true, "headers": {"keep-alive": "timeout=5"}}`},
		{"upstream proxy-connection", `{"allowed": true, "headers": {"proxy-connection": "keep-alive"}}`},
		{"upstream host in a list", `{"allowed": true, "headers": [{"host": ["a", "b"]}]}`},
		{"client content-length", `{"allowed": true, "response_headers_to_add": {"content-length": "5"}}`},
		{"client transfer-encoding", `{"allowed": true, "response_headers_to_add": {"Transfer-Encoding": "chunked"}}`},
		{"denial content-length", `{"allowed": false, "headers": {"content-length": "5"}}`},
		{"denial connection", `{"allowed": false, "headers": {"connection": "close"}}`},
		{"removing host", `{"allowed": true, "request_headers_to_remove": ["host"]}`},
		{"removing content-length", `{"allowed": true, "request_headers_to_remove": ["Content-Length"]}`},
		{"removing transfer_encoding", `{"allowed": true, "request_headers_to_remove": ["transfer_encoding"]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := checkWithResult(t, tc.result)
			if resp.Allowed || resp.Reason != authz.ReasonInvalidDecision {
				t.Errorf("allowed %v reason %q, want denied %s", resp.Allowed, resp.Reason, authz.ReasonInvalidDecision)
			}
		})
	}
	// Names that only resemble them are a policy's to set.
	for _, result := range []string{
		`{"allowed": true, "headers": {"x-forwarded-host-hint": "a", "hostname": "b", "content-type": "text/plain"}}`,
		`{"allowed": true, "request_headers_to_remove": ["connection-id", "x-upgrade"]}`,
		`{"allowed": false, "http_status": 302, "headers": {"location": "/login"}}`,
	} {
		if resp := checkWithResult(t, result); resp.Reason == authz.ReasonInvalidDecision {
			t.Errorf("%s: refused as %s", result, resp.Reason)
		}
	}
}

// checkWithResult checks a plain GET under a policy whose decision is
// result, a JSON object.
func checkWithResult(t *testing.T, result string) *authz.Response {
	t.Helper()
	pol := "package t\n\ndecision := json.unmarshal(" + strconv.Quote(result) + ")\n"
	p := authz.New(engineFor(t, "data.t.decision", pol, nil), authz.WithQuery("data.t.decision"))
	return p.Check(context.Background(), checkRequest(t, `{"attributes":{"request":{"http":{"method":"GET","path":"/"}}}}`))
}

// Headers that tell Envoy's router or the upstream what to run are not a
// decision's to set either: x-envoy-* steer retries, timeouts and the
// path Envoy reports (Envoy strips a client's copies before any filter,
// but takes ext_authz's unless told not to), and a method or URL
// override would have the upstream run a DELETE, or another path, after
// Deputy decided a GET on this one.
func TestPolicyRoutingHeadersAreInvalid(t *testing.T) {
	for _, tc := range []struct{ name, result string }{
		{"x-envoy-original-path", `{"allowed": true, "headers": {"x-envoy-original-path": "/admin"}}`},
		{"x-envoy-internal", `{"allowed": true, "headers": {"X-Envoy-Internal": "true"}}`},
		{"x_envoy_retry_on", `{"allowed": true, "headers": {"x_envoy_retry_on": "5xx"}}`},
		{"x-envoy-upstream-rq-timeout-ms", `{"allowed": true, "headers": {"x-envoy-upstream-rq-timeout-ms": "1"}}`},
		{"method override", `{"allowed": true, "headers": {"x-http-method-override": "DELETE"}}`},
		{"method override, another name", `{"allowed": true, "headers": {"X-HTTP-Method": "DELETE"}}`},
		{"method override, underscores", `{"allowed": true, "headers": {"x_method_override": "DELETE"}}`},
		{"URL override", `{"allowed": true, "headers": {"x-original-url": "/admin"}}`},
		{"URL override, rewrite", `{"allowed": true, "headers": {"X-Rewrite-Url": "/admin"}}`},
		{"in a list", `{"allowed": true, "headers": [{"x-envoy-original-path": ["/admin"]}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := checkWithResult(t, tc.result)
			if resp.Allowed || resp.Reason != authz.ReasonInvalidDecision {
				t.Errorf("allowed %v reason %q, want denied %s", resp.Allowed, resp.Reason, authz.ReasonInvalidDecision)
			}
		})
	}
	// Names that only begin alike are a policy's.
	if resp := checkWithResult(t, `{"allowed": true, "headers": {"x-envoyer": "a", "x-http-method-overrides": "b"}}`); !resp.Allowed {
		t.Errorf("look-alike names refused: %s", resp.Reason)
	}
}
