package authz_test

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A session is never for a request whose verified identity is someone
// other than its actor, and the upstream's identity is whatever token it
// reads, wherever it reads it: hapi-auth-jwt2 from the query and cookie
// "token", tymon/jwt-auth from the query, input and cookie "token",
// go-chi/jwtauth from the cookie "jwt", Lexik from the cookie "BEARER",
// Flask-JWT-Extended from "access_token_cookie" and a JSON body's
// access_token, Doorkeeper and passport-http-bearer from access_token in
// any body Rails or Express parse. A token in any such carrier that is not
// the one Deputy verified is refused as malformed, before any delegation
// is resolved: with it beside a session cookie (or a partner's bearer
// naming a customer), the request was allowed as the delegation while the
// upstream signed in as the token's holder.
func TestCredentialCarriersResolveNoDelegation(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	store := memory.New()
	session := "carrier-session-0123456789abcdef0123456789"
	if err := storetest.StartRedeemed(ctx, store, &sidecar.Session{ID: "imp_1", Actor: "staff-1", ActorRoles: []string{"support_agent"}, Customer: "cust-9",
		StartedAt: now, ExpiresAt: now.Add(time.Hour), Host: "shop.example.com"}, delegation.HashSecret(session)); err != nil {
		t.Fatal(err)
	}
	if err := store.PutGrant(ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "helpco", Level: sidecar.Level("update"), ExpiresAt: now.Add(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	var resolved atomic.Int64
	counted := func(r sidecar.DelegationResolver) sidecar.DelegationResolver {
		return sidecar.DelegationResolverFunc(func(ctx context.Context, req *sidecar.Request, id *sidecar.Identity) (*sidecar.Delegation, error) {
			resolved.Add(1)
			return r.Resolve(ctx, req, id)
		})
	}
	p, mint := delegatedPipeline(t, store, counted)
	// With check.parse_body off a body Deputy cannot parse is let through:
	// only the credential check stands between it and the upstream.
	noParse, _ := delegatedPipelineWith(t, store, []authz.Option{authz.WithBodyParsing(false)}, counted)
	mallory := mint(identity.DevClaims{Subject: "mallory", TTL: time.Hour})
	staff := mint(identity.DevClaims{Subject: "staff-1", Roles: []string{"support_agent"}, TTL: time.Hour})
	pat := mint(identity.DevClaims{Subject: "pat", Org: "helpco", Roles: []string{"partner"}, TTL: time.Hour})

	const account, cases, cart = "/customer/account", "/customers/acme/service-requests/42", "/checkout/cart/add"
	cookie := "deputy_session=" + session
	session1 := func(kv ...string) map[string]string {
		h := map[string]string{"cookie": cookie}
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = kv[i+1]
		}
		return h
	}
	partner := func(kv ...string) map[string]string {
		h := map[string]string{"authorization": "Bearer " + pat, "x-on-behalf-of": "acme"}
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = kv[i+1]
		}
		return h
	}
	multipart := func(name, value string) string {
		return "--XyZ\r\nContent-Disposition: form-data; name=\"product\"\r\n\r\n42\r\n" +
			"--XyZ\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n\r\n" + value + "\r\n--XyZ--\r\n"
	}
	part := func(disposition, value string) string {
		return "--XyZ\r\nContent-Disposition: form-data; name=\"product\"\r\n\r\n42\r\n" +
			"--XyZ\r\nContent-Disposition: " + disposition + "\r\n\r\n" + value + "\r\n--XyZ--\r\n"
	}
	const form, jsonType, multi = "application/x-www-form-urlencoded", "application/json", "multipart/form-data; boundary=XyZ"
	tokenJSON, tokenForm := `{"product":42,"access_token":"`+mallory+`"}`, "product=42&access_token="+mallory
	for _, tc := range []struct {
		name    string
		path    string
		headers map[string]string
		fields  [][2]string // header_map entries
		body    string      // a POST's
		allowed bool
		reason  string // identity_refused unless set
		noParse bool   // check.parse_body off
	}{
		// What binds, for comparison.
		{name: "session alone", path: account, headers: session1(), allowed: true},
		{name: "session posting JSON", path: cart, headers: session1("content-type", jsonType), body: `{"product":42,"note":"` + mallory + `"}`, allowed: true},
		{name: "session posting multipart", path: cart, headers: session1("content-type", multi), body: multipart("note", mallory), allowed: true},
		{name: "session posting multipart with a token name in a value", path: cart, headers: session1("content-type", multi), body: multipart("note", "api_token "+mallory), allowed: true},
		{name: "session with carriers holding no JWT", path: account + "?token=abc&jwt=1", headers: session1("cookie", cookie+"; token=abc; jwt=x.y.z", "x-api-key", "k-123", "x-auth-token", "opaque"), allowed: true},
		{name: "session with a JWT in a cookie no reader names", path: account, headers: session1("cookie", cookie+"; analytics="+mallory), allowed: true},
		// A form cut at the body limit: the fields before the last were
		// read whole, and an hCaptcha response (JWT-shaped) beside
		// Laravel's _token is no carrier.
		{name: "session posting a cut form with a JWT-shaped field", path: cart, headers: session1("content-type", form, "content-length", "9999"),
			body: "_token=csrf123&h-captcha-response=P1_" + mallory + "&product=42&note=abc", allowed: true},
		{name: "session with a JWT in a header no reader names", path: account, headers: session1("x-trace-token", mallory), allowed: true},
		{name: "partner acting", path: cases, headers: partner(), allowed: true},

		// The token Deputy verified, carried again: the same credential.
		{name: "the actor's own token in the query", path: account + "?access_token=" + staff, headers: session1("authorization", "Bearer "+staff), allowed: true},
		{name: "the actor's own token in a cookie", path: account, headers: session1("authorization", "Bearer "+staff, "cookie", cookie+"; jwt="+staff), allowed: true},
		{name: "the actor's own token in a header", path: account, headers: session1("authorization", "Bearer "+staff, "x-auth-token", staff), allowed: true},
		{name: "the partner's own token in a JSON body", path: cases, headers: partner("content-type", jsonType), body: `{"access_token":"` + pat + `"}`, allowed: true},
		{name: "another token beside the actor's", path: account + "?access_token=" + staff + "&token=" + mallory, headers: session1("authorization", "Bearer "+staff)},

		// Bodies Doorkeeper, passport-http-bearer, Rack and PHP read.
		{name: "access_token in a JSON body", path: cart, headers: session1("content-type", jsonType), body: `{"product":42,"access_token":"` + mallory + `"}`},
		{name: "access_token in a +json body", path: cart, headers: session1("content-type", "application/vnd.api+json; charset=utf-8"), body: `{"access_token":"` + mallory + `"}`},
		{name: "an escaped token in a JSON body", path: cart, headers: session1("content-type", jsonType), body: `{"access_token":"\u0065` + mallory[1:] + `"}`},
		{name: "an escaped name in a JSON body", path: cart, headers: session1("content-type", jsonType), body: `{"access\u005ftoken":"` + mallory + `"}`},
		// A JSON object repeating a key is refused as malformed before
		// anything is resolved.
		{name: "a repeated key in a JSON body", path: cart, headers: session1("content-type", jsonType), body: `{"access_token":"` + mallory + `","access_token":"x"}`,
			reason: authz.ReasonMalformedRequest},
		{name: "access_token in a multipart part", path: cart, headers: session1("content-type", multi), body: multipart("access_token", mallory)},
		{name: "form type then a comma", path: cart, headers: session1("content-type", form+",text/plain"), body: "product=42&access_token=" + mallory},
		{name: "form type then a space", path: cart, headers: session1("content-type", form+" text/plain"), body: "product=42&access_token=" + mallory},
		{name: "a form body with no type", path: cart, headers: session1(), body: "product=42&access_token=" + mallory},
		{name: "token in a form body", path: cart, headers: session1("content-type", form), body: "product=42&token=" + mallory},
		{name: "token in a JSON body", path: cart, headers: session1("content-type", jsonType), body: `{"token":"` + mallory + `"}`},
		{name: "a body of a type Deputy does not read", path: cart, headers: session1("content-type", "text/plain"), body: "access_token=" + mallory},
		{name: "a JSON body that does not parse", path: cart, headers: session1("content-type", "application/json-seq"), body: `{"access_token":"` + mallory + `",}`},
		{name: "a cut form whose last field holds a token and a carrier's name", path: cart, headers: session1("content-type", form, "content-length", "9999"),
			body: "product=42&note=api_token+" + mallory},
		{name: "a cut form whose token is in a field the form reading took", path: cart, headers: session1("content-type", form, "content-length", "9999"),
			body: "product=42&token=" + mallory + "&note=a"},
		{name: "a JSON body cut short", path: cart, headers: session1("content-type", "application/json-seq", "content-length", "9999"), body: `{"access_token":"` + mallory + `"`},
		{name: "a multipart body with a name parsers read apart", path: cart, headers: session1("content-type", multi),
			body: "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\nContent-Disposition: form-data; name=\"access_token\"\r\n\r\n" + mallory + "\r\n--XyZ--\r\n"},
		// Parts PHP ($_POST: Laravel's TokenGuard, tymon/jwt-auth) reads
		// under a carrier's name while Go's reader skips or misnames them.
		{name: "a multipart attachment part", path: cart, headers: session1("content-type", multi), body: part(`attachment; name="api_token"`, mallory)},
		{name: "a multipart part naming itself twice", path: cart, headers: session1("content-type", multi), body: part(`form-data; name="x"; name="api_token"`, mallory)},
		{name: "a multipart part with a bare parameter", path: cart, headers: session1("content-type", multi), body: part(`form-data; name="api_token"; foo`, mallory)},
		{name: "a multipart part with an empty parameter", path: cart, headers: session1("content-type", multi), body: part(`form-data; name="api_token";;`, mallory)},
		{name: "a multipart part name in single quotes", path: cart, headers: session1("content-type", multi), body: part(`form-data; name='api_token'`, mallory)},
		{name: "a multipart part name in another case", path: cart, headers: session1("content-type", multi), body: part(`attachment; NAME=Api_Token`, mallory)},
		{name: "a multipart part split by a space", path: cart, headers: session1("content-type", multi), body: part(`attachment; name="token"`, "e "+mallory[1:])},
		{name: "a multipart boundary inside another parameter", path: cart, headers: session1("content-type", "multipart/form-data; xboundary=YY; boundary=XyZ"),
			body: "--XyZ\r\nContent-Disposition: form-data; name=\"product\"\r\n\r\n1\r\n--YY\r\nContent-Disposition: form-data; name=\"api_token\"\r\n\r\n" + mallory + "\r\n--YY--\r\n--XyZ--\r\n"},
		// Bodies OPA-Envoy's parse refuses are refused before that.
		{name: "a JSON body that does not parse", path: cart, headers: session1("content-type", jsonType), body: `{"access_token":"` + mallory + `",}`, reason: "malformed_request"},
		{name: "a multipart body that does not parse", path: cart, headers: session1("content-type", multi), body: "--XyZ\r\nContent-Disposition: form-data; name=\"access_token\"\r\n\r\n" + mallory, reason: "malformed_request"},

		// Query carriers.
		{name: "token in the query", path: account + "?token=" + mallory, headers: session1()},
		{name: "jwt in the query", path: account + "?jwt=" + mallory, headers: session1()},
		{name: "id_token in the query", path: account + "?id_token=" + mallory, headers: session1()},
		{name: "api_token in the query", path: account + "?api_token=" + mallory, headers: session1()},
		{name: "auth in the query", path: account + "?auth=" + mallory, headers: session1()},
		{name: "bearer in the query", path: account + "?bearer=" + mallory, headers: session1()},
		{name: "Token in the query", path: account + "?x=1&Token=" + mallory, headers: session1()},
		{name: "escaped jwt in the query", path: account + "?%6Awt=" + mallory, headers: session1()},
		// PHP reads a name whose "[" is never closed with that "[" as "_":
		// $_GET['access_token'], $_GET['id_token'].
		{name: "access[token in the query", path: account + "?access[token=" + mallory, headers: session1()},
		{name: "escaped id%5Btoken in the query", path: account + "?id%5Btoken=" + mallory, headers: session1()},
		{name: "access[token in a form body", path: cart, headers: session1("content-type", form), body: "product=42&access[token=" + mallory},
		{name: "cookie access[token", path: account, headers: session1("cookie", cookie+"; access[token="+mallory)},
		// Readers that drop "Bearer" in any case and white space
		// (hapi-auth-jwt2), or take the token from inside the value.
		{name: "token in the query split by a space", path: account + "?token=e%20" + mallory[1:], headers: session1()},
		{name: "token in the query split by a plus", path: account + "?token=e+" + mallory[1:], headers: session1()},
		{name: "token in the query split by BEARER", path: account + "?token=eBEARER" + mallory[1:], headers: session1()},
		{name: "token in the query split by bearer twice", path: account + "?token=eBEbearerARERyJ" + mallory[3:], headers: session1()},
		{name: "access_token in the query after Bearer", path: account + "?access_token=Bearer%20" + mallory, headers: session1()},
		{name: "token in the query after a prefix", path: account + "?token=x." + mallory, headers: session1()},
		{name: "cookie token split by a space", path: account, headers: session1("cookie", cookie+"; token=e%20"+mallory[1:])},
		{name: "cookie token split by Bearer", path: account, headers: session1("cookie", cookie+"; token=eBearer"+mallory[1:])},
		{name: "X-Auth-Token split by a space", path: account, headers: session1("x-auth-token", "e "+mallory[1:])},
		{name: "token in a form body split by a space", path: cart, headers: session1("content-type", form), body: "product=42&token=e+" + mallory[1:]},
		{name: "token in a JSON body split by Bearer", path: cart, headers: session1("content-type", jsonType), body: `{"token":"eBearer` + mallory[1:] + `"}`},
		{name: "token in a multipart part split by a space", path: cart, headers: session1("content-type", multi), body: multipart("token", "e "+mallory[1:])},
		{name: "the actor's own token after Bearer in the query", path: account + "?access_token=Bearer%20" + staff, headers: session1("authorization", "Bearer "+staff), allowed: true},

		// Cookie carriers, as cookie parsers read them.
		{name: "cookie token", path: account, headers: session1("cookie", cookie+"; token="+mallory)},
		{name: "cookie jwt", path: account, headers: session1("cookie", "jwt="+mallory+"; "+cookie)},
		{name: "cookie access_token", path: account, headers: session1("cookie", cookie+"; access_token="+mallory)},
		{name: "cookie access_token_cookie", path: account, headers: session1("cookie", cookie+"; access_token_cookie="+mallory)},
		{name: "cookie BEARER", path: account, headers: session1("cookie", cookie+"; BEARER="+mallory)},
		{name: "cookie after a comma", path: account, headers: session1("cookie", cookie+", jwt="+mallory)},
		{name: "quoted cookie", path: account, headers: session1("cookie", cookie+`; jwt="`+mallory+`"`)},
		{name: "escaped cookie value", path: account, headers: session1("cookie", cookie+"; jwt=%65"+mallory[1:])},
		{name: "escaped cookie name", path: account, headers: session1("cookie", cookie+"; %6Awt="+mallory)},
		{name: "cookie with a Bearer prefix", path: account, headers: session1("cookie", cookie+"; token=Bearer%20"+mallory)},
		{name: "cookie in the standard alphabet", path: account, headers: session1("cookie", cookie+"; jwt="+strings.NewReplacer("-", "+", "_", "/").Replace(mallory))},
		{name: "cookie holding a JWE", path: account, headers: session1("cookie", cookie+"; token=eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a2V5.aXY.Y2lwaGVy.dGFn")},
		{name: "cookie in a second field", path: account, headers: session1("cookie", ""), fields: [][2]string{{"cookie", cookie}, {"cookie", "jwt=" + mallory}}},

		// Header carriers, in any case, "_" read as "-".
		{name: "X-Access-Token", path: account, headers: session1("x-access-token", mallory)},
		{name: "X-Auth-Token", path: account, headers: session1("x-auth-token", mallory)},
		{name: "X-Api-Key", path: account, headers: session1("x-api-key", mallory)},
		{name: "Token", path: account, headers: session1("token", mallory)},
		{name: "X-Authorization with Bearer", path: account, headers: session1("x-authorization", "Bearer "+mallory)},
		{name: "x_auth_token", path: account, headers: session1("x_auth_token", mallory)},
		{name: "X-Auth-Token in the standard alphabet", path: account, headers: session1("x-auth-token", "eyJhbGciOiJFZERTQSJ9+/x.eyJzdWIiOiJtYWxsb3J5In0+/.c2ln")},
		{name: "cookie in the standard alphabet, quoted", path: account, headers: session1("cookie", cookie+`; jwt="eyJhbGciOiJFZERTQSJ9/+x.eyJzdWIiOiJtYWxsb3J5In0.c2ln"`)},
		{name: "X-Auth-Token padded", path: account, headers: session1("x-auth-token", mallory+"==")},
		{name: "X-Auth-Token quoted", path: account, headers: session1("x-auth-token", `"`+mallory+`"`)},
		{name: "X-Auth-Token as a parameter", path: account, headers: session1("x-auth-token", "token="+mallory)},
		{name: "the actor's own token padded in a header", path: account, headers: session1("authorization", "Bearer "+staff, "x-auth-token", staff+"=")},
		{name: "X-Auth-Token in header_map", path: account, headers: session1(), fields: [][2]string{{"X-Auth-Token", mallory}}},

		// A partner naming a customer.
		{name: "partner with token in the query", path: cases + "?token=" + mallory, headers: partner()},
		{name: "partner with cookie jwt", path: cases, headers: partner("cookie", "jwt="+mallory)},
		{name: "partner with X-Auth-Token", path: cases, headers: partner("x-auth-token", mallory)},
		{name: "partner with access_token in a JSON body", path: cases, headers: partner("content-type", jsonType), body: `{"access_token":"` + mallory + `"}`},

		// A byte order mark, which body-parser drops and Deputy's form
		// reading keeps: access_token is a carrier there.
		{name: "a form after a byte order mark", path: cart, headers: session1("content-type", form), body: "\xef\xbb\xbfaccess_token=" + mallory, reason: "malformed_request"},
		{name: "a form after a byte order mark, parse_body off", path: cart, headers: session1("content-type", form), body: "\xef\xbb\xbfaccess_token=" + mallory, noParse: true},
		{name: "a JSON body after a byte order mark, parse_body off", path: cart, headers: session1("content-type", jsonType), body: "\xef\xbb\xbf{\"access_token\":\"" + mallory + "\"}", noParse: true},

		// A compressed body, or one in a charset that is not ASCII to a
		// token's bytes, is another body to an upstream that inflates or
		// decodes it (Express's body-parser does both): refused whenever
		// body carriers are read, parse_body on or off, whatever its type.
		{name: "a gzip JSON body", path: cart, headers: session1("content-type", jsonType, "content-encoding", "gzip"), body: gzipped(tokenJSON), reason: "malformed_request"},
		{name: "a gzip JSON body, parse_body off", path: cart, headers: session1("content-type", jsonType, "content-encoding", "gzip"), body: gzipped(tokenJSON), noParse: true},
		{name: "a gzip form, parse_body off", path: cart, headers: session1("content-type", form, "content-encoding", "GZIP"), body: gzipped(tokenForm), noParse: true},
		{name: "a deflate form", path: cart, headers: session1("content-type", form, "content-encoding", "deflate"), body: deflated(tokenForm), reason: "malformed_request"},
		{name: "a deflate form, parse_body off", path: cart, headers: session1("content-type", form, "content-encoding", "deflate"), body: deflated(tokenForm), noParse: true},
		{name: "a br JSON body", path: cart, headers: session1("content-type", jsonType, "content-encoding", "br"), body: "\x1b\x1e\x00\xf8\xa5\x40\x72\x21", reason: "malformed_request"},
		{name: "a br JSON body, parse_body off", path: cart, headers: session1("content-type", jsonType, "content-encoding", "br"), body: "\x1b\x1e\x00\xf8\xa5\x40\x72\x21", noParse: true},
		{name: "identity then gzip, parse_body off", path: cart, headers: session1("content-type", jsonType, "content-encoding", "identity, gzip"), body: gzipped(tokenJSON), noParse: true},
		{name: "a gzip text/json body", path: cart, headers: session1("content-type", "text/json", "content-encoding", "gzip"), body: gzipped(tokenJSON), reason: "malformed_request"},
		{name: "a gzip text/json body, parse_body off", path: cart, headers: session1("content-type", "text/json", "content-encoding", "gzip"), body: gzipped(tokenJSON), noParse: true},
		{name: "a gzip body with no type", path: cart, headers: session1("content-encoding", "gzip"), body: gzipped(tokenForm), reason: "malformed_request"},
		{name: "a gzip body with no type, parse_body off", path: cart, headers: session1("content-encoding", "gzip"), body: gzipped(tokenForm), noParse: true},
		{name: "a gzip body of a type not read", path: cart, headers: session1("content-type", "application/octet-stream", "content-encoding", "gzip"), body: gzipped(tokenForm)},
		{name: "a gzip body in header_map", path: cart, headers: session1("content-type", jsonType), fields: [][2]string{{"Content-Encoding", "gzip"}}, body: gzipped(tokenJSON), noParse: true},
		{name: "a UTF-16LE JSON body", path: cart, headers: session1("content-type", jsonType+"; charset=utf-16le"), body: utf16le(tokenJSON), reason: "malformed_request"},
		{name: "a UTF-16LE JSON body, parse_body off", path: cart, headers: session1("content-type", jsonType+"; charset=utf-16le"), body: utf16le(tokenJSON), noParse: true},
		{name: "a UTF-16LE JSON body with a quoted charset, parse_body off", path: cart, headers: session1("content-type", jsonType+`; Charset="UTF-16LE"`), body: utf16le(tokenJSON), noParse: true},
		{name: "a UTF-16 byte order mark, no charset", path: cart, headers: session1("content-type", jsonType), body: "\xff\xfe" + utf16le(tokenJSON), reason: "malformed_request"},
		{name: "a UTF-16 byte order mark, no charset, parse_body off", path: cart, headers: session1("content-type", jsonType), body: "\xff\xfe" + utf16le(tokenJSON), noParse: true},
		// A form holding a control byte (UTF-16's NULs) is refused as
		// malformed, parse_body on or off.
		{name: "a UTF-16BE byte order mark in a form, parse_body off", path: cart, headers: session1("content-type", form), body: "\xfe\xff" + utf16be(tokenForm), noParse: true, reason: "malformed_request"},
		{name: "a UTF-16 byte order mark in text/plain", path: cart, headers: session1("content-type", "text/plain"), body: "\xff\xfe" + utf16le(tokenForm)},
		{name: "a UTF-16LE JSON body without a mark or charset, parse_body off", path: cart, headers: session1("content-type", jsonType), body: utf16le(tokenJSON), noParse: true},
		{name: "a UTF-32 JSON body, parse_body off", path: cart, headers: session1("content-type", jsonType+"; charset=utf-32"), body: "\x00\x00\xfe\xff" + utf16be(utf16be(tokenJSON)), noParse: true},
		{name: "a UTF-16 form, parse_body off", path: cart, headers: session1("content-type", form+"; charset=utf-16"), body: utf16be(tokenForm), noParse: true, reason: "malformed_request"},
		{name: "a UTF-7 form, parse_body off", path: cart, headers: session1("content-type", form+"; charset=utf-7"), body: "access+AF8-token=" + mallory, noParse: true},
		// Bodies an upstream reads as their bytes say.
		{name: "session posting JSON as identity", path: cart, headers: session1("content-type", jsonType, "content-encoding", "identity"), body: `{"product":42}`, allowed: true},
		{name: "session posting JSON as identity, parse_body off", path: cart, headers: session1("content-type", jsonType, "content-encoding", "Identity"), body: `{"product":42}`, noParse: true, allowed: true},
		{name: "session posting UTF-8 JSON", path: cart, headers: session1("content-type", jsonType+"; charset=utf-8"), body: `{"product":42,"note":"caf\u00e9 ` + "\u00e9" + `"}`, allowed: true},
		{name: "session posting UTF-8 JSON, parse_body off", path: cart, headers: session1("content-type", jsonType+`; charset="UTF-8"`), body: `{"product":42}`, noParse: true, allowed: true},
		{name: "session posting a US-ASCII form", path: cart, headers: session1("content-type", form+"; charset=us-ascii"), body: "product=42", allowed: true},
		{name: "session posting an ISO-8859-1 form", path: cart, headers: session1("content-type", form+"; charset=ISO-8859-1"), body: "product=42&note=caf\xe9", noParse: true, allowed: true},
		{name: "session posting a compressed body with nothing in it", path: cart, headers: session1("content-type", jsonType, "content-encoding", "gzip", "content-length", "0"), allowed: true},
		{name: "a token in an ISO-8859-1 form", path: cart, headers: session1("content-type", form+"; charset=iso-8859-1"), body: "product=42&access_token=" + mallory},
	} {
		// A body is looked through alike in body and in raw_body (Envoy
		// with pack_as_bytes, and any body that is not UTF-8).
		fields := []string{"body"}
		if tc.body != "" {
			fields = append(fields, "raw_body")
		}
		for _, field := range fields {
			t.Run(tc.name+"/"+field, func(t *testing.T) {
				h := map[string]string{":authority": "shop.example.com"}
				for k, v := range tc.headers {
					if v != "" {
						h[k] = v
					}
				}
				req := withHeaders(t, tc.path, h)
				if tc.headers["cookie"] == "" {
					delete(req.Attributes.Request.Http.Headers, "cookie")
				}
				req.Attributes.Request.Http.Host = "shop.example.com"
				addHeaderFields(req, tc.fields)
				if tc.body != "" {
					req.Attributes.Request.Http.Method, req.Attributes.Request.Http.Headers[":method"] = "POST", "POST"
					if field == "raw_body" {
						req.Attributes.Request.Http.RawBody = []byte(tc.body)
					} else {
						req.Attributes.Request.Http.Body = tc.body
					}
					if tc.headers["content-length"] == "" {
						req.Attributes.Request.Http.Headers["content-length"] = strconv.Itoa(len(tc.body))
					}
				}
				before := resolved.Load()
				check := p
				if tc.noParse {
					check = noParse
				}
				resp := check.Check(ctx, req)
				if tc.allowed {
					if !resp.Allowed {
						t.Fatalf("denied (%s), want allowed", resp.Reason)
					}
					return
				}
				if tc.reason != "" {
					if resp.Allowed || resp.Reason != tc.reason {
						t.Fatalf("allowed %v reason %q, want %s", resp.Allowed, resp.Reason, tc.reason)
					}
					return
				}
				if resp.Allowed || resp.Reason != "identity_refused" || resp.HTTPStatus != 401 {
					t.Fatalf("allowed %v reason %q status %d, want identity_refused (401)", resp.Allowed, resp.Reason, resp.HTTPStatus)
				}
				if n := resolved.Load() - before; n != 0 {
					t.Errorf("%d delegation resolvers ran for a refused credential, want none", n)
				}
			})
		}
	}
}

// Operators name their upstream's carriers: added ones are read, the
// defaults left out are not, and an empty list reads none.
func TestCredentialCarriersConfigured(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	store := memory.New()
	session := "carrier-session-configured-0123456789abcdef"
	if err := storetest.StartRedeemed(ctx, store, &sidecar.Session{ID: "imp_2", Actor: "staff-1", ActorRoles: []string{"support_agent"}, Customer: "cust-9",
		StartedAt: now, ExpiresAt: now.Add(time.Hour), Host: "shop.example.com"}, delegation.HashSecret(session)); err != nil {
		t.Fatal(err)
	}
	cookie := "deputy_session=" + session
	dev, verifier := devVerifier(t)
	mallory, err := dev.Mint(identity.DevClaims{Subject: "mallory", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	sessions := resolve.NewSessionResolver(store, delegation.ImpersonationDefaults())
	t.Cleanup(func() { sessions.Close() })
	for _, tc := range []struct {
		name     string
		carriers []string
		path     string
		headers  map[string]string
		allowed  bool
	}{
		{"an added header", []string{"header:X-Shop-JWT"}, "/customer/account", map[string]string{"x-shop-jwt": mallory}, false},
		{"an added header, _ for -", []string{"header:x_shop_jwt"}, "/customer/account", map[string]string{"X-Shop-Jwt": mallory}, false},
		{"an added cookie", []string{"cookie:shop_auth"}, "/customer/account", map[string]string{"cookie": cookie + "; shop_auth=" + mallory}, false},
		{"an added query name", []string{"query:t"}, "/customer/account?t=" + mallory, nil, false},
		// PHP 8 reads every " ", "." and "[" after an unclosed "[" as "_".
		{"an added query name, PHP's unclosed brackets", []string{"query:my_sso_ref"}, "/customer/account?my[sso[ref=" + mallory, nil, false},
		{"an added query name, PHP's unclosed bracket and dot", []string{"query:my_sso_ref"}, "/customer/account?my%5Bsso.ref=" + mallory, nil, false},
		{"an added cookie, PHP's unclosed brackets", []string{"cookie:my_sso_ref"}, "/customer/account", map[string]string{"cookie": cookie + "; my[sso[ref=" + mallory}, false},
		{"a default left out", []string{"header:x-shop-jwt"}, "/customer/account?access_token=" + mallory, nil, true},
		{"none", []string{}, "/customer/account?access_token=" + mallory, map[string]string{"x-auth-token": mallory}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := shippedPipeline(t, authz.WithVerifier(verifier), authz.WithResolvers(sessions), authz.WithCredentialCarriers(tc.carriers))
			h := map[string]string{":authority": "shop.example.com", "cookie": cookie}
			for k, v := range tc.headers {
				h[strings.ToLower(k)] = v
			}
			req := withHeaders(t, tc.path, h)
			req.Attributes.Request.Http.Host = "shop.example.com"
			resp := p.Check(ctx, req)
			if resp.Allowed != tc.allowed || !tc.allowed && resp.Reason != "identity_refused" {
				t.Fatalf("allowed %v reason %q, want allowed %v", resp.Allowed, resp.Reason, tc.allowed)
			}
		})
	}
}

func TestParseCredentialCarriers(t *testing.T) {
	if _, err := authz.ParseCredentialCarriers(authz.DefaultCredentialCarriers()); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, bad := range []string{"", "token", "form:token", "query:", "cookie:a b", "cookie:a=b", "cookie:a;b", "header:x.auth", "header:x auth", "body:a,b", "query:a&b"} {
		_, err := authz.ParseCredentialCarriers([]string{"query:access_token", bad})
		if err == nil || !strings.Contains(err.Error(), "identity.credential_carriers") || !strings.Contains(err.Error(), "entry 1") {
			t.Errorf("%q: error %v, want one naming identity.credential_carriers entry 1", bad, err)
		}
	}
}

func gzipped(s string) string {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.String()
}

// deflated is s as HTTP's deflate coding sends it: zlib.
func deflated(s string) string {
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.String()
}

// utf16le and utf16be spell ASCII s in UTF-16.
func utf16le(s string) string {
	b := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		b = append(b, s[i], 0)
	}
	return string(b)
}

func utf16be(s string) string {
	b := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		b = append(b, 0, s[i])
	}
	return string(b)
}
