package identity

import (
	"errors"
	"strings"
	"unicode"
)

// bearerToken reads the token of an identity header value h, which holds
// one credential: "Bearer", one space and a token68 (RFC 6750 §2.1), the
// scheme in any case. It returns "" and no error for a credential of
// another scheme, which is not Deputy's to judge.
//
// Upstreams read bearer tokens more leniently than that: Rails matches
// /^(Token|Bearer)\s+/, Django REST framework splits the value on any white
// space, Laravel takes what follows the last "Bearer " anywhere in it and
// drops what follows a comma, ASP.NET trims the token. A value one of them
// reads a token from is never "another scheme" here, or a request would
// carry no identity to Deputy while the upstream signs it in as the
// token's holder (a session cookie binds to its actor only against an
// identity Deputy verified). So a value that names "bearer" anywhere, in
// any case, or whose scheme is Rails' "Token", is a bearer credential,
// and one not in the exact form above is refused as malformed: a tab, a
// no-break space, a colon or several spaces after the scheme, a second
// credential, anything after the token.
//
// A compact JWS needs no "Bearer" to be read either: Go's
// strings.TrimPrefix(h, "Bearer ") and passport-jwt's fromHeader take a
// bare token, passport-jwt's fromAuthHeaderWithScheme("JWT") and
// simplejwt's AUTH_HEADER_TYPES take "JWT <token>". So a value whose last
// word looks like one (see LooksLikeJWS) is a bearer credential too, and
// malformed in any form but the one above.
func bearerToken(h string) (string, error) {
	h = strings.Trim(h, " \t") // OWS, which proxies strip
	scheme, token, _ := strings.Cut(h, " ")
	if strings.EqualFold(scheme, "bearer") && plainToken(token) {
		return token, nil
	}
	if !containsFold(h, "bearer") && !strings.EqualFold(schemeOf(h), "token") && !LooksLikeJWS(lastWord(h)) {
		return "", nil
	}
	if token == "" && strings.EqualFold(scheme, "bearer") {
		return "", errors.New("empty bearer token")
	}
	return "", errors.New(`not "Bearer", one space and a token: a bearer credential an upstream may read otherwise`)
}

// plainToken reports whether s may be a bearer token: not empty, and free
// of the separators lenient parsers cut a value at (space, tab, comma).
// Any other byte outside a compact JWS's alphabet (base64url and dots), a
// no-break space say, is refused by the JWS parse, which every token not
// remembered goes through. This runs on every check, as three vectorised
// scans: a byte-by-byte walk of a kilobyte of random letters and digits,
// which mispredicts a branch a byte, took a microsecond.
func plainToken(s string) bool {
	return s != "" && strings.IndexByte(s, ' ') < 0 && strings.IndexByte(s, '\t') < 0 && strings.IndexByte(s, ',') < 0
}

// LooksLikeJWS reports whether s has the form of a compact JWS, as every
// JWT library reads one: three parts of base64url (padding let through)
// joined by dots, the first a JSON object's encoding ("eyJ" is "{\"").
// Only the form: whether it verifies is not asked.
func LooksLikeJWS(s string) bool {
	if !strings.HasPrefix(s, "eyJ") || strings.Count(s, ".") != 2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '=') {
			return false
		}
	}
	return true
}

// lastWord is the trailing run of h's base64url letters and dots, after
// any white space or commas at its end: its last word, as lenient parsers
// split a value on white space or commas, or what follows a separator of
// another kind (":", "=").
func lastWord(h string) string {
	h = strings.TrimRightFunc(h, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	i := len(h)
	for i > 0 {
		c := h[i-1]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			break
		}
		i--
	}
	return h[i:]
}

// schemeOf is the auth-scheme h starts with: its leading run of token
// characters (RFC 9110 §5.6.2).
func schemeOf(h string) string {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return h[:i]
	}
	return h
}

// containsFold reports whether s contains the lower-case ASCII word w in
// any case.
func containsFold(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(w)], w) {
			return true
		}
	}
	return false
}
