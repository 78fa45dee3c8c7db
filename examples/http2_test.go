package examples_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// http2Proxies start the shipped proxy configs with HTTP/2 turned on (as
// every TLS deployment turns it on: nginx's listen ... http2, Caddy's
// default), over cleartext so the test needs no certificate. start returns
// the proxy's HTTP/1.1 base URL and its HTTP/2 one.
var http2Proxies = []struct {
	name  string
	start func(t *testing.T, d *deputy, app *upstream) (h1, h2 string)
}{
	{name: "nginx", start: func(t *testing.T, d *deputy, app *upstream) (string, string) {
		h2 := freeAddr(t)
		return startNginxWith(t, d, app, "\n        listen "+h2+" http2;"), "http://" + h2
	}},
	{name: "caddy", start: func(t *testing.T, d *deputy, app *upstream) (string, string) {
		base := startCaddyWith(t, d, app, "auto_https off", "auto_https off\n\tservers {\n\t\tprotocols h1 h2c\n\t}")
		return base, base
	}},
}

// h2cClient speaks HTTP/2 over cleartext with prior knowledge, and
// nothing else: a request it sends is an HTTP/2 request.
func h2cClient() *http.Client {
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}, Timeout: 10 * time.Second}
}

// In HTTP/2 a body needs no content-length (its DATA frames end with the
// stream), so a form POST may come with neither a length nor a
// transfer-encoding, which in HTTP/1.1 would mean no body at all. The
// proxy still forwards the body, and a framework honouring _method runs
// _method=DELETE as a DELETE: the length the proxy tells Deputy must be
// unknown, never 0, so the POST is decided as every method an override
// could name, as a chunked one is over HTTP/1.1. A partner with update
// on service requests may POST one, not DELETE it.
func TestBodyOverridesOverHTTP2(t *testing.T) {
	for _, px := range http2Proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base, h2 := px.start(t, d, app)
			partner := partnerGrant(t, d, base, "update")
			client := h2cClient()
			for _, tc := range []struct {
				name, contentType, body string
				unknownLength, reaches  bool
			}{
				{name: "form _method without content-length", contentType: "application/x-www-form-urlencoded", body: "_method=DELETE", unknownLength: true},
				{name: "form _method with content-length", contentType: "application/x-www-form-urlencoded", body: "_method=DELETE"},
				{name: "no content type, without content-length", body: "_method=DELETE", unknownLength: true},
				{name: "content-length 0", reaches: true},
				{name: "a body frameworks do not read, without content-length", contentType: "application/octet-stream", body: "_method=DELETE", unknownLength: true, reaches: true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp, b, reached := postAsPartner(t, client, app, h2+"/customers/acme/service-requests/42", partner, tc.contentType, tc.body, tc.unknownLength)
					if resp.ProtoMajor != 2 {
						t.Fatalf("answered over %s, not HTTP/2", resp.Proto)
					}
					if reached != tc.reaches || reached != (resp.StatusCode == http.StatusOK) {
						t.Errorf("reached the application %v (status %d %s), want %v", reached, resp.StatusCode, b, tc.reaches)
					}
				})
			}
		})
	}
}
