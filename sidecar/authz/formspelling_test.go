package authz_test

import (
	"context"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// A form body's field that a common upstream reads as a field the policy
// reads, while Go's parser (parsed_body) holds it under another name, is
// refused as the query string's is: of "query=a&QUERY=b" a policy reading
// input.parsed_body.query judges a alone, while ASP.NET (form names in any
// letter case) also binds b, and PHP reads "query[]" and " query" as
// query, keeping the last. A policy reading parsed_body whole sees every
// name as sent and is not guarded.
func TestFormFieldSpellingsThePolicyDoesNotSeeAreRefused(t *testing.T) {
	const (
		readsField = "package t\n\ndecision := {\"allowed\": true, \"reason\": concat(\",\", input.parsed_body.query)}\n"
		readsWhole = "package t\n\ndecision := {\"allowed\": true, \"reason\": concat(\",\", [k | some k, _ in input.parsed_body])}\n"
	)
	form := map[string]string{"content-type": "application/x-www-form-urlencoded"}
	multipart := map[string]string{"content-type": "multipart/form-data; boundary=b"}
	part := func(name, value string) string {
		return "--b\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n\r\n" + value + "\r\n"
	}
	for _, tc := range []struct {
		name, policy string
		headers      map[string]string
		body         string
		refusal      string // the 400 names this, when refused
		wantReason   string // else the policy's answer
	}{
		{name: "ASP.NET: another letter case", policy: readsField, headers: form, body: "query=a&QUERY=b", refusal: `field "QUERY" is read as "query"`},
		{name: "PHP: an array of the field", policy: readsField, headers: form, body: "query=a&query%5B%5D=b", refusal: `is read as "query"`},
		{name: "PHP: a leading space", policy: readsField, headers: form, body: "query=a&+query=b", refusal: `is read as "query"`},
		{name: "PHP: a dot for an underscore", policy: "package t\n\ndecision := {\"allowed\": true, \"reason\": concat(\",\", input.parsed_body.cart_id)}\n",
			headers: form, body: "cart_id=a&cart.id=b", refusal: `is read as "cart_id"`},
		{name: "an escape Go decodes alike", policy: readsField, headers: form, body: "query=a&%71uery=b", wantReason: "a,b"},
		{name: "other fields", policy: readsField, headers: form, body: "query=a&variables=b&Variables=c", wantReason: "a"},
		{name: "policy reading the body whole", policy: readsWhole, headers: form, body: "query=a&QUERY=b", wantReason: "QUERY,query"},
		{name: "multipart: another letter case", policy: readsField, headers: multipart, body: part("query", "a") + part("Query", "b") + "--b--\r\n",
			refusal: `field "Query" is read as "query"`},
		{name: "multipart: an array of the field", policy: readsField, headers: multipart, body: part("query", "a") + part("query[]", "b") + "--b--\r\n",
			refusal: `is read as "query"`},
		{name: "multipart: an encoded name", policy: readsField, headers: multipart,
			body: part("query", "a") + "--b\r\nContent-Disposition: form-data; name=\"=?utf-8?q?query?=\"\r\n\r\nb\r\n--b--\r\n", refusal: `names its field in a way parsers read differently`},
		{name: "multipart: fields apart", policy: readsField, headers: multipart, body: part("query", "a") + part("file", "b") + "--b--\r\n", wantReason: "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := authz.New(engineFor(t, "data.t.decision", tc.policy, nil), authz.WithQuery("data.t.decision"))
			resp := p.Check(context.Background(), checkRequest(t, httpRequest("POST", "/a", tc.headers, tc.body)))
			answeredAs(t, resp, tc.refusal, tc.wantReason)
			if tc.refusal != "" && !strings.HasPrefix(resp.Body, "body: ") {
				t.Errorf("refusal %q does not name the body", resp.Body)
			}
		})
	}
}
