package authz

import (
	"bytes"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// queryTokenNames are the query parameters upstreams read a bearer token
// from: access_token (RFC 6750 §2.3: Doorkeeper, Spring Security's
// allowUriQueryParameter, passport-http-bearer) and bearer_token
// (Doorkeeper's from_bearer_param, on by default).
var queryTokenNames, queryTokenKeys = []string{"access_token", "bearer_token"}, []string{"access_token", "bearer_token"}

// queryToken reports whether a raw query carries a token Deputy does not
// verify while an upstream may sign the request in as its holder: a field
// read as one of queryTokenNames under any spelling an upstream reads
// (see readAs: case, PHP's "." for "_", brackets, escapes; Rack 2's ";"
// as a separator; every repetition) whose value looks like a compact JWS.
// It allocates nothing for a query holding neither "eyJ" nor an escape.
func queryToken(raw string) bool {
	if raw == "" || !strings.Contains(raw, "eyJ") && strings.IndexByte(raw, '%') < 0 {
		return false
	}
	for rest := raw; rest != ""; {
		var pair string
		if i := strings.IndexAny(rest, "&;"); i >= 0 {
			pair, rest = rest[:i], rest[i+1:]
		} else {
			pair, rest = rest, ""
		}
		name, value, _ := strings.Cut(pair, "=")
		if want, _ := readAs(name, queryTokenNames, queryTokenKeys); want == "" {
			continue
		}
		if strings.ContainsAny(value, "%+") {
			value = unescape(strings.ReplaceAll(value, "+", " "))
		}
		if identity.LooksLikeJWS(strings.TrimSpace(value)) {
			return true
		}
	}
	return false
}

// formToken reports whether a request's form body, as far as the check
// was sent it, carries a token as queryToken reads one from a query:
// Doorkeeper and passport-http-bearer read access_token from a form body
// too. A body not sent (nginx, Caddy) or cut short is not seen.
func formToken(view *sidecar.Request, h *authv3.AttributeContext_HttpRequest) bool {
	body := h.GetBody()
	if body == "" {
		raw := h.GetRawBody()
		if !bytes.Contains(raw, []byte("eyJ")) && bytes.IndexByte(raw, '%') < 0 {
			return false
		}
		body = string(raw)
	}
	if body == "" {
		return false
	}
	ct, _, _ := strings.Cut(view.Header("content-type"), ";")
	return strings.EqualFold(strings.TrimSpace(ct), "application/x-www-form-urlencoded") && queryToken(body)
}

// queryOf is the raw query of a :path.
func queryOf(path string) string {
	_, q, _ := strings.Cut(path, "?")
	return q
}
