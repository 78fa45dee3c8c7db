package authz_test

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// Envoy fills path and :path, method and :method, body and raw_body, and
// a header_map entry's value and raw_value from one source each, and
// leaves query and fragment empty. A caller other than Envoy can send a
// pair that disagrees, or fill the empty fields: Deputy decided on one
// while a policy reading the other, or whatever the caller forwards,
// acts on another request. During a live session, each such check below
// was allowed with the customer's identity injected; each is now refused
// as malformed, and the same request with its copies agreeing is still
// decided as before.
func TestFieldCopiesMustAgree(t *testing.T) {
	ctx := context.Background()
	p, token := impersonationPipeline(t, time.Now())
	session := map[string]string{"cookie": "deputy_session=" + token}
	for _, tc := range []struct {
		name  string
		edit  func(*authv3.CheckRequest)
		agree bool
	}{
		{name: "agreeing path and :path", agree: true, edit: func(*authv3.CheckRequest) {}},
		{name: ":path names a forbidden route", edit: func(r *authv3.CheckRequest) {
			r.Attributes.Request.Http.Headers[":path"] = "/customer/account/password/"
		}},
		{name: ":path in another case of name", edit: func(r *authv3.CheckRequest) {
			delete(r.Attributes.Request.Http.Headers, ":path")
			r.Attributes.Request.Http.Headers[":PATH"] = "/customer/account/password/"
		}},
		{name: ":path also in header_map", edit: func(r *authv3.CheckRequest) {
			addHeaderFields(r, [][2]string{{":path", "/customer/account/password/"}})
		}},
		{name: "a header_map :path whose raw_value differs", edit: func(r *authv3.CheckRequest) {
			r.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":path", Value: "/catalog/shoes", RawValue: []byte("/customer/account/password/")}}}
		}},
		{name: "a header_map :method whose raw_value differs", edit: func(r *authv3.CheckRequest) {
			r.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":method", Value: "GET", RawValue: []byte("POST")}}}
		}},
		{name: "a header_map entry with the same value and raw_value", agree: true, edit: func(r *authv3.CheckRequest) {
			r.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":path", Value: "/catalog/shoes", RawValue: []byte("/catalog/shoes")}}}
		}},
		{name: ":path with the query cut", edit: func(r *authv3.CheckRequest) {
			r.Attributes.Request.Http.Path += "?next=/customer/account/password/"
		}},
		{name: ":method POST on a GET", edit: func(r *authv3.CheckRequest) {
			r.Attributes.Request.Http.Headers[":method"] = "POST"
		}},
		{name: ":method in another letter case", edit: func(r *authv3.CheckRequest) {
			r.Attributes.Request.Http.Headers[":method"] = "get"
		}},
		{name: "raw_body other than body", edit: func(r *authv3.CheckRequest) {
			r.Attributes.Request.Http.Body = `{"query":"{ products { name } }"}`
			r.Attributes.Request.Http.RawBody = []byte(`{"query":"mutation { changeCustomerPassword(currentPassword: \"a\", newPassword: \"b\") { id } }"}`)
		}},
		{name: "a query field", edit: func(r *authv3.CheckRequest) {
			r.Attributes.Request.Http.Query = "next=/customer/account/password/"
		}},
		{name: "a fragment field", edit: func(r *authv3.CheckRequest) {
			r.Attributes.Request.Http.Fragment = "/customer/account/password/"
		}},
		{name: "raw_body the same as body", agree: true, edit: func(r *authv3.CheckRequest) {
			r.Attributes.Request.Http.Body = `{"query":"{ products { name } }"}`
			r.Attributes.Request.Http.RawBody = []byte(r.Attributes.Request.Http.Body)
		}},
		{name: "raw_body alone", agree: true, edit: func(r *authv3.CheckRequest) {
			r.Attributes.Request.Http.RawBody = []byte(`{"query":"{ products { name } }"}`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := withHeaders(t, "/catalog/shoes", session)
			tc.edit(req)
			resp := p.Check(ctx, req)
			if tc.agree {
				if !resp.Allowed || injected(resp, "x-deputy-subject") != "cust-9" {
					t.Fatalf("allowed %v (%s), subject %q: want allowed as cust-9", resp.Allowed, resp.Reason, injected(resp, "x-deputy-subject"))
				}
				return
			}
			if resp.Allowed || resp.HTTPStatus != 400 || resp.Reason != "malformed_request" {
				t.Fatalf("allowed %v, status %d, reason %q: want 400 malformed_request", resp.Allowed, resp.HTTPStatus, resp.Reason)
			}
		})
	}
}

// injected is the value of Deputy's injected header n, or "".
func injected(resp *authz.Response, n string) string {
	for _, h := range resp.Injected {
		if h.Key == n {
			return h.Value
		}
	}
	return ""
}
