package authz_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// The on-behalf-of header is the one identity header a client chooses. The
// upstream must see it only as Deputy decided it: a spelling a proxy or a
// CGI upstream folds into it ("_" for "-") is refused before policy, and
// the header goes upstream only as the customer of the partner or reseller
// delegation decided on, removed on every other request.
func TestOnBehalfOfReachesUpstreamOnlyAsDecided(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	store := memory.New()
	if err := store.PutGrant(ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "helpco", Level: sidecar.Level("update"), ExpiresAt: now.Add(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: "cust-9"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	session := "onbehalf-session-token-0123456789abcdef0123"
	if err := storetest.StartRedeemed(ctx, store, &sidecar.Session{ID: "imp_1", Actor: "staff-1", ActorRoles: []string{"support_agent"}, Customer: "cust-9",
		StartedAt: now, ExpiresAt: now.Add(time.Hour), Host: "shop.example.com"}, delegation.HashSecret(session)); err != nil {
		t.Fatal(err)
	}
	p, mint := delegatedPipeline(t, store)
	partner := "Bearer " + mint(identity.DevClaims{Subject: "pat", Org: "helpco", Roles: []string{"partner"}, TTL: time.Hour})
	cases := []struct {
		name      string
		path      string
		headers   map[string]string
		headerMap [][2]string
		status    int    // of a denial; 0: allowed
		upstream  string // the x-on-behalf-of value set upstream, "" none
		removed   []string
	}{
		{name: "underscore spelling", path: "/customers/acme/service-requests/42",
			headers: map[string]string{"authorization": partner, "x_on_behalf_of": "acme"}, status: 400},
		{name: "underscore spelling beside the header, same value", path: "/customers/acme/service-requests/42",
			headers: map[string]string{"authorization": partner, "x-on-behalf-of": "acme", "X-On_Behalf-Of": "acme"}, status: 400},
		{name: "underscore spelling in header_map", path: "/customers/acme/service-requests/42",
			headers: map[string]string{"authorization": partner}, headerMap: [][2]string{{"x-on-behalf-of", "acme"}, {"X_ON_BEHALF_OF", "globex"}}, status: 400},
		{name: "underscore spelling on a public page", path: "/catalog/shoes",
			headers: map[string]string{"x_on_behalf_of": "acme"}, status: 400},
		{name: "partner acting for the customer", path: "/customers/acme/service-requests/42",
			headers: map[string]string{"authorization": partner, "x-on-behalf-of": " acme "}, upstream: "acme"},
		{name: "partner naming the customer by path only", path: "/customers/acme/service-requests/42",
			headers: map[string]string{"authorization": partner}, upstream: "acme"},
		{name: "anonymous on a public page", path: "/catalog/shoes",
			headers: map[string]string{"x-on-behalf-of": "acme"}, removed: []string{"x-on-behalf-of"}},
		{name: "anonymous on a public page, header map", path: "/catalog/shoes",
			headerMap: [][2]string{{"X-On-Behalf-Of", "acme"}}, removed: []string{"x-on-behalf-of"}},
		{name: "impersonation session naming another customer", path: "/customer/account",
			headers: map[string]string{"cookie": "deputy_session=" + session, "x-on-behalf-of": "globex"}, removed: []string{"x-on-behalf-of"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := withHeaders(t, tc.path, tc.headers)
			addHeaderFields(req, tc.headerMap)
			resp := p.Check(ctx, req)
			if tc.status != 0 {
				if resp.Allowed || resp.HTTPStatus != tc.status || resp.Reason != authz.ReasonMalformedRequest {
					t.Fatalf("allowed %v status %d reason %q, want a %d refusal", resp.Allowed, resp.HTTPStatus, resp.Reason, tc.status)
				}
				return
			}
			if !resp.Allowed {
				t.Fatalf("denied: %s", resp.Reason)
			}
			var set []string
			for _, h := range append(slices.Clone(resp.Headers), resp.Injected...) {
				if strings.EqualFold(h.Key, "x-on-behalf-of") {
					set = append(set, h.Value)
				}
			}
			switch {
			case tc.upstream != "" && !slices.Equal(set, []string{tc.upstream}):
				t.Fatalf("x-on-behalf-of set upstream %q, want %q", set, tc.upstream)
			case tc.upstream == "" && len(set) > 0:
				t.Fatalf("x-on-behalf-of set upstream %q on a request not decided on it", set)
			}
			for _, name := range tc.removed {
				if !slices.Contains(resp.HeadersToRemove, name) {
					t.Errorf("%s not removed upstream: %v", name, resp.HeadersToRemove)
				}
			}
		})
	}
}

// addHeaderFields appends fields to the request's header_map, as Envoy
// sends headers with encode_raw_headers.
func addHeaderFields(req *authv3.CheckRequest, fields [][2]string) {
	for _, kv := range fields {
		hm := req.Attributes.Request.Http.HeaderMap
		if hm == nil {
			hm = &corev3.HeaderMap{}
			req.Attributes.Request.Http.HeaderMap = hm
		}
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[0], Value: kv[1]})
	}
}
