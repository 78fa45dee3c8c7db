package examples_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A request that names no host (HTTP/1.0 without Host) is decided on no
// host, as Envoy's check naming none is: nginx's $host is empty and the
// shipped config then sends no X-Forwarded-Host, Caddy sends an empty one,
// and the check's own Host is the proxy's subrequest's (nginx's upstream
// name, Caddy's address for Deputy), which the client never named. A
// request naming a host is still decided on it. The policy answers each
// probe with the host it saw as input.deputy.request.host.
func TestRequestNamingNoHostIsDecidedOnNone(t *testing.T) {
	dir := policyDir(t, "hostprobe", `package hostprobe

decision := {
	"allowed": false,
	"http_status": 403,
	"headers": {"x-decided-host": object.get(input.deputy.request, "host", "(none)")},
	"reason": "host_probe",
} if {
	startswith(input.deputy.request.path, "/host-probe/")
} else := data.deputy.authz.decision
`)
	cases := []struct {
		path, head    string
		input, logged string
	}{
		{path: "/host-probe/none", head: "HTTP/1.0\r\n", input: "(none)", logged: ""},
		{path: "/host-probe/http10", head: "HTTP/1.0\r\nHost: Shop.Example\r\n", input: "shop.example", logged: "shop.example"},
		{path: "/host-probe/http11", head: "HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n", input: "shop.example", logged: "shop.example"},
	}
	for _, px := range []proxy{{name: "nginx", start: startNginx}, {name: "caddy", start: startCaddyAnyHost}} {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputyWith(t, px.name, dir, "data.hostprobe.decision")
			app := startUpstream(t)
			base := px.start(t, d, app)
			for _, tc := range cases {
				resp, body := sendRaw(t, base, "GET "+tc.path+" "+tc.head+"\r\n")
				if resp.StatusCode != http.StatusForbidden || resp.Header.Get("x-decided-host") != tc.input {
					t.Errorf("%s: %d, policy saw host %q, want 403 and %q: %s", tc.path, resp.StatusCode, resp.Header.Get("x-decided-host"), tc.input, body)
				}
				if rec := d.decisionFor(t, tc.path); rec.Host != tc.logged || rec.Reason != "host_probe" {
					t.Errorf("%s: logged host %q (%s %s), want %q (deny host_probe)", tc.path, rec.Host, rec.Result, rec.Reason, tc.logged)
				}
			}
			if n := app.count(); n != 0 {
				t.Errorf("the application served %d denied requests", n)
			}
		})
	}
}

// sendRaw writes raw, a whole request, to the proxy and reads its answer.
func sendRaw(t *testing.T, base, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}
