package main

import (
	"context"
	"strconv"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// A session is never for a request whose verified identity is someone
// other than its actor, nor is a partner's on-behalf-of grant: mallory
// sends staff1's session cookie (or a partner's verified bearer naming
// acme) with her own token in a cookie, a header or a JSON body, where
// go-chi/jwtauth (cookie jwt), hand-written readers (X-Auth-Token) and
// Doorkeeper or passport-http-bearer (a JSON body's access_token) sign
// her in. Such a request was allowed as staff1 acting for cust1, Deputy's
// delegated headers on it. Every one is refused, and so is a token in a
// carrier the operator added to identity.credential_carriers; the same
// token Deputy verified, carried again, is not another credential.
func TestCredentialCarriersBindNoDelegation(t *testing.T) {
	shop := newTestIssuer(t, "https://shop.example")
	cfg := productionServerWith(t, func(c *Config) {
		c.Identity.CredentialCarriers = append(authz.DefaultCredentialCarriers(), "header:x-shop-jwt")
	}, identity.IssuerConfig{Issuer: shop.url, JWKSFile: shop.jwks})
	base := "http://" + cfg.HTTP.Addr
	api := issuerAPI(cfg)
	staff := identity.DevClaims{Subject: "staff1", Roles: []string{"support_lead"}}
	api(t, shop, identity.DevClaims{Subject: "shop", Roles: []string{"customer_sync"}}, "PUT", "/deputy/v1/customers/cust1", `{"name":"A Customer","default_store_view":"en"}`, 200)
	api(t, shop, identity.DevClaims{Subject: "cust1"}, "PUT", "/deputy/v1/customers/cust1/consent", `{"allowed":true}`, 200)
	started := api(t, shop, staff, "POST", "/deputy/v1/impersonation/sessions", `{"customer_id":"cust1"}`, 201)
	cookie := redeemCookie(t, base, started["redeem_url"].(string))
	pat := identity.DevClaims{Subject: "pat", Org: "partnerco"}
	req := api(t, shop, pat, "POST", "/deputy/v1/partner/requests", `{"customer":"acme","contact_email":"cora@acme.example","expiry_days":10,"level":"look","scope":"organisation"}`, 201)
	api(t, shop, identity.DevClaims{Subject: "cora", Org: "acme", Roles: []string{"contact_manager"}}, "POST", "/deputy/v1/partner/requests/"+req["id"].(string)+"/approve", ``, 200)
	mallory := shop.token(t, identity.DevClaims{Subject: "mallory"})
	staffToken := shop.token(t, staff)
	patToken := shop.token(t, pat)

	conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := authv3.NewAuthorizationClient(conn)
	// check sends a request as Envoy does, its body included
	// (with_request_body), and returns the headers Deputy sets upstream,
	// nil when denied.
	check := func(t *testing.T, method, path string, headers map[string]string, body string) map[string]string {
		t.Helper()
		h := map[string]string{}
		for k, v := range headers {
			h[k] = v
		}
		if body != "" {
			h["content-length"] = strconv.Itoa(len(body))
		}
		resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Host: "shop.example", Headers: h, Body: body, Protocol: "HTTP/1.1"}}}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOkResponse() == nil {
			return nil
		}
		upstream := map[string]string{}
		for _, hv := range resp.GetOkResponse().GetHeaders() {
			upstream[hv.GetHeader().GetKey()] = hv.GetHeader().GetValue()
		}
		return upstream
	}
	const account, cart, cases = "/customer/account", "/checkout/cart/add", "/customers/acme/service-requests"
	jsonBody := map[string]string{"cookie": cookie, "content-type": "application/json"}
	multi := map[string]string{"cookie": cookie, "content-type": "multipart/form-data; boundary=XX"}
	mpart := func(disposition string) string {
		return "--XX\r\nContent-Disposition: form-data; name=\"product\"\r\n\r\n1\r\n--XX\r\nContent-Disposition: " + disposition + "\r\n\r\n" + mallory + "\r\n--XX--\r\n"
	}

	// What must hold, for comparison.
	for _, tc := range []struct {
		name, method, path string
		headers            map[string]string
		body               string
		actor              string
	}{
		{"the session alone", "GET", account, map[string]string{"cookie": cookie}, "", "staff1"},
		{"the session posting JSON", "POST", cart, jsonBody, `{"product":42}`, "staff1"},
		{"the session with carriers holding no token", "GET", account + "?token=abc", map[string]string{"cookie": cookie + "; jwt=abc", "x-auth-token": "opaque"}, "", "staff1"},
		{"the actor's verified token in a cookie too", "GET", account, map[string]string{"cookie": cookie + "; jwt=" + staffToken, "authorization": "Bearer " + staffToken}, "", "staff1"},
		{"the partner naming acme", "GET", cases, map[string]string{"authorization": "Bearer " + patToken, "x-on-behalf-of": "acme"}, "", "pat"},
	} {
		if got := check(t, tc.method, tc.path, tc.headers, tc.body); got["x-deputy-actor"] != tc.actor {
			t.Fatalf("%s: upstream headers %v, want actor %s", tc.name, got, tc.actor)
		}
	}

	for _, tc := range []struct {
		name, method, path string
		headers            map[string]string
		body               string
	}{
		{"a cookie carrier", "GET", account, map[string]string{"cookie": cookie + "; jwt=" + mallory}, ""},
		{"a header carrier", "GET", account, map[string]string{"cookie": cookie, "x-auth-token": mallory}, ""},
		{"a JSON body", "POST", cart, jsonBody, `{"product":42,"access_token":"` + mallory + `"}`},
		{"a query carrier", "GET", account + "?token=" + mallory, map[string]string{"cookie": cookie}, ""},
		{"a form body with no content type", "POST", cart, map[string]string{"cookie": cookie}, "product=42&access_token=" + mallory},
		{"a configured header carrier", "GET", account, map[string]string{"cookie": cookie, "X-Shop-JWT": mallory}, ""},
		{"another token beside the actor's verified one", "GET", account, map[string]string{"cookie": cookie + "; jwt=" + mallory, "authorization": "Bearer " + staffToken}, ""},
		{"a partner with a cookie carrier", "GET", cases, map[string]string{"authorization": "Bearer " + patToken, "x-on-behalf-of": "acme", "cookie": "jwt=" + mallory}, ""},
		{"a partner with a header carrier", "GET", cases, map[string]string{"authorization": "Bearer " + patToken, "x-on-behalf-of": "acme", "x-auth-token": mallory}, ""},
		{"a partner with a JSON body", "GET", cases, map[string]string{"authorization": "Bearer " + patToken, "x-on-behalf-of": "acme", "content-type": "application/json"}, `{"access_token":"` + mallory + `"}`},
		// hapi-auth-jwt2 drops "Bearer" (any case) and every space from
		// the query and cookie token before it verifies it.
		{"a query token split by a space", "GET", account + "?token=e%20" + mallory[1:], map[string]string{"cookie": cookie}, ""},
		{"a query token split by BEARER", "GET", account + "?token=eBEARER" + mallory[1:], map[string]string{"cookie": cookie}, ""},
		{"a cookie token split by a space", "GET", account, map[string]string{"cookie": cookie + "; token=e%20" + mallory[1:]}, ""},
		{"a query token after Bearer", "GET", account + "?access_token=Bearer%20" + mallory, map[string]string{"cookie": cookie}, ""},
		// Multipart parts PHP reads as api_token and Go's reader skips.
		{"a multipart attachment part", "POST", cart, multi, mpart(`attachment; name="api_token"`)},
		{"a multipart part naming itself twice", "POST", cart, multi, mpart(`form-data; name="x"; name="api_token"`)},
		{"a multipart part with a bare parameter", "POST", cart, multi, mpart(`form-data; name="api_token"; foo`)},
		{"a multipart part with an empty parameter", "POST", cart, multi, mpart(`form-data; name="api_token";;`)},
		{"a multipart part name in single quotes", "POST", cart, multi, mpart(`form-data; name='api_token'`)},
		{"a multipart boundary inside another parameter", "POST", cart, map[string]string{"cookie": cookie, "content-type": "multipart/form-data; xboundary=YY; boundary=XX"},
			"--XX\r\nContent-Disposition: form-data; name=\"product\"\r\n\r\n1\r\n--YY\r\nContent-Disposition: form-data; name=\"api_token\"\r\n\r\n" + mallory + "\r\n--YY--\r\n--XX--\r\n"},
	} {
		if got := check(t, tc.method, tc.path, tc.headers, tc.body); got != nil {
			t.Errorf("%s holding mallory's token: allowed as %s acting for %s (%s)", tc.name, got["x-deputy-actor"], got["x-deputy-subject"], got["x-deputy-mode"])
		}
	}
}
