package examples_test

import (
	"net/http"
	"strings"
	"testing"
)

// PHP (CGI, FPM, its built-in server) reads "." and " " in a header name
// as "_", so X.Deputy.Subject is $_SERVER['HTTP_X_DEPUTY_SUBJECT'] as
// X-Deputy-Subject is; Caddy passes such a name on as sent. A request with
// a header name that is not letters, digits, "-" and "_" never reaches the
// application through any shipped proxy (nginx drops such names, Deputy
// refuses them).
func TestHeaderNamesOutsideTokenLettersThroughProxy(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)
			for _, name := range []string{"X.Deputy.Subject", "X.On.Behalf.Of", "X.HTTP.Method.Override", "X.Original.URL", "X-Deputy.Mode"} {
				t.Run(name, func(t *testing.T) {
					h := http.Header{}
					h[name] = []string{"victim"}
					resp, body := call(t, "GET", base+"/catalog/shoes", h, nil)
					if resp.StatusCode >= 400 {
						return // refused
					}
					s := decodeSeen(t, resp, body)
					for k := range s.Headers {
						if strings.EqualFold(k, name) {
							t.Errorf("the application got %s: %q", k, s.Headers[k])
						}
					}
				})
			}
		})
	}
}
