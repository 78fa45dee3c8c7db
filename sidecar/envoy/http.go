package envoy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// Headers of the HTTP contract.
const (
	// HeadersToRemoveHeader lists, comma-separated, the upstream request
	// headers Envoy's http_service must remove.
	HeadersToRemoveHeader = "x-envoy-auth-headers-to-remove"
	// ResponseHeaderPrefix carries response_headers_to_add in HTTP mode, so
	// that a name like cache-control can differ upstream and downstream.
	ResponseHeaderPrefix = "x-deputy-response-"
)

// HTTPChecker decides the requests of the HTTP check, and records the
// refusal of those it cannot hand over as sent; *authz.Pipeline is one.
type HTTPChecker interface {
	Checker
	// Owned reports whether a request header name is Deputy's own.
	Owned(name string) bool
	CheckEnforced(ctx context.Context, req *authv3.CheckRequest, enforce func(*authz.Response) error) *authz.Response
	Refuse(ctx context.Context, req *authv3.CheckRequest, refusal error) *authz.Response
}

// HTTPOption configures the HTTP check handler.
type HTTPOption func(*HTTPHandler)

// WithPathPrefix strips Envoy http_service's path_prefix, exactly as its
// config sets it, from the path. Envoy prepends it to the request's path,
// which starts with "/": a check path that is not the prefix followed by
// "/" does not come from Envoy, and is refused as malformed.
func WithPathPrefix(p string) HTTPOption {
	return func(h *HTTPHandler) { h.prefix = p }
}

// Proxy names the proxy in front of the forwarded check endpoint
// (nginx auth_request, Caddy forward_auth, Traefik forwardAuth), and so
// the one header convention the endpoint reads the original request from.
type Proxy string

// The proxies the forwarded check knows.
const (
	// ProxyNginx: X-Original-Method and X-Original-URI, which nginx has no
	// default for: the shipped config sets them with proxy_set_header,
	// which replaces a client's copy.
	ProxyNginx Proxy = "nginx"
	// ProxyCaddy: X-Forwarded-Method and X-Forwarded-Uri, which
	// forward_auth sets over a client's copy.
	ProxyCaddy Proxy = "caddy"
	// ProxyTraefik: the same headers as Caddy, set by forwardAuth.
	ProxyTraefik Proxy = "traefik"
	// ProxyEnvoy: Envoy's http_service sends the original request itself
	// (under path_prefix, its host as the check's Host); no forwarded
	// endpoint is served.
	ProxyEnvoy Proxy = "envoy"
)

// DefaultProxy is the convention of the forwarded endpoint when none is set.
const DefaultProxy = ProxyNginx

// ParseProxy checks a proxy name.
func ParseProxy(s string) (Proxy, error) {
	switch p := Proxy(s); p {
	case ProxyNginx, ProxyCaddy, ProxyTraefik, ProxyEnvoy:
		return p, nil
	}
	return "", fmt.Errorf("must be nginx, caddy, traefik or envoy, not %q", s)
}

// convention is where a proxy puts the original request. length names the
// header the shipped config sets to the original body's length (nginx
// $content_length, 0 for an HTTP/1.x request stating none; Caddy's
// Content-Length placeholder), over a client's copy; none for Traefik,
// which cannot set it.
type convention struct{ proxy, method, uri, length string }

func (p Proxy) convention() (convention, bool) {
	switch p {
	case ProxyNginx:
		return convention{proxy: "nginx", method: "X-Original-Method", uri: "X-Original-Uri", length: "X-Original-Content-Length"}, true
	case ProxyCaddy:
		return convention{proxy: "caddy", method: "X-Forwarded-Method", uri: "X-Forwarded-Uri", length: "X-Forwarded-Content-Length"}, true
	case ProxyTraefik:
		return convention{proxy: "traefik", method: "X-Forwarded-Method", uri: "X-Forwarded-Uri"}, true
	}
	return convention{}, false
}

// originHeaders are the headers of every convention that name the request
// to decide. Behind one proxy the others are plain client headers that
// proxy passes on untouched, so the forwarded endpoint refuses them: read,
// they would let a client choose what is decided; ignored, a proxy
// configured under the wrong name would be decided on a client's header
// without anyone noticing.
var originHeaders = [...]string{"X-Original-Method", "X-Original-Uri", "X-Forwarded-Method", "X-Forwarded-Uri",
	"X-Original-Content-Length", "X-Forwarded-Content-Length"}

// WithTrustedProxy makes the handler a forwarded endpoint: it decides the
// request named by the headers proxy p sets and overwrites (plus
// X-Forwarded-Host and X-Forwarded-Proto), refuses the other conventions'
// headers and any owned header (see WithOwned). Only mount such a handler
// where p, not the client, reaches it. ProxyEnvoy leaves the handler as
// Envoy's http_service endpoint.
func WithTrustedProxy(p Proxy) HTTPOption {
	return func(h *HTTPHandler) {
		h.conv, h.forwarded = p.convention()
		h.denialHeader = p == ProxyNginx
	}
}

// WithOwned tells the forwarded endpoint which header names are Deputy's
// own. A proxy can remove an upstream header on allow only when told its
// name, and nginx, Caddy and Traefik are not told: an owned header that
// reaches the forwarded endpoint would reach the application, so the
// check refuses it.
func WithOwned(owned func(name string) bool) HTTPOption {
	return func(h *HTTPHandler) { h.owned = owned }
}

// WithMaxBody limits the request body read into the check (default 8 KiB).
func WithMaxBody(n int64) HTTPOption { return func(h *HTTPHandler) { h.maxBody = n } }

// DefaultEnvoyUpstreamHeaders are the names the shipped Envoy http_service
// config copies upstream from an allow (authorization_response
// allowed_upstream_headers): exact names, or prefixes ending in "*".
var DefaultEnvoyUpstreamHeaders = []string{"x-deputy-*", "cache-control", "x-on-behalf-of"}

// WithEnvoyUpstreamHeaders tells Envoy's http_service endpoint which
// headers of an allow Envoy copies upstream (its allowed_upstream_headers,
// as exact names or prefixes ending in "*"); default
// DefaultEnvoyUpstreamHeaders. An allow whose policy sets another is
// refused: Envoy would drop it and the client's value would reach the
// application.
func WithEnvoyUpstreamHeaders(patterns []string) HTTPOption {
	return func(h *HTTPHandler) { h.envoyUpstream = slices.Clone(patterns) }
}

// headerMatches reports whether name matches one of patterns (exact
// names, or prefixes ending in "*"), in any letter case.
func headerMatches(patterns []string, name string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if len(name) >= len(prefix) && strings.EqualFold(name[:len(prefix)], prefix) {
				return true
			}
		} else if strings.EqualFold(name, p) {
			return true
		}
	}
	return false
}

// UncoveredUpstream returns the first name Deputy sets upstream on a
// delegated allow that patterns (http.envoy_upstream_headers) leave out,
// "" when none: every name under ownedPrefix, which only a prefix of it
// ending in "*" covers, and each of names (the actor-token and
// on-behalf-of headers). With such a list every delegated allow on
// Envoy's http_service endpoint is refused (envoyApplies); a deployment
// behind Envoy does not start with one instead.
func UncoveredUpstream(patterns []string, ownedPrefix string, names ...string) string {
	covered := false
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && len(prefix) <= len(ownedPrefix) && strings.EqualFold(ownedPrefix[:len(prefix)], prefix) {
			covered = true
			break
		}
	}
	if !covered {
		return strings.ToLower(ownedPrefix) + "*"
	}
	for _, n := range names {
		if !headerMatches(patterns, n) {
			return strings.ToLower(n)
		}
	}
	return ""
}

// HTTPHandler serves ext_authz over HTTP.
type HTTPHandler struct {
	checker   HTTPChecker
	prefix    string
	forwarded bool
	conv      convention
	owned     func(string) bool
	maxBody   int64
	// denialHeader: answer denials with DenialHeader too (nginx).
	denialHeader bool
	// applies is forwardedApplies, bound once rather than per check;
	// nil on Envoy's http_service endpoint, whose envoyApplies reads the
	// request too.
	applies func(*authz.Response) error
	// envoyUpstream: what Envoy's http_service copies upstream.
	envoyUpstream []string
}

// NewHTTPHandler returns the HTTP ext_authz handler.
func NewHTTPHandler(c HTTPChecker, opts ...HTTPOption) *HTTPHandler {
	h := &HTTPHandler{checker: c, maxBody: 8 << 10, envoyUpstream: DefaultEnvoyUpstreamHeaders}
	for _, o := range opts {
		o(h)
	}
	if h.forwarded {
		h.applies = h.forwardedApplies
	}
	return h
}

func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A refusal is decided through the pipeline's one exit too, so it is
	// logged and counted, and answered through the error table.
	var resp *authz.Response
	switch req, refusal := h.checkRequest(r); {
	case refusal != nil:
		resp = h.checker.Refuse(r.Context(), req, refusal)
	case h.forwarded:
		resp = h.checker.CheckEnforced(r.Context(), req, h.applies)
	default:
		sent := req.GetAttributes().GetRequest().GetHttp().GetHeaders()
		resp = h.checker.CheckEnforced(r.Context(), req, func(resp *authz.Response) error { return h.envoyApplies(resp, sent) })
	}
	out := w.Header()
	if resp.Allowed {
		for _, hd := range resp.Headers {
			out.Add(hd.Key, hd.Value)
		}
		for _, hd := range resp.Injected {
			out.Set(hd.Key, hd.Value)
		}
		for _, hd := range resp.ResponseHeadersToAdd {
			out.Add(ResponseHeaderPrefix+hd.Key, hd.Value)
		}
		removals := resp.HeadersToRemove
		if !h.forwarded {
			// Envoy's http_service: the client's headers of the families
			// nginx and Caddy clear by prefix go too (see clientPrefixed).
			c := newClientCopies(removals, resp.HeadersToRemove, resp.Headers, resp.Injected)
			for name := range r.Header {
				c.add(name)
			}
			removals = c.removals
		}
		if len(removals) > 0 {
			out.Set(HeadersToRemoveHeader, strings.Join(removals, ","))
		}
		out.Set("x-deputy-decision-id", resp.DecisionID)
		w.WriteHeader(http.StatusOK)
		return
	}
	out.Set("x-deputy-decision-id", resp.DecisionID)
	headers := resp.Headers
	if resp.Body != "" && !hasHeader(headers, "content-type") {
		headers = append(slices.Clip(headers), authz.Header{Key: "content-type", Value: "text/plain; charset=utf-8"})
	}
	h.deny(w, resp.HTTPStatus, headers, resp.Body)
}

// forwardedApplies reports what of an allow nginx auth_request, Caddy
// forward_auth or Traefik forwardAuth would drop. They copy from the
// check's answer only the headers their config names (the shipped ones:
// Deputy's delegated identity and cache-control, upstream and on the
// response) and strip owned headers themselves; nothing tells them to
// remove another header or to change the query. A policy that allows on
// such a condition (scrub x-user-role, drop ?admin) would have the
// application get the client's values, so the allow is refused instead.
func (h *HTTPHandler) forwardedApplies(resp *authz.Response) error {
	for _, hd := range resp.Headers {
		if !strings.EqualFold(hd.Key, "cache-control") {
			return fmt.Errorf("headers: %s is not copied upstream by %s", hd.Key, h.conv.proxy)
		}
	}
	for _, hd := range resp.ResponseHeadersToAdd {
		if !strings.EqualFold(hd.Key, "cache-control") {
			return fmt.Errorf("response_headers_to_add: %s is not added by %s", hd.Key, h.conv.proxy)
		}
	}
	for _, name := range resp.HeadersToRemove {
		if h.owned == nil || !h.owned(name) {
			return fmt.Errorf("request_headers_to_remove: %s is not removed by %s", name, h.conv.proxy)
		}
	}
	if len(resp.QueryParamsToSet) > 0 || len(resp.QueryParamsToRemove) > 0 {
		return fmt.Errorf("query_parameters_to_set/_remove: %s does not change the query", h.conv.proxy)
	}
	return nil
}

// envoyApplies reports what of an allow Envoy's http_service would drop.
// It copies upstream only the headers its allowed_upstream_headers names,
// and cannot change the query; it does remove the headers listed in
// x-envoy-auth-headers-to-remove. A policy that allows on setting another
// header (x-user-role: viewer over the client's admin) or on dropping a
// query parameter would have the application get the client's values, so
// the allow is refused instead. So is one whose delegated identity Envoy
// would drop: Deputy replaces the client's copy of an injected name rather
// than listing it for removal, so a name Envoy does not copy would reach
// the application as the client sent it (check.owned_prefix or
// partner.on_behalf_of_header changed, the Envoy config left behind).
// An owned header the client sent (sent: the request's headers, names in
// lower case, as Envoy sends them) under a name Deputy sets on this allow
// refuses it too: Envoy applies x-envoy-auth-headers-to-remove after the
// headers it copies, so listed, Deputy's own value would go as well, and
// not listed, the client's copy would stay wherever Envoy's config does
// not copy the name after all. Other spellings of it are listed for
// removal as usual, and the on-behalf-of header, which clients send, is
// replaced.
// Response headers a policy adds are not carried by http_service (see
// docs/deploy.md); they change only what the client is told, never what
// the application acts on.
func (h *HTTPHandler) envoyApplies(resp *authz.Response, sent map[string]string) error {
	for _, hd := range resp.Headers {
		if !headerMatches(h.envoyUpstream, hd.Key) {
			return fmt.Errorf("headers: %s is not among the headers Envoy's http_service copies upstream (http.envoy_upstream_headers)", hd.Key)
		}
	}
	for _, hd := range resp.Injected {
		if !headerMatches(h.envoyUpstream, hd.Key) {
			return fmt.Errorf("delegated identity: %s is not among the headers Envoy's http_service copies upstream (http.envoy_upstream_headers)", strings.ToLower(hd.Key))
		}
		if name := strings.ToLower(hd.Key); h.checker.Owned(name) {
			if _, ok := sent[name]; ok {
				return fmt.Errorf("delegated identity: the client sent its own %s, which Envoy's http_service cannot remove without Deputy's (it removes after copying)", name)
			}
		}
	}
	if len(resp.QueryParamsToSet) > 0 || len(resp.QueryParamsToRemove) > 0 {
		return errors.New("query_parameters_to_set/_remove: Envoy's http_service does not change the query")
	}
	return nil
}

// DenialHeader carries a denial's status, headers and body, for nginx, in
// one header of the check's answer (base64url of JSON {"status",
// "headers": [[name, value], ...], "body"}). auth_request keeps only the
// status of its subrequest; the shipped config renders the rest from this
// header (examples/nginx/deputy.js) instead of asking Deputy again.
const DenialHeader = "x-deputy-denial"

type denial struct {
	Status  int         `json:"status"`
	Headers [][2]string `json:"headers"`
	Body    string      `json:"body"`
}

// deny writes a denial, and for nginx its DenialHeader copy.
func (h *HTTPHandler) deny(w http.ResponseWriter, status int, headers []authz.Header, body string) {
	if !policy.DenialStatus(status) {
		// nginx and Caddy read a 2xx as an allow; the pipeline never
		// answers a denial with one, and this answer must not either.
		status = http.StatusForbidden
	}
	out := w.Header()
	for _, hd := range headers {
		out.Add(hd.Key, hd.Value)
	}
	if h.denialHeader {
		d := denial{Status: status, Headers: make([][2]string, len(headers)), Body: body}
		for i, hd := range headers {
			d.Headers[i] = [2]string{hd.Key, hd.Value}
		}
		if b, err := json.Marshal(d); err == nil {
			out.Set(DenialHeader, base64.RawURLEncoding.EncodeToString(b))
		}
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func hasHeader(hs []authz.Header, name string) bool {
	for _, h := range hs {
		if strings.EqualFold(h.Key, name) {
			return true
		}
	}
	return false
}

// checkRequest builds the CheckRequest Envoy would have sent over gRPC.
// With a refusal, the request is what could be read of it, for the log.
func (h *HTTPHandler) checkRequest(r *http.Request) (*authv3.CheckRequest, error) {
	// The request line as sent, as Envoy's :path is: r.URL.RequestURI()
	// re-escapes, and an absolute form is not what an upstream routes on.
	method, uri, host := r.Method, r.RequestURI, r.Host
	if uri == "" || uri[0] != '/' {
		uri = r.URL.RequestURI()
	}
	var refusal error
	if h.prefix != "" && !h.forwarded {
		// Trimmed without the "/" boundary, /authzfoo would be decided
		// as /foo; read as itself, a path without the prefix would be
		// decided on what Envoy never sent.
		if rest, ok := strings.CutPrefix(uri, h.prefix); ok && rest != "" && rest[0] == '/' {
			uri = rest
		} else {
			refusal = sidecar.Invalid("path", "%q is not http.path_prefix %q followed by a path starting with \"/\", as Envoy's http_service sends it", uri, h.prefix)
		}
	}
	if h.forwarded {
		method, uri, host, refusal = h.original(r)
	}
	headers := sidecar.HTTPHeaders(r.Header, 3)
	headers[":authority"] = host
	headers[":method"] = method
	headers[":path"] = uri
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if v := r.Header.Get("X-Forwarded-Proto"); v != "" && h.forwarded {
		scheme = v
	}
	if h.forwarded {
		// The proxy sends no body: the check is told the original body's
		// length, as Envoy would, so that a body-carried method override
		// it cannot read is accounted for (see authz). A length the proxy
		// did not state is unknown, read as a body that was not sent.
		delete(headers, "content-length")
		delete(headers, strings.ToLower(h.conv.length))
		if n, ok := originalLength(r.Header, h.conv.length); ok {
			headers["content-length"] = strconv.FormatInt(n, 10)
		} else {
			headers["transfer-encoding"] = "chunked"
		}
	}
	var body []byte
	if r.Body != nil && h.maxBody > 0 && refusal == nil {
		b, err := io.ReadAll(io.LimitReader(r.Body, h.maxBody+1))
		if err != nil {
			refusal = sidecar.Invalid("body", "cannot be read: %v", err)
		}
		if int64(len(b)) > h.maxBody {
			// Reported as truncated by content-length, and as Envoy's
			// partial body when the length was not given.
			b = b[:h.maxBody]
			headers["x-envoy-auth-partial-body"] = "true"
		}
		body = b
		if !h.forwarded && len(body) > 0 && (int64(len(body)) == h.maxBody || headers["content-type"] == "") {
			// Envoy's http_service sends at most max_request_bytes, with
			// Content-Length rewritten to what it sent, and only the
			// headers allowed_headers lists: a body of exactly the limit
			// may have been cut, and one without a type may be a form or
			// JSON whose type did not travel. Read as possibly partial,
			// so that a body-carried override is decided as every method.
			headers["x-envoy-auth-partial-body"] = "true"
		}
	}
	size := r.ContentLength
	if size < 0 {
		size = int64(len(body))
	}
	// A body that is not UTF-8 (a file upload, a gzip) goes in raw_body,
	// as Envoy's gRPC check sends it with pack_as_bytes and as Deputy
	// reads it from one without (see unmarshalWhole): body is a proto3
	// string, and a policy finds such a body in one place whatever the
	// transport.
	var text string
	var raw []byte
	if utf8.Valid(body) {
		text = string(body)
	} else {
		raw = body
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: peer(r.RemoteAddr),
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Now()),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:       r.Header.Get("X-Request-Id"),
				Method:   method,
				Headers:  headers,
				Path:     uri,
				Host:     host,
				Scheme:   scheme,
				Protocol: r.Proto,
				Size:     size,
				Body:     text,
				RawBody:  raw,
			},
		},
	}}, refusal
}

// original reads the request to decide from the trusted proxy's headers,
// refusing (EINVALID, naming the header) what that proxy does not set or
// strip. With a refusal, method, uri and host are the headers' first
// values, for the decision log only.
//
// The host is X-Forwarded-Host alone, which each convention's proxy sets
// from the host the client named (nginx's $host, Caddy's and Traefik's
// request host). A client naming none (HTTP/1.0 without Host) gets none
// from nginx and Traefik and an empty one from Caddy: the check then names
// no host, as an Envoy check naming none does. The check's own Host is the
// proxy's subrequest's (nginx's upstream name; the address Traefik, and
// Caddy for such a request, dial Deputy at): read instead, the request
// would be decided, logged and matched against sessions and
// storefront_hosts on a name the operator gave Deputy.
func (h *HTTPHandler) original(r *http.Request) (method, uri, host string, err error) {
	method, uri, host = r.Header.Get(h.conv.method), r.Header.Get(h.conv.uri), r.Header.Get("X-Forwarded-Host")
	for _, name := range originHeaders {
		if name != h.conv.method && name != h.conv.uri && name != h.conv.length && len(r.Header.Values(name)) > 0 {
			return method, uri, host, sidecar.Invalid(name, "not set by the proxy this check trusts (it reads %s and %s): refused", h.conv.method, h.conv.uri)
		}
	}
	if h.owned != nil {
		for name := range r.Header {
			if h.owned(name) {
				return method, uri, host, sidecar.Invalid(name, "a header only Deputy sets: the proxy must remove it from client requests")
			}
		}
	}
	for _, name := range [...]string{h.conv.method, h.conv.uri} {
		if err = single(r.Header, name); err != nil {
			return method, uri, host, err
		}
	}
	if uri[0] != '/' {
		return method, uri, host, sidecar.Invalid(h.conv.uri, "%q is not an origin-form request URI", uri)
	}
	if n := len(r.Header.Values("X-Forwarded-Host")); n > 1 {
		return method, uri, host, sidecar.Invalid("X-Forwarded-Host", "want at most one value set by the proxy, got %d", n)
	}
	if host != "" {
		// The check decides on this host (authz reads it strictly as the
		// check's host); refused here, the refusal names the header the
		// proxy copied the client's Host into.
		if _, err = sidecar.ParseHost(host); err != nil {
			return method, uri, host, sidecar.RefuseHost("X-Forwarded-Host", err)
		}
	}
	return method, uri, host, nil
}

// originalLength reads the original body's length from the header the
// proxy sets: exactly one non-negative number, or unknown.
func originalLength(hd http.Header, name string) (int64, bool) {
	if name == "" {
		return 0, false
	}
	vs := hd.Values(name)
	if len(vs) != 1 {
		return 0, false
	}
	n, err := strconv.ParseInt(vs[0], 10, 64)
	return n, err == nil && n >= 0
}

// single checks that a header the proxy sets has one non-empty value;
// none or several mean the proxy did not set it, or a client added one.
func single(h http.Header, name string) error {
	vs := h.Values(name)
	if len(vs) != 1 || vs[0] == "" {
		return sidecar.Invalid(name, "want exactly one value set by the proxy, got %d", len(vs))
	}
	return nil
}

func peer(addr string) *authv3.AttributeContext_Peer {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	p, _ := strconv.ParseUint(port, 10, 32)
	return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
		SocketAddress: &corev3.SocketAddress{Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}},
	}}}
}
