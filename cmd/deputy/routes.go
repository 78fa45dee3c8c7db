package main

import (
	"net/http"
	"strings"

	"github.com/deputyhq/deputy/sidecar/delegation"
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
	// Deputy's own paths are matched as sent: "/%64eputy/v1/x" decodes to
	// the API's path, and a proxy that routes on the path as sent would
	// take the API's answer for a check's. Such spellings are reserved.
	// The request line is read, not URL.EscapedPath, which escapes the
	// decoded path again when the one sent holds a byte Go would have
	// escaped ("/%64eputy/v1/x|" would read "/deputy/v1/x%7C").
	switch p, sent := r.URL.Path, sentPath(r.RequestURI); {
	case h.forwarded != nil && sent == h.checkPath:
		h.forwarded.ServeHTTP(w, r)
	case strings.HasPrefix(sent, h.apiPrefix):
		h.api.ServeHTTP(w, r)
	case strings.HasPrefix(sent, "/.well-known/"):
		h.wellKnown.ServeHTTP(w, r)
	case h.reserved(p):
		if _, ok := delegation.ExposedRedeemCodes(h.apiPrefix, r.URL.EscapedPath(), r.URL.RawQuery); ok {
			// A redeem link whose "?" came encoded: the API uses its
			// code up and refuses it, whatever the spelling of its path.
			h.api.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
	default:
		h.check.ServeHTTP(w, r)
	}
}

// sentPath is the path of a request line's target as sent: origin form
// ("/a?q") or absolute form ("http://host/a?q", RFC 9112 §3.2.2), which
// a server must accept too.
func sentPath(target string) string {
	target, _, _ = strings.Cut(target, "?")
	if strings.HasPrefix(target, "/") {
		return target
	}
	if _, rest, ok := strings.Cut(target, "://"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			return rest[i:]
		}
		return "/"
	}
	return target
}

// reserved reports whether p, decoded, is a spelling of one of Deputy's
// own paths that is not that path as sent: /Deputy/V1/x, //deputy/v1/x,
// /%64eputy/v1/x. A proxy
// that matched it as Deputy's (Caddy's path matcher folds case and merges
// slashes, then passes the path on as sent) would hand the client a check
// answer, delegated identity and actor token included. Such a path is
// never decided.
func (h *httpRoutes) reserved(p string) bool {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	c := strings.ToLower(b.String())
	return c == strings.ToLower(h.checkPath) || strings.HasPrefix(c, "/deputy/") || strings.HasPrefix(c, "/.well-known/")
}
