package main

import (
	"encoding/base64"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/deputyhq/deputy/sidecar/identity"
)

// A session is never honoured beside another user's token an upstream
// reads. mallory sent staff1's session cookie with her token spelled so
// Deputy saw no credential: "JWT <token>=" (PyJWT, behind simplejwt,
// djangorestframework-jwt and Flask-JWT, decodes padded parts, and the
// signature is not signed, so it still verifies), a bare padded token, a
// compact JWE, or the token as a Basic credential's user or password. The
// request was allowed as staff1 acting for cust1 while the upstream
// signed mallory in. Each is refused now and binds no delegation.
func TestLenientTokenFormsBindNoDelegation(t *testing.T) {
	shop := newTestIssuer(t, "https://shop.example")
	cfg := productionServer(t, identity.IssuerConfig{Issuer: shop.url, JWKSFile: shop.jwks})
	base := "http://" + cfg.HTTP.Addr
	api := issuerAPI(cfg)
	staff := identity.DevClaims{Subject: "staff1", Roles: []string{"support_lead"}}
	api(t, shop, identity.DevClaims{Subject: "shop", Roles: []string{"customer_sync"}}, "PUT", "/deputy/v1/customers/cust1", `{"name":"A Customer","default_store_view":"en"}`, 200)
	api(t, shop, identity.DevClaims{Subject: "cust1"}, "PUT", "/deputy/v1/customers/cust1/consent", `{"allowed":true}`, 200)
	started := api(t, shop, staff, "POST", "/deputy/v1/impersonation/sessions", `{"customer_id":"cust1"}`, 201)
	cookie := redeemCookie(t, base, started["redeem_url"].(string))
	check := checkClient(t, cfg)

	mallory := shop.token(t, identity.DevClaims{Subject: "mallory"})
	enc, err := jose.NewEncrypter(jose.A128GCM, jose.Recipient{Algorithm: jose.DIRECT, Key: make([]byte, 16)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := enc.Encrypt([]byte(`{"sub":"mallory"}`))
	if err != nil {
		t.Fatal(err)
	}
	encrypted, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	basic := func(userPass string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(userPass)) }
	apiKey := base64.StdEncoding.EncodeToString([]byte("apikey:" + mallory))

	// What must hold, for comparison: the session alone, and beside a
	// credential of another scheme that carries no token, is staff1's.
	for name, headers := range map[string]map[string]string{
		"the session alone":              {"cookie": cookie},
		"the session and a Basic secret": {"cookie": cookie, "authorization": basic("mallory:secret")},
	} {
		if got := check(t, "/customer/account", headers); got["x-deputy-actor"] != "staff1" || got["x-deputy-subject"] != "cust1" {
			t.Fatalf("%s: upstream headers %v, want staff1 acting for cust1", name, got)
		}
	}
	for name, authorization := range map[string]string{
		"the JWT scheme, padded":             "JWT " + mallory + "=",
		"the JWT scheme, padded twice":       "JWT " + mallory + "==",
		"the JWT scheme, padded three times": "JWT " + mallory + "===",
		"a bare padded token":                mallory + "=",
		"the JWT scheme, standard alphabet":  "JWT " + strings.NewReplacer("-", "+", "_", "/").Replace(mallory) + "+/",
		"the JWT scheme, bytes after":        "JWT " + mallory + "!!!!",
		"a quoted token":                     `JWT token="` + mallory + `"`,
		"the JWT scheme, a JWE":              "JWT " + encrypted,
		"a bare JWE":                         encrypted,
		"Basic, the token as user":           basic(mallory + ":"),
		"Basic, the token as password":       basic("api:" + mallory),
		"Basic, the token percent-encoded":   basic("client:" + strings.ReplaceAll(mallory, ".", "%2E")),
		"Basic, a space inside the encoding": "Basic " + apiKey[:8] + " " + apiKey[8:],
		"Basic, a dash inside the encoding":  "Basic " + apiKey[:40] + "-" + apiKey[40:],
	} {
		if got := check(t, "/customer/account", map[string]string{"cookie": cookie, "authorization": authorization}); got != nil {
			t.Errorf("staff1's session with %s: allowed as %s acting for %s (%s), the authorization header passed on", name, got["x-deputy-actor"], got["x-deputy-subject"], got["x-deputy-mode"])
		}
	}
}
