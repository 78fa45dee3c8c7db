package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// testIssuer is an identity provider of the tests: an ES256 key whose
// public half is in a JWKS file Deputy reads.
type testIssuer struct {
	url    string
	jwks   string
	signer jose.Signer
}

func newTestIssuer(t *testing.T, url string) *testIssuer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kid := filepath.Base(url)
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.Public(), KeyID: kid, Algorithm: "ES256", Use: "sig"}}})
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, set, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	return &testIssuer{url: url, jwks: path, signer: s}
}

// token signs an hour-long token for the storefront audience.
func (is *testIssuer) token(t *testing.T, c identity.DevClaims) string {
	t.Helper()
	claims := map[string]any{"iss": is.url, "aud": "storefront", "sub": c.Subject,
		"iat": jwt.NewNumericDate(time.Now()), "exp": jwt.NewNumericDate(time.Now().Add(time.Hour))}
	if c.Org != "" {
		claims["org"] = c.Org
	}
	if c.Domain != "" {
		claims["domain"] = c.Domain
	}
	if len(c.Roles) > 0 {
		claims["roles"] = c.Roles
	}
	tok, err := jwt.Signed(is.signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// productionServer runs Deputy outside dev mode, with the shipped policies,
// the embedded store and the given issuers.
func productionServer(t *testing.T, issuers ...identity.IssuerConfig) Config {
	t.Helper()
	return productionServerWith(t, nil, issuers...)
}

// productionServerWith is productionServer with change applied to the
// config last (a Redis store, say).
func productionServerWith(t *testing.T, change func(*Config), issuers ...identity.IssuerConfig) Config {
	t.Helper()
	pemKey, err := generateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "signing-key.pem")
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, "../../policies", func(c *Config) {
		c.Dev = false
		c.DecisionLog.Sink = "none"
		c.Identity.Issuers = issuers
		c.Identity.Audiences = []string{"storefront"}
		c.ActorToken.KeyFiles = []string{keyFile}
		if change != nil {
			change(c)
		}
	})
	runServer(t, &cfg)
	waitListening(t, cfg.GRPC.Addr)
	waitListening(t, cfg.HTTP.Addr)
	return cfg
}

// issuerAPI returns a management API call to the server of cfg with a
// token of is for who, failing the test on another status than want.
func issuerAPI(cfg Config) func(t *testing.T, is *testIssuer, who identity.DevClaims, method, path, body string, want int) map[string]any {
	base := "http://" + cfg.HTTP.Addr
	return func(t *testing.T, is *testIssuer, who identity.DevClaims, method, path, body string, want int) map[string]any {
		t.Helper()
		return apiCall(t, base, method, path, is.token(t, who), body, want)
	}
}

// checkClient returns a gRPC ext_authz check of a GET of path on
// shop.example with headers against the server of cfg: the upstream
// headers of an allow, nil on a denial.
func checkClient(t *testing.T, cfg Config) func(t *testing.T, path string, headers map[string]string) map[string]string {
	t.Helper()
	conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := authv3.NewAuthorizationClient(conn)
	return func(t *testing.T, path string, headers map[string]string) map[string]string {
		t.Helper()
		resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path, Host: "shop.example", Headers: headers}}}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOkResponse() == nil {
			return nil
		}
		upstream := map[string]string{}
		for _, h := range resp.GetOkResponse().GetHeaders() {
			upstream[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		return upstream
	}
}

// Two trusted issuers, the storefront's (no namespace) and a partner
// identity provider (namespace "partner"), each minting tokens with the
// same sub and org values. Each reproduction of the two issuers' people
// being one is refused, and each issuer's people act as themselves.
func TestIssuersKeepTheirPeopleApart(t *testing.T) {
	shop := newTestIssuer(t, "https://shop.example")
	partner := newTestIssuer(t, "https://partner.example")
	cfg := productionServer(t,
		identity.IssuerConfig{Issuer: shop.url, JWKSFile: shop.jwks},
		identity.IssuerConfig{Issuer: partner.url, JWKSFile: partner.jwks, Namespace: "partner",
			Roles: []string{"support_lead", "contact_manager"}})
	base := "http://" + cfg.HTTP.Addr
	api := issuerAPI(cfg)
	sync := identity.DevClaims{Subject: "shop", Roles: []string{"customer_sync"}}
	staff := identity.DevClaims{Subject: "staff1", Roles: []string{"support_lead"}}
	for _, c := range []string{"cust1", "cust2"} {
		api(t, shop, sync, "PUT", "/deputy/v1/customers/"+c, `{"name":"A Customer","default_store_view":"en"}`, 200)
	}

	check := checkClient(t, cfg)
	bearer := func(t *testing.T, is *testIssuer, who identity.DevClaims) map[string]string {
		return map[string]string{"authorization": "Bearer " + is.token(t, who)}
	}

	t.Run("consent of another issuer's namesake", func(t *testing.T) {
		api(t, partner, identity.DevClaims{Subject: "cust1"}, "PUT", "/deputy/v1/customers/cust1/consent", `{"allowed":true}`, http.StatusForbidden)
		api(t, shop, staff, "POST", "/deputy/v1/impersonation/sessions", `{"customer_id":"cust1"}`, http.StatusForbidden)
	})

	var cookie string
	t.Run("session cookie with another issuer's namesake of its actor", func(t *testing.T) {
		api(t, shop, identity.DevClaims{Subject: "cust1"}, "PUT", "/deputy/v1/customers/cust1/consent", `{"allowed":true}`, 200)
		started := api(t, shop, staff, "POST", "/deputy/v1/impersonation/sessions", `{"customer_id":"cust1"}`, 201)
		cookie = redeemCookie(t, base, started["redeem_url"].(string))
		withCookie := func(h map[string]string) map[string]string { h["cookie"] = cookie; return h }
		if got := check(t, "/customer/account", withCookie(bearer(t, partner, identity.DevClaims{Subject: "staff1"}))); got != nil {
			t.Fatalf("partner issuer's staff1 carried the storefront staff1's session: %v", got)
		}
		got := check(t, "/customer/account", withCookie(bearer(t, shop, staff)))
		if got["x-deputy-actor"] != "staff1" || got["x-deputy-subject"] != "cust1" || got["x-deputy-mode"] != "impersonation" {
			t.Fatalf("storefront staff1 with its session: upstream headers %v", got)
		}
	})

	t.Run("contact manager of another issuer's namesake org", func(t *testing.T) {
		pat := identity.DevClaims{Subject: "pat", Org: "partnerco"}
		req := api(t, partner, pat, "POST", "/deputy/v1/partner/requests",
			`{"customer":"acme","contact_email":"cora@acme.example","expiry_days":10,"level":"full_admin","scope":"organisation"}`, 201)
		approve := "/deputy/v1/partner/requests/" + req["id"].(string) + "/approve"
		mallory := identity.DevClaims{Subject: "mallory", Org: "acme", Roles: []string{"contact_manager"}}
		// Not a party to the request: answered as an unknown id.
		api(t, partner, mallory, "POST", approve, ``, http.StatusNotFound)
		onBehalf := func(is *testIssuer, who identity.DevClaims) map[string]string {
			h := bearer(t, is, who)
			h["x-on-behalf-of"] = "acme"
			return h
		}
		if got := check(t, "/customers/acme/service-requests", onBehalf(partner, pat)); got != nil {
			t.Fatalf("grant live before the customer approved: %v", got)
		}
		api(t, shop, identity.DevClaims{Subject: "cora", Org: "acme", Roles: []string{"contact_manager"}}, "POST", approve, ``, 200)
		got := check(t, "/customers/acme/service-requests", onBehalf(partner, pat))
		if got["x-deputy-actor"] != "partner:pat" || got["x-deputy-mode"] != "partner" || got["x-deputy-level"] != "full_admin" {
			t.Fatalf("the partner's pat under its grant: upstream headers %v", got)
		}
		// The storefront issuer's own partnerco is another organisation.
		if got := check(t, "/customers/acme/service-requests", onBehalf(shop, pat)); got != nil {
			t.Fatalf("storefront issuer's pat of partnerco used the partner issuer's grant: %v", got)
		}
	})

	t.Run("staff mark of another issuer's namesake", func(t *testing.T) {
		// The partner issuer's cust2 acts with a staff permission: its
		// mark must not protect the storefront's cust2.
		api(t, partner, identity.DevClaims{Subject: "cust2", Roles: []string{"support_lead"}}, "GET", "/deputy/v1/impersonation/log", ``, 200)
		api(t, shop, identity.DevClaims{Subject: "cust2"}, "PUT", "/deputy/v1/customers/cust2/consent", `{"allowed":true}`, 200)
		api(t, shop, identity.DevClaims{Subject: "staff2", Roles: []string{"support_lead"}}, "POST", "/deputy/v1/impersonation/sessions", `{"customer_id":"cust2"}`, 201)
	})

	t.Run("storefront token spelling the partner namespace", func(t *testing.T) {
		for _, who := range []identity.DevClaims{{Subject: "partner:pat"}, {Subject: "pat", Org: "partner:partnerco"}, {Subject: "pat", Domain: "partner:eu"}} {
			api(t, shop, who, "GET", "/deputy/v1/partner/customers", ``, http.StatusUnauthorized)
		}
	})
}

// An issuer with a namespace asserts only the roles listed for it: the
// partner issuer (nothing listed) mints admin, support_agent and
// reseller_super_admin tokens that act as no role at all, while the vendor
// issuer, which lists them, acts with them in its own namespace.
func TestNamespacedIssuerRolesAreListed(t *testing.T) {
	shop := newTestIssuer(t, "https://shop.example")
	partner := newTestIssuer(t, "https://partner.example")
	vendor := newTestIssuer(t, "https://vendor.example")
	cfg := productionServer(t,
		identity.IssuerConfig{Issuer: shop.url, JWKSFile: shop.jwks},
		identity.IssuerConfig{Issuer: partner.url, JWKSFile: partner.jwks, Namespace: "partner"},
		identity.IssuerConfig{Issuer: vendor.url, JWKSFile: vendor.jwks, Namespace: "vendor",
			Roles: []string{"admin", "support_agent", "reseller_super_admin"}})
	api := issuerAPI(cfg)
	admin := identity.DevClaims{Subject: "mallory", Roles: []string{"admin"}}
	agent := identity.DevClaims{Subject: "mallory", Roles: []string{"support_agent"}}
	super := identity.DevClaims{Subject: "mallory", Domain: "shopa.example", Roles: []string{"reseller_super_admin"}}

	api(t, shop, identity.DevClaims{Subject: "shop", Roles: []string{"customer_sync"}}, "PUT", "/deputy/v1/customers/cust1", `{"name":"A Customer","default_store_view":"en"}`, 200)

	t.Run("unlisted roles act as none", func(t *testing.T) {
		api(t, partner, admin, "PUT", "/deputy/v1/customers/alice", `{"name":"Alice"}`, http.StatusForbidden)
		api(t, partner, admin, "GET", "/deputy/v1/audit", ``, http.StatusForbidden)
		api(t, shop, identity.DevClaims{Subject: "cust1"}, "PUT", "/deputy/v1/customers/cust1/consent", `{"allowed":true}`, 200)
		api(t, partner, agent, "POST", "/deputy/v1/impersonation/sessions", `{"customer_id":"cust1"}`, http.StatusForbidden)
		api(t, partner, super, "GET", "/deputy/v1/reseller/assignments", ``, http.StatusForbidden)
		api(t, partner, super, "PUT", "/deputy/v1/reseller/assignments/cust1", `{}`, http.StatusForbidden)
	})

	t.Run("listed roles act in the issuer's namespace", func(t *testing.T) {
		out := api(t, vendor, admin, "PUT", "/deputy/v1/customers/alice", `{"name":"Alice"}`, 200)
		if out["updated_by"] != "vendor:mallory" {
			t.Fatalf("customer put by the vendor's admin: %v", out)
		}
		api(t, vendor, admin, "GET", "/deputy/v1/audit", ``, 200)
		api(t, vendor, agent, "POST", "/deputy/v1/impersonation/sessions", `{"customer_id":"cust1"}`, http.StatusCreated)
	})
}

// Namespaced identities use the reseller and partner features: their
// domain, org and sub carry "<namespace>:", which every identifier the
// store keys by accepts. On the embedded store and on a real Redis.
func TestNamespacedIdentitiesDelegate(t *testing.T) {
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			var change func(*Config)
			if store == "redis" {
				rs := redistest.Start(t)
				change = func(c *Config) { c.Redis.Addrs = []string{rs.Addr} }
			}
			shop := newTestIssuer(t, "https://shop.example")
			partner := newTestIssuer(t, "https://partner.example")
			vendor := newTestIssuer(t, "https://vendor.example")
			cfg := productionServerWith(t, change,
				identity.IssuerConfig{Issuer: shop.url, JWKSFile: shop.jwks},
				identity.IssuerConfig{Issuer: partner.url, JWKSFile: partner.jwks, Namespace: "partner", Roles: []string{"contact_manager"}},
				identity.IssuerConfig{Issuer: vendor.url, JWKSFile: vendor.jwks, Namespace: "vendor",
					Roles: []string{"reseller_super_admin", "reseller_admin"}})
			testNamespacedDelegation(t, cfg, shop, partner, vendor)
		})
	}
}

func testNamespacedDelegation(t *testing.T, cfg Config, shop, partner, vendor *testIssuer) {
	base := "http://" + cfg.HTTP.Addr
	api := issuerAPI(cfg)
	grpcCheck := checkClient(t, cfg)
	// check asks as who for customer (x-on-behalf-of); the upstream
	// headers of an allow, nil on a denial.
	check := func(t *testing.T, is *testIssuer, who identity.DevClaims, path, customer string) map[string]string {
		t.Helper()
		return grpcCheck(t, path, map[string]string{"authorization": "Bearer " + is.token(t, who), "x-on-behalf-of": customer})
	}

	t.Run("reseller super admin and staff of a namespaced domain", func(t *testing.T) {
		sam := identity.DevClaims{Subject: "sam", Domain: "shopa.example", Roles: []string{"reseller_super_admin"}}
		out := api(t, vendor, sam, "PUT", "/deputy/v1/reseller/assignments/cust1", `{}`, 200)
		if out["domain"] != "vendor:shopa.example" || out["updated_by"] != "vendor:sam" {
			t.Fatalf("assignment put by the vendor's super admin: %v", out)
		}
		req, _ := http.NewRequest("POST", base+"/deputy/v1/reseller/imports", strings.NewReader("customer,domain\ncust2,vendor:shopa.example\npartner:acme,vendor:shopa.example\n"))
		req.Header.Set("authorization", "Bearer "+vendor.token(t, sam))
		req.Header.Set("content-type", "text/csv")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(raw), `"imported":2`) {
			t.Fatalf("import: %d %s", resp.StatusCode, raw)
		}
		list := api(t, vendor, sam, "GET", "/deputy/v1/reseller/assignments", ``, 200)
		var customers []string
		for _, it := range list["items"].([]any) {
			customers = append(customers, it.(map[string]any)["customer"].(string))
		}
		if strings.Join(customers, ",") != "cust1,cust2,partner:acme" {
			t.Fatalf("the domain's assignments: %v", list)
		}
		// The shop issuer's super admin of the same domain name signs in
		// through another domain.
		shopSam := identity.DevClaims{Subject: "sam", Domain: "shopa.example", Roles: []string{"reseller_super_admin"}}
		if l := api(t, shop, shopSam, "GET", "/deputy/v1/reseller/assignments", ``, 200); len(l["items"].([]any)) != 0 {
			t.Fatalf("the storefront issuer's shopa.example sees the vendor's: %v", l)
		}
		desk := identity.DevClaims{Subject: "desk", Domain: "shopa.example", Roles: []string{"reseller_admin"}}
		for _, customer := range []string{"cust1", "partner:acme"} {
			got := check(t, vendor, desk, "/support/cases", customer)
			if got["x-deputy-mode"] != "reseller" || got["x-deputy-subject"] != customer || got["x-deputy-actor"] != "vendor:desk" {
				t.Fatalf("vendor desk for %s: upstream headers %v", customer, got)
			}
		}
		if got := check(t, shop, desk, "/support/cases", "cust1"); got != nil {
			t.Fatalf("the storefront issuer's desk of shopa.example acted for the vendor domain's customer: %v", got)
		}
	})

	t.Run("namespaced partner user and namespaced customer org", func(t *testing.T) {
		pat := identity.DevClaims{Subject: "pat", Org: "partnerco"}
		req := api(t, partner, pat, "POST", "/deputy/v1/partner/requests",
			`{"customer":"acme","contact_email":"cora@acme.example","expiry_days":10,"level":"update","scope":"individual","users":["partner:pat"]}`, 201)
		cora := identity.DevClaims{Subject: "cora", Org: "acme", Roles: []string{"contact_manager"}}
		api(t, shop, cora, "POST", "/deputy/v1/partner/requests/"+req["id"].(string)+"/approve", ``, 200)
		got := check(t, partner, pat, "/customers/acme/service-requests", "acme")
		if got["x-deputy-actor"] != "partner:pat" || got["x-deputy-mode"] != "partner" || got["x-deputy-level"] != "update" {
			t.Fatalf("the partner's pat under its individual grant: upstream headers %v", got)
		}

		// The storefront's own partner org asks the partner issuer's
		// customer org, whose contact manager approves.
		lee := identity.DevClaims{Subject: "lee", Org: "shopco"}
		req = api(t, shop, lee, "POST", "/deputy/v1/partner/requests",
			`{"customer":"partner:acme","contact_email":"cm@acme.example","expiry_days":10,"level":"look","scope":"organisation"}`, 201)
		approve := "/deputy/v1/partner/requests/" + req["id"].(string) + "/approve"
		api(t, shop, cora, "POST", approve, ``, http.StatusNotFound) // the storefront's cora is no party to it
		api(t, partner, cora, "POST", approve, ``, 200)
		got = check(t, shop, lee, "/customers/partner:acme/service-requests", "partner:acme")
		if got["x-deputy-subject"] != "partner:acme" || got["x-deputy-level"] != "look" {
			t.Fatalf("shopco for partner:acme: upstream headers %v", got)
		}
		if got := check(t, shop, lee, "/customers/acme/service-requests", "acme"); got != nil {
			t.Fatalf("shopco's grant of partner:acme used for the storefront's acme: %v", got)
		}
	})
}

// One issuer alone reads its names as they are: no prefix, none reserved.
func TestSingleIssuerNamesAsSigned(t *testing.T) {
	shop := newTestIssuer(t, "https://shop.example")
	cfg := productionServer(t, identity.IssuerConfig{Issuer: shop.url, JWKSFile: shop.jwks})
	base := "http://" + cfg.HTTP.Addr
	apiCall(t, base, "PUT", "/deputy/v1/customers/partner:cust1", shop.token(t, identity.DevClaims{Subject: "shop", Roles: []string{"customer_sync"}}), `{"name":"A Customer"}`, 200)
	apiCall(t, base, "PUT", "/deputy/v1/customers/partner:cust1/consent", shop.token(t, identity.DevClaims{Subject: "partner:cust1"}), `{"allowed":true}`, 200)
	out := apiCall(t, base, "GET", "/deputy/v1/customers/partner:cust1/consent", shop.token(t, identity.DevClaims{Subject: "partner:cust1"}), ``, 200)
	if out["allowed"] != true {
		t.Fatalf("consent of partner:cust1 = %v", out)
	}
}
