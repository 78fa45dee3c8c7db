package identity

import (
	"encoding/binary"
	"errors"
	"strings"

	"github.com/deputyhq/deputy/sidecar"
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
		if jwsInUserPass(decodeBase64(word, &base64Values)) {
			return true
		}
	}
	// PHP's base64_decode (Symfony's PHP_AUTH_USER and PHP_AUTH_PW, so
	// Laravel's) and werkzeug's b64decode decode all that follows a
	// leading "Basic ", skipping every byte outside the standard alphabet:
	// white space, a comma, a quote, "-" or "_" put inside the encoding
	// is dropped by them, and shifts a decoding that reads it. So the
	// whole rest is decoded again as they do, and as a decoder of the URL
	// alphabet alone would.
	if rest, ok := afterScheme(h, "basic"); ok {
		return jwsInUserPass(decodeBase64(rest, &stdBase64Values)) || jwsInUserPass(decodeBase64(rest, &urlBase64Values))
	}
	return false
}

// jwsInUserPass reports whether a decoded Basic credential holds a JWT,
// as it is or, when it holds a "%", once percent-decoded.
func jwsInUserPass(userPass string) bool {
	return containsJWS(userPass) || strings.IndexByte(userPass, '%') >= 0 && containsJWS(percentDecode(userPass))
}

// afterScheme is what follows h's leading auth-scheme when it is scheme
// (lower-case ASCII) in any case, past optional white space first.
func afterScheme(h, scheme string) (string, bool) {
	h = strings.TrimLeft(h, " \t")
	sc := schemeOf(h)
	if len(sc) != len(scheme) || !hasPrefixFold(sc, scheme) {
		return "", false
	}
	return h[len(sc):], true
}

// decodeBase64 decodes s as lenient decoders do: letters of the alphabet
// values gives a value, every other byte (padding, white space) dropped.
func decodeBase64(s string, values *[256]byte) string {
	out := make([]byte, 0, len(s)*3/4)
	var acc uint32
	bits := 0
	for i := 0; i < len(s); i++ {
		v := values[s[i]]
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

// stdBase64Values and urlBase64Values are base64Values for one alphabet
// alone: the standard one (PHP, Python's b64decode) and the URL one.
var stdBase64Values, urlBase64Values = func() (std, url [256]byte) {
	std, url = base64Values, base64Values
	std['-'], std['_'] = 0xff, 0xff
	url['+'], url['/'] = 0xff, 0xff
	return std, url
}()

// percentDecode decodes each "%" and two hex digits in s to its byte and
// keeps every other byte, a "%" without two digits after it too.
func percentDecode(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && sidecar.IsHex(s[i+1]) && sidecar.IsHex(s[i+2]) {
			out = append(out, sidecar.Unhex(s[i+1])<<4|sidecar.Unhex(s[i+2]))
			i += 2
			continue
		}
		out = append(out, s[i])
	}
	return string(out)
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
// any ASCII case. Every byte of a hostile value may start a candidate
// ("bbbb…" for "bearer"): a search call, or an EqualFold call, at each of
// them cost tens of microseconds a kilobyte. Here eight bytes at a time
// are asked whether any is w's first letter in either case (one word's
// arithmetic, see hasFoldByte), and only a word that has one is walked
// byte by byte: a few instructions a byte, however s is made.
func containsFold(s, w string) bool {
	c := w[0]
	pattern := uint64(c) * 0x0101010101010101
	i := 0
	for ; i+8 <= len(s); i += 8 {
		if !hasFoldByte(binary.LittleEndian.Uint64([]byte(s[i:i+8])), pattern) {
			continue
		}
		for k := i; k < i+8; k++ {
			if s[k]|0x20 == c && hasPrefixFold(s[k+1:], w[1:]) {
				return true
			}
		}
	}
	for ; i < len(s); i++ {
		if s[i]|0x20 == c && hasPrefixFold(s[i+1:], w[1:]) {
			return true
		}
	}
	return false
}

// hasFoldByte reports whether some byte of x, with its 0x20 bit set (an
// ASCII letter lower-cased), equals the byte repeated in pattern: the
// classic test for a zero byte in x^pattern. It may answer true falsely
// (a borrow), never falsely false; the caller checks each byte.
func hasFoldByte(x, pattern uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	y := (x | 0x2020202020202020) ^ pattern
	return (y-ones)&^y&highs != 0
}

// hasPrefixFold reports whether s starts with the lower-case ASCII letters
// w in any ASCII case. It is what upstreams compare (PHP's stripos, Ruby's
// and Python's regular expressions, Go's EqualFold on ASCII), and, unlike
// strings.EqualFold, costs a few instructions a byte: a value of
// kilobytes of "b" is a comparison at every byte.
func hasPrefixFold(s, w string) bool {
	if len(s) < len(w) {
		return false
	}
	for i := 0; i < len(w); i++ {
		if s[i]|0x20 != w[i] {
			return false
		}
	}
	return true
}
