package authz

import (
	"strings"

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
