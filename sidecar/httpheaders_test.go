package sidecar_test

import (
	"net/http"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

// Repeated headers are joined as Envoy joins them: cookie with "; ", so
// that an HTTP/1.1 client sending two Cookie headers is read as one cookie
// list (a "," join read "deputy_session=<token>,a=b" as the token), and
// every other name with ",".
func TestHTTPHeadersJoinRepeated(t *testing.T) {
	h := http.Header{}
	h.Add("Cookie", "deputy_session=tok")
	h.Add("Cookie", "a=b")
	h.Add("X-On-Behalf-Of", "acme")
	h.Add("X-On-Behalf-Of", "globex")
	got := sidecar.HTTPHeaders(h, 0)
	if got["cookie"] != "deputy_session=tok; a=b" {
		t.Errorf("cookie = %q, want %q", got["cookie"], "deputy_session=tok; a=b")
	}
	if got["x-on-behalf-of"] != "acme,globex" {
		t.Errorf("x-on-behalf-of = %q, want %q", got["x-on-behalf-of"], "acme,globex")
	}
}
