package examples_test

import (
	"net/http"
	"testing"
)

// nginx auth_request and Caddy forward_auth let any 2xx answer of the
// check through to the application. A policy denial carrying a 2xx status
// (a soft block page, a 204 for a beacon) is an invalid decision: the
// client gets the error status and the application never sees the request.
// A redirect (to a login page) is a denial both proxies hand to the client.
func TestDenialStatusesNeverReachTheApp(t *testing.T) {
	dir := policyDir(t, "statuses", `package statuses

decision := {"allowed": false, "http_status": 200, "body": "account suspended", "reason": "suspended"} if {
	input.deputy.request.path == "/customer/account/orders"
} else := {"allowed": false, "http_status": 204, "reason": "beacon_blocked"} if {
	input.deputy.request.path == "/checkout/beacon"
} else := {"allowed": false, "http_status": 302, "headers": {"location": "/login?next=/sales"}, "reason": "login_first"} if {
	input.deputy.request.path == "/sales/order/history"
} else := data.deputy.authz.decision
`)
	cases := []struct {
		path, wantReason, wantLocation string
		wantStatus                     int
	}{
		{path: "/customer/account/orders", wantStatus: http.StatusForbidden, wantReason: "invalid_decision"},
		{path: "/checkout/beacon", wantStatus: http.StatusForbidden, wantReason: "invalid_decision"},
		{path: "/sales/order/history", wantStatus: http.StatusFound, wantReason: "login_first", wantLocation: "/login?next=/sales"},
	}
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputyWith(t, px.name, dir, "data.statuses.decision")
			app := startUpstream(t)
			url := px.start(t, d, app)
			tok := d.token(t, "--sub", "alice", "--roles", "customer")
			for _, tc := range cases {
				resp, body := call(t, "POST", url+tc.path, http.Header{"Authorization": {"Bearer " + tok}}, nil)
				rec := d.decisionFor(t, tc.path)
				if rec.Result != "deny" || rec.Reason != tc.wantReason {
					t.Errorf("%s: logged %s (%s), want deny (%s)", tc.path, rec.Result, rec.Reason, tc.wantReason)
				}
				if resp.StatusCode != tc.wantStatus || resp.Header.Get("Location") != tc.wantLocation {
					t.Errorf("%s: client got %d location %q, want %d %q; body %.80s", tc.path, resp.StatusCode, resp.Header.Get("Location"), tc.wantStatus, tc.wantLocation, body)
				}
			}
			if n := app.count(); n != 0 {
				t.Errorf("the application served %d denied requests", n)
			}
		})
	}
}
