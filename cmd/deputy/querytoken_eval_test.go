package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/identity"
)

// deputy eval reads a token in a credential carrier (the query, a form or
// JSON body, a cookie, a header) as serve does: a credential it does not
// verify, so the delegation given is not applied and the request
// is refused as identity_refused, with no --identity-error to say so.
func TestEvalRefusesQueryTokenDelegation(t *testing.T) {
	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := dev.Mint(identity.DevClaims{Subject: "mallory", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	delegation := filepath.Join(work, "delegation.json")
	writeFile(t, delegation, []byte(`{"mode":"impersonation","id":"imp_1","actor":"alice","actor_roles":["support_agent"],"subject":"cust-9"}`))
	for _, tc := range []struct {
		name, path, body, reason string
		headers                  map[string]string
	}{
		{"no token", "/customer/account", "", "impersonation", nil},
		{"an access_token that is no JWT", "/customer/account?access_token=abc123", "", "impersonation", nil},
		{"access_token", "/customer/account?access_token=" + tok, "", "identity_refused", nil},
		{"Access_Token", "/customer/account?Access_Token=" + tok, "", "identity_refused", nil},
		{"access%5Ftoken", "/customer/account?access%5Ftoken=" + tok, "", "identity_refused", nil},
		{"bearer_token after another field", "/customer/account?a=1&bearer_token=" + tok, "", "identity_refused", nil},
		{"a form with no token", "/checkout/cart/add", "product=42", "impersonation", nil},
		{"access_token in a form", "/checkout/cart/add", "product=42&access_token=" + tok, "identity_refused", nil},
		{"a cookie with no token", "/customer/account", "", "impersonation", map[string]string{"cookie": "jwt=abc"}},
		{"jwt in a cookie", "/customer/account", "", "identity_refused", map[string]string{"cookie": "theme=dark; jwt=" + tok}},
		{"X-Auth-Token", "/customer/account", "", "identity_refused", map[string]string{"x-auth-token": tok}},
		{"token in the query", "/customer/account?token=" + tok, "", "identity_refused", nil},
		{"a JSON body with no token", "/checkout/cart/add", `{"product":42}`, "impersonation", map[string]string{"content-type": "application/json"}},
		{"access_token in a JSON body", "/checkout/cart/add", `{"product":42,"access_token":"` + tok + `"}`, "identity_refused", map[string]string{"content-type": "application/json"}},
		{"a form with no content type", "/checkout/cart/add", "product=42&access_token=" + tok, "identity_refused", map[string]string{"content-type": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			input := filepath.Join(t.TempDir(), "request.json")
			http := map[string]any{"method": "GET", "path": tc.path, "host": "shop.example"}
			headers := map[string]string{}
			if tc.body != "" {
				http["method"], http["body"] = "POST", tc.body
				headers["content-type"], headers["content-length"] = "application/x-www-form-urlencoded", strconv.Itoa(len(tc.body))
			}
			for k, v := range tc.headers {
				headers[k] = v
				if v == "" {
					delete(headers, k)
				}
			}
			http["headers"] = headers
			raw, _ := json.Marshal(map[string]any{"attributes": map[string]any{"request": map[string]any{"http": http}}})
			writeFile(t, input, raw)
			var out bytes.Buffer
			if err := runEval(context.Background(), evalFlags{policies: []string{"../../policies"}, delegation: delegation, input: input, asJSON: true}, &out); err != nil {
				t.Fatalf("eval: %v", err)
			}
			var got struct {
				Reason string `json:"reason"`
			}
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("eval output: %v\n%s", err, out.String())
			}
			if got.Reason != tc.reason {
				t.Errorf("eval decided %s, want %s", out.String(), tc.reason)
			}
		})
	}
}
