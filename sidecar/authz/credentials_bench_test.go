package authz

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/deputyhq/deputy/sidecar"
)

// The carriers of a request holding no "eyJ" and no escape are looked
// through without allocating: this runs on every check.
func BenchmarkCredentialCarriersClean(b *testing.B) {
	c, err := ParseCredentialCarriers(DefaultCredentialCarriers())
	if err != nil {
		b.Fatal(err)
	}
	headers := map[string]string{
		":authority": "shop.example.com", ":method": "POST", ":path": "/checkout/cart/add?product=42&qty=1",
		"accept": "text/html,application/xhtml+xml", "accept-language": "en-GB,en;q=0.9",
		"cookie":       "deputy_session=0123456789abcdef0123456789abcdef; cart=abc123; theme=dark",
		"content-type": "application/x-www-form-urlencoded", "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
		"x-request-id": "8f4c1e2a-6b1d-4c3e-9a57-3f0e2d1c4b5a",
	}
	view := &sidecar.Request{Method: "POST", Path: "/checkout/cart/add", Headers: headers, PlainNames: true}
	h := &authv3.AttributeContext_HttpRequest{Method: "POST", Path: headers[":path"], Headers: headers, Body: "product=42&qty=1&form_key=Xy12Ab34"}
	verified := func() string { return "" }
	b.ReportAllocs()
	for b.Loop() {
		if c.refused(view, h, verified) {
			b.Fatal("refused")
		}
	}
}
