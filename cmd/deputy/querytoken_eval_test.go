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

// deputy eval reads a token in the query or a form body as serve does: a credential it
// does not verify, so the delegation given is not applied and the request
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
	for _, tc := range []struct{ name, path, body, reason string }{
		{"no token", "/customer/account", "", "impersonation"},
		{"an access_token that is no JWT", "/customer/account?access_token=abc123", "", "impersonation"},
		{"access_token", "/customer/account?access_token=" + tok, "", "identity_refused"},
		{"Access_Token", "/customer/account?Access_Token=" + tok, "", "identity_refused"},
		{"access%5Ftoken", "/customer/account?access%5Ftoken=" + tok, "", "identity_refused"},
		{"bearer_token after another field", "/customer/account?a=1&bearer_token=" + tok, "", "identity_refused"},
		{"a form with no token", "/checkout/cart/add", "product=42", "impersonation"},
		{"access_token in a form", "/checkout/cart/add", "product=42&access_token=" + tok, "identity_refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			input := filepath.Join(t.TempDir(), "request.json")
			http := map[string]any{"method": "GET", "path": tc.path, "host": "shop.example"}
			if tc.body != "" {
				http["method"], http["body"] = "POST", tc.body
				http["headers"] = map[string]string{"content-type": "application/x-www-form-urlencoded", "content-length": strconv.Itoa(len(tc.body))}
			}
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
