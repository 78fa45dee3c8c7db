package authz

import (
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"golang.org/x/text/unicode/norm"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/paramkey"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// The canonical request is the path and the methods an upstream will act
// on, derived once per check from the raw request, before anything decides
// on it. Upstreams differ: some merge slashes, some decode before routing,
// some drop ";params", some route case-insensitively, many honour method
// overrides. Deputy decides on the form that covers all of them, and
// refuses the forms where they would disagree with each other (dot
// segments, encoded separators, double encoding): no honest client sends
// those.

// canonicalPath is a raw request path read as a path, never as a URL: a
// leading "//" does not start a host.
type canonicalPath struct {
	// decoded is the raw path percent-decoded once and nothing else, the
	// source of OPA-Envoy's parsed_path.
	decoded string
	// path is "/" + segments joined by "/", with a trailing "/" when the
	// raw path ended in one: what a slash-merging, decoding upstream routes.
	path string
	// segments are the path's non-empty segments, decoded, without ";params".
	segments []string
}

// Why a path is refused. Each is the message of an EINVALID error on field
// "path", so the decision log carries it next to malformed_request.
const (
	refusedNotAbsolute    = `must start with "/"`
	refusedControl        = "control characters and NUL are refused"
	refusedBackslash      = `backslashes are refused: some upstreams read them as "/"`
	refusedFragment       = `a fragment ("#") is refused: clients never send one`
	refusedBadEscape      = "invalid percent-encoding"
	refusedEncodedDelim   = `encoded "?" or "#" (%3F, %23) is refused: an upstream that decodes the path before parsing it would cut the path there`
	refusedEncodedSep     = `encoded "/" or "\" (%2F, %5C) is refused: upstreams disagree on whether it separates segments`
	refusedDoubleEncoding = "double percent-encoding is refused: an upstream that decodes twice would route another path"
	refusedDotSegment     = `dot segments ("." or "..", escaped or not) are refused: an upstream that resolves them would serve another path`
	refusedNotUTF8        = "the decoded path is not UTF-8"
	refusedCompatSyntax   = `characters whose Unicode compatibility form (NFKC) holds "/", "\" or "." (fullwidth "／", "＼", "．", dot leaders, "…") are refused: upstreams that normalize Unicode or map it best-fit to ASCII read them as path syntax`
	refusedScriptPath     = "a PHP script other than index.php with a path after it is refused: the upstream runs that script, whatever route the rest spells"
)

func refusePath(msg string) error { return sidecar.Invalid("path", "%s", msg) }

// refuseSegments refuses a path of more than max segments
// (check.max_path_segments). input.deputy.request.route_dirs holds the
// route from each segment on, and OPA hashes each when it builds the
// array, so a check's work grows with segments times the path's length:
// 30,000 one-letter segments, within Envoy's 60 KiB of headers, cost 71 ms
// a check. No storefront route comes near the bound, so such a path is no
// honest request.
func refuseSegments(max int) error {
	return sidecar.Invalid("path", "more segments than check.max_path_segments (%d) allows: no storefront route has so many, and each one costs the check work", max)
}

// refuseRouteDirs refuses a path whose route_dirs, the path from each
// segment on, would hold more than max bytes in all
// (check.max_route_dirs_bytes). Within max_path_segments, long segments
// still weigh segments times length: 128 segments in Envoy's 60 KiB of
// headers make 3.8 MB of route_dirs, and a public page's check cost 695 µs
// instead of 11 µs. Storefront paths, long slugs, key/value parameters
// and search terms included, hold a few KB, 27 KB at the most seen.
func refuseRouteDirs(max int) error {
	return sidecar.Invalid("path", "longer than check.max_route_dirs_bytes (%d) allows, counting the path from each segment on: no storefront path reaches it, and each byte costs the check work", max)
}

// Why a query is refused, on field "query".
const (
	refusedQueryFragment = `a "#" in the query is refused: proxies pass it on, and the upstream reads what follows as more parameters`
	refusedQueryPath     = `a query that starts with a path ("/", "\", %2F or %5C, after "." or ".." too), or whose first field holds one and no "=", is refused: CodeIgniter and kin route on it instead of the path`
	refusedQueryBare     = `a query whose first field has no "=" (?customer) is refused: CodeIgniter with uri_protocol QUERY_STRING runs it as a route (check.allow_bare_query lets it through for upstreams that never route on the query)`
	refusedQueryFields   = `a query of more than 10000 fields ("&" or ";" separated) is refused: Go's parser reads none of them, so neither overrides nor parsed_query would, while upstreams read theirs`
)

// goMaxQueryParams is net/url's limit: Go's ParseQuery reads no field at
// all of a query with more, while upstreams read theirs (PHP the first
// max_input_vars, 1000 by default).
const goMaxQueryParams = 10000

// checkQuery refuses a raw query (after the first "?") that an upstream
// may read as something else than a query.
//
// A "#" is no fragment by then: nginx and Caddy pass it on, and the
// upstream's parser reads what follows as more parameters (Go's
// ParseRequestURI keeps it in RawQuery; nginx's $args has it for PHP).
// Cut off, it would hide a method override or a GraphQL document.
//
// CodeIgniter 3 and 4 (URI::_parse_request_uri, the default REQUEST_URI
// protocol) route /?/x, /index.php?/x and /index.php/?/x as /x: when the
// path trims to nothing past the script or its directory, a query that
// starts with "/" is the route, up to its next "?". The script's directory
// is wherever the application is mounted (/shop/?/x runs /shop's /x), so
// no path is safe from it, and such a query is refused whatever the path.
// The encoded, backslash and dot-segment spellings go too, for routers
// that decode or resolve it first.
//
// With uri_protocol QUERY_STRING (and index_page "index.php?"), CodeIgniter
// routes on the whole query when it does not start with "/":
// /index.php?customer/account runs customer/account, and /?customer (or a
// one-segment alias from routes.php, ?password) runs the customer
// controller. Deputy cannot know the upstream's protocol, so a first field
// with no "=" is refused (CodeIgniter's permitted_uri_chars refuse "=" and
// "&" in a route, so a field with "=" is no route to it). With allowBare
// (check.allow_bare_query, for upstreams that never route on the query),
// a bare flag (?preview, ?1699999) passes, and only a first field that
// holds a path separator (raw or encoded) and no "=" is refused.
func checkQuery(raw string, allowBare bool) error {
	if strings.IndexByte(raw, '#') >= 0 {
		return sidecar.Invalid("query", "%s", refusedQueryFragment)
	}
	// Past Go's limit, ParseQuery returns nothing: "_method=DELETE&"
	// and 10000 more fields would be decided as the plain method while
	// PHP reads the first 1000 fields and Symfony runs the DELETE. The
	// fields behind ";" count too, as the overrides read them.
	if strings.Count(raw, "&")+strings.Count(raw, ";") >= goMaxQueryParams {
		return sidecar.Invalid("query", "%s", refusedQueryFields)
	}
	if queryCarriesPath(raw) {
		return sidecar.Invalid("query", "%s", refusedQueryPath)
	}
	if !allowBare && bareFirstField(raw) {
		return sidecar.Invalid("query", "%s", refusedQueryBare)
	}
	return nil
}

// bareFirstField reports whether the first field of a raw query is not
// empty and has no "=".
func bareFirstField(q string) bool {
	if i := strings.IndexByte(q, '&'); i >= 0 {
		q = q[:i]
	}
	return q != "" && strings.IndexByte(q, '=') < 0
}

// routeParam refuses a query naming one of params, the query parameters
// the upstream routes on instead of the path (check.query_route_params:
// CodeIgniter's enable_query_strings reads the controller from c, the
// method from m and the directory from d wherever they stand; Yii reads r,
// Drupal 7 q). Deputy decides on the path, so such a request would run a
// page it never decided on. A name counts in every spelling PHP reads as
// the same (%63, "c[", any case) and behind a ";", as overrides do. The
// query is parsed only when params are set.
func routeParam(raw string, params []string) error {
	if len(params) == 0 || raw == "" {
		return nil
	}
	for _, q := range []string{raw, strings.ReplaceAll(raw, ";", "&")} {
		vals, _ := url.ParseQuery(q)
		if names := carrierFields(vals, params); len(names) > 0 {
			return sidecar.Invalid("query", "parameter %q is one the upstream routes on (check.query_route_params): the request would run another page than its path names", names[0])
		}
	}
	return nil
}

// queryCarriesPath reports whether a raw query starts with a path
// separator, raw or encoded, after any dots ("/x", "%2Fx", "\x", "./x",
// "..%5Cx"), or whether its first field holds one and no "="
// ("customer/account&x=1"). It allocates nothing: it runs on every check.
func queryCarriesPath(q string) bool {
	return queryStartsWithPath(q) || fieldIsPath(q)
}

// fieldIsPath reports whether the first field of a raw query has no "="
// and holds "/" or "\", raw or percent-encoded.
func fieldIsPath(q string) bool {
	if i := strings.IndexByte(q, '&'); i >= 0 {
		q = q[:i]
	}
	if strings.IndexByte(q, '=') >= 0 {
		return false
	}
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case '/', '\\':
			return true
		case '%':
			if i+2 < len(q) {
				switch q[i+1 : i+3] {
				case "2F", "2f", "5C", "5c":
					return true
				}
			}
		}
	}
	return false
}

// queryStartsWithPath reports whether a raw query starts with a path
// separator, raw or encoded, after any dots.
func queryStartsWithPath(q string) bool {
	for q != "" {
		switch {
		case q[0] == '/' || q[0] == '\\':
			return true
		case q[0] == '.':
			q = q[1:]
		case len(q) >= 3 && q[0] == '%':
			switch q[1:3] {
			case "2F", "2f", "5C", "5c":
				return true
			case "2E", "2e":
				q = q[3:]
			default:
				return false
			}
		default:
			return false
		}
	}
	return false
}

// parsePath canonicalises a raw path (without its query) of at most
// maxSegments segments and whose segments, each with everything after it,
// hold at most maxDirBytes bytes (what route_dirs holds; no bound when 0).
// It stops splitting at a bound: a refused path costs no more than an
// accepted one.
func parsePath(raw string, maxSegments, maxDirBytes int) (canonicalPath, error) {
	var cp canonicalPath
	if raw == "" || raw[0] != '/' {
		return cp, refusePath(refusedNotAbsolute)
	}
	escaped, high, pct := false, false, false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return cp, refusePath(refusedControl)
		case c == '\\':
			return cp, refusePath(refusedBackslash)
		case c == '#':
			return cp, refusePath(refusedFragment)
		case c >= 0x80:
			high = true
		case c == '%':
			if i+2 >= len(raw) || !sidecar.IsHex(raw[i+1]) || !sidecar.IsHex(raw[i+2]) {
				return cp, refusePath(refusedBadEscape)
			}
			switch d := sidecar.Unhex(raw[i+1])<<4 | sidecar.Unhex(raw[i+2]); {
			case d == '/' || d == '\\':
				return cp, refusePath(refusedEncodedSep)
			case d == '?' || d == '#':
				return cp, refusePath(refusedEncodedDelim)
			case d < 0x20 || d == 0x7f:
				return cp, refusePath(refusedControl)
			case d == '%':
				pct = true
			case d >= 0x80:
				high = true
			}
			escaped = true
			i += 2
		}
	}
	cp.decoded = raw
	if escaped {
		cp.decoded = sidecar.UnescapeValid(raw)
		if pct && hasEscape(cp.decoded) {
			return cp, refusePath(refusedDoubleEncoding)
		}
	}
	if high && !utf8.ValidString(cp.decoded) {
		return cp, refusePath(refusedNotUTF8)
	}
	if high && compatSyntax(cp.decoded) {
		return cp, refusePath(refusedCompatSyntax)
	}

	// Split on "/", drop ";params" and empty segments. The common path
	// (no empty segment, no parameter) keeps the decoded string as is.
	p := cp.decoded[1:]
	n := strings.Count(p, "/") + 1
	if maxSegments > 0 {
		n = min(n, maxSegments)
	}
	cp.segments = make([]string, 0, n)
	same, trailing := true, false
	// dirBytes is what route_dirs would hold: segment i is in the i+1
	// directories from it and before it, each "/"-led, and each directory
	// ends in "/". The route form (routeForm) drops or shortens segments,
	// so it holds no more, give or take case folding.
	dirBytes := 0
	for {
		seg, rest, more := strings.Cut(p, "/")
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			seg, same = seg[:i], false
		}
		if seg == "." || seg == ".." {
			return cp, refusePath(refusedDotSegment)
		}
		if seg != "" {
			if maxSegments > 0 && len(cp.segments) == maxSegments {
				return cp, refuseSegments(maxSegments)
			}
			dirBytes += (len(cp.segments)+1)*(compatLen(seg, high)+1) + 1
			if maxDirBytes > 0 && dirBytes > maxDirBytes {
				return cp, refuseRouteDirs(maxDirBytes)
			}
			cp.segments = append(cp.segments, seg)
		} else if more {
			same = false // an empty segment between two slashes
		}
		if !more {
			trailing = seg == ""
			break
		}
		p = rest
	}
	if maxDirBytes > 0 && formatDirBytes(cp.segments, dirBytes) > maxDirBytes {
		return cp, refuseRouteDirs(maxDirBytes)
	}
	for _, seg := range cp.segments[:max(len(cp.segments)-1, 0)] {
		if strings.IndexByte(seg, '.') >= 0 && scriptWithPath(seg) {
			return cp, refusePath(refusedScriptPath)
		}
	}
	switch {
	case len(cp.segments) == 0:
		cp.path = "/"
	case same:
		cp.path = cp.decoded
	default:
		cp.path = "/" + strings.Join(cp.segments, "/")
		if trailing {
			cp.path += "/"
		}
	}
	return cp, nil
}

// formatDirBytes is dirBytes, what route_dirs holds for segs, plus the
// directories route_dirs adds for the other forms of the route's last
// segment (formatForms): the route again for each dot past that
// segment's first byte, the segment cut there. The route's last segment
// is the last one the route form keeps: blank ones after it are dropped,
// but are counted, as if kept, in each form. A segment with many dots
// would otherwise make route_dirs grow with their number times the path.
func formatDirBytes(segs []string, dirBytes int) int {
	last := len(segs) - 1
	for last >= 0 && blankRoute(segs[last]) {
		last--
	}
	if last < 0 {
		return dirBytes
	}
	seg, n := segs[last], dirBytes
	// Where the segment's compatibility form is longer, its dots shift: a
	// form then counts as the whole route, which it never outweighs (a "."
	// ends what NFKC composes, so a form's NFKC begins the segment's).
	exact := compatLen(seg, true) == len(seg)
	for i := 1; i < len(seg); i++ {
		if seg[i] == '.' {
			n += dirBytes
			if exact {
				n -= (last + 1) * (len(seg) - i)
			}
		}
	}
	return n
}

// blankRoute reports whether the route form drops seg as blank. An ASCII
// segment is read in place, allocating nothing.
func blankRoute(seg string) bool {
	if isASCII(seg) {
		return strings.TrimRight(seg, ". ") == ""
	}
	return routeFold(seg) == ""
}

// compatSyntax reports whether s holds a rune beyond ASCII whose
// compatibility form (NFKC) holds "/", "\" or ".": "／" U+FF0F, "＼"
// U+FF3C, "．" U+FF0E, the dot leaders U+2024 and U+2025, "﹒" U+FE52, "…",
// "℀" (a/c), "⒈" and the others the Unicode tables list. IIS's best-fit
// mapping and routers that normalize Unicode read them as the ASCII they
// stand for: "/customer/account／password" would be the password page,
// "/．．/" a dot segment. It reads the decomposition norm keeps for each
// rune, allocating nothing; the tests compare it with NFKC over every rune.
func compatSyntax(s string) bool {
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			i++
			continue
		}
		p := norm.NFKC.PropertiesString(s[i:])
		for _, c := range p.Decomposition() {
			if c == '/' || c == '\\' || c == '.' {
				return true
			}
		}
		i += max(p.Size(), 1)
	}
	return false
}

// compatLen is the length of seg's compatibility form (NFKC) when high (seg
// may hold bytes beyond ASCII) and that form is longer: what the route form
// reads (routeFold). A ligature such as U+FDFA stands for 33 bytes, so the
// route_dirs bound counts those.
func compatLen(seg string, high bool) int {
	if !high || isASCII(seg) || norm.NFKC.IsNormalString(seg) {
		return len(seg)
	}
	return max(len(norm.NFKC.String(seg)), len(seg))
}

// hasEscape reports whether a decoded path still holds a valid escape: the
// raw path encoded one twice ("%252e" decodes to "%2e").
func hasEscape(s string) bool {
	for i := strings.IndexByte(s, '%'); i >= 0 && i+2 < len(s); {
		if sidecar.IsHex(s[i+1]) && sidecar.IsHex(s[i+2]) {
			return true
		}
		j := strings.IndexByte(s[i+1:], '%')
		if j < 0 {
			return false
		}
		i += 1 + j
	}
	return false
}

// Method override carriers: where a request may name another method for
// the upstream to run (Rails, Laravel, Symfony, Slim, Express and ASP.NET
// MVC honour them). A carrier is "header:<name>", "query:<param>" or
// "body:<param>" (urlencoded, multipart and JSON bodies). Query and body
// names compare in any case: Slim reads "_METHOD", and ASP.NET compares
// form and query names case-insensitively.
const (
	carrierHeader = "header:"
	carrierQuery  = "query:"
	carrierBody   = "body:"
)

// DefaultMethodOverrides are the carriers the common frameworks honour:
// ASP.NET MVC's GetHttpMethodOverride reads X-HTTP-Method-Override from
// the headers, then the form, then the query string.
func DefaultMethodOverrides() []string {
	return []string{
		"header:x-http-method-override", "header:x-http-method", "header:x-method-override",
		"query:_method", "query:x-http-method-override", "body:_method", "body:x-http-method-override",
	}
}

// MethodOverrides are the parsed carriers.
type MethodOverrides struct {
	headers []string // ownedName form: lower case, "-" for "_"
	query   []string // fieldKey form
	body    []string // fieldKey form
	// queryRuns are the query carriers' longestRun, lower-cased, found
	// once; a run that holds another is left out (the other finds it).
	queryRuns []string
}

// ParseMethodOverrides reads carriers; an unknown kind, an empty name or
// a header name that is not a sidecar.ValidHeaderName is an EINVALID error
// of check.method_overrides naming the entry.
func ParseMethodOverrides(carriers []string) (MethodOverrides, error) {
	var m MethodOverrides
	for i, c := range carriers {
		kind, name, _ := strings.Cut(c, ":")
		kind += ":"
		if name == "" || strings.ContainsAny(name, " \t,") {
			return m, badCarrier(i, c)
		}
		switch kind {
		case carrierHeader:
			// A name upstreams read as another (x.http.method.override)
			// would leave the plain spelling unread.
			if err := sidecar.InvalidHeaderNameEntry("check.method_overrides", i, name); err != nil {
				return m, err
			}
			m.headers = append(m.headers, ownedName(name))
		case carrierQuery:
			m.query = append(m.query, fieldKey(name))
			m.queryRuns = addRun(m.queryRuns, longestRun(fieldKey(name)))
		case carrierBody:
			m.body = append(m.body, fieldKey(name))
		default:
			return m, badCarrier(i, c)
		}
	}
	return m, nil
}

func badCarrier(i int, c string) error {
	return sidecar.Invalid("check.method_overrides", "entry %d: %q: want header:<name>, query:<param> or body:<param>", i, c)
}

// methodSet collects the request's method and the ones its overrides name,
// upper-cased, each once, the request's own first.
type methodSet []string

func (s *methodSet) add(m string) error {
	if m == "" {
		return nil
	}
	if !isToken(m) {
		return sidecar.Invalid("method", "%q is not a method name", m)
	}
	if hasLower(m) {
		m = strings.ToUpper(m)
	}
	for _, x := range *s {
		if x == m {
			return nil
		}
	}
	*s = append(*s, m)
	return nil
}

// addValues adds the methods that parameters named as a carrier name
// (see isCarrier).
func (s *methodSet) addValues(vals map[string][]string, keys []string) error {
	for _, k := range carrierFields(vals, keys) {
		for _, m := range vals[k] {
			if err := s.add(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// carrierFields are the names of fields that are carriers, sorted so the
// methods array does not depend on map order.
func carrierFields[V any](fields map[string]V, keys []string) []string {
	if len(keys) == 0 {
		return nil
	}
	var names []string
	for k := range fields {
		if isCarrier(k, keys) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	return names
}

// isCarrier reports whether a query, form or JSON field named k is one of
// the carriers (in fieldKey form).
func isCarrier(k string, keys []string) bool {
	for _, key := range keys {
		if k == key {
			return true
		}
	}
	return slices.Contains(keys, fieldKey(k))
}

// fieldKey is a field name as the frameworks that read overrides may take
// it: PHP makes $_GET['_method'] of ".method", " _method" and "_method["
// (sidecar.PHPFieldName), Slim reads "_METHOD", and ASP.NET compares form
// and query names ignoring case, Unicode included (paramkey.FoldASCII:
// "ı" is "i").
func fieldKey(k string) string {
	return paramkey.FoldASCII(sidecar.PHPFieldName(k))
}

// urlOverrides replace the request URI in upstreams that honour them
// (sidecar.URLOverrideHeaders): such an upstream would run another path
// than the one decided. No client sends them.
var urlOverrides = sidecar.URLOverrideHeaders()

// header reports whether name is one of m's header carriers, compared as
// owned names are.
func (m *MethodOverrides) header(name string) bool {
	for _, h := range m.headers {
		if len(name) == len(h) && sameHeaderName(name, h) {
			return true
		}
	}
	return false
}

func urlOverride(name string) bool {
	for _, h := range urlOverrides {
		if len(name) == len(h) && sameHeaderName(name, h) {
			return true
		}
	}
	return false
}

func refuseURLOverride(name string) error {
	return sidecar.Invalid(name, "replaces the request URI in upstreams that honour it: refused")
}

// fromHeaders adds the methods override headers name, in headers and in
// header_map (Envoy's encode_raw_headers). Names compare as owned headers
// do, case-insensitively with "_" read as "-": CGI, PHP and WSGI upstreams
// read X_HTTP_Method_Override as HTTP_X_HTTP_METHOD_OVERRIDE. plain says
// that every name in headers is lower case without "_" (as Envoy sends
// them): each is then its own only spelling, and looking the URL override
// headers up finds what comparing every name would, without walking the
// map.
func (m *MethodOverrides) fromHeaders(headers map[string]string, plain bool, headerMap []*corev3.HeaderValue, s *methodSet) error {
	var other [][]string
	if plain {
		for _, h := range urlOverrides {
			if _, ok := headers[h]; ok {
				return refuseURLOverride(h)
			}
		}
	} else {
		// One pass over the headers gathers every carrier's other
		// spellings: a check reads the map once, not once per carrier.
		for k, v := range headers {
			if urlOverride(k) {
				return refuseURLOverride(k)
			}
			for i, h := range m.headers {
				if k != h && len(k) == len(h) && sameHeaderName(k, h) {
					if other == nil {
						other = make([][]string, len(m.headers))
					}
					other[i] = append(other[i], v)
				}
			}
		}
	}
	for _, hv := range headerMap {
		if urlOverride(hv.GetKey()) {
			return refuseURLOverride(hv.GetKey())
		}
	}
	for i, h := range m.headers {
		// The common spelling first, then every other one, in a stable
		// order so the methods array does not depend on map order.
		if err := s.add(headers[h]); err != nil {
			return err
		}
		var spelled []string
		if other != nil {
			spelled = other[i]
		}
		for _, hv := range headerMap {
			if k := hv.GetKey(); len(k) == len(h) && sameHeaderName(k, h) {
				v := hv.GetValue()
				if v == "" {
					v = string(hv.GetRawValue())
				}
				spelled = append(spelled, v)
			}
		}
		slices.Sort(spelled)
		for _, v := range spelled {
			if err := s.add(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// fromQuery adds the methods the query's override parameters name, and
// returns the parsed query when it had to parse it. A query that cannot
// name an override (no parameter name in it, no escape) is not parsed.
func (m *MethodOverrides) fromQuery(raw string, s *methodSet) (url.Values, error) {
	if raw == "" {
		return nil, nil
	}
	if err := controlFree("query", raw); err != nil {
		return nil, err
	}
	if len(m.query) == 0 {
		return nil, nil
	}
	// PHP renames " ", "." and "[" to "_" (fieldKey), so a carrier may be
	// spelled with any of them in place of "_"; its other bytes appear as
	// they are in some ASCII case, unless escaped or folded from a
	// non-ASCII rune.
	found := escapedOrWide(raw)
	for _, run := range m.queryRuns {
		found = found || containsLower(raw, run)
	}
	if !found {
		return nil, nil
	}
	q, _ := url.ParseQuery(raw) // invalid pairs are left out, as OPA-Envoy does
	err := s.addValues(q, m.query)
	// Go leaves out a pair holding ";", while PHP (arg_separator.input),
	// Rails before 7 and Java servlet containers split on it: an override
	// behind a ";" counts too.
	if err == nil && strings.IndexByte(raw, ';') >= 0 {
		semi, _ := url.ParseQuery(strings.ReplaceAll(raw, ";", "&"))
		err = s.addValues(semi, m.query)
	}
	return q, err
}

// controlFree refuses a query or form whose field names or values hold a
// control character, raw or percent-encoded: PHP reads a field name as a C
// string ("_method\x00x" is "_method"), and no honest client sends one. A
// value may hold tab, CR and LF (a textarea's lines); a name may not.
func controlFree(where, raw string) error {
	if !hasControl(raw) {
		return nil
	}
	for pair := range strings.SplitSeq(raw, "&") {
		name, value, _ := strings.Cut(pair, "=")
		name, value = sidecar.UnescapeValid(name), sidecar.UnescapeValid(value)
		if strings.IndexFunc(name, isControl) >= 0 {
			return sidecar.Invalid(where, "field %q: control character in its name", name)
		}
		if strings.IndexFunc(value, func(r rune) bool { return isControl(r) && r != '\t' && r != '\r' && r != '\n' }) >= 0 {
			return sidecar.Invalid(where, "field %q: control character in its value", name)
		}
	}
	return nil
}

// hasControl reports whether s may hold a control character, raw or as
// %00-%1F or %7F: a quick scan before the fields are split.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			return true
		}
		if c == '%' && i+2 < len(s) && (s[i+1] == '0' || s[i+1] == '1' || s[i+1] == '7' && (s[i+2] == 'f' || s[i+2] == 'F')) {
			return true
		}
	}
	return false
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// escapedOrWide reports whether s holds "%" or a non-ASCII byte: a field
// name whose bytes may differ from the name it is read as.
func escapedOrWide(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '%' || c >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// containsLower reports whether s holds sub, a lower-case ASCII string, in
// any ASCII case. It allocates nothing: it runs on every check's query.
func containsLower(s, sub string) bool {
	if sub == "" {
		return true
	}
	for i := 0; i+len(sub) <= len(s); i++ {
		j := 0
		for j < len(sub) && lowerByte(s[i+j]) == sub[j] {
			j++
		}
		if j == len(sub) {
			return true
		}
	}
	return false
}

func lowerByte(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// addRun adds a query carrier's run to the quick filter's, unless a run
// it holds is there already; it replaces a run that holds it.
func addRun(runs []string, run string) []string {
	for i, r := range runs {
		switch {
		case strings.Contains(run, r):
			return runs
		case strings.Contains(r, run):
			runs[i] = run
			return runs
		}
	}
	return append(runs, run)
}

// longestRun is the longest part of name between the bytes PHP would
// produce from another one ("_").
func longestRun(name string) string {
	best := ""
	for _, part := range strings.FieldsFunc(name, func(r rune) bool { return r == '_' || r == '.' || r == ' ' || r == '[' }) {
		if len(part) > len(best) {
			best = part
		}
	}
	return best
}

// isToken reports whether s is an RFC 9110 token: a repeated override
// header ("GET, DELETE") is refused rather than read as one strange method.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func hasLower(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'a' && c <= 'z' {
			return true
		}
	}
	return false
}

// canonicalRequest is what input.deputy.request holds.
type canonicalRequest struct {
	canonicalPath
	// host is the host the request is decided on (decidedHost); zero
	// when the check named none.
	host    sidecar.Host
	methods methodSet
	// methodsBuf holds methods for a request naming at most two, nearly
	// every one, saving their own allocation.
	methodsBuf [2]string
	// upgrading says the request asks to switch protocols (upgradeOf),
	// upgrade to which ones.
	upgrading bool
	upgrade   []string
}

// upgradeOf returns the protocols a request asks to switch to, and whether
// it asks at all. After a 101 (or an extended CONNECT's 200) the
// connection is a tunnel to the upstream that Deputy is never asked about
// again, so policy must know a request that opens one: the tokens of
// every Upgrade field, lower-cased, each once, in the order sent
// (protocol/version kept: "tls/1.2"), then HTTP/2 extended CONNECT's
// :protocol (RFC 8441). A Connection naming the upgrade token asks too,
// with no protocol named (an empty list): no proxy switches on it alone,
// but no honest client sends it either. An Upgrade field holding no token
// asks for nothing. The names hold neither "-" nor "_", so a header
// spelled with "_" is never one of them; case does not count, in headers
// and header_map alike (Request.Header reads both, joining repeated
// fields with ",").
func upgradeOf(v *sidecar.Request) (protocols []string, asks bool) {
	for _, name := range [...]string{"upgrade", ":protocol"} {
		h := v.Header(name)
		if h == "" {
			continue
		}
		for tok := range strings.SplitSeq(h, ",") {
			if tok = lower(strings.Trim(tok, " \t")); tok != "" && !slices.Contains(protocols, tok) {
				protocols = append(protocols, tok)
			}
		}
	}
	if protocols != nil {
		return protocols, true
	}
	h := v.Header("connection")
	if h == "" {
		return nil, false
	}
	for tok := range strings.SplitSeq(h, ",") {
		if strings.EqualFold(strings.Trim(tok, " \t"), "upgrade") {
			return []string{}, true
		}
	}
	return nil, false
}

// routeSegments are the segments as an upstream router matches them, for
// route tables that must not be missed (denylists): lower case with every
// rune whose case folding reaches an ASCII letter read as that letter
// ("ſ" U+017F is "s", "K" U+212A is "k": routers that fold Unicode match
// them), trailing dots and spaces dropped (Windows and IIS drop them), every
// "<name>.php" front controller dropped when more segments follow (PHP
// routes on PATH_INFO: /index.php/customer/... is /customer/...,
// /shop/index.php/customer/... is /shop/customer/...), and the
// last segment cut at its first dot after the first character (Rails'
// optional "(.:format)", Laravel and Express ".json" routes: password.json
// and password.json.html run the password action).
func routeSegments(segs []string) []string {
	route, _, _ := routeForm(segs, false)
	return route
}

// routeForm returns the route segments (see routeSegments), the last of
// them whole, before its cut at its first dot ("" for the root), and, when
// spell is set, beside each route segment the segment it came from as the
// client spelled it. Blank segments are dropped wherever they stand, so
// the two are lined up segment by segment, never by counting from either
// end.
func routeForm(segs []string, spell bool) (route, spelled []string, whole string) {
	if routed(segs) {
		// The common path: segs are their own route form, and both
		// results are segs itself, which callers only read.
		if spell {
			spelled = segs
		}
		if n := len(segs); n > 0 {
			whole = segs[n-1]
		}
		return segs, spelled, whole
	}
	return foldRoute(segs, spell)
}

// foldRoute is routeForm written out, for segments routed does not pass.
func foldRoute(segs []string, spell bool) (route, spelled []string, whole string) {
	route = make([]string, 0, len(segs))
	if spell {
		spelled = make([]string, 0, len(segs))
	}
	for _, s := range segs {
		if r := routeFold(s); r != "" {
			route = append(route, r)
			if spell {
				spelled = append(spelled, s)
			}
		}
	}
	// index.php with segments after it is a front controller, at the root
	// or below it: the server hands what follows to the router as
	// PATH_INFO, and Symfony, Laminas and CodeIgniter strip the script from
	// the base URL, so /shop/index.php/x runs the action of /shop/x. (Any
	// other script with a path after it was refused: scriptWithPath.)
	for i := len(route) - 2; i >= 0; i-- {
		if route[i] == frontController {
			route = slices.Delete(route, i, i+1)
			if spell {
				spelled = slices.Delete(spelled, i, i+1)
			}
		}
	}
	if n := len(route); n > 0 {
		whole = route[n-1]
		if i := strings.IndexByte(whole, '.'); i > 0 {
			route[n-1] = whole[:i]
		}
	}
	return route, spelled, whole
}

// formatForms are the forms of a request's last route segment that the
// route form does not hold but an upstream may serve it as: whole (the
// segment before its format cut) cut at each of its dots after the first
// character, trailing dots and spaces dropped, and whole itself, each
// once, without cut, the form the route holds. For "cards.html.json" cut
// to "cards": "cards.html", "cards.html.json". Rails reads the format
// after the first dot, but a static page, an upstream routing
// "cards.html" as one name, or one reading the format after the last dot
// serves the others: a deny list naming the page in any of them must meet
// it. Nil, allocating nothing, when whole has no dot past its first byte.
func formatForms(cut, whole string) []string {
	var forms []string
	prev := cut
	for i := 1; i < len(whole); i++ {
		if whole[i] != '.' {
			continue
		}
		if f := strings.TrimRight(whole[:i], ". "); f != "" && f != prev && f != cut {
			forms = append(forms, f)
			prev = f
		}
	}
	if whole != prev && whole != cut {
		forms = append(forms, whole)
	}
	return forms
}

// routeFold is a segment as routers read it, before the route form drops
// front controllers and cuts a format: beyond ASCII, its compatibility form
// (NFKC: fullwidth "ｃ" is "c", "ﬀ" is "ff", an ideographic space a space,
// as routers that normalize Unicode read them), then folded
// (paramkey.FoldASCII),
// trailing dots and spaces dropped (Windows and IIS drop them). NFKC never
// brings a "/", "\" or "." in: parsePath refused the runes it reads so.
func routeFold(seg string) string {
	if !isASCII(seg) {
		seg = norm.NFKC.String(seg)
	}
	return strings.TrimRight(paramkey.FoldASCII(seg), ". ")
}

// frontController is the one PHP script a route may be spelled after.
const frontController = "index.php"

// scriptWithPath reports whether a segment that has segments after it
// names a PHP script other than the front controller, read as routers
// read it. PHP runs that script with the rest as PATH_INFO, so the route
// the rest spells is not the one served: dropping the script would let
// an allowlist pass /export.php/customers/acme/service-requests/1 as a
// service request, keeping it would let a denylist miss /shop/admin.php/...
// No route form is right for every upstream, so such paths are refused.
func scriptWithPath(seg string) bool {
	r := routeFold(seg)
	return phpScript(r) && r != frontController
}

// phpScript reports whether a route segment names a script PHP runs:
// ".php" (also ".php3" to ".php8", as old handler maps have them),
// ".phar" and ".phtml" (Debian's Apache and php-fpm defaults).
func phpScript(seg string) bool {
	ext := seg[strings.LastIndexByte(seg, '.')+1:]
	switch {
	case len(ext) == len(seg):
		return false
	case ext == "php", ext == "phar", ext == "phtml":
		return true
	}
	return len(ext) == 4 && ext[:3] == "php" && ext[3] >= '3' && ext[3] <= '8'
}

// routed reports that routeForm would change nothing of segs: every
// segment lower-case ASCII without a trailing space, and none holding a
// dot but the last one's leading dot. Any dot takes the long way, so the
// rules on dots (trailing dots, front controllers, formats) live in
// routeForm alone.
func routed(segs []string) bool {
	for i, s := range segs {
		if s == "" || s == "." || s == ".." || s[len(s)-1] == ' ' {
			return false
		}
		for j := 0; j < len(s); j++ {
			if c := s[j]; c >= 'A' && c <= 'Z' || c >= 0x80 || c == '.' && (j > 0 || i < len(segs)-1) {
				return false
			}
		}
	}
	return true
}

// sameLowered reports whether route segments are the lower-cased segments.
func sameLowered(route, segs []string) bool {
	if len(route) != len(segs) {
		return false
	}
	for i, s := range segs {
		if route[i] != lower(s) {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// requestTerm builds input.deputy.request with the fields need names:
// path, segments, method, methods, sole_method, lower_path, lower_segments
// for case-insensitive route tables, route, route_segments for tables
// (and route_dirs, the route from each of its segments on as a
// directory, for prefix rules)
// that must match every form an upstream router runs the same action for,
// and spelled_route_segments to compare a route segment as the client
// spelled it.
// Terms are shared wherever two fields are equal (a path without upper
// case, a route form equal to the lower-cased segments, a request with one
// method), so the common check pays for each value once.
func (c *canonicalRequest) requestTerm(need *policy.InputNeeds) *ast.Term {
	obj := ast.NewObjectWithCapacity(6)
	lp := lower(c.path)
	var pathT, segsT *ast.Term
	if need.Child("path") != nil || need.Child("lower_path") != nil && lp == c.path {
		pathT = ast.StringTerm(c.path)
		if need.Child("path") != nil {
			obj.Insert(keyTerm("path"), pathT)
		}
	}
	if need.Child("lower_path") != nil {
		if lp != c.path {
			pathT = ast.StringTerm(lp)
		}
		obj.Insert(keyTerm("lower_path"), pathT)
	}
	if need.Child("segments") != nil || need.Child("lower_segments") != nil && lp == c.path {
		segsT = segmentsTerm(c.segments, false)
		if need.Child("segments") != nil {
			obj.Insert(keyTerm("segments"), segsT)
		}
	}
	if need.Child("lower_segments") != nil {
		if lp != c.path {
			segsT = segmentsTerm(c.segments, true)
		}
		obj.Insert(keyTerm("lower_segments"), segsT)
	}
	if need.Child("route") != nil || need.Child("route_dirs") != nil || need.Child("route_segments") != nil || need.Child("spelled_route_segments") != nil {
		rs, spelled, whole := routeForm(c.segments, need.Child("spelled_route_segments") != nil)
		if need.Child("route") != nil {
			obj.Insert(keyTerm("route"), ast.StringTerm("/"+strings.Join(rs, "/")))
		}
		// The route from each of its segments on, as a directory, for
		// prefix rules: a prefix "/a/b/" matches route_dirs[i] by
		// startswith exactly when the route is /a/b or under it from
		// segment i on (after a store code, a locale or a mount point),
		// never /a/bc. One field, so a rule pays no builtin to join the
		// segments on every check. After them come the same directories
		// for each other form of the last segment (formatForms): deny
		// lists read this field, and must meet the page a prefix names
		// with its dot.
		if need.Child("route_dirs") != nil {
			var forms []string
			if n := len(rs); n > 0 {
				forms = formatForms(rs[n-1], whole)
			}
			obj.Insert(keyTerm("route_dirs"), routeDirsTerm(rs, forms))
		}
		if need.Child("route_segments") != nil {
			if need.Child("lower_segments") == nil || !sameLowered(rs, c.segments) {
				segsT = segmentsTerm(rs, false)
			}
			obj.Insert(keyTerm("route_segments"), segsT)
		}
		// The client's spelling of each route segment, lined up by
		// routeForm (blank segments anywhere, a front controller): a rule
		// compares an id as sent with one lookup.
		if need.Child("spelled_route_segments") != nil {
			if need.Child("route_segments") == nil || !slices.Equal(spelled, rs) {
				segsT = segmentsTerm(spelled, false)
			}
			obj.Insert(keyTerm("spelled_route_segments"), segsT)
		}
	}
	// The host decided on by name (decidedHost), as sessions and
	// storefront hosts compare it: lower case, no trailing dot, no port.
	// Absent when the check named none.
	if need.Child("host") != nil && c.host.Name != "" {
		obj.Insert(keyTerm("host"), ast.StringTerm(c.host.Name))
	}
	if need.Child("method") != nil {
		obj.Insert(keyTerm("method"), keyTerm(c.methods[0]))
	}
	if need.Child("methods") != nil {
		obj.Insert(keyTerm("methods"), c.methods.term())
	}
	// sole_method lets a route table be looked up by one reference when no
	// override names another method, the common request: cheaper for OPA
	// than any test of methods' length.
	if need.Child("sole_method") != nil && len(c.methods) == 1 {
		obj.Insert(keyTerm("sole_method"), keyTerm(c.methods[0]))
	}
	// upgrade is present only on a request asking to switch protocols,
	// so a rule tests it with one lookup that fails on every other check.
	if need.Child("upgrade") != nil && c.upgrading {
		terms := make([]*ast.Term, len(c.upgrade))
		for i, p := range c.upgrade {
			terms[i] = ast.StringTerm(p)
		}
		obj.Insert(keyTerm("upgrade"), ast.ArrayTerm(terms...))
	}
	return ast.NewTerm(obj)
}

// singleMethods are the methods arrays of requests without an override.
var singleMethods = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	for _, k := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"} {
		m[k] = ast.ArrayTerm(keyTerm(k))
	}
	return m
}()

func (s methodSet) term() *ast.Term {
	if len(s) == 1 {
		if t, ok := singleMethods[s[0]]; ok {
			return t
		}
	}
	terms := make([]*ast.Term, len(s))
	for i, m := range s {
		terms[i] = keyTerm(m)
	}
	return ast.ArrayTerm(terms...)
}

func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' || c >= 0x80 {
			return strings.ToLower(s)
		}
	}
	return s
}

// segmentsTerm is an array of strings sharing one backing array, with
// common section names interned.
// routeDirsTerm is route from each of its segments on, as a directory,
// then the same with its last segment read as each of forms in turn: for
// ["a", "b"], ["/a/b/", "/b/"]; with forms ["b.html"], also
// ["/a/b.html/", "/b.html/"]. The root has none.
func routeDirsTerm(route, forms []string) *ast.Term {
	n := len(route)
	if n == 0 {
		return ast.ArrayTerm()
	}
	terms := make([]*ast.Term, n*(1+len(forms)))
	backing := make([]ast.Term, len(terms))
	routeDirs(route, "/"+strings.Join(route, "/")+"/", terms[:n], backing[:n])
	if len(forms) > 0 {
		head := "/" + strings.Join(route[:n-1], "/")
		if n > 1 {
			head += "/"
		}
		for k, f := range forms {
			at := (k + 1) * n
			routeDirs(route, head+f+"/", terms[at:at+n], backing[at:at+n])
		}
	}
	return ast.ArrayTerm(terms...)
}

// routeDirs fills terms with dir, a route of route's segments as a
// directory (its last segment in any form), from each segment on. Each is
// a slice of dir: no allocation per segment.
func routeDirs(route []string, dir string, terms []*ast.Term, backing []ast.Term) {
	start := 0
	for i, seg := range route {
		backing[i].Value = ast.String(dir[start:])
		terms[i] = &backing[i]
		start += len(seg) + 1
	}
}

func segmentsTerm(segs []string, lowered bool) *ast.Term {
	terms := make([]*ast.Term, len(segs))
	backing := make([]ast.Term, len(segs))
	for i, s := range segs {
		if lowered {
			s = lower(s)
		}
		if t, ok := internedKeys[s]; ok {
			terms[i] = t
			continue
		}
		backing[i].Value = ast.String(s)
		terms[i] = &backing[i]
	}
	return ast.ArrayTerm(terms...)
}
