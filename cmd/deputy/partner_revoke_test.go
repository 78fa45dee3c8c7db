package main

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// TestRevokedIndividualGrantNeverWidens runs Deputy, on the embedded store
// and on a real Redis, with the shipped policies. A customer approves the
// partner organisation at update and pat individually at look. Revoking
// pat's individual grant — pat, a colleague or the customer — must not
// let pat's next request be decided at the organisation's update: over
// gRPC, pat is denied PUT and GET for the customer, while the colleague
// keeps update; until the revoked grant would have expired, an
// organisation grant the customer approves anew reaches pat only at or
// below look.
func TestRevokedIndividualGrantNeverWidens(t *testing.T) {
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
			})
			runServer(t, &cfg)
			token := devToken(t, &cfg)
			api := func(method, path, tok, body string, status int) map[string]any {
				t.Helper()
				return apiCall(t, "http://"+cfg.HTTP.Addr, method, path, tok, body, status)
			}
			conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			client := authv3.NewAuthorizationClient(conn)
			// check answers the level the upstream is told, or "" and the
			// refusal's reason.
			check := func(tok, method, customer string) (level, reason string) {
				t.Helper()
				resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
					Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: "/service-requests/1", Host: "portal.example",
						Headers: map[string]string{"authorization": "Bearer " + tok, "x-on-behalf-of": customer}}}}})
				if err != nil {
					t.Fatal(err)
				}
				if ok := resp.GetOkResponse(); ok != nil {
					for _, h := range ok.GetHeaders() {
						if h.GetHeader().GetKey() == "x-deputy-level" {
							return h.GetHeader().GetValue(), ""
						}
					}
					t.Fatalf("%s %s for %s allowed without x-deputy-level: %v", method, "/service-requests/1", customer, resp)
				}
				if code := resp.GetDeniedResponse().GetStatus().GetCode(); code != http.StatusForbidden {
					t.Fatalf("%s for %s: %v, want allowed or 403", method, customer, resp)
				}
				return "", resp.GetStatus().GetMessage()
			}

			pat := token(identity.DevClaims{Subject: "pat", Org: "partnerco"})
			paul := token(identity.DevClaims{Subject: "paul", Org: "partnerco"})
			api("PUT", "/deputy/v1/customers/paul", token(identity.DevClaims{Subject: "shop", Roles: []string{"customer_sync"}}), `{"org":"partnerco"}`, 200)
			for _, by := range []string{"pat", "paul", "cora"} {
				customer := "acme-" + by
				cora := token(identity.DevClaims{Subject: "cora", Org: customer, Roles: []string{"contact_manager"}})
				revoker := map[string]string{"pat": pat, "paul": paul, "cora": cora}[by]
				grant := func(level, scope, users string) string {
					t.Helper()
					body := fmt.Sprintf(`{"customer":%q,"contact_email":"c@acme.example","expiry_days":30,"level":%q,"scope":%q%s}`, customer, level, scope, users)
					req := api("POST", "/deputy/v1/partner/requests", pat, body, 201)
					approved := api("POST", "/deputy/v1/partner/requests/"+req["id"].(string)+"/approve", cora, ``, 200)
					return approved["grants"].([]any)[0].(map[string]any)["id"].(string)
				}
				grant("update", "organisation", "")
				own := grant("look", "individual", `,"users":["pat"]`)
				if level, _ := check(pat, "GET", customer); level != "look" {
					t.Fatalf("revoked by %s: pat's GET before the revocation decided at %q, want look", by, level)
				}
				if level, _ := check(pat, "PUT", customer); level != "" {
					t.Fatalf("revoked by %s: pat's PUT before the revocation allowed at %q", by, level)
				}

				api("DELETE", "/deputy/v1/partner/grants/"+customer+"/"+own, revoker, ``, 204)
				for _, method := range []string{"PUT", "GET"} {
					if level, reason := check(pat, method, customer); level != "" || reason != "no_live_grant" {
						t.Fatalf("revoked by %s: pat's %s after the revocation: level %q reason %q, want denied no_live_grant", by, method, level, reason)
					}
				}
				if level, _ := check(paul, "PUT", customer); level != "update" {
					t.Fatalf("revoked by %s: paul's PUT decided at %q, want the organisation's update", by, level)
				}
				if mine := api("GET", "/deputy/v1/partner/customers", pat, ``, 200)["items"].([]any); len(mine) != 0 {
					for _, m := range mine {
						if m.(map[string]any)["customer"] == customer {
							t.Fatalf("revoked by %s: pat's customers list %v", by, m)
						}
					}
				}

				// Approved anew above the revoked look, the organisation
				// grant still does not reach pat; at look, it does.
				grant("create", "organisation", "")
				if level, reason := check(pat, "GET", customer); level != "" || reason != "no_live_grant" {
					t.Fatalf("revoked by %s: pat's GET once the organisation is approved anew at create: level %q reason %q, want denied no_live_grant", by, level, reason)
				}
				grant("look", "organisation", "")
				if level, _ := check(pat, "GET", customer); level != "look" {
					t.Fatalf("revoked by %s: pat's GET once the organisation is approved anew at look decided at %q, want look", by, level)
				}
				if level, _ := check(pat, "PUT", customer); level != "" {
					t.Fatalf("revoked by %s: pat's PUT once the organisation is approved anew at look allowed at %q", by, level)
				}
			}
		})
	}
}
