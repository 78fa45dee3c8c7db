package identity

import (
	"errors"
	"strings"
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
// A JWT needs no "Bearer" to be read either: Go's strings.TrimPrefix(h,
// "Bearer ") and passport-jwt's fromHeader take a bare token,
// passport-jwt's fromAuthHeaderWithScheme("JWT") (the first word after
// the scheme) and simplejwt's AUTH_HEADER_TYPES (split()) take "JWT
// <token>", and PyJWT, behind simplejwt, decodes a token with padding,
// the standard alphabet or other bytes in its signature (see
// LooksLikeJWS). So a value holding a JWT anywhere, in quotes, before
// other words, as a parameter, is a bearer credential too, and so is a
// Basic credential whose user or password holds one (see basicJWS):
// malformed, in any form but the one above.
func bearerToken(h string) (string, error) {
	h = strings.Trim(h, " \t") // OWS, which proxies strip
	scheme, token, _ := strings.Cut(h, " ")
	if strings.EqualFold(scheme, "bearer") && plainToken(token) {
		return token, nil
	}
	if !containsFold(h, "bearer") && !strings.EqualFold(schemeOf(h), "token") && !containsJWS(h) && !basicJWS(h) {
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

// LooksLikeJWS reports whether s begins with a JWT as an upstream may
// read one, a compact JWS (three parts joined by dots) or JWE (five),
// its first part a JSON object's encoding ("eyJ" is "{\""): s begins with
// "eyJ" and two parts of base64 letters of either alphabet (base64url's
// "-" and "_", standard "+" and "/") and padding ("="), each ended by a
// dot. What follows is not looked at: PyJWT pads and decodes each part
// with Python's lenient base64, which drops bytes outside the alphabet
// (white space, quotes) in fours, and a JWS's signature is not part of
// what it signs, so "<token>=", "<token>!!!!" and a signature split by
// spaces still verify; a JWE's later parts are read as leniently. The
// first two parts are not changed that way: a JWS's header and payload
// are signed as sent, a JWE's header is its additional authenticated
// data. Only the form: whether it verifies is not asked. Strict parsers
// read less than this, so more is refused than any one upstream reads.
func LooksLikeJWS(s string) bool {
	ok, _ := jwsAt(s)
	return ok
}

// jwsAt is LooksLikeJWS, and when s does not begin with a JWT, next: no
// JWT begins in s before index next either (one beginning inside the
// first part would end its parts where that part ends), so a search for
// one may go on from there and stay linear in the value.
func jwsAt(s string) (ok bool, next int) {
	if !strings.HasPrefix(s, "eyJ") {
		return false, 1
	}
	i := 3
	for i < len(s) && base64Byte(s[i]) {
		i++
	}
	if i == len(s) || s[i] != '.' {
		return false, i
	}
	j := i + 1
	for j < len(s) && base64Byte(s[j]) {
		j++
	}
	return j < len(s) && s[j] == '.', i
}

// containsJWS reports whether a JWT (see LooksLikeJWS) begins anywhere in
// s: after white space, a comma, a colon, an "=", a quote, as whatever
// word an upstream takes from the value.
func containsJWS(s string) bool {
	for {
		i := strings.Index(s, "eyJ")
		if i < 0 {
			return false
		}
		ok, next := jwsAt(s[i:])
		if ok {
			return true
		}
		s = s[i+next:]
	}
}

// base64Byte reports whether c is a letter of base64 in either alphabet,
// or padding.
func base64Byte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '+' || c == '/' || c == '='
}

// basicJWS reports whether a Basic credential in h (RFC 7617; any of
// several, split by commas) holds a JWT in its user or password, as
// decoded by a lenient base64 decoder (Python's, PHP's, Node's Buffer:
// either alphabet, padding or not) and, when it holds a "%", once more
// after percent-decoding. Upstreams read a token there: an API key as the
// user name, Laravel's TokenGuard the password, Doorkeeper's
// from_basic_authorization, and an OAuth client secret is form-encoded
// before it is put there (RFC 6749 §2.3.1). Only a value naming "basic"
// pays for decoding.
func basicJWS(h string) bool {
	if !containsFold(h, "basic") {
		return false
	}
	for cred := range strings.SplitSeq(h, ",") {
		cred = strings.TrimLeft(cred, " \t")
		scheme := schemeOf(cred)
		if !strings.EqualFold(scheme, "basic") {
			continue
		}
		word := strings.TrimLeft(cred[len(scheme):], " \t")
		if i := strings.IndexAny(word, " \t"); i >= 0 {
			word = word[:i]
		}
		userPass := decodeBase64(word)
		if containsJWS(userPass) || strings.IndexByte(userPass, '%') >= 0 && containsJWS(percentDecode(userPass)) {
			return true
		}
	}
	return false
}

// decodeBase64 decodes s as lenient decoders do: letters of either
// alphabet, every other byte (padding, white space) dropped.
func decodeBase64(s string) string {
	out := make([]byte, 0, len(s)*3/4)
	var acc uint32
	bits := 0
	for i := 0; i < len(s); i++ {
		v := base64Values[s[i]]
		if v == 0xff {
			continue
		}
		acc = acc<<6 | uint32(v)
		if bits += 6; bits >= 8 {
			bits -= 8
			out = append(out, byte(acc>>bits))
		}
	}
	return string(out)
}

// base64Values is each byte's value as a letter of base64 in either
// alphabet, 0xff for any other: a lookup, where a switch on the byte's
// ranges took twice as long.
var base64Values = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" {
		t[c] = byte(i)
	}
	t['-'], t['_'] = 62, 63
	return t
}()

// percentDecode decodes each "%" and two hex digits in s to its byte and
// keeps every other byte, a "%" without two digits after it too.
func percentDecode(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		out = append(out, s[i])
	}
	return string(out)
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
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
// any case. Only where s has w's first letter, in either case (no rune
// outside ASCII folds to "b", the first letter of every w), is the rest
// compared: an EqualFold call at every byte of a two-kilobyte Negotiate
// blob took 20µs a check, two vectorised scans for the letter take less
// than one.
func containsFold(s, w string) bool {
	for _, c := range [2]byte{w[0], w[0] - 'a' + 'A'} {
		for rest := s; ; {
			i := strings.IndexByte(rest, c)
			if i < 0 || len(rest)-i < len(w) {
				break
			}
			if strings.EqualFold(rest[i:i+len(w)], w) {
				return true
			}
			rest = rest[i+1:]
		}
	}
	return false
}
