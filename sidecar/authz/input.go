package authz

import (
	"bytes"
	"mime"
	"mime/multipart"
	"net/url"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/proto"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// Terms shared by every input. Input terms are never mutated by evaluation,
// so one copy serves all checks and saves two allocations per key.
var internedKeys = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	for _, k := range []string{
		"attributes", "source", "destination", "request", "http", "address", "socketAddress",
		"portValue", "principal", "certificate", "labels", "service", "time", "id", "method",
		"headers", "path", "host", "scheme", "query", "fragment", "size", "protocol", "body",
		"rawBody", "contextExtensions", "metadataContext", "routeMetadataContext", "tlsSession",
		"sni", "headerMap", "filterMetadata", "typedFilterMetadata",
		"parsed_path", "parsed_query", "parsed_body", "truncated_body", "version", "identity",
		"identity_error", "delegation", "delegation_error", "deputy", "encoding", "ext_authz",
		"segments", "methods", "sole_method", "lower_path", "lower_segments", "route", "route_dirs", "route_segments",
		"spelled_route_segments",
		"sub", "name", "email", "roles", "privileges", "org", "domain", "iss", "exp", "claims",
		"mode", "actor", "actor_name", "actor_org", "subject", "subject_name", "level", "scope",
		"store_view", "reason", "ticket", "expires_at", "subject_protected", "subject_roles", "actor_roles", "revision", "dry_run", "stripped_headers",
		"allowed", "headers", "response_headers_to_add", "request_headers_to_remove",
		"query_parameters_to_set", "query_parameters_to_remove", "http_status", "body", "dynamic_metadata",
		"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "HTTP/1.1",
		"HTTP/2", "https", "http", "",
		// Values of input.delegation.mode.
		sidecar.ModeImpersonation, sidecar.ModePartner, sidecar.ModeReseller,
	} {
		m[k] = ast.StringTerm(k)
	}
	for _, k := range CommonHeaderNames() {
		m[k] = ast.StringTerm(k)
	}
	return m
}()

// CommonHeaderNames are the header names Envoy and browsers send on almost
// every request, lower case: worth sharing one copy of.
func CommonHeaderNames() []string {
	return []string{
		":authority", ":method", ":path", ":scheme", "accept", "accept-encoding", "accept-language",
		"authorization", "cache-control", "content-length", "content-type", "cookie", "host",
		"origin", "referer", "user-agent", "x-forwarded-for", "x-forwarded-proto", "x-request-id",
		"x-envoy-internal", "x-envoy-expected-rq-timeout-ms", "traceparent", "tracestate",
		"sec-fetch-dest", "sec-fetch-mode", "sec-fetch-site", "sec-fetch-user", "sec-ch-ua",
		"sec-ch-ua-mobile", "sec-ch-ua-platform", "upgrade-insecure-requests", "if-none-match",
		"if-modified-since", "priority", "pragma", "x-on-behalf-of",
	}
}

func keyTerm(s string) *ast.Term {
	if t, ok := internedKeys[s]; ok {
		return t
	}
	return ast.StringTerm(s)
}

var versionTerm = ast.NewTerm(ast.NewObject(
	[2]*ast.Term{keyTerm("encoding"), ast.StringTerm("protojson")},
	[2]*ast.Term{keyTerm("ext_authz"), ast.StringTerm("v3")},
))

// InputOptions control how a CheckRequest becomes policy input.
type InputOptions struct {
	// OwnedPrefix: request headers starting with it are dropped from the
	// input and from the upstream request. In ownedName form.
	OwnedPrefix string
	// ActorTokenHeader is dropped too, whatever its prefix. In ownedName form.
	ActorTokenHeader string
	// SkipBodyParsing leaves parsed_body undefined and never refuses a
	// request for a malformed body (body method overrides are still read).
	SkipBodyParsing bool
	// Methods are where a request may override its method.
	Methods MethodOverrides
	// OnBehalfOf is the header a client names the customer it acts for
	// in, in ownedName form: read, never owned, but it reaches the
	// upstream only as decided (see carried).
	OnBehalfOf string
	// AllowBareQuery lets a query whose first field has no "=" through
	// (see checkQuery): only for upstreams that never route on the query.
	AllowBareQuery bool
	// QueryRouteParams are query parameters the upstream routes on (in
	// fieldKey form): a request naming one is refused (see routeParam).
	QueryRouteParams []string
	// MaxPathSegments: a path with more segments is refused (see
	// refuseSegments); 0 sets no bound (a Pipeline always sets one).
	MaxPathSegments int
	// MaxRouteDirsBytes: a path whose route_dirs would hold more bytes is
	// refused (see refuseRouteDirs); 0 sets no bound (a Pipeline always
	// sets one).
	MaxRouteDirsBytes int
}

// carried reports whether a header name reads as the on-behalf-of header
// (compared as owned compares).
func (o *InputOptions) carried(name string) bool {
	return o.OnBehalfOf != "" && len(name) == len(o.OnBehalfOf) && sameHeaderName(name, o.OnBehalfOf)
}

// foldedSpelling refuses an on-behalf-of header sent with "_" for "-".
// Proxies disagree on such names (nginx drops them, Envoy and Caddy pass
// them on) and so do upstreams (CGI and PHP fold them into the header,
// keeping the last; Node and Go keep both): no single customer is the one
// the upstream reads, and no honest client sends them.
func foldedSpelling(carried []string) error {
	for _, name := range carried {
		if strings.IndexByte(name, '_') >= 0 {
			return sidecar.Invalid(name, "names the on-behalf-of header with \"_\" for \"-\": refused, as upstreams read it differently")
		}
	}
	return nil
}

// owned reports whether a header name is owned by Deputy: compared
// case-insensitively with "_" read as "-", since CGI, PHP and WSGI
// upstreams read both as HTTP_X_DEPUTY_... The options hold both names in
// that form (ownedName).
func (o *InputOptions) owned(name string) bool {
	if n := len(o.OwnedPrefix); n > 0 && len(name) >= n && sameHeaderName(name[:n], o.OwnedPrefix) {
		return true
	}
	return o.ActorTokenHeader != "" && len(name) == len(o.ActorTokenHeader) && sameHeaderName(name, o.ActorTokenHeader)
}

// sameHeaderName compares name with an ownedName form.
func sameHeaderName(name, owned string) bool { return sidecar.SameHeaderName(name, owned) }

// ownedName is the form owned compares against: lower case, "-" for "_"
// and for every other byte that is not a letter or a digit. Configuration
// refuses such names (sidecar.ValidHeaderName); a pipeline built with one
// all the same owns what upstreams read it as (x.acme. is x-acme- to PHP,
// CGI and WSGI), never only the spelling given.
func ownedName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, s)
}

// request is one CheckRequest turned into what the pipeline needs: the
// OPA-Envoy-compatible input object (without Deputy's slots yet) and the
// plain view identity and delegation read.
type request struct {
	input   ast.Object
	view    sidecar.Request
	traceID string
	// canonical is the path and methods the upstream acts on.
	canonical canonicalRequest
}

// stripOwned removes the owned headers a client sent, before anything
// reads the request, so neither policy nor resolvers can mistake them for
// identity: from headers and from header_map (Envoy's encode_raw_headers)
// alike. It returns the request without them (a copy when there were any)
// and their names as sent, and the names of the on-behalf-of headers
// sent (kept in the request). The names are appended to buf's two
// halves: a caller that keeps buf on its stack lists a few names without
// allocating. What it saw of the names in headers goes to buildInput
// (forms), so that it does not walk them again.
func stripOwned(req *authv3.CheckRequest, opts *InputOptions, buf *[4]string) (_ *authv3.CheckRequest, stripped, carried []string, forms headerForms) {
	stripped, carried = buf[:0:2], buf[2:2:4]
	forms = headerForms{lower: true, plain: true}
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	for k := range httpReq.GetHeaders() {
		forms.see(k)
		if opts.owned(k) {
			stripped = append(stripped, k)
		} else if opts.carried(k) {
			carried = append(carried, k)
		}
	}
	inMap := len(stripped)
	for _, h := range httpReq.GetHeaderMap().GetHeaders() {
		if _, _, plain := scanHeaderName(h.GetKey()); !plain && forms.odd == "" {
			forms.odd = h.GetKey() // header_map names say nothing of the headers map's
		}
		if opts.owned(h.GetKey()) {
			stripped = append(stripped, h.GetKey())
		} else if opts.carried(h.GetKey()) {
			carried = append(carried, h.GetKey())
		}
	}
	if len(carried) == 0 {
		carried = nil
	}
	if len(stripped) == 0 {
		return req, nil, carried, forms
	}
	req = proto.Clone(req).(*authv3.CheckRequest)
	httpReq = req.GetAttributes().GetRequest().GetHttp()
	for _, k := range stripped[:inMap] {
		delete(httpReq.Headers, k)
	}
	if hm := httpReq.GetHeaderMap(); inMap < len(stripped) {
		hm.Headers = slices.DeleteFunc(hm.Headers, func(h *corev3.HeaderValue) bool { return opts.owned(h.GetKey()) })
	}
	return req, stripped, carried, forms
}

// headerForms is what stripOwned saw of the names in a request's headers
// (before removing any, so it holds for what is left): lower, no name has
// an upper-case letter; plain, no name has "_"; odd, the first name with
// a byte other than a letter, a digit, "-" or "_" (scanHeaderName). The
// zero value knows nothing, and buildInput then looks for itself.
type headerForms struct {
	lower, plain bool
	odd          string
}

// see records what name says of the headers map's names, in one pass over
// its bytes.
func (f *headerForms) see(name string) {
	upper, underscore, plain := scanHeaderName(name)
	f.lower = f.lower && !upper
	f.plain = f.plain && !underscore
	if !plain && f.odd == "" {
		f.odd = name
	}
}

// scanHeaderName reports whether a header name has an upper-case letter,
// whether it has "_", and whether it is plain: only letters, digits, "-"
// and "_", or an HTTP/2 pseudo-header (":path"). PHP, CGI and WSGI read
// ".", " " and other bytes as "_" in the names they give the application,
// so "X.Deputy.Subject" is HTTP_X_DEPUTY_SUBJECT as "X-Deputy-Subject" is;
// nginx drops such names and Caddy passes them on.
func scanHeaderName(name string) (upper, underscore, plain bool) {
	start := 0
	if name != "" && name[0] == ':' {
		start = 1
	}
	var seen uint8
	for i := start; i < len(name); i++ {
		seen |= headerNameBytes[name[i]]
	}
	return seen&nameUpper != 0, seen&nameUnderscore != 0, seen&nameOther == 0 && name != "" && name != ":"
}

// What scanHeaderName reads of each byte of a name: one table lookup per
// byte, as a check scans every header name of every request.
const (
	nameUpper uint8 = 1 << iota
	nameUnderscore
	nameOther // not a letter, a digit, "-" or "_"
)

var headerNameBytes = func() (t [256]uint8) {
	for c := range t {
		switch {
		case c >= 'A' && c <= 'Z':
			t[c] = nameUpper
		case c == '_':
			t[c] = nameUnderscore
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
		default:
			t[c] = nameOther
		}
	}
	return t
}()

// oddHeaderName refuses a request with a header name that is not plain
// (scanHeaderName): no spelling of Deputy's owned or on-behalf-of headers, of a
// method override or of X-Original-URL may reach the application under a
// name Deputy does not read as one, and no honest client sends such a name.
func (f headerForms) oddHeaderName() error {
	if f.odd == "" {
		return nil
	}
	return sidecar.Invalid(f.odd, "header name with a byte other than a letter, a digit, \"-\" or \"_\": refused, as upstreams read it as another name")
}

// keptQueryBytes is the most of a query the canonical path may keep alive
// beside it (see buildInput): a longer one costs the path a copy.
const keptQueryBytes = 256

// buildInput converts a CheckRequest whose owned headers were stripped. The input is what OPA-Envoy builds
// (protojson of the request plus parsed_path, parsed_query, parsed_body,
// truncated_body, version), minus Deputy-owned headers, and limited to what
// the policy can read (need). A malformed body is an EINVALID error, as
// OPA-Envoy refuses it too, whether or not the policy reads the body.
// forms is what stripOwned saw of the header names.
func buildInput(req *authv3.CheckRequest, opts *InputOptions, need *policy.InputNeeds, forms headerForms) (*request, error) {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	headers := httpReq.GetHeaders()
	r := &request{}
	r.canonical.methods = r.canonical.methodsBuf[:0]

	rawPath, rawQuery, _ := strings.Cut(httpReq.GetPath(), "?")
	if len(rawQuery) > keptQueryBytes {
		// The canonical path and its segments are slices of rawPath, and
		// caches keep them (request terms, state keys): cut from :path,
		// each would hold the whole query alive with it.
		rawPath = strings.Clone(rawPath)
	}
	cp, err := parsePath(rawPath, opts.MaxPathSegments, opts.MaxRouteDirsBytes)
	if err != nil {
		return nil, err
	}
	if err := checkQuery(rawQuery, opts.AllowBareQuery); err != nil {
		return nil, err
	}
	if err := routeParam(rawQuery, opts.QueryRouteParams); err != nil {
		return nil, err
	}
	if err := unseenParam(rawQuery, need.Child("parsed_query")); err != nil {
		return nil, err
	}
	r.canonical.canonicalPath = cp
	if httpReq.GetMethod() == "" {
		return nil, sidecar.Invalid("method", "missing")
	}
	if err := r.canonical.methods.add(httpReq.GetMethod()); err != nil {
		return nil, err
	}
	view, plain := headers, forms.plain
	if !forms.lower {
		if view, plain, err = lowerHeaders(headers); err != nil {
			return nil, err
		}
	}
	// The view is what every header read goes through, so that a header
	// counts the same in headers and in header_map.
	r.view = sidecar.Request{
		Method:     r.canonical.methods[0],
		Path:       cp.path,
		Headers:    view,
		PlainNames: plain,
	}
	if hm := httpReq.GetHeaderMap().GetHeaders(); len(hm) > 0 {
		r.view.HeaderMap = make([]sidecar.HeaderField, len(hm))
		for i, h := range hm {
			v, raw := h.GetValue(), h.GetRawValue()
			if v == "" {
				v = string(raw)
			} else if len(raw) > 0 && string(raw) != v {
				// Envoy fills one of the two; a policy reads both.
				return nil, sidecar.Invalid(h.GetKey(), "header_map entry whose value and raw_value differ: refused, as policy may read either")
			}
			r.view.HeaderMap[i] = sidecar.HeaderField{Name: h.GetKey(), Value: v}
		}
	}
	if err := unseenHeader(&r.view, need.Child("attributes").Child("request").Child("http").Child("headers")); err != nil {
		return nil, err
	}
	if r.canonical.host, err = decidedHost(httpReq, &r.view); err != nil {
		return nil, err
	}
	if err := copiesAgree(httpReq, &r.view); err != nil {
		return nil, err
	}
	// Resolvers bind sessions and storefront hosts to the name alone:
	// browsers ignore ports for cookies.
	r.view.Host = r.canonical.host.Name
	r.canonical.upgrade, r.canonical.upgrading = upgradeOf(&r.view)
	if err := opts.Methods.fromHeaders(headers, forms.lower && forms.plain, httpReq.GetHeaderMap().GetHeaders(), &r.canonical.methods); err != nil {
		return nil, err
	}
	query, err := opts.Methods.fromQuery(rawQuery, &r.canonical.methods)
	if err != nil {
		return nil, err
	}
	var body *ast.Term
	var truncated bool
	if !opts.SkipBodyParsing || len(opts.Methods.body) > 0 {
		pb := bodyParse{overrides: opts.Methods.body, methods: &r.canonical.methods, post: r.canonical.methods[0] == "POST", lengthOptional: !http1(httpReq.GetProtocol())}
		if !opts.SkipBodyParsing {
			pb.fields = need.Child("parsed_body")
		}
		body, truncated, err = pb.parse(&r.view, httpReq.GetBody(), httpReq.GetRawBody())
		// With parse_body off only a malformed body is let through: a
		// method, a form field or a body header Deputy cannot read is
		// refused all the same.
		if err != nil && (!opts.SkipBodyParsing || sidecar.ErrorField(err) != "body") {
			return nil, err
		}
	}

	obj := ast.NewObjectWithCapacity(8)
	if n := need.Child("attributes"); n != nil {
		var attrs ast.Value = ast.NewObject()
		if req.GetAttributes() != nil {
			if attrs, err = attributeContextAST(req.GetAttributes(), n); err != nil {
				return nil, sidecar.Invalid("attributes", "cannot convert request: %v", err)
			}
		}
		obj.Insert(keyTerm("attributes"), ast.NewTerm(attrs))
	}
	if need.Child("parsed_path") != nil {
		obj.Insert(keyTerm("parsed_path"), parsedPath(cp.decoded))
	}
	if n := need.Child("parsed_query"); n != nil {
		obj.Insert(keyTerm("parsed_query"), parsedQuery(rawQuery, query, n))
	}
	if need.Child("version") != nil {
		obj.Insert(keyTerm("version"), versionTerm)
	}
	if !opts.SkipBodyParsing {
		if need.Child("parsed_body") != nil {
			if body == nil {
				body = ast.InternedNullTerm
			}
			obj.Insert(keyTerm("parsed_body"), body)
		}
		if need.Child("truncated_body") != nil {
			obj.Insert(keyTerm("truncated_body"), ast.InternedTerm(truncated))
		}
	}

	r.input = obj
	r.traceID = traceID(r.view.Header("traceparent"))
	return r, nil
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}

// lowerHeaders returns headers with lower-case names, and whether none of
// them has "_" (sidecar.Request.PlainNames). Envoy already sends lower
// case, so the common case returns the map as is. A name sent in two
// cases is refused: one would be kept at random, and the upstream gets
// both.
func lowerHeaders(h map[string]string) (_ map[string]string, plain bool, err error) {
	plain = true
	for k := range h {
		if hasUpper(k) {
			out := make(map[string]string, len(h))
			for k, v := range h {
				lk := strings.ToLower(k)
				if _, ok := out[lk]; ok {
					return nil, false, sidecar.Invalid(lk, "sent under two spellings of its name: upstreams differ on which they read")
				}
				out[lk] = v
			}
			return out, !hasUnderscore(out), nil
		}
		if plain && strings.IndexByte(k, '_') >= 0 {
			plain = false
		}
	}
	return h, plain, nil
}

// unseenHeader refuses a header under another spelling of a header the
// policy reads by name (need: what it reads of
// attributes.request.http.headers): Envoy and Caddy forward "x_tenant"
// beside "x-tenant", and CGI, PHP and WSGI read both as HTTP_X_TENANT,
// while the policy reading headers["x-tenant"] sees the one, or nothing
// when only the other is sent. So is one sent in header_map (Envoy's
// encode_raw_headers), which the upstream gets and the policy's headers
// never hold. A policy reading the headers whole sees every name as sent.
func unseenHeader(view *sidecar.Request, need *policy.InputNeeds) error {
	if need == nil || need.All || len(need.Children) == 0 {
		return nil
	}
	for name := range need.Children {
		dashed := sidecar.HeaderName(name)
		for _, h := range view.HeaderMap {
			if sidecar.SameHeaderName(h.Name, dashed) {
				return sidecar.Invalid(h.Name, "header sent in header_map (encode_raw_headers), while the policy reads headers[%q]: refused, as the upstream gets it and the policy does not", name)
			}
		}
		if view.PlainNames {
			// Every name sent is its own HeaderName: only a read name
			// that is not has another spelling here.
			if dashed != name {
				if _, ok := view.Headers[dashed]; ok {
					return unseenHeaderError(dashed, name)
				}
			}
			continue
		}
		for k := range view.Headers {
			if k != name && sidecar.SameHeaderName(k, dashed) {
				return unseenHeaderError(k, name)
			}
		}
	}
	return nil
}

func unseenHeaderError(sent, read string) error {
	return sidecar.Invalid(sent, "header read as %q by upstreams that read \"_\" as \"-\" and names in any case (CGI, PHP, WSGI), not by the policy: refused", read)
}

func hasUnderscore(h map[string]string) bool {
	for k := range h {
		if strings.IndexByte(k, '_') >= 0 {
			return true
		}
	}
	return false
}

// parsedPath mirrors OPA-Envoy: the decoded path split on "/" after the
// leading slashes. OPA-Envoy gets the path from url.Parse, which reads
// "//a/b" as host "a" and path "/b"; here the path is only ever a path.
func parsedPath(decoded string) *ast.Term {
	return segmentsTerm(strings.Split(strings.TrimLeft(decoded, "/"), "/"), false)
}

// parsedQuery mirrors OPA-Envoy (url.Values of the query, invalid pairs
// left out): a map of string arrays, holding only the parameters need
// names when the policy reads none but named ones (as a rule reading
// input.parsed_query.query does on every check). A query that cannot hold
// one of them (none of their names in it, no escape) is not parsed: the
// common page request pays nothing for a rule about another endpoint.
// parsed is the query when the method overrides already parsed it.
func parsedQuery(raw string, parsed url.Values, need *policy.InputNeeds) *ast.Term {
	if raw == "" || !need.All && !mayHoldParam(raw, need.Children) {
		return ast.InternedEmptyObject
	}
	if parsed == nil {
		parsed, _ = url.ParseQuery(raw)
	}
	q := ast.NewObject()
	for k, vs := range parsed {
		if !need.All && need.Children[k] == nil {
			continue
		}
		vt := make([]*ast.Term, len(vs))
		for i, v := range vs {
			vt[i] = ast.StringTerm(v)
		}
		q.Insert(ast.StringTerm(k), ast.ArrayTerm(vt...))
	}
	return ast.NewTerm(q)
}

// mayHoldParam reports whether a raw query may name one of the parameters:
// a name appears as it is unless escaped ("%" or "+" for a space).
func mayHoldParam(raw string, names map[string]*policy.InputNeeds) bool {
	if strings.ContainsAny(raw, "%+") {
		return true
	}
	for name := range names {
		if strings.Contains(raw, name) {
			return true
		}
	}
	return false
}

// bodyParse reads a body for parsed_body and for the method overrides it
// may carry.
type bodyParse struct {
	overrides []string // body parameters naming a method
	methods   *methodSet
	// post: the request is a POST, the only method whose body frameworks
	// read an override from (Rack, Laravel, Symfony, Express).
	post bool
	// carriers counts the carrier values read from multipart fields.
	carriers *int
	// lengthOptional: the request came over a protocol whose body needs
	// neither a content-length nor a transfer-encoding (see http1).
	lengthOptional bool
	// fields is what the policy reads of parsed_body (nil: not given to
	// it): a form field upstreams read as one of them under another
	// spelling is refused (unseenFields).
	fields *policy.InputNeeds
}

// http1 reports whether a CheckRequest's protocol is HTTP/1.0 or 1.1,
// where a request stating neither content-length nor transfer-encoding
// has no body. In HTTP/2 and HTTP/3 a body needs neither (its DATA frames
// end with the stream): a form POST without a length that Envoy was not
// configured to send (with_request_body) reached the check as body-less,
// and the upstream still read its _method=DELETE. Envoy states the
// protocol of every HTTP request; one left unstated (a request written by
// hand for deputy eval) is read as HTTP/1.x, as before.
func http1(protocol string) bool {
	return protocol == "" || protocol == "HTTP/1.1" || protocol == "HTTP/1.0"
}

// parse mirrors OPA-Envoy for JSON bodies and adds form and multipart
// bodies. A body shorter than its content-length was truncated by Envoy's
// with_request_body limit: it is reported, not parsed. The body headers
// are read through the request view (readBodyHeaders).
//
// A POST whose body may carry an override (see readingsOf) that Deputy
// cannot read (not sent to the check, truncated, unparseable, a type
// frameworks parse and OPA-Envoy does not) is decided as every method an
// override could name (bodyOverrideMethods). Refusing it instead would
// refuse every form post behind nginx and Caddy, which never send the
// body; deciding it as every method still allows routes open to all
// methods, and denies where a hidden override could matter. Operators
// whose upstream never honours body overrides drop body:_method from
// check.method_overrides.
func (pb bodyParse) parse(view *sidecar.Request, body string, raw []byte) (*ast.Term, bool, error) {
	if body == "" && len(raw) > 0 {
		body = string(raw)
	}
	h, err := readBodyHeaders(view)
	if err != nil {
		return nil, false, err
	}
	ct := h.contentType
	truncated, unread := h.complete(body)
	// A body stated by no header may still be there, unsent (see http1).
	unread = unread || body == "" && !h.hasLength && !h.chunked && pb.lengthOptional
	// A compressed body is inflated by the upstream (Express's
	// body-parser, express-graphql), and a byte order mark dropped by some
	// (iconv-lite, under body-parser: "\ufeff_method=DELETE" is an
	// override there) and kept by others (Rack, PHP, Go). Read as its
	// bytes say, either would be decided on another body than the
	// upstream runs: not read, and refused for every type a framework
	// reads a body of (readingsOf).
	// opaque says why; it is passed on, not kept in pb: a field of pb
	// that reaches an error would take pb's carrier count to the heap on
	// every check.
	var opaque string
	switch {
	case h.encoded && body != "":
		opaque = "sent with content-encoding " + strconv.Quote(h.encoding) + ", which the upstream may inflate"
		unread = true
	case strings.HasPrefix(body, byteOrderMark):
		opaque = "starting with a byte order mark, which upstreams differ on dropping"
		unread = true
	}
	var term *ast.Term
	var read bodyReadings
	carriers := 0
	pb.carriers = &carriers
	switch {
	case truncated || body == "":
	case opaque != "" && readingsOf(ct) != 0:
		// Every type a framework reads a body of (see readingsOf: no
		// type, "text/json"), not only those parseKnown parses.
		err = sidecar.Invalid("body", "body of type %q %s: refused, as policy would decide on other fields than the upstream reads", ct, opaque)
	default:
		term, read, err = pb.parseKnown(ct, body)
	}
	if pb.post && len(pb.overrides) > 0 {
		if readings := readingsOf(ct); readings != 0 &&
			(unread || pb.hiddenMultipart(ct, body, read != 0, carriers) || body != "" && !pb.readAlso(ct, body, readings&^read)) {
			pb.everyOverride()
		}
	}
	return term, truncated, err
}

// hiddenMultipart reports whether a multipart body may name an override
// Deputy did not read. Multipart parsers disagree (PHP finds "boundary"
// anywhere in the content type, reads parts after the close delimiter,
// takes the last of repeated names, accepts single quotes and any
// disposition, reads "filename*" parts as fields), so Deputy does not
// mirror one: a body holding a carrier's name core ("method" for
// "_method", in any case) anywhere is clear only when it parsed as
// multipart/form-data and every occurrence is a carrier value Deputy read.
func (pb bodyParse) hiddenMultipart(ct, body string, read bool, carriers int) bool {
	if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "multipart/") {
		return false
	}
	lbody := strings.ToLower(body)
	var cores []string // "method" alone for _method and x-http-method-override
	for _, name := range pb.overrides {
		cores = addRun(cores, strings.ToLower(longestRun(name)))
	}
	seen := 0
	for _, core := range cores {
		if core != "" {
			seen += strings.Count(lbody, core)
		}
	}
	return seen > 0 && (!read || seen != carriers)
}

// everyOverride decides the request as every method a body override may
// name, for an override Deputy cannot read as one method.
func (pb bodyParse) everyOverride() {
	for _, m := range bodyOverrideMethods {
		_ = pb.methods.add(m)
	}
}

// bodyOverrideMethods are the methods a body override may name that the
// common frameworks route (Rack's list without LINK and UNLINK).
var bodyOverrideMethods = []string{"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"}

// bodyHeaders are what a request's headers say of its body, read as the
// upstream gets them: from headers and from Envoy's header_map alike
// (encode_raw_headers sends only the latter), names in any case.
type bodyHeaders struct {
	contentType string
	// length is the content-length, when hasLength.
	length    int64
	hasLength bool
	// encoded: a content-encoding other than identity (encoding, the
	// last such); chunked: a transfer-encoding; partial: Envoy's
	// x-envoy-auth-partial-body.
	encoded, chunked, partial bool
	encoding                  string
}

// byteOrderMark is U+FEFF in UTF-8.
const byteOrderMark = "\xef\xbb\xbf"

// readBodyHeaders reads the body headers of a request. Content-type and
// content-length decide how much of the body there is and how it is read,
// so each must be sent once, under its own name: two entries (twice in
// header_map, or in headers and header_map both) or a spelling with "_"
// is refused, as upstreams differ on which they read. The others only ever
// make the body unread, so any of their values counts.
func readBodyHeaders(view *sidecar.Request) (bodyHeaders, error) {
	var h bodyHeaders
	var buf [2]string
	ct, _, err := soleHeader(view, "content-type", buf[:0])
	if err != nil {
		return h, err
	}
	h.contentType = ct
	cl, ok, err := soleHeader(view, "content-length", buf[:0])
	if err != nil {
		return h, err
	}
	if ok {
		if h.length, err = strconv.ParseInt(cl, 10, 64); err != nil {
			return h, sidecar.Invalid("content-length", "not a number: %q", cl)
		}
		h.hasLength = true
	}
	// A compressed body (Express's body-parser inflates gzip and deflate)
	// cannot be read for an override either.
	for _, ce := range view.AppendHeaderValues(buf[:0], "content-encoding") {
		if ce = strings.TrimSpace(ce); ce != "" && !strings.EqualFold(ce, "identity") {
			h.encoded, h.encoding = true, ce
		}
	}
	for _, te := range view.AppendHeaderValues(buf[:0], "transfer-encoding") {
		h.chunked = h.chunked || te != ""
	}
	for _, p := range view.AppendHeaderValues(buf[:0], "x-envoy-auth-partial-body") {
		h.partial = h.partial || strings.Contains(strings.ToLower(p), "true")
	}
	return h, nil
}

// soleHeader returns the value of a header that must be sent at most once
// and under its own name (lower case, "-" between words), in any case.
func soleHeader(view *sidecar.Request, name string, buf []string) (string, bool, error) {
	vals := view.AppendHeaderValues(buf, name)
	switch {
	case len(vals) == 0:
		return "", false, nil
	case len(vals) > 1:
		return "", false, sidecar.Invalid(name, "sent more than once: upstreams differ on which they read")
	}
	if _, ok := view.Headers[name]; !ok && !slices.ContainsFunc(view.HeaderMap, func(h sidecar.HeaderField) bool { return strings.EqualFold(h.Name, name) }) {
		return "", false, sidecar.Invalid(name, "spelled with \"_\" for \"-\": refused, as upstreams read it as another header")
	}
	return vals[0], true, nil
}

// complete reports whether the body is shorter than its content-length
// (truncated, as OPA-Envoy reports it), and whether part of it was not
// sent to the check at all or cannot be read (unread): truncated, a
// transfer-encoded body not sent, a content-encoded body, or Envoy's
// x-envoy-auth-partial-body.
func (h bodyHeaders) complete(body string) (truncated, unread bool) {
	truncated = h.hasLength && h.length != -1 && h.length > int64(len(body))
	unread = truncated || body == "" && h.chunked || h.encoded || h.partial
	return truncated, unread
}

// jsonValue is ast.InterfaceToValue of a parsed JSON document, but for
// the order in which each object's members are inserted: by key, as every
// walk of an ast.Object reads them. ast.Object sorts its members, once,
// when first walked: a body's object, built from a Go map in the map's
// order, was sorted by the first walk, the decision log's sizing in
// Logger.Log (ast.String comparisons through an interface: 1.9 s of a 3.7 s
// check for 200,000 keys), and the log must not weigh on the check. Sorted
// here with Go's own string comparison, the same order, they cost a
// fraction of parsing them, and the walk finds them in order.
func jsonValue(x any) (ast.Value, error) {
	switch x := x.(type) {
	case map[string]any:
		terms := make([]ast.Term, 2*len(x))
		members := make([][2]*ast.Term, 0, len(x))
		for k, e := range x {
			v, err := jsonValue(e)
			if err != nil {
				return nil, err
			}
			i := 2 * len(members)
			terms[i].Value, terms[i+1].Value = ast.InternedValue(k), v
			members = append(members, [2]*ast.Term{&terms[i], &terms[i+1]})
		}
		slices.SortFunc(members, func(a, b [2]*ast.Term) int {
			return strings.Compare(string(a[0].Value.(ast.String)), string(b[0].Value.(ast.String)))
		})
		return ast.NewObject(members...), nil
	case []any:
		terms := make([]ast.Term, len(x))
		elems := make([]*ast.Term, len(x))
		for i, e := range x {
			v, err := jsonValue(e)
			if err != nil {
				return nil, err
			}
			terms[i].Value = v
			elems[i] = &terms[i]
		}
		return ast.NewArray(elems...), nil
	}
	return ast.InterfaceToValue(x)
}

// parseKnown parses the types OPA-Envoy's parsed_body holds, and the form
// types, reading overrides from them; read is the reading it did (none
// when it did not).
func (pb bodyParse) parseKnown(ct, body string) (*ast.Term, bodyReadings, error) {
	if ct == "" {
		return nil, 0, nil
	}
	mediaType, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, 0, nil
	}
	switch {
	case mediaType == "application/json" || strings.HasSuffix(mediaType, "+json"):
		var x any
		if err := util.UnmarshalJSON([]byte(body), &x); err != nil {
			return nil, 0, sidecar.Invalid("body", "malformed JSON body: %v", err)
		}
		// What parsers read differently (a key an object repeats, bytes
		// that are not UTF-8) is refused: see checkJSONBody.
		if err := checkJSONBody(body); err != nil {
			return nil, 0, sidecar.Invalid("body", "malformed JSON body: %v", err)
		}
		if err := pb.fromJSON(x); err != nil {
			return nil, 0, err
		}
		v, err := jsonValue(x)
		if err != nil {
			return nil, readsJSON, sidecar.Invalid("body", "%v", err)
		}
		return ast.NewTerm(v), readsJSON, nil
	case mediaType == "application/x-www-form-urlencoded":
		if err := controlFree("form", body); err != nil {
			return nil, 0, err
		}
		vals, err := url.ParseQuery(body)
		if err != nil {
			return nil, 0, sidecar.Invalid("body", "malformed form body: %v", err)
		}
		if err := pb.methods.addValues(vals, pb.overrides); err != nil {
			return nil, 0, err
		}
		if err := unseenFields(body, pb.fields, "body"); err != nil {
			return nil, 0, err
		}
		return valuesTerm(vals), readsForm, nil
	case mediaType == "multipart/form-data":
		vals, err := pb.multipart(body, params["boundary"])
		if err != nil {
			return nil, 0, err
		}
		return valuesTerm(vals), readsMultipart, nil
	}
	return nil, 0, nil
}

// fromJSON reads overrides from a JSON body's top-level carriers, their
// names compared as form fields' are (Slim reads "_METHOD", Laravel merges
// JSON into its input as PHP names it). A carrier that is not a string is
// not one method Deputy can name: Express's method-override takes an
// array's first item, and frameworks read objects and numbers their own
// ways, so the request is decided as every method a body override may
// name.
func (pb bodyParse) fromJSON(x any) error {
	obj, ok := x.(map[string]any)
	if !ok {
		return nil
	}
	for _, name := range carrierFields(obj, pb.overrides) {
		m, ok := obj[name].(string)
		if !ok {
			pb.everyOverride()
			continue
		}
		if err := pb.methods.add(m); err != nil {
			return err
		}
	}
	return nil
}

// multipart parses a multipart body, reading overrides from its fields;
// file fields hold their file names.
func (pb bodyParse) multipart(body, boundary string) (url.Values, error) {
	if boundary == "" {
		return nil, sidecar.Invalid("body", "multipart body without boundary")
	}
	form, err := multipart.NewReader(bytes.NewReader([]byte(body)), boundary).ReadForm(int64(len(body)) + 1)
	if err != nil {
		return nil, sidecar.Invalid("body", "malformed multipart body: %v", err)
	}
	defer form.RemoveAll()
	if err := pb.methods.addValues(form.Value, pb.overrides); err != nil {
		return nil, err
	}
	unsure := unsureNames(body, boundary)
	if unsure {
		pb.everyOverride()
	}
	if pb.carriers != nil {
		for name, vs := range form.Value {
			if isCarrier(name, pb.overrides) {
				*pb.carriers += len(vs)
			}
		}
	}
	vals := url.Values(form.Value)
	for name, files := range form.File {
		for _, f := range files {
			vals[name] = append(vals[name], f.Filename)
		}
	}
	if err := unseenParts(vals, unsure, pb.fields); err != nil {
		return nil, err
	}
	return vals, nil
}

// unsureNames reports whether a part of a multipart body names its field
// in a way parsers read differently, so that Deputy cannot know which
// name the upstream sees: an RFC 2047 encoded word ("=?utf-8?B?...?=",
// left encoded by Go and decoded by some frameworks), an RFC 2231
// extended parameter ("name*=", decoded by Go only for the charsets it
// knows), or two Content-Disposition headers in one part (Go reads the
// first). Only the name parameter is looked at: file names (clients send
// "filename*=" for non-ASCII ones), field values and file contents name
// no field.
func unsureNames(body, boundary string) bool {
	r := multipart.NewReader(strings.NewReader(body), boundary)
	for {
		p, err := r.NextRawPart()
		if err != nil {
			// The body parsed as a form before this: an error here is
			// its end.
			return false
		}
		cds := p.Header.Values("Content-Disposition")
		if len(cds) > 1 {
			return true
		}
		for _, cd := range cds {
			// Split at every ";", quotes or not: a ";" inside a quoted
			// value makes more parameters to look at, never fewer.
			for param := range strings.SplitSeq(cd, ";") {
				param = strings.ToLower(strings.TrimSpace(param))
				if strings.HasPrefix(param, "name*") || strings.HasPrefix(param, "name=") && strings.Contains(param, "=?") {
					return true
				}
			}
		}
	}
}

// bodyReadings are the ways frameworks may read the parameters of a POST
// body, by its content type. They disagree on a content type that is not
// exactly one media type: PHP and Rack cut the media type at ";" or ","
// and see a form in "application/x-www-form-urlencoded;/json", Laravel
// finds "/json" in it and reads JSON, and an upstream that takes the last
// of two content-type headers (Envoy joins them with ",") reads the
// second. Deputy reads such a body every way and decides on every method
// the readings name.
type bodyReadings uint8

const (
	readsForm bodyReadings = 1 << iota
	readsMultipart
	readsJSON
)

// readingsOf returns the readings of a content type: a form for no type
// at all (Rack) and for any type starting with the form type, whatever
// follows (PHP compares up to ";", "," or " "); multipart for any type
// starting with "multipart/"; JSON for any type holding "/json" or
// "+json" (Laravel). Each of several types joined with "," counts.
func readingsOf(ct string) bodyReadings {
	ct = strings.ToLower(strings.TrimSpace(ct))
	if ct == "" {
		return readsForm
	}
	var r bodyReadings
	if strings.Contains(ct, "/json") || strings.Contains(ct, "+json") {
		r |= readsJSON
	}
	for rest, more := ct, true; more; {
		var one string
		one, rest, more = strings.Cut(rest, ",")
		switch one = strings.TrimSpace(one); {
		case one == "", strings.HasPrefix(one, "application/x-www-form-urlencoded"):
			r |= readsForm
		case strings.HasPrefix(one, "multipart/"):
			r |= readsMultipart
		}
	}
	return r
}

// readAlso reads overrides from a body in each of the readings the way
// frameworks do, where parseKnown did not; it reports false when one of
// them could not read the body (after reading it every other way, so the
// methods they name are all added).
func (pb bodyParse) readAlso(ct, body string, readings bodyReadings) bool {
	ok := true
	if readings&readsForm != 0 {
		if controlFree("form", body) != nil {
			ok = false
		} else {
			vals, err := url.ParseQuery(body)
			ok = err == nil && pb.methods.addValues(vals, pb.overrides) == nil && ok
		}
	}
	if readings&readsMultipart != 0 {
		_, params, err := mime.ParseMediaType(ct)
		if err == nil {
			_, err = pb.multipart(body, params["boundary"])
		}
		ok = err == nil && ok
	}
	if readings&readsJSON != 0 {
		var x any
		ok = util.UnmarshalJSON([]byte(body), &x) == nil && checkJSONBody(body) == nil && pb.fromJSON(x) == nil && ok
	}
	return ok
}

func valuesTerm(vals map[string][]string) *ast.Term {
	obj := ast.NewObjectWithCapacity(len(vals))
	for k, vs := range vals {
		vt := make([]*ast.Term, len(vs))
		for i, v := range vs {
			vt[i] = ast.StringTerm(v)
		}
		obj.Insert(ast.StringTerm(k), ast.ArrayTerm(vt...))
	}
	return ast.NewTerm(obj)
}

// traceID extracts the trace id of a W3C traceparent header.
func traceID(tp string) string {
	// version "-" trace-id(32) "-" parent-id(16) "-" flags(2)
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' {
		return ""
	}
	id := tp[3:35]
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ""
		}
	}
	if id == "00000000000000000000000000000000" {
		return ""
	}
	return id
}
