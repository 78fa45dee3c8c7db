package envoy

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
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

// HTTPOption configures the HTTP check handler.
type HTTPOption func(*HTTPHandler)

// WithPathPrefix strips Envoy http_service's path_prefix from the path.
func WithPathPrefix(p string) HTTPOption {
	return func(h *HTTPHandler) { h.prefix = strings.TrimSuffix(p, "/") }
}

// WithForwardedRequest makes the handler take the original method and URI
// from the headers nginx (X-Original-Method, X-Original-URI) and Caddy
// (X-Forwarded-Method, X-Forwarded-Uri, X-Forwarded-Host) set. Only mount
// such a handler where the proxy, not the client, controls those headers.
func WithForwardedRequest() HTTPOption { return func(h *HTTPHandler) { h.forwarded = true } }

// WithMaxBody limits the request body read into the check (default 8 KiB).
func WithMaxBody(n int64) HTTPOption { return func(h *HTTPHandler) { h.maxBody = n } }

// HTTPHandler serves ext_authz over HTTP.
type HTTPHandler struct {
	checker   Checker
	prefix    string
	forwarded bool
	maxBody   int64
}

// NewHTTPHandler returns the HTTP ext_authz handler.
func NewHTTPHandler(c Checker, opts ...HTTPOption) *HTTPHandler {
	h := &HTTPHandler{checker: c, maxBody: 8 << 10}
	for _, o := range opts {
		o(h)
	}
	return h
}

func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := h.checkRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp := h.checker.Check(r.Context(), req)
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
		if len(resp.HeadersToRemove) > 0 {
			out.Set(HeadersToRemoveHeader, strings.Join(resp.HeadersToRemove, ","))
		}
		out.Set("x-deputy-decision-id", resp.DecisionID)
		w.WriteHeader(http.StatusOK)
		return
	}
	for _, hd := range resp.Headers {
		out.Add(hd.Key, hd.Value)
	}
	out.Set("x-deputy-decision-id", resp.DecisionID)
	if resp.Body != "" && out.Get("content-type") == "" {
		out.Set("content-type", "text/plain; charset=utf-8")
	}
	w.WriteHeader(resp.HTTPStatus)
	_, _ = io.WriteString(w, resp.Body)
}

// checkRequest builds the CheckRequest Envoy would have sent over gRPC.
func (h *HTTPHandler) checkRequest(r *http.Request) (*authv3.CheckRequest, error) {
	method, uri, host := r.Method, r.URL.RequestURI(), r.Host
	if h.prefix != "" {
		uri = strings.TrimPrefix(uri, h.prefix)
		if uri == "" || uri[0] != '/' {
			uri = "/" + uri
		}
	}
	if h.forwarded {
		if v := first(r.Header, "X-Original-Method", "X-Forwarded-Method"); v != "" {
			method = v
		}
		if v := first(r.Header, "X-Original-URI", "X-Forwarded-Uri"); v != "" {
			uri = v
		}
		if v := r.Header.Get("X-Forwarded-Host"); v != "" {
			host = v
		}
	}
	headers := make(map[string]string, len(r.Header)+3)
	for k, vs := range r.Header {
		headers[strings.ToLower(k)] = strings.Join(vs, ",")
	}
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
	var body []byte
	if r.Body != nil && h.maxBody > 0 {
		b, err := io.ReadAll(io.LimitReader(r.Body, h.maxBody+1))
		if err != nil {
			return nil, err
		}
		if int64(len(b)) > h.maxBody {
			b = b[:h.maxBody] // reported as truncated by content-length
		}
		body = b
	}
	size := r.ContentLength
	if size < 0 {
		size = int64(len(body))
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
				Body:     string(body),
			},
		},
	}}, nil
}

func first(h http.Header, names ...string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
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
