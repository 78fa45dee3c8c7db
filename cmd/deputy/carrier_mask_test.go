package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// identity.credential_carriers names the places an upstream reads a
// bearer token from: Deputy refused a foreign token there, but the
// decision log's masker never heard of them, so under a policy that reads
// the whole input (OPA-Envoy style) the token was logged in clear in the
// path, the URI headers, parsed_query and the carrier header, on allowed
// and refused requests alike. Every carrier the operator declares is now
// masked wherever its value can reach a record, in every spelling the
// masking reads, as `deputy serve` builds the logger from the config.
func TestCredentialCarriersMaskedInDecisionLog(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	copyTree(t, "../../policies", dir)
	wrap := filepath.Join(dir, "deputy", "wrap")
	if err := os.MkdirAll(wrap, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(wrap, "wrap.rego"), []byte(`# METADATA
# description: OPA-Envoy style wrapper reading the whole input.
package deputy.wrap

decision := d if {
	d := data.deputy.authz.decision
	count(input) >= 0
}
`))
	cfg := testConfig(t, dir, func(c *Config) {
		c.Redis.Addrs = []string{rs.Addr}
		c.DecisionLog.Sink = decisionlog.SinkRedis
		c.DecisionLog.IncludeInput = new(true)
		c.DecisionLog.FlushInterval = 10 * time.Millisecond
		c.Policy.DecisionQuery = "data.deputy.wrap.decision"
		c.Identity.CredentialCarriers = append(authz.DefaultCredentialCarriers(),
			"query:t", "header:X_User", "cookie:sess2", "body:tk")
	})
	runServer(t, &cfg)
	waitListening(t, cfg.GRPC.Addr)
	tok := devToken(t, &cfg)(identity.DevClaims{Subject: "cust-9", Roles: []string{"customer"}})
	signature := tok[strings.LastIndexByte(tok, '.')+1:]

	conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc := goredis.NewClient(&goredis.Options{Addr: rs.Addr})
	defer rc.Close()
	pair := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, Value: v} }
	for _, tc := range []struct {
		name      string
		http      *authv3.AttributeContext_HttpRequest
		allowed   bool
		wantInLog []string // carrier names still logged, values masked
	}{
		{name: "the verified token in the carriers too", allowed: true, http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "shop.example", Path: "/customer/account?t=" + tok + "&page=2",
			Headers: map[string]string{"authorization": "Bearer " + tok, "x-user": tok,
				"x-original-uri": "/customer/account?T=" + tok, "referer": "https://shop.example/a?t=" + tok}},
			wantInLog: []string{"t=***", `"t":["***"]`, "page=2"}},
		{name: "the token in the carriers only", http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "shop.example", Path: "/customer/account;t=" + tok + "?t%5B%5D=" + tok,
			Headers: map[string]string{"x-user": "Bearer " + tok}}},
		{name: "Envoy's header_map", allowed: true, http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "shop.example", Path: "/customer/account?t=" + tok,
			HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				pair(":path", "/customer/account?t="+tok), pair("authorization", "Bearer "+tok), pair("x-user", tok),
				{Key: "x-original-uri", RawValue: []byte("/customer/account?t=" + tok)}}}}},
		{name: "a cookie and a form body", allowed: true, http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Host: "shop.example", Path: "/customer/account", Body: "tk=" + tok,
			Headers: map[string]string{"authorization": "Bearer " + tok, "cookie": "sess2=" + tok,
				"content-type": "application/x-www-form-urlencoded", "content-length": strconv.Itoa(len("tk=" + tok))}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.http.Protocol = "HTTP/1.1"
			resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{
				Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: tc.http}}})
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetOkResponse() != nil; got != tc.allowed {
				t.Fatalf("allowed = %v, want %v: %v", got, tc.allowed, resp)
			}
			rec := loggedDecision(t, rc, cfg.DecisionLog.Stream, resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue())
			raw, err := json.Marshal(rec)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Input == nil {
				t.Fatalf("record has no input: %s", raw)
			}
			if strings.Contains(string(raw), signature) {
				t.Fatalf("the bearer token is in the decision record: %s", raw)
			}
			for _, w := range tc.wantInLog {
				if !strings.Contains(string(raw), w) {
					t.Errorf("record lacks %s: %s", w, raw)
				}
			}
		})
	}
}
