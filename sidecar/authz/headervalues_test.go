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
			pol := "package t\n\ndecision := json.unmarshal(" + strconv.Quote(tc.result) + ")\n"
			p := authz.New(engineFor(t, "data.t.decision", pol, nil), authz.WithQuery("data.t.decision"))
			resp := p.Check(context.Background(), checkRequest(t, `{"attributes":{"request":{"http":{"method":"GET","path":"/"}}}}`))
			if resp.Allowed || resp.Reason != authz.ReasonInvalidDecision {
				t.Errorf("allowed %v reason %q, want denied %s", resp.Allowed, resp.Reason, authz.ReasonInvalidDecision)
			}
		})
	}
	// A tab is a value's own byte.
	pol := "package t\n\ndecision := json.unmarshal(" + strconv.Quote(`{"allowed": true, "headers": {"x-user": "a\tb"}}`) + ")\n"
	p := authz.New(engineFor(t, "data.t.decision", pol, nil), authz.WithQuery("data.t.decision"))
	if resp := p.Check(context.Background(), checkRequest(t, `{"attributes":{"request":{"http":{"method":"GET","path":"/"}}}}`)); !resp.Allowed {
		t.Errorf("a tab in a value: %s", resp.Reason)
	}
}
