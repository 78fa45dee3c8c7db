package examples_test

import (
	"net/http"
	"testing"
)

// A login redirect whose Location carries the client's decoded ?next=
// value, and a denial header built from the query: a CR or LF in them
// never becomes a response header of the client's choosing. nginx replays
// a denial's headers byte for byte (deputy.js); Deputy refuses such a
// result as invalid_decision, and deputy.js drops such a header too.
func TestDenialHeadersNeverSplitTheResponse(t *testing.T) {
	dir := policyDir(t, "inj", `package inj

decision := {"allowed": false, "http_status": 302, "headers": {"location": concat("", ["/login?next=", urlquery.decode(split(input.attributes.request.http.path, "next=")[1])])}, "reason": "login_first"} if {
	input.deputy.request.path == "/sales/order/history"
} else := {"allowed": false, "http_status": 403, "headers": {"x-reason": urlquery.decode(split(input.attributes.request.http.path, "why=")[1])}, "body": "no\n", "reason": "nope"} if {
	input.deputy.request.path == "/sales/order/view"
} else := data.deputy.authz.decision
`)
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputyWith(t, px.name, dir, "data.inj.decision")
			url := px.start(t, d, startUpstream(t))
			tok := d.token(t, "--sub", "alice", "--roles", "customer")
			for _, p := range []string{
				"/sales/order/history?next=%2Fx%0D%0ASet-Cookie%3A%20pwned%3D1",
				"/sales/order/view?why=a%0D%0ASet-Cookie%3A%20pwned%3D2",
			} {
				resp, body := call(t, "GET", url+p, http.Header{"Authorization": {"Bearer " + tok}}, nil)
				if resp.StatusCode < 300 {
					t.Errorf("%s via %s: %d %s", p, px.name, resp.StatusCode, body)
				}
				if c := resp.Header.Values("Set-Cookie"); len(c) > 0 {
					t.Errorf("%s via %s: client got Set-Cookie %q injected through the denial", p, px.name, c)
				}
			}
		})
	}
}
