package authz_test

import (
	"context"
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// A header name with a byte other than a letter, a digit, "-" or "_" is
// read by PHP, CGI and WSGI upstreams as another name ("x.deputy.subject"
// is HTTP_X_DEPUTY_SUBJECT): the request is refused, on the headers map
// and on Envoy's header_map alike, whatever the policy says. HTTP/2
// pseudo-headers are names too.
func TestOddHeaderNamesAreRefused(t *testing.T) {
	e := engineFor(t, "data.t.decision", "package t\n\ndecision := true\n", nil)
	p := authz.New(e, authz.WithQuery("data.t.decision"))
	check := func(headers, headerMap string) *authz.Response {
		req := `{"attributes":{"request":{"http":{"method":"GET","path":"/","headers":{` + headers + `}` + headerMap + `}}}}`
		return p.Check(context.Background(), checkRequest(t, req))
	}
	for _, name := range []string{"x.deputy.subject", "x-deputy.subject", "x.on.behalf.of", "x.http.method.override", "x.original.url", "x deputy subject", "x-a+b", "x-é"} {
		t.Run(name, func(t *testing.T) {
			if resp := check(`"`+name+`":"victim"`, ""); resp.Allowed || resp.HTTPStatus != 400 || resp.Reason != authz.ReasonMalformedRequest {
				t.Errorf("headers: allowed %v status %d reason %q, want refused 400 %s", resp.Allowed, resp.HTTPStatus, resp.Reason, authz.ReasonMalformedRequest)
			}
			if resp := check(`":path":"/"`, `,"headerMap":{"headers":[{"key":"`+name+`","value":"victim"}]}`); resp.Allowed || resp.HTTPStatus != 400 {
				t.Errorf("header_map: allowed %v status %d reason %q, want refused 400", resp.Allowed, resp.HTTPStatus, resp.Reason)
			}
		})
	}
	if resp := check(`":authority":"shop.example.com",":path":"/",":method":"GET","x_forwarded_for":"1","X-Request-Id":"a1"`, ""); !resp.Allowed {
		t.Errorf("plain names refused: %s (%d)", resp.Reason, resp.HTTPStatus)
	}
}

// Go's query parser leaves out a pair holding ";", while PHP with
// arg_separator.input "&;", Rails before 7 and Java servlet containers
// split on it: an override behind a ";" is among the methods decided.
func TestQueryOverrideBehindSemicolon(t *testing.T) {
	e := engineFor(t, "data.t.decision", methodsPolicy, nil)
	p := authz.New(e, authz.WithQuery("data.t.decision"))
	for _, query := range []string{"x=1&_method=DELETE", "x=1;_method=DELETE", "_method=DELETE;x=1", "a=b;c=d&_method=DELETE"} {
		t.Run(query, func(t *testing.T) {
			req := `{"attributes":{"request":{"http":{"method":"POST","path":"/a?` + query + `","headers":{"content-length":"0"}}}}}`
			resp := p.Check(context.Background(), checkRequest(t, req))
			if !resp.Allowed || resp.Reason != "POST,DELETE" {
				t.Errorf("decided as %q (allowed %v), want POST,DELETE", resp.Reason, resp.Allowed)
			}
		})
	}
}
