package authz_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// Envoy writes query_parameters_to_set into the upstream's :path as
// name=value, encoding nothing. A parameter that would not arrive as the
// one parameter the policy named (a CR, LF or NUL reaching the request
// line, a space splitting it, "#" cutting the query, "&" or ";" starting
// another parameter, "=" in a name) is an invalid_decision, as a header
// with a control byte is; a policy percent-encodes what it sets.
func TestQueryParametersToSetMustStandInTheQuery(t *testing.T) {
	for _, tc := range []struct {
		name, params string
		valid        bool
	}{
		{name: "value with CRLF", params: `{"next": "/x\r\nSet-Cookie: a=b"}`},
		{name: "value with LF", params: `{"next": "a\nb"}`},
		{name: "value with NUL", params: `{"next": "a\u0000b"}`},
		{name: "value with a tab", params: `{"next": "a\tb"}`},
		{name: "value with a space", params: `{"next": "/x HTTP/1.1"}`},
		{name: "value with &", params: `{"next": "x&_method=DELETE"}`},
		{name: "value with ;", params: `{"next": "x;_method=DELETE"}`},
		{name: "value with #", params: `{"next": "x#y"}`},
		{name: "value with a broken escape", params: `{"next": "100%"}`},
		{name: "value outside ASCII", params: `{"next": "zoë"}`},
		{name: "value in a list", params: `{"tag": ["ok", "a\r\nb"]}`},
		{name: "name with NUL", params: `{"a\u0000b": "1"}`},
		{name: "name with =", params: `{"a=b": "1"}`},
		{name: "name with &", params: `{"a&b": "1"}`},
		{name: "name with #", params: `{"a#b": "1"}`},
		{name: "name with DEL", params: `{"a\u007fb": "1"}`},
		{name: "empty name", params: `{"": "1"}`},
		{name: "encoded values", params: `{"next": "/x%0D%0Ay?a=b", "q": "a+b%20c", "e": "", "list": ["a", "b=c"]}`, valid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			result := `{"allowed": true, "query_parameters_to_set": ` + tc.params + `}`
			pol := "package t\n\ndecision := json.unmarshal(" + strconv.Quote(result) + ")\n"
			p := authz.New(engineFor(t, "data.t.decision", pol, nil), authz.WithQuery("data.t.decision"))
			resp := p.Check(context.Background(), checkRequest(t, `{"attributes":{"request":{"http":{"method":"GET","path":"/"}}}}`))
			switch {
			case tc.valid && !resp.Allowed:
				t.Fatalf("denied (%s), want the allow with %s", resp.Reason, tc.params)
			case !tc.valid && (resp.Allowed || resp.Reason != authz.ReasonInvalidDecision):
				t.Fatalf("allowed %v reason %q, query to set %q: want denied %s", resp.Allowed, resp.Reason, resp.QueryParamsToSet, authz.ReasonInvalidDecision)
			}
		})
	}
}
