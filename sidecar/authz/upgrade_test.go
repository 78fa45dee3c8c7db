package authz_test

import (
	"context"
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// upgradePolicy allows everything, its reason what policy sees as the
// protocols the request asks to switch to, or "none" when it asks for no
// switch.
const upgradePolicy = `package t

decision := {"allowed": true, "reason": json.marshal(input.deputy.request.upgrade)} if {
	input.deputy.request.upgrade
} else := {"allowed": true, "reason": "none"}
`

// After a 101 the connection is a tunnel Deputy never sees again, so
// policy must know whether a request asks for one: input.deputy.request.
// upgrade holds the protocol tokens of every Upgrade field, lower-cased,
// each once, in every spelling and in Envoy's headers and header_map
// alike, and HTTP/2 extended CONNECT's :protocol (RFC 8441). A request
// whose Connection names upgrade with no protocol still asks (an empty
// list); one asking for nothing has no such field.
func TestPolicySeesTheUpgradeAskedFor(t *testing.T) {
	p := authz.New(engineFor(t, "data.t.decision", upgradePolicy, nil), authz.WithQuery("data.t.decision"))
	for _, tc := range []struct {
		name    string
		method  string
		headers map[string]string
		want    string
	}{
		{name: "none", headers: map[string]string{"accept": "*/*"}, want: "none"},
		{name: "Connection without upgrade", headers: map[string]string{"connection": "keep-alive, close"}, want: "none"},
		{name: "a token only starting with upgrade", headers: map[string]string{"connection": "upgrade-insecure-requests"}, want: "none"},
		{name: "websocket", headers: map[string]string{"connection": "Upgrade", "upgrade": "websocket"}, want: `["websocket"]`},
		{name: "websocket, names in upper case", headers: map[string]string{"Connection": "Upgrade", "UPGRADE": "WebSocket"}, want: `["websocket"]`},
		{name: "Upgrade without Connection", headers: map[string]string{"upgrade": "websocket"}, want: `["websocket"]`},
		{name: "Connection upgrade without Upgrade", headers: map[string]string{"connection": "keep-alive, Upgrade"}, want: `[]`},
		{name: "several protocols", headers: map[string]string{"connection": "upgrade, HTTP2-Settings", "upgrade": " h2c ,, WebSocket,TLS/1.2 "}, want: `["h2c","websocket","tls/1.2"]`},
		{name: "a protocol named twice", headers: map[string]string{"upgrade": "websocket,WEBSOCKET"}, want: `["websocket"]`},
		{name: "an empty Upgrade asks for nothing", headers: map[string]string{"upgrade": " "}, want: "none"},
		{name: "HTTP/2 extended CONNECT", method: "CONNECT", headers: map[string]string{":protocol": "websocket"}, want: `["websocket"]`},
		{name: "extended CONNECT beside an Upgrade", method: "CONNECT", headers: map[string]string{":protocol": "websocket", "upgrade": "h2c"}, want: `["h2c","websocket"]`},
	} {
		method := tc.method
		if method == "" {
			method = "GET"
		}
		for _, enc := range headerEncodings {
			t.Run(tc.name+"/"+enc.name, func(t *testing.T) {
				resp := p.Check(context.Background(), checkRequest(t, enc.build(method, "/graphql?query=%7Bwhoami%7D", tc.headers, "")))
				if !resp.Allowed || resp.Reason != tc.want {
					t.Errorf("upgrade = %s (allowed %v), want %s", resp.Reason, resp.Allowed, tc.want)
				}
			})
		}
	}
}

// Repeated Upgrade fields all count, in any case (Envoy's header_map keeps
// them apart; in headers Envoy joins them with ","), those of headers
// first: a proxy may act on any one of them.
func TestPolicySeesEveryUpgradeField(t *testing.T) {
	p := authz.New(engineFor(t, "data.t.decision", upgradePolicy, nil), authz.WithQuery("data.t.decision"))
	for _, tc := range []struct{ name, headers, headerMap, want string }{
		{"two fields", `{}`, `[{"key":"upgrade","value":"h2c"},{"key":"Upgrade","value":"websocket"}]`, `["h2c","websocket"]`},
		{"raw values", `{}`, `[{"key":"connection","rawValue":"VXBncmFkZQ=="},{"key":"UpGrade","rawValue":"d2Vic29ja2V0"}]`, `["websocket"]`},
		{"Connection named twice", `{}`, `[{"key":"connection","value":"keep-alive"},{"key":"Connection","value":"upgrade"}]`, `[]`},
		{"headers and header_map", `{"upgrade":"websocket"}`, `[{"key":"UPGRADE","value":"h2c, WebSocket"}]`, `["websocket","h2c"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := `{"attributes":{"request":{"http":{"method":"GET","path":"/a","headers":` + tc.headers + `,"headerMap":{"headers":` + tc.headerMap + `}}}}}`
			resp := p.Check(context.Background(), checkRequest(t, req))
			if !resp.Allowed || resp.Reason != tc.want {
				t.Errorf("upgrade = %s (allowed %v), want %s", resp.Reason, resp.Allowed, tc.want)
			}
		})
	}
}

// input.deputy.request is kept across checks of the same host, path and
// methods: a plain request and an upgrade to the same page must not share
// it, in either order.
func TestUpgradeIsNotSharedWithAPlainRequest(t *testing.T) {
	p := authz.New(engineFor(t, "data.t.decision", upgradePolicy, nil), authz.WithQuery("data.t.decision"))
	plain := httpRequest("GET", "/socket", map[string]string{":authority": "shop.example"}, "")
	upgrade := httpRequest("GET", "/socket", map[string]string{":authority": "shop.example", "connection": "upgrade", "upgrade": "websocket"}, "")
	for i, tc := range []struct{ req, want string }{
		{plain, "none"}, {upgrade, `["websocket"]`}, {plain, "none"}, {upgrade, `["websocket"]`},
	} {
		if resp := p.Check(context.Background(), checkRequest(t, tc.req)); resp.Reason != tc.want {
			t.Errorf("check %d: upgrade = %s, want %s", i, resp.Reason, tc.want)
		}
	}
}
