package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Deputy's own paths are matched on the request line's target as sent, in
// origin form and in absolute form alike (RFC 9112 §3.2.2: a server must
// accept both); a spelling that only decodes to one of them is reserved.
func TestRoutesReadTheRequestLine(t *testing.T) {
	tag := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, name) })
	}
	h := &httpRoutes{checkPath: "/deputy/authz", forwarded: tag("forwarded"), api: tag("api"), apiPrefix: "/deputy/v1/",
		wellKnown: tag("keys"), check: tag("check")}
	srv := httptest.NewServer(h)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct{ target, want string }{
		{"/deputy/v1/customers/alice/consent", "api"},
		{"http://" + host + "/deputy/v1/customers/alice/consent", "api"},
		{"/deputy/authz", "forwarded"},
		{"http://" + host + "/deputy/authz", "forwarded"},
		{"/.well-known/jwks.json", "keys"},
		{"http://" + host + "/.well-known/jwks.json?x=1", "keys"},
		{"/customer/account", "check"},
		{"http://" + host + "/customer/account", "check"},
		{"/%64eputy/v1/customers", "404"},
		{"http://" + host + "/%64eputy/v1/customers", "404"},
		{"/%64eputy/v1/customers/bob|/consent", "404"},
		{"http://" + host + "/%64eputy/v1/x|", "404"},
	} {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", tc.target, host)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		c.Close()
		got := strings.TrimSpace(string(body))
		if resp.StatusCode == http.StatusNotFound {
			got = "404"
		}
		if got != tc.want {
			t.Errorf("%s: %q (%d), want %s", tc.target, got, resp.StatusCode, tc.want)
		}
	}
}
