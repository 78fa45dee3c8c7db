package main

import (
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/deputyhq/deputy/sidecar/identity"
)

// A session is never honoured for a request whose verified identity is
// someone other than its actor. staff1 starts and redeems a session;
// mallory sends its cookie with her own token in a form Deputy refused or
// did not read (a tab or a no-break space after "Bearer", "bearer:", junk
// after the token) while Rails (/^Bearer\s+/), Django REST framework
// (split()) or Laravel (the text after the last "Bearer ") sign her in
// from the same header: the request was allowed as staff1 acting for
// cust1. Every such request, and every one with a token Deputy refuses
// (expired, for another audience), is denied, and so is a partner's or
// reseller's naming a customer with one. So is a request with a token
// Deputy does not read while upstreams do: a bare compact JWS or one in
// the "JWT" scheme (Go's strings.TrimPrefix(h, "Bearer "), passport-jwt,
// simplejwt), or one in the query's access_token or bearer_token.
func TestRefusedBearerBindsNoDelegation(t *testing.T) {
	shop := newTestIssuer(t, "https://shop.example")
	cfg := productionServer(t, identity.IssuerConfig{Issuer: shop.url, JWKSFile: shop.jwks})
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
	rita := identity.DevClaims{Subject: "rita", Domain: "shopa.example", Roles: []string{"reseller_admin"}}
	api(t, shop, identity.DevClaims{Subject: "sam", Domain: "shopa.example", Roles: []string{"reseller_super_admin"}}, "PUT", "/deputy/v1/reseller/assignments/acme", `{}`, 200)
	check := checkClient(t, cfg)

	// signed is a token of shop with its claims changed by edit.
	signed := func(who string, edit func(map[string]any)) string {
		claims := map[string]any{"iss": shop.url, "aud": "storefront", "sub": who,
			"iat": jwt.NewNumericDate(time.Now()), "exp": jwt.NewNumericDate(time.Now().Add(time.Hour))}
		edit(claims)
		tok, err := jwt.Signed(shop.signer).Claims(claims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	mallory := shop.token(t, identity.DevClaims{Subject: "mallory"})
	expired := signed("mallory", func(c map[string]any) {
		c["iat"], c["exp"] = jwt.NewNumericDate(time.Now().Add(-2*time.Hour)), jwt.NewNumericDate(time.Now().Add(-time.Hour))
	})
	otherAudience := signed("mallory", func(c map[string]any) { c["aud"] = "billing" })

	// What must hold, for comparison: the session binds to its actor.
	if got := check(t, "/customer/account", map[string]string{"cookie": cookie}); got["x-deputy-actor"] != "staff1" || got["x-deputy-subject"] != "cust1" {
		t.Fatalf("staff1's session alone: upstream headers %v", got)
	}
	if got := check(t, "/customer/account", map[string]string{"cookie": cookie, "authorization": "Bearer " + mallory}); got != nil {
		t.Fatalf("staff1's session with mallory's token: allowed, upstream headers %v", got)
	}
	for name, authorization := range map[string]string{
		"tab after the scheme":              "Bearer\t" + mallory,
		"no-break space after the scheme":   "Bearer\u00a0" + mallory,
		"colon after the scheme":            "bearer:" + mallory,
		"two spaces after the scheme":       "Bearer  " + mallory,
		"comma and more after the token":    "Bearer " + mallory + ",x",
		"a word after the token":            "Bearer " + mallory + " x",
		"a bearer after another scheme":     "Basic bWFsbG9yeTpzZWNyZXQ=, Bearer " + mallory,
		"an expired token":                  "Bearer " + expired,
		"a token for another audience":      "Bearer " + otherAudience,
		"the actor's own token after a tab": "Bearer\t" + shop.token(t, staff),
		"a bare token":                      mallory,
		"a bare expired token":              expired,
		"the JWT scheme":                    "JWT " + mallory,
		"the JWT scheme, an expired token":  "JWT " + expired,
	} {
		if got := check(t, "/customer/account", map[string]string{"cookie": cookie, "authorization": authorization}); got != nil {
			t.Errorf("staff1's session with %s: allowed as %s acting for %s (%s), the authorization header passed on", name, got["x-deputy-actor"], got["x-deputy-subject"], got["x-deputy-mode"])
		}
	}
	// A token in the query, read by Doorkeeper, Spring Security
	// (allowUriQueryParameter) and passport-http-bearer.
	for name, query := range map[string]string{
		"access_token":                 "?access_token=" + mallory,
		"an expired access_token":      "?access_token=" + expired,
		"Access_Token":                 "?Access_Token=" + mallory,
		"access%5Ftoken":               "?access%5Ftoken=" + mallory,
		"a repeated access_token":      "?access_token=x&access_token=" + mallory,
		"bearer_token":                 "?bearer_token=" + mallory,
		"the actor's own access_token": "?access_token=" + shop.token(t, staff),
	} {
		if got := check(t, "/customer/account"+query, map[string]string{"cookie": cookie}); got != nil {
			t.Errorf("staff1's session with %s in the query: allowed as %s acting for %s (%s)", name, got["x-deputy-actor"], got["x-deputy-subject"], got["x-deputy-mode"])
		}
	}
	if got := check(t, "/customer/account?access_token=abc123", map[string]string{"cookie": cookie}); got["x-deputy-actor"] != "staff1" {
		t.Errorf("staff1's session with an access_token that is no JWT: upstream headers %v, want the session", got)
	}

	for _, tc := range []struct {
		name, path string
		who        identity.DevClaims
		mode       string
	}{
		{"partner", "/customers/acme/service-requests", pat, "partner"},
		{"reseller", "/support/cases", rita, "reseller"},
	} {
		onBehalf := func(authorization string) map[string]string {
			return map[string]string{"authorization": authorization, "x-on-behalf-of": "acme"}
		}
		if got := check(t, tc.path, onBehalf("Bearer "+shop.token(t, tc.who))); got["x-deputy-mode"] != tc.mode {
			t.Fatalf("%s acting for acme: upstream headers %v", tc.name, got)
		}
		expired := signed(tc.who.Subject, func(c map[string]any) {
			for k, v := range map[string]string{"org": tc.who.Org, "domain": tc.who.Domain} {
				if v != "" {
					c[k] = v
				}
			}
			if tc.who.Roles != nil {
				c["roles"] = tc.who.Roles
			}
			c["iat"], c["exp"] = jwt.NewNumericDate(time.Now().Add(-2*time.Hour)), jwt.NewNumericDate(time.Now().Add(-time.Hour))
		})
		for variant, authorization := range map[string]string{"an expired token": "Bearer " + expired, "a token after a tab": "Bearer\t" + shop.token(t, tc.who), "the JWT scheme": "JWT " + shop.token(t, tc.who)} {
			if got := check(t, tc.path, onBehalf(authorization)); got != nil {
				t.Errorf("%s with %s naming acme: allowed as %s acting for %s (%s)", tc.name, variant, got["x-deputy-actor"], got["x-deputy-subject"], got["x-deputy-mode"])
			}
		}
		if got := check(t, tc.path+"?access_token="+shop.token(t, tc.who), onBehalf("Bearer "+shop.token(t, tc.who))); got != nil {
			t.Errorf("%s with an access_token in the query naming acme: allowed as %s acting for %s (%s)", tc.name, got["x-deputy-actor"], got["x-deputy-subject"], got["x-deputy-mode"])
		}
	}
}
