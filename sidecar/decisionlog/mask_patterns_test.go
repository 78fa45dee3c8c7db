package decisionlog

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

// Credentials hide under names no fixed list holds: the default masking
// goes by what a name says (token, secret, session, api key, auth,
// password, cookie...), in every case and "_"/"-" spelling, in headers,
// Envoy's header_map and the query alike, and keeps what names no
// credential, the request's authority first.
func TestMaskingByNamePattern(t *testing.T) {
	secretHeaders := []string{
		"x-refresh-token", "x-id-token", "x-session-id", "x-client-secret", "api-key", "cookie2",
		"refresh_token", "X_Refresh_Token", "X-SESSION-ID", "x-apikey", "x-api_key", "x-user-password",
		"x-auth", "x-authn-ticket", "x-amz-credential", "x-goog-signature", "x-sid", "phpsessid", "set-cookie",
		"x-goog-iap-jwt-assertion", "x-amzn-oidc-data", "ocp-apim-subscription-key", "x-functions-key", "x-jwt",
		"dpop", "x-userinfo", "x-private-key", "x-access-key", "x-ticket", "x-sig", "X-Access_Key",
	}
	secretParams := []string{
		"session", "sid", "auth", "SESSION", "refresh-token", "client.secret", "authToken", "X-Amz-Signature",
		"jsessionid", "pwd", "user_password", "api-key",
		"sig", "key", "ticket", "jwt", "SAMLResponse", "saml_response", "client_assertion", "accessKey", "KEY",
	}
	keptHeaders := []string{
		":authority", "x-request-id", "user-agent", "x-on-behalf-of", "content-type", "x-author", "x-side",
		"x-keyboard-layout", "x-monkey", "x-signup", "x-keys", "x-turnkey",
	}
	keptParams := []string{"page", "author", "inside", "sort", "access_level", "keyboard", "monkey", "signup", "keys", "hockey", "design"}

	headers := map[string]any{}
	var entries []any
	for _, h := range secretHeaders {
		headers[h] = "SECRET-" + h
		entries = append(entries,
			map[string]any{"key": h, "value": "SECRET-" + h},
			map[string]any{"key": h, "rawValue": base64.StdEncoding.EncodeToString([]byte("SECRET-" + h))})
	}
	for _, h := range keptHeaders {
		headers[h] = "kept-" + h
		entries = append(entries, map[string]any{"key": h, "value": "kept-" + h})
	}
	var query []string
	parsed := map[string]any{}
	for _, p := range secretParams {
		query = append(query, p+"=SECRET-"+p)
		parsed[p] = []any{"SECRET-" + p}
	}
	for _, p := range keptParams {
		query = append(query, p+"=kept-"+p)
		parsed[p] = []any{"kept-" + p}
	}
	path := "/account?" + strings.Join(query, "&")
	headers["x-original-uri"] = path
	in := map[string]any{
		"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"path": path, "query": strings.Join(query, "&"), "headers": headers,
			"headerMap": map[string]any{"headers": entries},
		}}},
		"parsed_query": parsed,
	}
	_, logged := maskDefaults(t, in)
	for _, name := range append(secretHeaders, secretParams...) {
		if strings.Contains(logged, "SECRET-"+name) || strings.Contains(logged, base64.StdEncoding.EncodeToString([]byte("SECRET-"+name))) {
			t.Errorf("%s logged in clear", name)
		}
	}
	for _, name := range keptHeaders {
		if strings.Count(logged, "kept-"+name) != 2 { // headers and headerMap
			t.Errorf("header %s not kept: %s", name, logged)
		}
	}
	for _, name := range keptParams {
		if !strings.Contains(logged, name+"=kept-"+name) || !strings.Contains(logged, `"`+name+`":["kept-`+name+`"]`) {
			t.Errorf("query parameter %s not kept: %s", name, logged)
		}
	}
}

// maskDefaults masks in as the default configuration does and returns the
// record and its input as logged.
func maskDefaults(t *testing.T, in any) (*Record, string) {
	t.Helper()
	rec := &Record{}
	newMasker(Defaults(), nil).mask(context.Background(), rec, in)
	b, err := json.Marshal(rec.Input)
	if err != nil {
		t.Fatal(err)
	}
	return rec, string(b)
}

func TestSecretName(t *testing.T) {
	for name, want := range map[string]bool{
		"authorization": true, "Proxy-Authorization": true, "x_auth_token": true, "auth": true, "AUTH": true,
		"x-session-id": true, "sid": true, "x.sid": true, "my pwd": true, "cookie": true, "Cookie2": true,
		":authority": false, "author": false, "x-sides": false, "inside": false, "": false, "-": false, "code": false,
		// "key", "sig", "jwt" and "ticket" as whole words, camelCase
		// included; the same letters inside another word are not.
		"key": true, "x-functions-key": true, "accessKey": true, "KEY": true, "Key-Id": true, "sig": true,
		"x-jwt": true, "jwtValue": true, "ticket": true, "x_ticket": true,
		"keyboard": false, "monkey": false, "keys": false, "Keyboard": false, "myMonkey": false, "signup": false,
		"design": false, "jwts2": false, "tickets": false, "KEYBOARD": false,
		"client_assertion": true, "SAMLResponse": true, "x-amzn-oidc-data": true, "DPoP": true, "x-userinfo": true,
	} {
		if got := secretName(name); got != want {
			t.Errorf("secretName(%q) = %v, want %v", name, got, want)
		}
	}
}
