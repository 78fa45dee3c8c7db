package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// noRedirects answers a redirect as it came: a redeem's 302 is its answer.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// TestEncodedRedeemLinkBurnsOnEveryPath runs Deputy, on the embedded store
// and on a real Redis, and sends a redeem link whose "?" arrived
// percent-encoded (a form proxies' access logs write whole, code
// included), or with a look-alike of the "?" (fullwidth ？), on the path
// as sent or in another case, each way such a request reaches Deputy: to
// the management API on the HTTP port (also as //deputy/v1/...), as a
// gRPC check, and as an HTTP check under http.path_prefix. Each refuses with 400 and uses the code up: the plain
// link, opened afterwards, no longer redeems.
func TestEncodedRedeemLinkBurnsOnEveryPath(t *testing.T) {
	stores := map[string]func(c *Config){
		"memory": func(c *Config) {},
		"redis": func(c *Config) {
			c.Redis.Addrs = []string{redistest.Start(t).Addr}
		},
	}
	for name, store := range stores {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			copyTree(t, "../../policies", dir)
			cfg := testConfig(t, dir, func(c *Config) {
				store(c)
				c.DecisionLog.Sink = "none"
				c.HTTP.PathPrefix = "/check"
			})
			runServer(t, &cfg)
			token := devToken(t, &cfg)
			base := "http://" + cfg.HTTP.Addr
			sync := token(identity.DevClaims{Subject: "shop", Roles: []string{"customer_sync"}})
			apiCall(t, base, "PUT", "/deputy/v1/customers/cust-9", sync, `{"name":"Zoe","default_store_view":"en"}`, 200)
			apiCall(t, base, "PUT", "/deputy/v1/customers/cust-9/consent", token(identity.DevClaims{Subject: "cust-9", Roles: []string{"customer"}}), `{"allowed":true}`, 200)
			lead := token(identity.DevClaims{Subject: "staff-1", Roles: []string{"support_lead"}})
			link := func() string {
				t.Helper()
				return apiCall(t, base, "POST", "/deputy/v1/impersonation/sessions", lead, `{"customer_id":"cust-9","reason":"help"}`, 201)["redeem_url"].(string)
			}
			get := func(path string) (int, string) {
				t.Helper()
				req, err := http.NewRequest("GET", base+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Host = "shop.example"
				resp, err := noRedirects.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				raw, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(raw)
			}
			conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			client := authv3.NewAuthorizationClient(conn)

			ways := map[string]func(encoded string) (int, string){
				"api": get,
				// A spelling of Deputy's own path that is not it as sent
				// (answered 404 otherwise, never decided).
				"api, slashes doubled": func(encoded string) (int, string) { return get("/" + encoded) },
				"http check":           func(encoded string) (int, string) { return get("/check" + encoded) },
				"grpc check": func(encoded string) (int, string) {
					resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
						Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: encoded, Host: "shop.example", Scheme: "https", Protocol: "HTTP/1.1"}}}})
					if err != nil {
						t.Fatal(err)
					}
					if resp.GetOkResponse() != nil {
						return http.StatusOK, resp.String()
					}
					return int(resp.GetDeniedResponse().GetStatus().GetCode()), resp.GetDeniedResponse().GetBody()
				},
			}
			// The "?" encoded, or a look-alike of it (fullwidth, raw or
			// encoded), on the path as sent or in another case (a path a
			// proxy that folds case routes as the redeem path).
			mixedCase := func(l string) string {
				return strings.Replace(l, "/deputy/v1/impersonation/redeem", "/Deputy/V1/Impersonation/Redeem", 1)
			}
			spellings := []struct {
				name  string
				spell func(string) string
			}{
				{"%3F", func(l string) string { return strings.Replace(l, "?", "%3F", 1) }},
				{"%253f", func(l string) string { return strings.Replace(l, "?", "%253f", 1) }},
				{"fullwidth ？", func(l string) string { return strings.Replace(l, "?", "\uFF1F", 1) }},
				{"%EF%BC%9F", func(l string) string { return strings.Replace(l, "?", "%EF%BC%9F", 1) }},
				{"%25EF%25BC%259F", func(l string) string { return strings.Replace(l, "?", "%25EF%25BC%259F", 1) }},
				{"%3F, path in mixed case", func(l string) string { return strings.Replace(mixedCase(l), "?", "%3F", 1) }},
				{"%EF%BC%9F, path in mixed case", func(l string) string { return strings.Replace(mixedCase(l), "?", "%EF%BC%9F", 1) }},
			}
			for way, send := range ways {
				for _, sp := range spellings {
					l := link()
					status, body := send(sp.spell(l))
					if status != http.StatusBadRequest || !strings.Contains(body, "ask for a new link") {
						t.Fatalf("%s, ? as %s: %d %s, want 400 saying to ask for a new link", way, sp.name, status, body)
					}
					if status, body := get(l); status != http.StatusUnauthorized {
						t.Fatalf("plain link after the %s spelling reached the %s: %d %s: its code is still valid", sp.name, way, status, body)
					}
				}
			}
			// The plain link still redeems once.
			l := link()
			if status, body := get(l); status != http.StatusFound {
				t.Fatalf("plain link: %d %s", status, body)
			}
		})
	}
}
