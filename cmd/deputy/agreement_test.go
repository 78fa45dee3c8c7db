package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// editData rewrites one data.json of the policy tree in dir.
func editData(t *testing.T, dir, file string, edit func(map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, file)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatal(err)
	}
	edit(data)
	if raw, err = json.Marshal(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestServeAndEvalAgree decides the same requests with `deputy serve` (real
// Redis, real tokens, resolvers reading the store) and `deputy eval` (the
// identity and delegation serve logged), on the same policies and config,
// and expects the same decision: every shipped scenario, plus rules changed
// in policy data only — a custom reseller role, a custom staff role, a
// changed partner limit and a changed path naming the customer.
func TestServeAndEvalAgree(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	copyTree(t, "../../policies", dir)
	editData(t, dir, "deputy/reseller/data.json", func(d map[string]any) {
		d["role_privileges"].(map[string]any)["care_desk"] = []string{"view_customers", "access_support_cases"}
	})
	editData(t, dir, "deputy/impersonation/data.json", func(d map[string]any) {
		d["role_permissions"].(map[string]any)["concierge"] = []string{"login_as_customer"}
		// A forbidden page named with its dot, which the route form of a
		// request for it cuts off.
		d["forbidden_routes"].(map[string]any)["vault"] = []any{map[string]any{"prefix": "/vault/cards.html/", "reason": "payment_method_change_forbidden"}}
	})
	// `deputy policy check` accepts what serve and eval run.
	if out, err := run(t, newPolicyCmd(), "check", dir); err != nil {
		t.Fatalf("deputy policy check: %v\n%s", err, out)
	}
	editData(t, dir, "deputy/partner/data.json", func(d map[string]any) {
		d["subscription_min_level"] = "update"
		d["max_grant_days"] = 10
		d["customer_path_prefix"] = "accounts"
	})
	// The config eval reads is the one serve runs with.
	configFile := filepath.Join(t.TempDir(), "deputy.yaml")
	if err := os.WriteFile(configFile, []byte("dev: true\ncheck:\n  parse_body: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := serveLoggingInput(t, dir, rs.Addr)
	token := devToken(t, &cfg)
	base := "http://" + cfg.HTTP.Addr
	api := func(method, path string, who identity.DevClaims, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("authorization", "Bearer "+token(who))
		req.Header.Set("content-type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out map[string]any
		_ = json.Unmarshal(raw, &out)
		return resp.StatusCode, out
	}
	mustAPI := func(method, path string, who identity.DevClaims, body string, want int) map[string]any {
		t.Helper()
		code, out := api(method, path, who, body)
		if code != want {
			t.Fatalf("%s %s: %d %v, want %d", method, path, code, out, want)
		}
		return out
	}

	// State the scenarios need, made through the API as users would.
	shop := identity.DevClaims{Subject: "shop", Roles: []string{"customer_sync"}}
	concierge := identity.DevClaims{Subject: "conny", Roles: []string{"concierge"}}
	pat := identity.DevClaims{Subject: "pat", Org: "partnerco"}
	cora := identity.DevClaims{Subject: "cora", Org: "acme", Roles: []string{"contact_manager"}}
	desk := identity.DevClaims{Subject: "dora", Domain: "shop-a.example", Roles: []string{"care_desk"}}
	otherDesk := identity.DevClaims{Subject: "otto", Domain: "shop-b.example", Roles: []string{"care_desk"}}
	mustAPI("PUT", "/deputy/v1/customers/cust-9", shop, `{"name":"Zoë"}`, 200)
	mustAPI("PUT", "/deputy/v1/customers/cust-9/consent", identity.DevClaims{Subject: "cust-9"}, `{"allowed":true}`, 200)
	started := mustAPI("POST", "/deputy/v1/impersonation/sessions", concierge, `{"customer_id":"cust-9"}`, 201)
	// The link is used on the storefront host the checks below name: the
	// session is bound to it.
	cookie := redeemCookie(t, base, started["redeem_url"].(string))
	// The partner limit changed in data: 30 days is now too long.
	if code, out := api("POST", "/deputy/v1/partner/requests", pat, `{"customer":"acme","contact_email":"c@acme.example","expiry_days":30,"level":"look","scope":"organisation"}`); code != 400 || !strings.Contains(out["error"].(map[string]any)["message"].(string), "between 1 and 10") {
		t.Fatalf("30-day request under a 10-day limit: %d %v", code, out)
	}
	req := mustAPI("POST", "/deputy/v1/partner/requests", pat, `{"customer":"acme","contact_email":"c@acme.example","expiry_days":10,"level":"look","scope":"organisation"}`, 201)
	mustAPI("POST", "/deputy/v1/partner/requests/"+req["id"].(string)+"/approve", cora, ``, 200)
	mustAPI("PUT", "/deputy/v1/reseller/assignments/acme", identity.DevClaims{Subject: "sam", Domain: "shop-a.example", Roles: []string{"reseller_super_admin"}}, `{}`, 200)

	conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	rc := goredis.NewClient(&goredis.Options{Addr: rs.Addr})
	defer rc.Close()

	type scenario struct {
		name    string
		method  string
		path    string
		who     *identity.DevClaims // bearer token, and eval's --identity
		headers map[string]string
		body    string
		allowed bool
		reason  string
	}
	graphql := func(body string) map[string]string {
		return map[string]string{"cookie": cookie, "content-type": "application/json", "content-length": strconv.Itoa(len(body))}
	}
	const (
		cartMutation    = `{"query":"mutation { addProductsToCart(cartId: \"c1\", cartItems: [{sku: \"S1\", quantity: 1}]) { cart { id } } }"}`
		accountMutation = `{"query":"mutation { x: \u0075pdateCustomerV2(input: {firstname: \"Eve\"}) { customer { firstname } } }"}`
		// A server whose JSON parser keeps the first of two equal keys
		// runs the mutation; Go keeps the last, which alone is allowed.
		repeatedQuery  = `{"query":"mutation { changeCustomerPassword(currentPassword: \"old\", newPassword: \"new\") { email } }","query":"{ cart { id } }"}`
		hiddenMutation = `{"query":"mutation { changeCustomerPassword(currentPassword: \"old\", newPassword: \"new\") { email } }","\u0071uery":"{ cart { id } }"}`
		batchedRepeat  = `[` + cartMutation + `,{"query":"{ cart { id } }","variables":{"id":"c1","id":"c2"}}]`
	)
	for _, sc := range []scenario{
		{name: "public", method: "GET", path: "/catalog/shoes", allowed: true, reason: "public_route"},
		{name: "public, method not open", method: "POST", path: "/catalog/shoes", reason: "no_rule_matched"},
		{name: "authenticated", method: "GET", path: "/customer/account", who: &identity.DevClaims{Subject: "alice"}, allowed: true, reason: "authenticated_route"},
		{name: "authenticated without a token", method: "GET", path: "/customer/account", reason: "authentication_required"},
		{name: "impersonation by a custom staff role", method: "GET", path: "/customer/account", headers: map[string]string{"cookie": cookie}, allowed: true, reason: "impersonation"},
		{name: "impersonation, forbidden route", method: "POST", path: "/customer/account/password/", headers: map[string]string{"cookie": cookie}, reason: "password_change_forbidden"},
		{name: "impersonation, forbidden REST route", method: "PUT", path: "/rest/default/V1/customers/me/password", headers: map[string]string{"cookie": cookie}, reason: "password_change_forbidden"},
		{name: "impersonation, forbidden page named with its dot", method: "GET", path: "/vault/Cards.HTML", headers: map[string]string{"cookie": cookie}, reason: "payment_method_change_forbidden"},
		{name: "impersonation, forbidden page named with its dot, with a format", method: "GET", path: "/vault/cards.html.json", headers: map[string]string{"cookie": cookie}, reason: "payment_method_change_forbidden"},
		{name: "impersonation, the page beside it", method: "GET", path: "/vault/other.html", headers: map[string]string{"cookie": cookie}, allowed: true, reason: "impersonation"},
		{name: "impersonation with a token after a tab", method: "GET", path: "/customer/account", headers: map[string]string{"cookie": cookie, "authorization": "Bearer\t" + token(identity.DevClaims{Subject: "mallory"})}, reason: "identity_refused"},
		{name: "impersonation with an expired token", method: "GET", path: "/customer/account", headers: map[string]string{"cookie": cookie, "authorization": "Bearer " + token(identity.DevClaims{Subject: "mallory", IssuedAt: time.Now().Add(-3 * time.Hour)})}, reason: "identity_refused"},
		{name: "impersonation with a bare token", method: "GET", path: "/customer/account", headers: map[string]string{"cookie": cookie, "authorization": token(identity.DevClaims{Subject: "mallory"})}, reason: "identity_refused"},
		{name: "impersonation with a token in the JWT scheme", method: "GET", path: "/customer/account", headers: map[string]string{"cookie": cookie, "authorization": "JWT " + token(identity.DevClaims{Subject: "mallory"})}, reason: "identity_refused"},
		{name: "impersonation with an access_token in the query", method: "GET", path: "/customer/account?Access_Token=" + token(identity.DevClaims{Subject: "mallory"}), headers: map[string]string{"cookie": cookie}, reason: "identity_refused"},
		{name: "an access_token in the query on a public route, with a session", method: "GET", path: "/catalog/shoes?access_token=" + token(concierge), headers: map[string]string{"cookie": cookie}, allowed: true, reason: "public_route"},
		{name: "a refused token on a public route, with a session", method: "GET", path: "/catalog/shoes", headers: map[string]string{"cookie": cookie, "authorization": "bearer:" + token(concierge)}, allowed: true, reason: "public_route"},
		{name: "partner with an expired token", method: "GET", path: "/accounts/acme/service-requests", headers: map[string]string{"x-on-behalf-of": "acme", "authorization": "Bearer " + token(identity.DevClaims{Subject: "pat", Org: "partnerco", IssuedAt: time.Now().Add(-3 * time.Hour)})}, reason: "identity_refused"},
		{name: "impersonation, REST read", method: "GET", path: "/rest/default/V1/customers/me", headers: map[string]string{"cookie": cookie}, allowed: true, reason: "impersonation"},
		{name: "impersonation, GraphQL cart mutation", method: "POST", path: "/graphql", headers: graphql(cartMutation), body: cartMutation, allowed: true, reason: "impersonation"},
		{name: "impersonation, GraphQL account mutation", method: "POST", path: "/graphql", headers: graphql(accountMutation), body: accountMutation, reason: "account_change_forbidden"},
		{name: "impersonation, GraphQL body not sent", method: "POST", path: "/graphql", headers: graphql(cartMutation), reason: "graphql_body_unread"},
		{name: "impersonation, GraphQL mutation before a repeated key", method: "POST", path: "/graphql", headers: graphql(repeatedQuery), body: repeatedQuery, reason: "malformed_request"},
		{name: "impersonation, GraphQL mutation behind a repeated key", method: "POST", path: "/graphql", headers: graphql(hiddenMutation), body: hiddenMutation, reason: "malformed_request"},
		{name: "impersonation, GraphQL batch repeating a variable", method: "POST", path: "/graphql", headers: graphql(batchedRepeat), body: batchedRepeat, reason: "malformed_request"},
		{name: "partner within its level", method: "GET", path: "/accounts/acme/service-requests", who: &pat, headers: map[string]string{"x-on-behalf-of": "acme"}, allowed: true, reason: "partner_level_sufficient"},
		{name: "partner above its level", method: "POST", path: "/accounts/acme/service-requests", who: &pat, headers: map[string]string{"x-on-behalf-of": "acme"}, reason: "level_too_low:create"},
		{name: "partner named by the changed path alone", method: "GET", path: "/accounts/acme/service-requests", who: &pat, allowed: true, reason: "partner_level_sufficient"},
		{name: "partner under the old path names nobody", method: "GET", path: "/customers/acme/service-requests", who: &pat, reason: "no_rule_matched"},
		{name: "partner under the old path with the header", method: "GET", path: "/customers/acme/service-requests", who: &pat, headers: map[string]string{"x-on-behalf-of": "acme"}, reason: "route_not_mapped"},
		{name: "partner without a grant", method: "GET", path: "/service-requests", who: &identity.DevClaims{Subject: "bob", Org: "otherco"}, headers: map[string]string{"x-on-behalf-of": "acme"}, reason: "no_live_grant"},
		{name: "reseller by a custom role", method: "GET", path: "/support/cases", who: &desk, headers: map[string]string{"x-on-behalf-of": "acme"}, allowed: true, reason: "reseller_domain_customer"},
		{name: "reseller on another customer's path", method: "GET", path: "/accounts/globex/cases", who: &desk, headers: map[string]string{"x-on-behalf-of": "acme"}, reason: "on_behalf_of_ambiguous"},
		{name: "reseller on the customer's path in another case", method: "GET", path: "/accounts/ACME/cases", who: &desk, headers: map[string]string{"x-on-behalf-of": "acme"}, reason: "on_behalf_of_ambiguous"},
		{name: "reseller on the customer's path", method: "GET", path: "/accounts/acme/cases", who: &desk, headers: map[string]string{"x-on-behalf-of": "acme"}, allowed: true, reason: "reseller_domain_customer"},
		{name: "reseller of another domain", method: "GET", path: "/support/cases", who: &otherDesk, headers: map[string]string{"x-on-behalf-of": "acme"}, reason: "customer_not_in_domain"},
		// A delegated request never switches protocols; a signed-in
		// customer's own socket upgrades as its route allows.
		{name: "impersonation, WebSocket to GraphQL with a harmless query", method: "GET", path: "/graphql?query=%7Bwhoami%7D", headers: map[string]string{"cookie": cookie, "connection": "Upgrade", "upgrade": "websocket"}, reason: "delegated_upgrade"},
		{name: "partner within its level, WebSocket", method: "GET", path: "/accounts/acme/service-requests", who: &pat, headers: map[string]string{"x-on-behalf-of": "acme", "connection": "Upgrade", "upgrade": "websocket"}, reason: "delegated_upgrade"},
		{name: "reseller by a custom role, WebSocket", method: "GET", path: "/support/cases", who: &desk, headers: map[string]string{"x-on-behalf-of": "acme", "Upgrade": "WebSocket"}, reason: "delegated_upgrade"},
		{name: "signed-in customer's own WebSocket", method: "GET", path: "/customer/account", who: &identity.DevClaims{Subject: "alice"}, headers: map[string]string{"connection": "Upgrade", "upgrade": "websocket"}, allowed: true, reason: "authenticated_route"},
		{name: "reseller role without privileges", method: "GET", path: "/support/cases", who: &identity.DevClaims{Subject: "vic", Domain: "shop-a.example", Roles: []string{"reseller_viewer"}}, headers: map[string]string{"x-on-behalf-of": "acme"}, reason: "missing_privilege:access_support_cases"},
	} {
		t.Run(sc.name, func(t *testing.T) {
			headers := map[string]string{}
			for k, v := range sc.headers {
				headers[k] = v
			}
			if sc.who != nil {
				headers["authorization"] = "Bearer " + token(*sc.who)
			}
			check := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Method: sc.method, Path: sc.path, Host: "shop.example", Headers: headers, Body: sc.body}}}}
			served, err := client.Check(context.Background(), check)
			if err != nil {
				t.Fatal(err)
			}
			rec := loggedDecision(t, rc, cfg.DecisionLog.Stream, served.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue())
			if (served.GetOkResponse() != nil) != sc.allowed || rec.Reason != sc.reason {
				t.Fatalf("serve: allowed %v reason %q, want %v %q", served.GetOkResponse() != nil, rec.Reason, sc.allowed, sc.reason)
			}

			// eval, from what serve logged.
			work := t.TempDir()
			args := evalFlags{policies: []string{dir}, config: configFile, asJSON: true, input: filepath.Join(work, "request.json")}
			raw, _ := protojson.Marshal(check)
			writeFile(t, args.input, raw)
			if sc.who != nil {
				args.identity = filepath.Join(work, "identity.json")
				id, _ := json.Marshal(sidecar.Identity{Subject: sc.who.Subject, Roles: sc.who.Roles, Org: sc.who.Org, Domain: sc.who.Domain})
				writeFile(t, args.identity, id)
			}
			input, _ := rec.Input.(map[string]any)
			if e, ok := input["identity_error"].(string); ok {
				args.identityError = e
			}
			if d, ok := input["delegation"]; ok {
				args.delegation = filepath.Join(work, "delegation.json")
				raw, _ := json.Marshal(d)
				writeFile(t, args.delegation, raw)
			}
			if e, ok := input["delegation_error"].(string); ok {
				args.delegationError = e
			}
			var out bytes.Buffer
			if err := runEval(context.Background(), args, &out); err != nil {
				t.Fatalf("eval: %v", err)
			}
			var evald struct {
				Allowed  bool              `json:"allowed"`
				Status   int               `json:"http_status"`
				Reason   string            `json:"reason"`
				Revision string            `json:"revision"`
				Response map[string]string `json:"response_headers_to_add"`
			}
			if err := json.Unmarshal(out.Bytes(), &evald); err != nil {
				t.Fatalf("eval output: %v\n%s", err, out.String())
			}
			if evald.Allowed != sc.allowed || evald.Reason != rec.Reason || evald.Status != rec.HTTPStatus || evald.Revision != rec.BundleRevision {
				t.Fatalf("eval decided %+v, serve %s %d %q on %s", evald, rec.Result, rec.HTTPStatus, rec.Reason, rec.BundleRevision)
			}
			servedHeaders := map[string]string{}
			for _, h := range served.GetOkResponse().GetResponseHeadersToAdd() {
				servedHeaders[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			for k, v := range evald.Response {
				if servedHeaders[k] != v {
					t.Errorf("response header %s: eval %q, serve %q", k, v, servedHeaders[k])
				}
			}
			if len(servedHeaders) != len(evald.Response) {
				t.Errorf("response headers: eval %v, serve %v", evald.Response, servedHeaders)
			}
		})
	}

	// Management actions read the same rule data: a custom staff role may
	// start a session, and a subscription needs the changed minimum level.
	for _, sc := range []struct {
		name, method, path, body string
		who                      identity.DevClaims
		input                    map[string]any
		allowed                  bool
		reason                   string
	}{
		{name: "custom staff role starts a session", method: "POST", path: "/deputy/v1/impersonation/sessions", body: `{"customer_id":"cust-9"}`, who: concierge,
			input: map[string]any{"action": "impersonation.start", "identity": map[string]any{"sub": "conny", "roles": []string{"concierge"}},
				"target": map[string]any{"customer_id": "cust-9", "customer": map[string]any{"id": "cust-9", "exists": true, "protected": false}, "consent": map[string]any{"live": true}}},
			allowed: true},
		{name: "partner subscription below the changed minimum", method: "PUT", path: "/deputy/v1/partner/subscriptions/acme/dashboard", who: pat,
			input: map[string]any{"action": "subscription.put", "identity": map[string]any{"sub": "pat", "org": "partnerco"},
				"target": map[string]any{"customer": "acme", "kind": "dashboard", "partner_org": "partnerco",
					"grant": map[string]any{"partner_org": "partnerco", "level": "look", "scope": "organisation"}}},
			reason: "level_below_minimum:update"},
	} {
		t.Run(sc.name, func(t *testing.T) {
			code, out := api(sc.method, sc.path, sc.who, sc.body)
			servedReason := ""
			if e, ok := out["error"].(map[string]any); ok {
				servedReason, _ = e["message"].(string)
			}
			if (code < 300) != sc.allowed || servedReason != sc.reason {
				t.Fatalf("serve: %d %v, want allowed %v reason %q", code, out, sc.allowed, sc.reason)
			}
			in := filepath.Join(t.TempDir(), "action.json")
			raw, _ := json.Marshal(sc.input)
			writeFile(t, in, raw)
			var buf bytes.Buffer
			if err := runEval(context.Background(), evalFlags{policies: []string{dir}, config: configFile, manage: true, input: in}, &buf); err != nil {
				t.Fatalf("eval: %v", err)
			}
			var evald struct {
				Allowed bool   `json:"allowed"`
				Reason  string `json:"reason"`
			}
			if err := json.Unmarshal(buf.Bytes(), &evald); err != nil {
				t.Fatalf("eval output: %v\n%s", err, buf.String())
			}
			if evald.Allowed != sc.allowed || (!sc.allowed && evald.Reason != sc.reason) {
				t.Fatalf("eval decided %+v, serve %d %q", evald, code, servedReason)
			}
		})
	}
}

// serveLoggingInput runs Deputy on the policies in dir, its state and
// its decision log, inputs included, in the Redis at redisAddr.
func serveLoggingInput(t *testing.T, dir, redisAddr string) Config {
	t.Helper()
	cfg := testConfig(t, dir, func(c *Config) {
		c.Redis.Addrs = []string{redisAddr}
		c.DecisionLog.Sink = decisionlog.SinkRedis
		c.DecisionLog.IncludeInput = new(true)
		c.DecisionLog.FlushInterval = 10 * time.Millisecond
	})
	runServer(t, &cfg)
	waitListening(t, cfg.GRPC.Addr)
	waitListening(t, cfg.HTTP.Addr)
	return cfg
}

func writeFile(t *testing.T, path string, raw []byte) {
	t.Helper()
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// loggedDecision waits for the decision record with id in the Redis stream.
func loggedDecision(t *testing.T, rc *goredis.Client, stream, id string) decisionlog.Record {
	t.Helper()
	if id == "" {
		t.Fatal("the check response carries no decision id")
	}
	var found decisionlog.Record
	eventually(t, "decision "+id+" in the decision log", func() bool {
		msgs, err := rc.XRevRangeN(context.Background(), stream, "+", "-", 200).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			var r decisionlog.Record
			if s, ok := m.Values[decisionlog.RecordField].(string); ok && json.Unmarshal([]byte(s), &r) == nil && r.DecisionID == id {
				found = r
				return true
			}
		}
		return false
	})
	return found
}

// The impersonation switches are policy data only, read alike by `deputy
// serve` and `deputy eval`: data that leaves a switch out is refused by
// both, naming it, rather than either filling in a value of its own; data
// without the impersonation section turns impersonation off in both.
func TestServeAndEvalAgreeOnSwitches(t *testing.T) {
	ctx := context.Background()
	evalJSON := func(t *testing.T, args evalFlags, input any) (map[string]any, error) {
		t.Helper()
		args.input = filepath.Join(t.TempDir(), "input.json")
		raw, _ := json.Marshal(input)
		writeFile(t, args.input, raw)
		args.asJSON = true
		var out bytes.Buffer
		if err := runEval(ctx, args, &out); err != nil {
			return nil, err
		}
		var got map[string]any
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatalf("eval output: %v\n%s", err, out.String())
		}
		return got, nil
	}
	request := map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{"method": "GET", "path": "/customer/account", "host": "shop.example"}}}}

	for _, key := range []string{"enabled", "max_session", "disable_page_cache"} {
		t.Run("without "+key, func(t *testing.T) {
			dir := t.TempDir()
			copyTree(t, "../../policies", dir)
			editData(t, dir, "deputy/impersonation/data.json", func(d map[string]any) { delete(d, key) })
			want := "data.deputy.impersonation." + key + ": required"
			cfg := testConfig(t, dir, func(*Config) {})
			s, err := build(ctx, &cfg)
			if err == nil {
				s.stop(ctx)
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("serve: %v, want a refusal naming %s", err, want)
			}
			if _, err := evalJSON(t, evalFlags{policies: []string{dir}}, request); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("eval: %v, want a refusal naming %s", err, want)
			}
		})
	}

	t.Run("without the impersonation section", func(t *testing.T) {
		dir := t.TempDir()
		copyTree(t, "../../policies", dir)
		if err := os.Remove(filepath.Join(dir, "deputy/impersonation/data.json")); err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(t, dir, func(*Config) {})
		runServer(t, &cfg)
		waitListening(t, cfg.HTTP.Addr)
		token := devToken(t, &cfg)
		agent := identity.DevClaims{Subject: "alice", Roles: []string{"support_agent"}}
		req, _ := http.NewRequest("POST", "http://"+cfg.HTTP.Addr+"/deputy/v1/impersonation/sessions", strings.NewReader(`{"customer_id":"cust-9"}`))
		req.Header.Set("authorization", "Bearer "+token(agent))
		req.Header.Set("content-type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var served struct {
			Error struct{ Message string } `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&served)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || served.Error.Message != "impersonation_disabled" {
			t.Fatalf("serve started a session: %d %+v", resp.StatusCode, served)
		}
		action := map[string]any{"action": "impersonation.start", "identity": map[string]any{"sub": "alice", "roles": []string{"support_agent"}},
			"target": map[string]any{"customer_id": "cust-9", "customer": map[string]any{"id": "cust-9", "exists": true}, "consent": map[string]any{"live": true}}}
		got, err := evalJSON(t, evalFlags{policies: []string{dir}, manage: true}, action)
		if err != nil || got["allowed"] != false || got["reason"] != "impersonation_disabled" {
			t.Fatalf("eval of the start: %v %v", got, err)
		}
		// A session made while impersonation was on is refused on the
		// check path by the same data.
		delegation := filepath.Join(t.TempDir(), "delegation.json")
		writeFile(t, delegation, []byte(`{"mode":"impersonation","id":"imp_1","actor":"alice","subject":"cust-9"}`))
		got, err = evalJSON(t, evalFlags{policies: []string{dir}, delegation: delegation}, request)
		if err != nil || got["allowed"] != false || got["reason"] != "impersonation_disabled" {
			t.Fatalf("eval of an impersonated request: %v %v", got, err)
		}
	})
}
