package authz

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"golang.org/x/net/http/httpguts"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// Header is one header name and value, in the order the policy gave them.
type Header struct {
	Key, Value string
}

// Response is a decision in transport-neutral form; the gRPC and HTTP
// adapters render it.
type Response struct {
	Allowed    bool
	HTTPStatus int    // for denials
	Body       string // for denials
	// Headers: on allow, added to the upstream request; on deny, sent to
	// the client (OPA-Envoy's `headers`).
	Headers []Header
	// Injected are Deputy's delegated-identity headers; they overwrite any
	// upstream request header of the same name.
	Injected             []Header
	HeadersToRemove      []string // upstream request headers to remove (always includes owned ones)
	ResponseHeadersToAdd []Header // added to the upstream's response on allow
	QueryParamsToSet     []Header
	QueryParamsToRemove  []string
	DynamicMetadata      map[string]any // the policy's; adapters add decision_id
	Reason               string
	DecisionID           string
	// Code is the error code (sidecar.E*) of a denial the pipeline gave
	// itself for an error; "" for the policy's verdicts.
	Code  string
	cause error // why the pipeline itself denied, for the decision log
	// refused: the request was refused before any decision (Refuse), and
	// dry run does not let it through.
	refused bool
}

// policyResult is the decision as the policy returned it.
type policyResult struct {
	allowed              bool
	hasStatus            bool
	status               int
	body                 string
	headers              []Header
	headersToRemove      []string
	responseHeadersToAdd []Header
	queryToSet           []Header
	queryToRemove        []string
	dynamicMetadata      map[string]any
	reason               string
}

// parseResult maps a decision exactly as OPA-Envoy does: a boolean, or an
// object whose `allowed` is a boolean and whose other fields have the
// documented types. Anything else is an error, and the caller denies.
func parseResult(t *ast.Term) (policyResult, error) {
	var r policyResult
	switch v := t.Value.(type) {
	case ast.Boolean:
		r.allowed = bool(v)
		return r, nil
	case ast.Object:
		return parseObject(v)
	default:
		return r, fmt.Errorf("illegal value for policy evaluation result: %s", ast.ValueName(t.Value))
	}
}

// parseObject reads the fields of an object result. Results hold a few
// of the ten fields (an allow is often {allowed, reason}): fields are
// looked up most common first, and no more once every key of the object
// was found, each lookup hashing its key.
func parseObject(obj ast.Object) (policyResult, error) {
	var r policyResult
	left := obj.Len()
	field := func(name string) *ast.Term {
		if left == 0 {
			return nil
		}
		t := obj.Get(keyTerm(name))
		if t != nil {
			left--
		}
		return t
	}
	a := field("allowed")
	if a == nil {
		return r, fmt.Errorf(`unable to determine evaluation result due to missing "allowed" key`)
	}
	b, ok := a.Value.(ast.Boolean)
	if !ok {
		return r, fmt.Errorf("type assertion error, expected allowed to be of type 'boolean' but got '%s'", ast.ValueName(a.Value))
	}
	r.allowed = bool(b)
	if s := field("reason"); s != nil {
		if str, ok := s.Value.(ast.String); ok {
			r.reason = string(str)
		} else {
			return r, fmt.Errorf("type assertion error, expected reason to be of type 'string' but got '%s'", ast.ValueName(s.Value))
		}
	}

	var err error
	if r.headers, err = headersField(field("headers"), "headers"); err != nil {
		return r, err
	}
	if r.responseHeadersToAdd, err = headersField(field("response_headers_to_add"), "response_headers_to_add"); err != nil {
		return r, err
	}
	if s := field("http_status"); s != nil {
		n, ok := s.Value.(ast.Number)
		if !ok {
			return r, fmt.Errorf("type assertion error, expected http_status to be of type 'number' but got '%s'", ast.ValueName(s.Value))
		}
		code, ok := n.Int()
		if !ok || code < 100 || code > 599 || http.StatusText(code) == "" {
			return r, fmt.Errorf("invalid HTTP status code %v", n)
		}
		// Checked here, not where a proxy answer is written: every adapter
		// and `deputy eval` then see one invalid_decision.
		if !r.allowed && !policy.DenialStatus(code) {
			return r, fmt.Errorf("http_status %d cannot answer a denial (4xx, 5xx or a redirect): nginx and Caddy read a 2xx as an allow", code)
		}
		r.hasStatus, r.status = true, code
	}
	if s := field("body"); s != nil {
		str, ok := s.Value.(ast.String)
		if !ok {
			return r, fmt.Errorf("type assertion error, expected body to be of type 'string' but got '%s'", ast.ValueName(s.Value))
		}
		r.body = string(str)
	}
	if r.headersToRemove, err = stringsField(field("request_headers_to_remove"), "request_headers_to_remove"); err != nil {
		return r, err
	}
	for _, name := range r.headersToRemove {
		if framing(name, framingRemovals) {
			return r, fmt.Errorf("request_headers_to_remove: %s frames or routes the request: it is the proxy's to remove", name)
		}
	}
	if r.queryToRemove, err = stringsField(field("query_parameters_to_remove"), "query_parameters_to_remove"); err != nil {
		return r, err
	}
	if r.queryToSet, err = queryToSet(field("query_parameters_to_set")); err != nil {
		return r, err
	}
	if s := field("dynamic_metadata"); s != nil {
		if _, ok := s.Value.(ast.Object); !ok {
			return r, fmt.Errorf("type assertion error, expected dynamic_metadata to be of type 'object' but got '%s'", ast.ValueName(s.Value))
		}
		v, err := ast.JSON(s.Value)
		if err != nil {
			return r, err
		}
		r.dynamicMetadata = v.(map[string]any)
	}
	return r, nil
}

// headersField reads an object of name → string | [string], or an array of
// such objects, as OPA-Envoy accepts.
func headersField(t *ast.Term, field string) ([]Header, error) {
	if t == nil {
		return nil, nil
	}
	var out []Header
	add := func(o ast.Object) error {
		var err error
		keys := o.Keys()
		slices.SortFunc(keys, compareTerms) // no closure, no reflection: no allocation
		for _, k := range keys {
			ks, ok := k.Value.(ast.String)
			if !ok {
				return fmt.Errorf("type assertion error for header '%v'", k)
			}
			switch v := o.Get(k).Value.(type) {
			case ast.String:
				out = append(out, Header{string(ks), string(v)})
			case *ast.Array:
				v.Foreach(func(e *ast.Term) {
					if s, ok := e.Value.(ast.String); ok {
						out = append(out, Header{string(ks), string(s)})
					} else if err == nil {
						err = fmt.Errorf("invalid value type %s for header '%s'", ast.ValueName(e.Value), ks)
					}
				})
			default:
				return fmt.Errorf("type assertion error for header '%s'", ks)
			}
		}
		return err
	}
	switch v := t.Value.(type) {
	case ast.Object:
		if err := add(v); err != nil {
			return out, err
		}
		return out, validHeaders(field, out)
	case *ast.Array:
		for i := 0; i < v.Len(); i++ {
			o, ok := v.Elem(i).Value.(ast.Object)
			if !ok {
				return nil, fmt.Errorf("type assertion error, expected headers to be of type 'object' but got '%s'", ast.ValueName(v.Elem(i).Value))
			}
			if err := add(o); err != nil {
				return nil, err
			}
		}
		return out, validHeaders(field, out)
	}
	return nil, fmt.Errorf("type assertion error, expected %s to be of type 'object' but got '%s'", field, ast.ValueName(t.Value))
}

// validHeaders refuses a header whose name is not a token or whose value
// holds a control byte other than a tab. A proxy that replays a denial's
// headers byte for byte (nginx, through x-deputy-denial) would write a CR
// or LF on to the client as a header line of its own: a value a policy
// built from the request ("/login?next=" and a decoded parameter) would
// set the client's cookies.
func validHeaders(field string, hs []Header) error {
	for _, h := range hs {
		if !httpguts.ValidHeaderFieldName(h.Key) {
			return fmt.Errorf("%s: header name %q is not a token", field, h.Key)
		}
		if !httpguts.ValidHeaderFieldValue(h.Value) {
			return fmt.Errorf("%s: value of %q holds a control byte", field, h.Key)
		}
		if framing(h.Key, framingHeaders) {
			return fmt.Errorf("%s: %s frames or routes the message: it is the proxy's to set", field, h.Key)
		}
	}
	return nil
}

// steers reports whether name, set on the upstream request, would change
// what is run after the decision: an x-envoy-* header steers Envoy's
// router (retries, timeouts, the original path it reports), and a method
// or URL override header has the upstream run another method or path than
// the one decided on. Names compare in any case, "_" as "-".
func steers(name string, o *InputOptions) bool {
	const envoy = "x-envoy-"
	if len(name) > len(envoy) && sameHeaderName(name[:len(envoy)], envoy) {
		return true
	}
	return urlOverride(name) || o.Methods.header(name)
}

// framingHeaders frame or route a message, or ask for a tunnel: set by a
// decision, Host would send the request to another virtual host than the
// one decided on, Content-Length or Transfer-Encoding would give the
// upstream a second idea of where the body ends, and Upgrade or
// Connection would ask it for a connection Deputy never sees into.
// framingRemovals are those whose removal changes what the upstream acts
// on.
var (
	framingHeaders = []string{"host", "content-length", "transfer-encoding", "connection", "upgrade",
		"te", "trailer", "keep-alive", "proxy-connection"}
	framingRemovals = []string{"host", "content-length", "transfer-encoding"}
)

// framing reports whether name is one of names in any case, with "_"
// read as "-" (as CGI, PHP and WSGI upstreams read it).
func framing(name string, names []string) bool {
	for _, f := range names {
		if sameHeaderName(name, f) {
			return true
		}
	}
	return false
}

// namesDeputys refuses a result naming one of Deputy's own headers, an
// owned one or the on-behalf-of header, in headers,
// request_headers_to_remove or response_headers_to_add, compared as owned
// names are (any case, "_" as "-"). The delegated identity is Deputy's to
// state: a policy's x_deputy_subject would reach a CGI or PHP upstream as
// HTTP_X_DEPUTY_SUBJECT beside Deputy's, and a removal of x-deputy-subject
// would have Envoy, which removes after it sets, drop Deputy's own.
func (r *policyResult) namesDeputys(o *InputOptions) error {
	deputys := func(name string) bool { return o.owned(name) || o.carried(name) }
	for _, h := range r.headers {
		if deputys(h.Key) {
			return fmt.Errorf("headers: %s is Deputy's header to set", h.Key)
		}
		if steers(h.Key, o) {
			return fmt.Errorf("headers: %s tells Envoy or the upstream what to run, not the decision", h.Key)
		}
	}
	for _, name := range r.headersToRemove {
		if deputys(name) {
			return fmt.Errorf("request_headers_to_remove: %s is Deputy's header to remove", name)
		}
	}
	for _, h := range r.responseHeadersToAdd {
		if deputys(h.Key) {
			return fmt.Errorf("response_headers_to_add: %s is Deputy's header", h.Key)
		}
	}
	return nil
}

func compareTerms(a, b *ast.Term) int { return a.Value.Compare(b.Value) }

func stringsField(t *ast.Term, field string) ([]string, error) {
	if t == nil {
		return nil, nil
	}
	var elems []*ast.Term
	switch v := t.Value.(type) {
	case *ast.Array:
		for i := 0; i < v.Len(); i++ {
			elems = append(elems, v.Elem(i))
		}
	case ast.Set:
		elems = v.Slice()
	default:
		return nil, fmt.Errorf("type assertion error, expected %s to be of type '[]string' but got '%s'", field, ast.ValueName(t.Value))
	}
	out := make([]string, 0, len(elems))
	for _, e := range elems {
		s, ok := e.Value.(ast.String)
		if !ok {
			return nil, fmt.Errorf("type assertion error, expected %s value to be of type 'string' but got '%s'", field, ast.ValueName(e.Value))
		}
		out = append(out, string(s))
	}
	return out, nil
}

func queryToSet(t *ast.Term) ([]Header, error) {
	if t == nil {
		return nil, nil
	}
	o, ok := t.Value.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("type assertion error, expected query_parameters_to_set to be a map but got '%s'", ast.ValueName(t.Value))
	}
	var out []Header
	for _, k := range o.Keys() {
		ks, ok := k.Value.(ast.String)
		if !ok {
			return nil, fmt.Errorf("query parameter names must be strings")
		}
		if ks == "" || !queryText(string(ks), true) {
			return nil, fmt.Errorf("query_parameters_to_set: name %q is not a query parameter name as it stands (%s)", ks, queryTextWant)
		}
		switch v := o.Get(k).Value.(type) {
		case ast.String:
			out = append(out, Header{string(ks), string(v)})
		case *ast.Array:
			for i := 0; i < v.Len(); i++ {
				s, ok := v.Elem(i).Value.(ast.String)
				if !ok {
					return nil, fmt.Errorf("type assertion error: expected array element to be string but got '%s'", ast.ValueName(v.Elem(i).Value))
				}
				out = append(out, Header{string(ks), string(s)})
			}
		default:
			return nil, fmt.Errorf("type assertion error, expected value to be string or array but got '%s'", ast.ValueName(v))
		}
	}
	for _, q := range out {
		if !queryText(q.Value, false) {
			return nil, fmt.Errorf("query_parameters_to_set: value of %q is not a query parameter value as it stands (%s)", q.Key, queryTextWant)
		}
	}
	return out, nil
}

// queryTextWant says what queryText accepts.
const queryTextWant = `percent-encode it: letters, digits, -._~!$'()*+,:@/? and whole %XX escapes, "=" in values only`

// queryText reports whether s can stand in the upstream's query as it
// is, one parameter's name (name) or value. Envoy writes each parameter to
// set into the request's :path as name=value, encoding nothing, so a CR,
// LF or NUL would reach the request line, a space split it, "#" cut the
// query, "&" or ";" (split on by PHP and Rails alike) start a parameter
// the policy never named (a value taken from the request could add
// _method=DELETE), and "=" in a name move where the value starts. What
// RFC 3986 lets a query hold unencoded, less those, is accepted.
func queryText(s string, name bool) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$'()*+,:@/?", c) >= 0:
		case c == '=' && !name:
		case c == '%' && i+2 < len(s) && sidecar.IsHex(s[i+1]) && sidecar.IsHex(s[i+2]):
			i += 2
		default:
			return false
		}
	}
	return true
}
