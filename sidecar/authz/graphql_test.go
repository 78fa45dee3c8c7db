package authz_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// The shipped impersonation policy judges a request to the GraphQL
// endpoint on what Deputy decoded of it, as the server decodes it: JSON
// escapes, form and URL percent escapes do not hide a forbidden mutation,
// and a body Deputy did not see whole (truncated, not sent, of a type it
// does not parse, compressed) is denied, while shopping goes on.
func TestGraphQLDuringImpersonation(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	token := "graphql-session-token-0123456789abcdef0123"
	redeemedSession(t, store, token)
	p, _ := delegatedPipeline(t, store)
	const (
		jsonType = "application/json"
		formType = "application/x-www-form-urlencoded"
		cart     = `{"query":"mutation { addProductsToCart(cartId: \"c1\", cartItems: [{sku: \"S1\", quantity: 1}]) { cart { id } } }"}`
	)
	for _, tc := range []struct {
		name, method, path, contentType, body string
		headers                               map[string]string
		length                                int // content-length when not len(body)
		allowed                               bool
		reason                                string
	}{
		{name: "cart mutation", method: "POST", path: "/graphql", contentType: jsonType, body: cart, allowed: true, reason: "impersonation"},
		{name: "cart query in the URL", method: "GET", path: "/graphql?query=%7Bcart(cart_id%3A%22c1%22)%7Bid%7D%7D", allowed: true, reason: "impersonation"},
		{name: "account change", method: "POST", path: "/graphql", contentType: jsonType,
			body: `{"query":"mutation { updateCustomerV2(input: {email: \"eve@example.com\"}) { customer { email } } }"}`, reason: "account_change_forbidden"},
		{name: "JSON escapes in the name", method: "POST", path: "/graphql", contentType: jsonType,
			body: `{"query":"mutation { \u0075pdateCustomerV2(input: {}) { customer { id } } }"}`, reason: "account_change_forbidden"},
		{name: "JSON escapes in a batch", method: "POST", path: "/default/graphql", contentType: jsonType,
			body: `[` + cart + `,{"query":"mutation { d\u0065letePaymentToken(public_hash: \"h\") { result } }"}]`, reason: "payment_method_change_forbidden"},
		// A JSON object that repeats a key is refused before policy:
		// Go keeps the last value, and the policy would judge it alone,
		// while an upstream whose parser keeps the first (gjson,
		// jsonparser) runs that one. Keys are compared as decoded.
		{name: "duplicate query keys", method: "POST", path: "/graphql", contentType: jsonType,
			body: `{"query":"{ cart(cart_id: \"c1\") { id } }","query":"mutation { deleteCustomer }"}`, reason: authz.ReasonMalformedRequest},
		{name: "duplicate query keys, mutation first", method: "POST", path: "/graphql", contentType: jsonType,
			body: `{"query":"mutation { changeCustomerPassword(currentPassword: \"a\", newPassword: \"b\") { email } }","query":"{ cart { id } }"}`, reason: authz.ReasonMalformedRequest},
		{name: "duplicate query keys, one escaped", method: "POST", path: "/graphql", contentType: jsonType,
			body: `{"query":"mutation { changeCustomerPassword }","\u0071uery":"{ cart { id } }"}`, reason: authz.ReasonMalformedRequest},
		{name: "duplicate keys in variables", method: "POST", path: "/graphql", contentType: jsonType,
			body: `{"query":"mutation($c: String!) { addProductsToCart(cartId: $c, cartItems: []) { cart { id } } }","variables":{"c":"c1","c":"c2"}}`, reason: authz.ReasonMalformedRequest},
		{name: "duplicate keys deep in extensions", method: "POST", path: "/graphql", contentType: jsonType,
			body: `{"query":"{ cart { id } }","extensions":{"a":[1,{"b":{"x":1,"\u0078":2}}]}}`, reason: authz.ReasonMalformedRequest},
		{name: "duplicate query keys in a batch", method: "POST", path: "/graphql", contentType: jsonType,
			body: `[` + cart + `,{"query":"mutation { deleteCustomer }","query":"{ cart { id } }"}]`, reason: authz.ReasonMalformedRequest},
		// Keys Go decodes to U+FFFD (invalid UTF-8, an unpaired surrogate
		// escape) or that a C string ends early (NUL) may be "query" to
		// another parser: refused too.
		{name: "key holding invalid UTF-8", method: "POST", path: "/graphql", contentType: jsonType,
			body: `{"query":"{ cart { id } }","query` + "\xff" + `":"mutation { deleteCustomer }"}`, reason: authz.ReasonMalformedRequest},
		{name: "value holding invalid UTF-8", method: "POST", path: "/graphql", contentType: jsonType,
			body: `{"query":"mutation { changeCustomer` + "\xff" + `Password }"}`, reason: authz.ReasonMalformedRequest},
		{name: "key holding an unpaired surrogate", method: "POST", path: "/graphql", contentType: jsonType,
			body: `{"query":"{ cart { id } }","query\ud800":"x"}`, reason: authz.ReasonMalformedRequest},
		{name: "key holding NUL", method: "POST", path: "/graphql", contentType: jsonType,
			body: `{"query":"{ cart { id } }","query\u0000":"x"}`, reason: authz.ReasonMalformedRequest},
		// The same name in other objects, or spelled with another
		// surrogate pair, is another key.
		{name: "one name in several objects", method: "POST", path: "/graphql", contentType: jsonType,
			body:    `{"query":"{ cart { id } }","variables":{"query":"q","v":{"Query":"q"}},"extensions":[{"query":1},{"QUERY":2}],"q\ud83d\ude00":1,"q\ud83d\ude01":2}`,
			allowed: true, reason: "impersonation"},
		// In another letter case it is the same key to an upstream that
		// decodes into a struct: refused as a repeat.
		{name: "the query in another letter case", method: "POST", path: "/graphql", contentType: jsonType,
			body: `{"query":"{ cart { id } }","QUERY":"{ customer { id } }"}`, reason: authz.ReasonMalformedRequest},
		// A form field sent twice is in parsed_body with every value, as
		// the policy reads it: each is judged.
		{name: "form field sent twice", method: "POST", path: "/graphql", contentType: formType,
			body: "query=mutation+%7B+changeCustomerPassword+%7D&query=%7Bcart%7Bid%7D%7D", reason: "password_change_forbidden"},
		{name: "form field sent twice, mutation last", method: "POST", path: "/graphql", contentType: formType,
			body: "query=%7Bcart%7Bid%7D%7D&query=mutation+%7B+changeCustomerPassword+%7D", reason: "password_change_forbidden"},
		{name: "percent escapes in a form", method: "POST", path: "/graphql", contentType: formType,
			body: "query=mutation+%7B+%75pdateCustomerV2(input%3A+%7B%7D)+%7B+customer+%7B+id+%7D+%7D+%7D", reason: "account_change_forbidden"},
		{name: "percent escapes in the URL", method: "GET", path: "/graphql?query=mutation%7B%63hangeCustomerPassword(currentPassword%3A%22a%22%2CnewPassword%3A%22b%22)%7Bid%7D%7D",
			reason: "password_change_forbidden"},
		{name: "URL query beside a harmless body", method: "POST", path: "/graphql?query=mutation%7BdeleteCustomer%7D", contentType: jsonType, body: cart,
			reason: "account_change_forbidden"},
		// Go, like OPA-Envoy, leaves a query pair holding ";" out of
		// parsed_query, and keeps " query" apart; PHP reads both as
		// query, the last winning: the policy would judge another
		// document than the one the server runs, so they are refused.
		{name: "semicolon hiding the query parameter", method: "GET", path: "/graphql?query=mutation{deleteCustomer;}", reason: authz.ReasonMalformedRequest},
		{name: "a second document under another spelling", method: "GET",
			path: "/graphql?query=%7Bcart(cart_id%3A%22c1%22)%7Bid%7D%7D&+query=mutation%7BdeleteCustomer%7D", reason: authz.ReasonMalformedRequest},
		{name: "a document under another spelling alone", method: "GET", path: "/graphql?query%5B%5D=mutation%7BdeleteCustomer%7D", reason: authz.ReasonMalformedRequest},
		{name: "form without an escape", method: "POST", path: "/graphql", contentType: formType,
			body: "query=%7Bcart(cart_id%3A%22c1%22)%7Bid%7D%7D", reason: "graphql_query_unreadable"},
		{name: "JSON sent as text", method: "POST", path: "/graphql", contentType: "text/plain",
			body: `{"query":"mutation { \u0064eleteCustomer }"}`, reason: "graphql_body_unread"},
		{name: "GraphQL media type", method: "POST", path: "/graphql", contentType: "application/graphql",
			body: `mutation { addProductsToCart(cartId: "c1", cartItems: []) { cart { id } } }`, reason: "graphql_body_unread"},
		{name: "truncated by Envoy", method: "POST", path: "/graphql", contentType: jsonType, body: cart[:40], length: len(cart), reason: "graphql_body_unread"},
		// nginx and Caddy send no body, and state its length.
		{name: "body not sent", method: "POST", path: "/graphql", contentType: jsonType, length: len(cart), reason: "graphql_body_unread"},
		{name: "body not sent, chunked", method: "POST", path: "/graphql", contentType: jsonType, headers: map[string]string{"transfer-encoding": "chunked"},
			reason: "graphql_body_unread"},
		{name: "POST by override", method: "GET", path: "/graphql?query=%7Bcart(cart_id%3A%22c1%22)%7Bid%7D%7D",
			headers: map[string]string{"x-http-method-override": "POST"}, reason: "graphql_body_unread"},
		{name: "compressed body", method: "POST", path: "/graphql", contentType: jsonType, body: "\x1f\x8b\x08\x00garbage",
			headers: map[string]string{"content-encoding": "gzip"}, reason: authz.ReasonMalformedRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := withHeaders(t, tc.path, map[string]string{"cookie": "deputy_session=" + token})
			h := req.Attributes.Request.Http
			h.Method = tc.method
			h.Headers[":method"] = tc.method
			h.Body = tc.body
			for k, v := range tc.headers {
				h.Headers[k] = v
			}
			if tc.contentType != "" {
				h.Headers["content-type"] = tc.contentType
			}
			if n := max(tc.length, len(tc.body)); n > 0 && tc.headers["transfer-encoding"] == "" {
				h.Headers["content-length"] = strconv.Itoa(n)
			}
			resp := p.Check(ctx, req)
			if resp.Allowed != tc.allowed || resp.Reason != tc.reason {
				t.Fatalf("allowed %v (%s), want %v (%s)", resp.Allowed, resp.Reason, tc.allowed, tc.reason)
			}
		})
	}
}

// redeemedSession stores customer cust-9 and a live, redeemed session on
// it of support agent staff-1, for shop.example.com, whose cookie carries
// token.
func redeemedSession(t testing.TB, store sidecar.Store, token string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: "cust-9"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if err := storetest.StartRedeemed(ctx, store, &sidecar.Session{ID: "imp_1", Actor: "staff-1", ActorRoles: []string{"support_agent"}, Customer: "cust-9",
		StartedAt: now, ExpiresAt: now.Add(time.Hour), Host: "shop.example.com"}, delegation.HashSecret(token)); err != nil {
		t.Fatal(err)
	}
}
