package examples_test

import (
	"net/http"
	"strings"
	"testing"
)

// A client's X-Original-URL or X-Rewrite-URL makes legacy PHP upstreams
// (Zend Framework 1, Magento 1, Laminas and Symfony before 2018) route
// that path instead of the request line's: through the proxy it never
// reaches the application with a path Deputy did not decide on.
func TestURLRewriteHeadersThroughProxy(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)
			for _, name := range []string{"X-Original-Url", "X-Rewrite-Url"} {
				t.Run(name, func(t *testing.T) {
					before := app.count()
					resp, body := call(t, "GET", base+"/catalog/shoes", http.Header{name: {"/customer/account/password/"}}, nil)
					if resp.StatusCode < 400 || app.count() != before {
						t.Errorf("reached the application: %d %s", resp.StatusCode, body)
					}
				})
			}
		})
	}
}

// X-Original-URI is the name nginx auth_request setups give the original
// URI, and applications behind them route or log on it: a client's copy
// never reaches the application, in any spelling, while Deputy decided on
// the request line.
func TestClientOriginalURIDroppedByProxy(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)
			for _, name := range []string{"X-Original-Uri", "X_Original_Uri", "X-Original_Uri", "X_Original-Uri"} {
				t.Run(name, func(t *testing.T) {
					h := http.Header{}
					h[name] = []string{"/customer/account/password/"}
					resp, body := call(t, "GET", base+"/catalog/shoes", h, nil)
					s := decodeSeen(t, resp, body)
					for k := range s.Headers {
						if n := strings.ToLower(strings.ReplaceAll(k, "_", "-")); n == "x-original-uri" {
							t.Errorf("the application got %s: %q", k, s.Headers[k])
						}
					}
				})
			}
		})
	}
}
