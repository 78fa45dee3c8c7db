package authz

import (
	"bytes"
	"encoding/json"
	"mime"
	"mime/multipart"
	"slices"
	"strconv"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/paramkey"
)

// Credential carriers: the places besides the identity header where an
// upstream reads a bearer token and signs the request in as its holder. A
// carrier is "query:<param>", "body:<param>" (a form, a JSON body's
// top-level key, a multipart part), "cookie:<name>" or "header:<name>". A
// carrier holding what looks like a JWT (identity.LooksLikeJWS) other than
// the token Deputy verified on the same request is a credential Deputy
// does not verify while the upstream may act on it: the request is
// refused as carrying a malformed one, and no delegation is resolved.
const carrierCookie = "cookie:"

// DefaultCredentialCarriers are the places common upstreams read a token
// from, by default or as their documentation sets them up.
func DefaultCredentialCarriers() []string {
	return []string{
		// RFC 6750 §2.3's query parameter: Doorkeeper, Spring Security
		// (allowUriQueryParameter), passport-http-bearer.
		"query:access_token",
		// Doorkeeper's from_bearer_param, on by default.
		"query:bearer_token",
		// hapi-auth-jwt2's urlKey and tymon/jwt-auth's QueryString parser.
		"query:token",
		// Flask-JWT-Extended's JWT_QUERY_STRING_NAME.
		"query:jwt",
		// Laravel's TokenGuard (the api guard's input key).
		"query:api_token",
		// LexikJWTAuthenticationBundle's query_parameter extractor.
		"query:bearer",
		// The OpenID Connect response parameter, and a name applications
		// read a token from by hand.
		"query:id_token", "query:auth",
		// Doorkeeper (Rails' params merge form, JSON and multipart
		// bodies), passport-http-bearer (req.body.access_token, whatever
		// parser filled it), Flask-JWT-Extended's JWT_JSON_KEY.
		"body:access_token", "body:bearer_token",
		// tymon/jwt-auth's InputSource parser (form and JSON input),
		// Laravel's TokenGuard, an OpenID Connect form_post response.
		"body:token", "body:api_token", "body:id_token",
		// hapi-auth-jwt2's cookieKey and tymon/jwt-auth's Cookies parser.
		"cookie:token",
		// go-chi/jwtauth's TokenFromCookie.
		"cookie:jwt",
		// Flask-JWT-Extended's JWT_ACCESS_COOKIE_NAME.
		"cookie:access_token_cookie",
		// LexikJWTAuthenticationBundle's cookie extractor.
		"cookie:BEARER",
		// A name applications set and read by hand.
		"cookie:access_token",
		// Headers applications read a token from by hand (Express and
		// Spring examples' x-access-token and x-auth-token, API gateways'
		// x-api-key).
		"header:x-access-token", "header:x-auth-token", "header:x-api-key", "header:token", "header:x-authorization",
	}
}

// CredentialCarriers are the parsed carriers.
type CredentialCarriers struct {
	query, body, cookie paramNames
	headers             []string // sidecar.HeaderName form
	// bodyRuns are the body names' longestRun, lower case: a body Deputy
	// cannot read is looked through for them.
	bodyRuns []string
}

// paramNames are names as given and their keys (paramkey.Of), for readAs.
type paramNames struct{ names, keys []string }

func (n *paramNames) add(name string) {
	n.names, n.keys = append(n.names, name), append(n.keys, paramkey.Of(name))
}

// ParseCredentialCarriers reads carriers; an unknown kind, an empty name,
// a name holding a separator its place splits on, or a header name that
// is not a sidecar.ValidHeaderName is an EINVALID error of
// identity.credential_carriers naming the entry.
func ParseCredentialCarriers(carriers []string) (CredentialCarriers, error) {
	var c CredentialCarriers
	for i, e := range carriers {
		kind, name, _ := strings.Cut(e, ":")
		kind += ":"
		if name == "" || strings.ContainsAny(name, " \t,;=&\"") {
			return c, badCredentialCarrier(i, e)
		}
		switch kind {
		case carrierQuery:
			c.query.add(name)
		case carrierBody:
			c.body.add(name)
			c.bodyRuns = addRun(c.bodyRuns, strings.ToLower(longestRun(fieldKey(name))))
		case carrierCookie:
			c.cookie.add(name)
		case carrierHeader:
			if err := sidecar.InvalidHeaderNameEntry("identity.credential_carriers", i, name); err != nil {
				return c, err
			}
			c.headers = append(c.headers, sidecar.HeaderName(name))
		default:
			return c, badCredentialCarrier(i, e)
		}
	}
	return c, nil
}

// HeaderNames are the header carriers' names, in sidecar.HeaderName form.
func (c *CredentialCarriers) HeaderNames() []string { return slices.Clone(c.headers) }

// QueryNames are the query carriers' names, as given.
func (c *CredentialCarriers) QueryNames() []string { return slices.Clone(c.query.names) }

func badCredentialCarrier(i int, c string) error {
	return sidecar.Invalid("identity.credential_carriers", "entry %d: %q: want query:<param>, body:<param>, cookie:<name> or header:<name>", i, c)
}

// credentialCheck looks through one request's carriers.
type credentialCheck struct {
	c    *CredentialCarriers
	view *sidecar.Request
	// verified reads the token Deputy verified on the request ("" when
	// none), once, when a carrier holds a token.
	verified func() string
	same     string
	read     bool
}

// foreign reports whether tok, which looks like a JWT, is another
// credential than the one Deputy verified.
func (k *credentialCheck) foreign(tok string) bool {
	if !k.read {
		k.same, k.read = lenient(k.verified()), true
	}
	return k.same == "" || tok != k.same
}

// refused reports whether a request carries a token Deputy does not
// verify in one of the carriers. A request whose query, cookies, carrier
// headers and body hold neither "eyJ" (see mayHoldJWT) nor an escape
// allocates nothing.
func (c *CredentialCarriers) refused(view *sidecar.Request, h *authv3.AttributeContext_HttpRequest, verified func() string) bool {
	k := credentialCheck{c: c, view: view, verified: verified}
	return k.param(queryOf(h.GetPath()), &c.query) || k.headers() || k.cookies() || k.body(h)
}

// param reports whether a raw query or form carries a token in a field
// read as one of names under any spelling an upstream reads (see readAs:
// case, PHP's "." for "_", brackets, escapes; Rack 2's ";" as a
// separator; every repetition) whose value looks like a JWT.
func (k *credentialCheck) param(raw string, names *paramNames) bool {
	if raw == "" || len(names.keys) == 0 || !mayHoldJWT(raw) && strings.IndexByte(raw, '%') < 0 {
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
		if want, _ := readAs(name, names.names, names.keys); want == "" {
			continue
		}
		if strings.ContainsAny(value, "%+") {
			value = sidecar.UnescapeValid(strings.ReplaceAll(value, "+", " "))
		}
		if k.token(value) {
			return true
		}
	}
	return false
}

// token reports whether a carrier's value holds a token Deputy did not
// verify, read as the most lenient reader takes it (see lenient), the
// token beginning anywhere in it.
func (k *credentialCheck) token(v string) bool {
	return k.words(lenient(v))
}

// lenient is a carrier's value (unescaped) as the most lenient reader
// takes a token from it: hapi-auth-jwt2 drops "Bearer" in any case and
// then every space, others drop white space or a scheme first. Every
// "bearer" in any case and every ASCII white space byte is dropped, again
// where a drop joins a new "bearer", until none is left: whatever token
// any order of those drops leaves keeps its "eyJ" and its dots here (none
// of them is in "bearer"), so it is still found. A stack keeps it linear.
// A value holding neither is returned as it is.
func lenient(v string) string {
	if !containsLower(v, "bearer") && !hasWhite(v) {
		return v
	}
	b := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		c := v[i]
		if isWhite(c) {
			continue
		}
		b = append(b, c)
		if n := len(b); n >= 6 && lowerByte(c) == 'r' && containsLower(string(b[n-6:]), "bearer") {
			b = b[:n-6]
		}
	}
	return string(b)
}

func isWhite(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func hasWhite[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if isWhite(s[i]) {
			return true
		}
	}
	return false
}

// mayHoldJWT reports whether s may hold "eyJ" once lenient (with "+" read
// as a space too) has dropped what it drops: it holds "bearer" in any
// case, or an "e", "y" and "J" with only white space or "+" between them.
// It allocates nothing.
func mayHoldJWT[T string | []byte](s T) bool {
	for i := 0; i+2 < len(s); i++ {
		if s[i] != 'e' {
			if (s[i] == 'b' || s[i] == 'B') && i+6 <= len(s) && lowerByte(s[i+1]) == 'e' && lowerByte(s[i+2]) == 'a' && lowerByte(s[i+3]) == 'r' && lowerByte(s[i+4]) == 'e' && lowerByte(s[i+5]) == 'r' {
				return true
			}
			continue
		}
		j := skipWhite(s, i+1)
		if j < len(s) && s[j] == 'y' {
			if j = skipWhite(s, j+1); j < len(s) && s[j] == 'J' {
				return true
			}
		}
	}
	return false
}

// skipWhite is the index of the first byte at or after i in s that is
// neither white space nor "+". Each run is skipped from one "e" or "y"
// before it only, so a search calling it stays linear.
func skipWhite[T string | []byte](s T, i int) int {
	for i < len(s) && (isWhite(s[i]) || s[i] == '+') {
		i++
	}
	return i
}

// words reports whether a header or cookie value holds a token Deputy did
// not verify anywhere in it: upstreams strip a scheme ("Bearer ", "JWT ")
// or other prefix from these, and quotes or "=" around it. The token
// compared with the verified one runs from its "eyJ" over the bytes a
// JWT may hold.
func (k *credentialCheck) words(v string) bool {
	for i := 0; ; {
		j := strings.Index(v[i:], "eyJ")
		if j < 0 {
			return false
		}
		start := i + j
		end := start + 3
		for end < len(v) && jwtByte(v[end]) {
			end++
		}
		// The run holds whatever JWT begins in it (its parts are made
		// of run bytes), so the search goes on after it: linear in v.
		if identity.LooksLikeJWS(v[start:end]) && k.foreign(v[start:end]) {
			return true
		}
		i = end
	}
}

// jwtByte reports whether c may be part of a compact JWT: base64 in
// either alphabet, padding and the dots between parts.
func jwtByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '+' || c == '/' || c == '.' || c == '='
}

// headers reports whether a carrier header, in any spelling an upstream
// reads as its name (any case, "_" for "-"), holds a token.
func (k *credentialCheck) headers() bool {
	var buf [2]string
	for _, name := range k.c.headers {
		for _, v := range k.view.AppendHeaderValues(buf[:0], name) {
			if mayHoldJWT(v) && k.token(v) {
				return true
			}
		}
	}
	return false
}

// cookies reports whether a carrier cookie holds a token, its name read as
// the most lenient parsers read it: split at ";" and "," (Rack 2), names
// unescaped (Rack, PHP), in any case (ASP.NET), with PHP's "_" for "." and
// " "; values unquoted (Go, Python, with Python's backslash escapes) and
// unescaped (Rack, PHP, Node's cookie).
func (k *credentialCheck) cookies() bool {
	if len(k.c.cookie.keys) == 0 {
		return false
	}
	var buf [2]string
	for _, v := range k.view.AppendHeaderValues(buf[:0], "cookie") {
		if !mayHoldJWT(v) && !mayEscape(v) {
			continue
		}
		for rest := v; rest != ""; {
			var pair string
			if i := strings.IndexAny(rest, ";,"); i >= 0 {
				pair, rest = rest[:i], rest[i+1:]
			} else {
				pair, rest = rest, ""
			}
			name, value, _ := strings.Cut(pair, "=")
			if want, _ := readAs(strings.TrimSpace(name), k.c.cookie.names, k.c.cookie.keys); want == "" {
				continue
			}
			value = strings.TrimSpace(value)
			if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
				value = value[1 : len(value)-1]
			}
			if strings.IndexByte(value, '\\') >= 0 {
				value = unquoteCookie(value)
			}
			if strings.IndexByte(value, '%') >= 0 {
				value = sidecar.UnescapeValid(value)
			}
			if k.token(value) {
				return true
			}
		}
	}
	return false
}

// mayEscape reports whether s holds "%" or a backslash, which may spell "eyJ" or
// a name to an upstream that decodes them.
func mayEscape(s string) bool {
	return strings.IndexByte(s, '%') >= 0 || strings.IndexByte(s, '\\') >= 0
}

// unquoteCookie undoes the backslash escapes Python's http.cookies reads
// in a cookie value: "\ooo" (three octal digits) and "\c".
func unquoteCookie(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		if i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		i++
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// body reports whether a request's body, as far as the check was sent
// it, carries a token, read every way an upstream may read it (see
// readingsOf: a form for no content type, or one starting with the form
// type whatever follows; JSON for "/json" and "+json" types; multipart):
// a form field, a JSON body's top-level key, a multipart part named as a
// carrier; a multipart body holding a token anywhere and a carrier's
// name in any part's headers (see partHeadersName). A body Deputy cannot
// read one of these ways (another type, a parse error, cut short, led by
// a byte order mark) is refused when it holds a token anywhere and a
// carrier's name, or an escape that may hide one; of a form cut short,
// only the last field, which the cut may have shortened, is looked
// through so. A body is read alike from body and raw_body. A body not
// sent (nginx, Caddy) is not seen. A body an upstream may read as other
// bytes (see otherBytes) is refused before it is read at all.
func (k *credentialCheck) body(h *authv3.AttributeContext_HttpRequest) bool {
	if len(k.c.body.keys) == 0 {
		return false
	}
	body, raw := h.GetBody(), h.GetRawBody()
	if body == "" && len(raw) == 0 {
		return false
	}
	ct := k.view.Header("content-type")
	head := body
	if head == "" {
		head = string(raw[:min(len(raw), 4)])
	}
	if k.otherBytes(ct, head) {
		return true
	}
	// A multipart part may be quoted-printable ("=65yJ"), which Go's
	// reader decodes.
	multi := false
	if t := strings.TrimSpace(ct); len(t) >= 10 && strings.EqualFold(t[:10], "multipart/") {
		multi = true
	}
	if body == "" {
		if !mayHoldJWT(raw) && bytes.IndexByte(raw, '%') < 0 && bytes.IndexByte(raw, '\\') < 0 && !(multi && bytes.Contains(bytes.ToLower(raw), []byte("quoted-printable"))) {
			return false
		}
		body = string(raw)
	} else if !mayHoldJWT(body) && !mayEscape(body) && !(multi && containsLower(body, "quoted-printable")) {
		return false
	}
	readings := readingsOf(ct)
	// A byte order mark is dropped by some upstreams (iconv-lite, under
	// body-parser) and kept by Deputy's readings, which then see another
	// first name than the upstream does.
	unread, cut := readings == 0 || strings.HasPrefix(body, byteOrderMark), false
	if cl := k.view.Header("content-length"); cl != "" {
		if n, err := strconv.ParseInt(strings.TrimSpace(cl), 10, 64); err != nil || n > int64(len(body)) {
			cut = true
		}
	}
	if readings&readsForm != 0 && k.param(body, &k.c.body) {
		return true
	}
	if readings&readsJSON != 0 {
		found, ok := k.jsonBody(body)
		if found {
			return true
		}
		unread = unread || !ok
	}
	if readings&readsMultipart != 0 {
		found, ok := k.multipartBody(ct, body)
		if found || k.partHeadersName(body) && k.anyToken(body) {
			return true
		}
		unread = unread || !ok
	}
	switch {
	case unread:
		return k.hidden(body)
	case cut && readings&readsForm != 0:
		// The form reading judged every field before the last, which
		// the cut may have shortened (a carrier's name, a token): only
		// that one is uncertain.
		return k.hidden(lastField(body))
	case cut:
		return k.hidden(body)
	}
	return false
}

// otherBytes reports whether an upstream may read a body (head is its
// first bytes) as other bytes than were sent, which Deputy cannot look
// through for a carrier: compressed (a content-encoding other than
// identity, which Express's body-parser inflates), or text in a charset
// that spells a token or a carrier's name in other bytes than ASCII does
// (body-parser decodes every charset iconv-lite knows): a charset other
// than UTF-8, US-ASCII or ISO-8859-1, or a UTF-16 or UTF-32 byte order
// mark. A JSON body whose first four bytes hold a NUL is UTF-16 or UTF-32
// to a reader that detects it so (RFC 4627, Jackson). Deputy does not
// inflate or decode a body: such a body is refused whatever it holds.
func (k *credentialCheck) otherBytes(ct, head string) bool {
	var buf [2]string
	for _, ce := range k.view.AppendHeaderValues(buf[:0], "content-encoding") {
		if ce = strings.TrimSpace(ce); ce != "" && !strings.EqualFold(ce, "identity") {
			return true
		}
	}
	if strings.HasPrefix(head, "\xff\xfe") || strings.HasPrefix(head, "\xfe\xff") || strings.HasPrefix(head, "\x00\x00\xfe\xff") {
		return true
	}
	if strings.IndexByte(head[:min(len(head), 4)], 0) >= 0 && readingsOf(ct)&readsJSON != 0 {
		return true
	}
	return !asciiCharsets(ct)
}

// asciiCharsets reports whether every charset parameter of a content type
// spells ASCII as ASCII does, one byte a character, and no other byte as
// an ASCII one: UTF-8, US-ASCII and ISO-8859-1, in any case, quoted or
// not. Every "charset" in the type is looked at, as types may be joined
// with ","; one not followed by "=" (an RFC 2231 "charset*") is not
// known to be ASCII.
func asciiCharsets(ct string) bool {
	const name = "charset"
	for i := 0; i+len(name) <= len(ct); i++ {
		if !strings.EqualFold(ct[i:i+len(name)], name) {
			continue
		}
		rest := strings.TrimLeft(ct[i+len(name):], " \t")
		if !strings.HasPrefix(rest, "=") {
			return false
		}
		rest = strings.TrimLeft(rest[1:], " \t\"")
		end := strings.IndexAny(rest, "\"; ,\t")
		if end < 0 {
			end = len(rest)
		}
		switch cs := rest[:end]; {
		case strings.EqualFold(cs, "utf-8"), strings.EqualFold(cs, "utf8"),
			strings.EqualFold(cs, "us-ascii"), strings.EqualFold(cs, "ascii"),
			strings.EqualFold(cs, "iso-8859-1"), strings.EqualFold(cs, "latin1"):
		default:
			return false
		}
		i += len(name) - 1
	}
	return true
}

// lastField is a form body's last field, after its last "&" or ";" (Rack
// 2 splits on it too).
func lastField(body string) string {
	return body[strings.LastIndexAny(body, "&;")+1:]
}

// jsonBody reports whether a JSON body's top-level carrier holds a token
// (a string, or a string in an array: every repetition of the key), and
// whether the body parsed.
func (k *credentialCheck) jsonBody(body string) (found, ok bool) {
	dec := json.NewDecoder(strings.NewReader(body))
	t, err := dec.Token()
	if err != nil {
		return false, false
	}
	if d, obj := t.(json.Delim); !obj || d != '{' {
		return false, json.Valid([]byte(body))
	}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return false, false
		}
		key, _ := kt.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return false, false
		}
		if want, _ := readAs(key, k.c.body.names, k.c.body.keys); want == "" {
			continue
		}
		switch v := v.(type) {
		case string:
			found = k.token(v)
		case []any:
			for _, e := range v {
				if s, isString := e.(string); isString && k.token(s) {
					found = true
				}
			}
		}
		if found {
			return true, true
		}
	}
	if _, err := dec.Token(); err != nil {
		return false, false
	}
	if _, err := dec.Token(); err == nil {
		return false, false // more after the object
	}
	return false, true
}

// multipartBody reports whether a multipart part named as a carrier holds
// a token, and whether the body parsed with every part's name clear (see
// unsureNames).
func (k *credentialCheck) multipartBody(ct, body string) (found, ok bool) {
	_, params, err := mime.ParseMediaType(ct)
	if err != nil || params["boundary"] == "" {
		return false, false
	}
	form, err := multipart.NewReader(strings.NewReader(body), params["boundary"]).ReadForm(int64(len(body)) + 1)
	if err != nil {
		return false, false
	}
	defer form.RemoveAll()
	for name, vs := range form.Value {
		if want, _ := readAs(name, k.c.body.names, k.c.body.keys); want == "" {
			continue
		}
		for _, v := range vs {
			if k.token(v) {
				return true, true
			}
		}
	}
	return false, !unsureNames(body, params["boundary"])
}

// partHeadersName reports whether a multipart body's part headers, as any
// parser may find them whatever it takes the boundary and a part's name
// from, hold a body carrier's name (its core, bodyRuns, in any case and
// folded as readAs folds), or an escape or encoded word that may spell
// one. PHP reads a part under the last name= parameter of any
// disposition, quoted with " or ' or not, on the boundary from the first
// "boundary" in the content type; Go skips what it cannot parse. Every
// part's headers, for either of them, run from a line beginning "--"
// (its boundary line) to the first empty line: every such stretch is
// looked through, so whatever name either parser reads is inside one.
// Each byte is in one stretch at most: linear.
func (k *credentialCheck) partHeadersName(body string) bool {
	from := -1 // start of the open stretch
	for i := 0; i < len(body); {
		j := strings.IndexByte(body[i:], '\n')
		if j < 0 {
			j = len(body)
		} else {
			j += i
		}
		line := body[i:j]
		switch {
		case from < 0 && (strings.HasPrefix(line, "--") || strings.Contains(line, "\r--")):
			from = i
		case from >= 0 && (line == "" || line == "\r"):
			if k.namesCarrier(body[from:i]) {
				return true
			}
			from = -1
		}
		i = j + 1
	}
	return from >= 0 && k.namesCarrier(body[from:])
}

// namesCarrier reports whether part headers hold a body carrier's name
// core in any case (folded to ASCII when they hold another byte), or "%",
// a backslash or "=?" (RFC 2231 and 2047 spellings, escaped quotes).
func (k *credentialCheck) namesCarrier(headers string) bool {
	if mayEscape(headers) || strings.Contains(headers, "=?") {
		return true
	}
	for i := 0; i < len(headers); i++ {
		if headers[i] >= 0x80 {
			headers = paramkey.FoldASCII(headers)
			break
		}
	}
	for _, run := range k.c.bodyRuns {
		if containsLower(headers, run) {
			return true
		}
	}
	return false
}

// anyToken reports whether a body holds a token anywhere, as it is or
// unescaped.
func (k *credentialCheck) anyToken(body string) bool {
	return k.token(body) || strings.IndexByte(body, '%') >= 0 && k.token(sidecar.UnescapeValid(strings.ReplaceAll(body, "+", " ")))
}

// hidden reports whether a body Deputy could not read holds a token
// anywhere (escaped or not) and a carrier's name, or an escape that may
// spell one: the upstream may read it as a carrier Deputy did not.
func (k *credentialCheck) hidden(body string) bool {
	escaped := mayEscape(body)
	if !k.anyToken(body) {
		return false
	}
	if escaped {
		return true
	}
	for _, run := range k.c.bodyRuns {
		if containsLower(body, run) {
			return true
		}
	}
	return false
}

// verifiedToken is the token a verified identity header carries: its
// value is "Bearer", one space and the token.
func verifiedToken(view *sidecar.Request, header string) string {
	var buf [2]string
	vals := view.AppendHeaderValues(buf[:0], header)
	if len(vals) != 1 {
		return ""
	}
	v := strings.Trim(vals[0], " \t")
	if len(v) < 8 || !strings.EqualFold(v[:7], "bearer ") {
		return ""
	}
	return v[7:]
}

// queryOf is the raw query of a :path.
func queryOf(path string) string {
	_, q, _ := strings.Cut(path, "?")
	return q
}
