package main

import (
	"net/http"
	"strings"
)

// httpRoutes dispatches Deputy's HTTP port on the path as sent.
// http.ServeMux answers "//customer/x" or "/a/../b" with a redirect to a
// cleaned path; a redirect is no decision, and the gRPC check decides
// (or refuses) the same request. So every path outside the API, the keys
// and the forwarded endpoint goes to the check unchanged.
type httpRoutes struct {
	checkPath string
	forwarded http.Handler // nil: no forwarded endpoint (http.check_proxy envoy)
	api       http.Handler
	apiPrefix string
	wellKnown http.Handler
	check     http.Handler
}

func (h *httpRoutes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case h.forwarded != nil && p == h.checkPath:
		h.forwarded.ServeHTTP(w, r)
	case strings.HasPrefix(p, h.apiPrefix):
		h.api.ServeHTTP(w, r)
	case strings.HasPrefix(p, "/.well-known/"):
		h.wellKnown.ServeHTTP(w, r)
	default:
		h.check.ServeHTTP(w, r)
	}
}
