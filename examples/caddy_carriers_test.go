package examples_test

import (
	"net/http"
	"strings"
	"testing"
)

// The shipped Caddyfile copies three of Deputy's answer headers under
// names of its own (X-Deputy-Cache-Control, X-Deputy-Response-Cache-Control,
// X-Deputy-On-Behalf-Of) only to set Cache-Control and X-On-Behalf-Of from
// them. They are Caddy's working copies: the application receives the
// headers they set, as behind nginx, and never the copies, in any
// spelling.
func TestCaddyCarrierHeadersStayWithCaddy(t *testing.T) {
	d := startDeputy(t, "caddy")
	app := startUpstream(t)
	base := startCaddy(t, d, app)
	session, _, _ := impersonate(t, d, base)
	partner := partnerGrant(t, d, base, "look")
	carriers := []string{"x-deputy-cache-control", "x-deputy-response-cache-control", "x-deputy-on-behalf-of"}
	for _, tc := range []struct {
		name, path string
		h          http.Header
		set        string // the header the carriers set, which must arrive
	}{
		{"impersonation", "/customer/account", http.Header{"Cookie": {"deputy_session=" + session.Value}}, "Cache-Control"},
		{"partner", "/customers/acme/service-requests/42", partner, "X-On-Behalf-Of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := call(t, "GET", base+tc.path, tc.h, nil)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("x-upstream") != "app" {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			got := decodeSeen(t, resp, body).Headers
			if len(got.Values(tc.set)) == 0 {
				t.Fatalf("the application did not receive %s: %v", tc.set, got)
			}
			for name := range got {
				n := strings.ReplaceAll(strings.ToLower(name), "_", "-")
				for _, c := range carriers {
					if n == c {
						t.Errorf("the application received Caddy's copy %s: %q", name, got[name])
					}
				}
			}
		})
	}
}
