package examples_test

import (
	"net/http"
	"strings"
	"testing"
)

// TRACE makes an application that answers it echo the request it
// received, Deputy's actor token and session headers with it, to the
// client; TRACK is IIS's name for it. The proxies refuse both, on every
// route, before asking Deputy.
func TestTraceRefusedThroughProxy(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)
			session, _, _ := impersonate(t, d, base)
			staff := http.Header{"Cookie": {"deputy_session=" + session.Value}}
			if resp, body := call(t, "GET", base+"/customer/account", staff, nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("GET in the session: %d %s", resp.StatusCode, body)
			}
			// Caddy's method matcher is case-sensitive, while servers
			// behind it (hypercorn, for one) upper-case the method.
			for _, method := range []string{"TRACE", "TRACK", "trace", "Trace", "track", "tRaCk"} {
				for _, path := range []string{"/customer/account", "/catalog/shoes", "/deputy/v1/customers/c42", "/.well-known/jwks.json"} {
					t.Run(method+" "+path, func(t *testing.T) {
						before, decided := app.count(), d.decisions(t)
						resp, body := call(t, method, base+path, staff, nil)
						// nginx answers a method not in upper case 400.
						if resp.StatusCode != http.StatusMethodNotAllowed && (resp.StatusCode != http.StatusBadRequest || method == strings.ToUpper(method)) {
							t.Errorf("status %d %s, want 405", resp.StatusCode, body)
						}
						if strings.Contains(string(body), session.Value) || strings.Contains(strings.ToLower(string(body)), "x-deputy") {
							t.Errorf("the answer echoes the request: %s", body)
						}
						if app.count() != before {
							t.Error("the request reached the application")
						}
						if n := d.decisions(t) - decided; n != 0 {
							t.Errorf("Deputy decided it %v times", n)
						}
					})
				}
			}
		})
	}
}
