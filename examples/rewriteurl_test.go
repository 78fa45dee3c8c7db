package examples_test

import (
	"net/http"
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
