package examples_test

import (
	"net/http"
	"strings"
	"testing"
)

// onBehalfValues are the values the application received under any name
// it may read as X-On-Behalf-Of (CGI and PHP fold "_" into "-").
func onBehalfValues(h http.Header) []string {
	var out []string
	for name, vals := range h {
		if strings.ReplaceAll(strings.ToLower(name), "_", "-") == "x-on-behalf-of" {
			out = append(out, vals...)
		}
	}
	return out
}

// The on-behalf-of header is chosen by the client, so it reaches the
// application only as Deputy decided it: the customer of the partner
// grant the request was allowed on, and nothing on any other request,
// whatever spelling the client used.
func TestOnBehalfOfThroughProxy(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)
			session, _, _ := impersonate(t, d, base)
			partner := partnerGrant(t, d, base, "look")
			with := func(h http.Header, kv ...string) http.Header {
				out := http.Header{}
				for k, v := range h {
					out[k] = v
				}
				for i := 0; i < len(kv); i += 2 {
					out[kv[i]] = append(out[kv[i]], kv[i+1]) // as spelled, not canonicalised
				}
				return out
			}
			for _, tc := range []struct {
				name, path string
				h          http.Header
				want       string // the value the application may see, "" none
			}{
				{"partner acting for its customer", "/customers/acme/service-requests/42", partner, "acme"},
				{"partner, an underscore spelling naming another customer", "/customers/acme/service-requests/42",
					with(partner, "X_On_Behalf_Of", "globex"), "acme"},
				{"partner, an underscore spelling alone", "/customers/acme/service-requests/42",
					with(partner, "x_on_behalf_of", "globex"), "acme"},
				{"anonymous public page naming a customer", "/catalog/shoes", with(nil, "X-On-Behalf-Of", "acme"), ""},
				{"anonymous public page, underscore spelling", "/catalog/shoes", with(nil, "X_ON_BEHALF_OF", "acme"), ""},
				{"impersonation naming another customer", "/customer/account",
					with(http.Header{"Cookie": {"deputy_session=" + session.Value}}, "X-On-Behalf-Of", "globex"), ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					before := app.count()
					resp, body := call(t, "GET", base+tc.path, tc.h, nil)
					if resp.StatusCode >= 400 {
						// A refusal is fine; reaching the application is not.
						if app.count() != before {
							t.Fatalf("refused with %d but reached the application", resp.StatusCode)
						}
						return
					}
					if resp.StatusCode != http.StatusOK || resp.Header.Get("x-upstream") != "app" {
						t.Fatalf("status %d: %s", resp.StatusCode, body)
					}
					got := onBehalfValues(decodeSeen(t, resp, body).Headers)
					if tc.want == "" && len(got) > 0 || tc.want != "" && (len(got) != 1 || got[0] != tc.want) {
						t.Errorf("application received on-behalf-of %q, want %q", got, tc.want)
					}
				})
			}
		})
	}
}
