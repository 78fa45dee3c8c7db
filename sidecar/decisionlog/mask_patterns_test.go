package decisionlog

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// Credentials hide under names no fixed list holds: the default masking
// goes by what a name says (token, secret, session, api key, auth,
// password, cookie...), in every case and "_"/"-" spelling, in headers,
// Envoy's header_map and the query alike, and keeps what names no
// credential, the request's authority first.
func TestMaskingByNamePattern(t *testing.T) {
	checkMaskedByName(t, maskedNames{
		secretHeaders: []string{
			"x-refresh-token", "x-id-token", "x-session-id", "x-client-secret", "api-key", "cookie2",
			"refresh_token", "X_Refresh_Token", "X-SESSION-ID", "x-apikey", "x-api_key", "x-user-password",
			"x-auth", "x-authn-ticket", "x-amz-credential", "x-goog-signature", "x-sid", "phpsessid", "set-cookie",
			"x-goog-iap-jwt-assertion", "x-amzn-oidc-data", "ocp-apim-subscription-key", "x-functions-key", "x-jwt",
			"dpop", "x-userinfo", "x-private-key", "x-access-key", "x-ticket", "x-sig", "X-Access_Key",
		},
		secretParams: []string{
			"session", "sid", "auth", "SESSION", "refresh-token", "client.secret", "authToken", "X-Amz-Signature",
			"jsessionid", "pwd", "user_password", "api-key",
			"sig", "key", "ticket", "jwt", "SAMLResponse", "saml_response", "client_assertion", "accessKey", "KEY",
		},
		keptHeaders: []string{
			":authority", "x-request-id", "user-agent", "x-on-behalf-of", "content-type", "x-author", "x-side",
			"x-keyboard-layout", "x-monkey", "x-signup", "x-keys", "x-turnkey",
		},
		keptParams: []string{"page", "author", "inside", "sort", "access_level", "keyboard", "monkey", "signup", "keys", "hockey", "design"},
	})
}

// Webhook HMACs, a bare bearer, one-time, MFA and pass codes, the PKCE
// code_verifier and login links carry credentials under names that say
// none of token, secret or key: the default masking knows their words
// too, in headers and query alike. What a client may show anyone stays:
// the OAuth state and nonce, the PKCE challenge, and codes that are data
// (a coupon, a country, a status).
func TestMaskingOneTimeCodesAndSigningNames(t *testing.T) {
	checkMaskedByName(t, maskedNames{
		secretHeaders: []string{
			"x-shopify-hmac-sha256", "x-hmac", "x-bearer", "x-otp", "x-totp", "x-mfa-code", "x-passcode", "x-2fa",
			"X-Hmac-Signature-256", "x-verification-code", "x-pin", "x-passphrase", "x-magic-link",
			"x-one-time-code", "x-invite-code", "x-samlart", "x-reset-token",
		},
		secretParams: []string{
			"code_verifier", "bearer", "hmac", "otp", "passcode", "refresh", "refresh_token", "otp_code",
			"verification_code", "magic_link", "codeVerifier", "totp", "mfa_code", "2fa", "hotp", "pin",
			"verificationCode", "magicLink", "security_code", "reset_code", "login_link", "cvv", "cvc", "passphrase",
			// One-time and invitation codes, SAML artifacts and responses
			// (the browser profile's bearer credentials), reset tokens.
			"one_time_code", "oneTimeCode", "onetimecode", "one-time-code", "onetime_code", "ONE_TIME_CODE",
			"invite_code", "inviteCode", "invitecode", "invitation_code", "InvitationCode",
			"SAMLart", "samlart", "SAML_art", "SAMLResponse", "saml_response", "OTP", "otp", "magic_link", "magiclink",
			"reset_token", "resetToken",
		},
		keptHeaders: []string{"x-nonce", "x-state", "x-country-code", "x-status-code", "x-spinner", "x-invite", "x-timecode"},
		keptParams: []string{
			"state", "nonce", "code_challenge", "code_challenge_method", "promo_code", "country_code", "postal_code",
			"coupon_code", "currency_code", "status_code", "link", "option", "topping", "shipping", "verified", "refresh_rate",
			"invite", "invited_by", "invitation", "timecode", "time_code", "one_time", "onetime", "samlRequest_id", "saml",
		},
	})
}

// maskedNames are header and query parameter names whose values the
// default masking must erase, and names whose values it must keep.
type maskedNames struct {
	secretHeaders, secretParams, keptHeaders, keptParams []string
}

// checkMaskedByName masks, as the default configuration does, an input
// that carries each header in headers and header_map, and each parameter
// in the path, Envoy's query field, a URI header and parsed_query, and
// checks that no secret value is logged and every kept one is.
func checkMaskedByName(t *testing.T, n maskedNames) {
	t.Helper()
	headers := map[string]any{}
	var entries []any
	for _, h := range n.secretHeaders {
		headers[h] = "SECRET-" + h
		entries = append(entries,
			map[string]any{"key": h, "value": "SECRET-" + h},
			map[string]any{"key": h, "rawValue": base64.StdEncoding.EncodeToString([]byte("SECRET-" + h))})
	}
	for _, h := range n.keptHeaders {
		headers[h] = "kept-" + h
		entries = append(entries, map[string]any{"key": h, "value": "kept-" + h})
	}
	var query []string
	parsed := map[string]any{}
	for _, p := range n.secretParams {
		query = append(query, p+"=SECRET-"+p)
		parsed[p] = []any{"SECRET-" + p}
	}
	for _, p := range n.keptParams {
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
	for _, name := range append(n.secretHeaders, n.secretParams...) {
		if strings.Contains(logged, "SECRET-"+name) || strings.Contains(logged, base64.StdEncoding.EncodeToString([]byte("SECRET-"+name))) {
			t.Errorf("%s logged in clear", name)
		}
	}
	for _, name := range n.keptHeaders {
		if strings.Count(logged, `"kept-`+name+`"`) != 2 { // headers and headerMap
			t.Errorf("header %s not kept: %s", name, logged)
		}
	}
	for _, name := range n.keptParams {
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
	newMasker(Defaults()).mask(context.Background(), rec, in, nil)
	b, err := json.Marshal(rec.Input)
	if err != nil {
		t.Fatal(err)
	}
	return rec, string(b)
}

func TestSecretName(t *testing.T) {
	for name, want := range map[string]bool{
		// Card, account and national id numbers, as words or pairs.
		"card_number": true, "cardNumber": true, "cardnumber": true, "cc_number": true, "ccNumber": true,
		"cc-num": true, "credit_card": true, "creditCard": true, "pan": true, "x-pan": true, "PAN": true,
		"iban": true, "customer_iban": true, "ssn": true, "account_number": true, "accountNumber": true,
		"routing_number": true,
		"span":           false, "japan": false, "company": false, "pancake": false, "panel": false, "number": false,
		"card": false, "card_type": false, "phone_number": false, "order_number": false, "cardholder": false,
		"lesson": false, "account": false,
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
		// Second factors, PINs and PKCE verifiers as words; codes and
		// links only after a word that makes them a credential.
		"x-shopify-hmac-sha256": true, "X-Bearer": true, "x-otp": true, "otpCode": true, "x-2fa": true, "2faCode": true,
		"codeVerifier": true, "PIN": true, "verificationCode": true, "x-magic-link": true,
		"hotpink": false, "shipping": false, "x-spinner": false, "code_challenge": false, "verified": false,
		"countryCode": false, "code-link": false, "state": false, "nonce": false, "x-pinned": false,
		// Short forms of passwords and credentials, Stripe's sk, one-time
		// and invitation codes, SAML artifacts; the words holding the
		// same letters are not.
		"passw": true, "pword": true, "cred": true, "creds": true, "userCreds": true, "sk": true, "stripe_sk": true,
		"one_time_code": true, "oneTimeCode": true, "invite_code": true, "SAMLart": true,
		"task": false, "sku": false, "skip": false, "desk": false, "credit": false, "incredible": false,
		// Numbered, and split by camelCase into single letters: a second
		// key is a key, sK is sk; words holding the same letters are not.
		"sk2": true, "SK2": true, "stripe_sk2": true, "sK": true, "pWd": true, "pin1": true, "pan2": true, "iban1": true,
		"key2": true, "x-sig1": true, "accesskey2": true, "x-bunny-accesskey2": true, "privatekey2": true, "x-appkey2": true,
		"userpwd2": true, "basicauth2": true, "verificationcode2": true, "magiclink2": true, "cardnumber2": true,
		"card_number2": true, "passkeys2": true, "urlsig2": true, "x-access-token2": true,
		"sku2": false, "task1": false, "skip2": false, "sKu": false, "sKip": false, "desk2": false, "span2": false,
		"accredited": false, "sacred": false, "timecode": false, "one_time": false, "invite": false, "password_hint": true,
	} {
		if got := secretName(name); got != want {
			t.Errorf("secretName(%q) = %v, want %v", name, got, want)
		}
	}
}

// Envoy and every HTTP/2 client deliver header names in lower case, so a
// camelCase name (BunnyCDN's AccessKey, VTEX's X-VTEX-API-AppKey) reaches
// the masker as one word; query names are often written so too. A
// credential word ending such a word, beginning one no ordinary word
// begins with, or a pair run together, is still a credential. The words
// that merely end in the same letters (monkey, turkey, spin) and every
// header browsers and Envoy send on ordinary requests stay readable.
func TestMaskingLowerCaseCompounds(t *testing.T) {
	var kept []string
	for _, h := range authz.CommonHeaderNames() {
		if h != "authorization" && h != "cookie" {
			kept = append(kept, h)
		}
	}
	kept = append(kept, "x-b3-spanid", "x-amzn-trace-id", "x-hotkey", "x-donkey",
		"x-whiskey", "x-spin", "x-hairpin", "x-keyboard", "x-keys", "x-sidebar", "x-signin", "x-tickets", "x-pinned")
	checkMaskedByName(t, maskedNames{
		secretHeaders: []string{
			"accesskey", "x-vtex-api-appkey", "x-passkey", "x-privatekey", "x-masterkey", "x-subscriptionkey",
			"x-userpwd", "x-usersid", "x-urlsig", "x-serviceticket", "x-smsotp", "x-cardpin", "x-accessjwt",
			"x-verificationcode", "x-magiclink", "x-otpcode", "x-mfacode", "x-codeverifier",
		},
		secretParams: []string{
			"accesskey", "appkey", "passkey", "licensekey", "signingkey", "userpwd", "pwdhash", "resetcode", "loginlink",
			"smscode", "2facode", "cvvcode", "codeverifier",
		},
		keptHeaders: kept,
		keptParams: []string{"monkey", "turkey", "hockey", "jockey", "turnkey", "keyboard", "keys", "keyid", "spin", "topspin",
			"signup", "side", "sidebar", "tickets", "ping", "shipping", "countrycode", "promocode", "design", "inside"},
	})
}

// Short and run-together names for a password (pass, pw, pswd, userpass),
// compounds ending in auth (basicauth, proxyauth), second-factor and
// e-mail codes (verify_code, two_factor_code, emailCode) and plurals of
// a compound (accesskeys) carry credentials too. The words that merely
// hold the same letters stay readable: passage, compass, author, the
// OAuth protocol's name and parameters that are no credential, and a
// plural standing alone (keys, tickets, pins).
func TestMaskingPassAuthCodesAndPlurals(t *testing.T) {
	checkMaskedByName(t, maskedNames{
		secretHeaders: []string{
			"x-pass", "x-userpass", "x-pw", "x-pswd", "x-basicauth", "x-apiauth", "x-proxyauth", "x-httpauth",
			"x-verify-code", "x-two-factor-code", "x-email-code", "x-accesskeys", "x-vercel-protection-bypass",
		},
		secretParams: []string{
			"pass", "Pass", "userpass", "userPass", "user_pass", "upass", "pass_hash", "pw", "PW", "userpw", "pswd", "psw",
			"basicauth", "apiauth", "proxyauth", "httpauth", "BasicAuth", "basicAuth",
			"verify_code", "verifyCode", "verifycode", "verify-code", "VERIFY_CODE",
			"two_factor_code", "twoFactorCode", "twofactorcode", "twofactor_code", "two-factor-code", "2fa_code", "2faCode",
			"email_code", "emailCode", "emailcode", "email-code",
			"accesskeys", "passkeys", "appkeys", "apikeys", "accessKeys", "tokens", "secrets", "servicetickets", "cardpins",
			"bypass",
			// Short forms of a password and of credentials, and a
			// secret key (Stripe's sk) as a word of its own.
			"passw", "user_passw", "userPassw", "PASSW", "passwort", "pword", "user_pword", "userpword", "PWord",
			"cred", "creds", "user_cred", "userCreds", "awscreds", "aws_creds", "CREDS", "db_credential", "apiCredentials",
			"sk", "SK", "stripe_sk", "stripeSk", "sk_live", "x-sk",
			// Numbered, or split by camelCase into single letters.
			"sk2", "sK", "stripe_sk2", "pWd", "pin1", "accesskey2", "userpass2", "card_number2", "subscriptionkey2",
		},
		keptHeaders: []string{"x-passage", "x-compass", "x-author", "x-oauth-provider", "x-keys", "x-hotkeys", "x-task", "x-desk", "x-credit"},
		keptParams: []string{
			"passage", "passenger", "passive", "passes", "passport", "compass", "encompass", "overpass", "underpass",
			"surpass", "trespass", "author", "coauthor", "authors", "oauth", "oauth_provider", "oauthProvider",
			"keys", "tickets", "pins", "monkeys", "donkeys", "turkeys", "hotkeys", "turnkeys", "spins", "hairpins",
			"verified", "email", "verify", "factor_count", "two_factor_enabled", "zipcode", "country_code", "pwned",
			"hotKeys", "myMonkeys", "oauth_callback", "oauth_version",
			"task", "tasks", "sku", "skus", "skip", "desk", "ask", "risk", "disk", "mask", "kiosk", "skin", "task_id", "sku_id",
			"credit", "credits", "credit_limit", "incredible", "accredited", "credo", "credible", "sacred", "discredit",
			"passage_id", "wordpress", "keyword", "swordfish", "crossword",
			"sku2", "task1", "sKu", "desk2", "monkey2", "keyboard2", "page2", "x-request-id2",
		},
	})
}
