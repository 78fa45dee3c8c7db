package examples_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// A login redirect whose Location carries the client's decoded ?next=
// value, and a denial header built from the query: a CR or LF in them
// never becomes a response header of the client's choosing. nginx replays
// a denial's headers byte for byte (deputy.js); Deputy refuses such a
// result as invalid_decision, and deputy.js drops such a header too.
func TestDenialHeadersNeverSplitTheResponse(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "inj"), 0o755); err != nil {
		t.Fatal(err)
	}
	rego := `package inj

decision := {"allowed": false, "http_status": 302, "headers": {"location": concat("", ["/login?next=", urlquery.decode(split(input.attributes.request.http.path, "next=")[1])])}, "reason": "login_first"} if {
	input.deputy.request.path == "/sales/order/history"
} else := {"allowed": false, "http_status": 403, "headers": {"x-reason": urlquery.decode(split(input.attributes.request.http.path, "why=")[1])}, "body": "no\n", "reason": "nope"} if {
	input.deputy.request.path == "/sales/order/view"
} else := data.deputy.authz.decision
`
	if err := os.WriteFile(filepath.Join(dir, "inj", "inj.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, proxy := range []string{"nginx", "caddy"} {
		t.Run(proxy, func(t *testing.T) {
			d := startDeputyWith(t, proxy, dir, "data.inj.decision")
			app := startUpstream(t)
			base := startNginx
			if proxy == "caddy" {
				base = startCaddy
			}
			url := base(t, d, app)
			tok := d.token(t, "--sub", "alice", "--roles", "customer")
			for _, p := range []string{
				"/sales/order/history?next=%2Fx%0D%0ASet-Cookie%3A%20pwned%3D1",
				"/sales/order/view?why=a%0D%0ASet-Cookie%3A%20pwned%3D2",
			} {
				resp, body := call(t, "GET", url+p, http.Header{"Authorization": {"Bearer " + tok}}, nil)
				if resp.StatusCode < 300 {
					t.Errorf("%s via %s: %d %s", p, proxy, resp.StatusCode, body)
				}
				if c := resp.Header.Values("Set-Cookie"); len(c) > 0 {
					t.Errorf("%s via %s: client got Set-Cookie %q injected through the denial", p, proxy, c)
				}
			}
		})
	}
}
