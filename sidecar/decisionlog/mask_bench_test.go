package decisionlog

import (
	"context"
	"testing"
)

// The name match runs for every header and query parameter of every
// logged check: it allocates nothing.
func TestSecretNameAllocatesNothing(t *testing.T) {
	names := []string{"x-goog-iap-jwt-assertion", "user-agent", "accessKey", "keyboard", "SAMLResponse", ":authority"}
	if n := testing.AllocsPerRun(100, func() {
		for _, name := range names {
			secretName(name)
		}
	}); n != 0 {
		t.Errorf("secretName allocated %v times per run", n)
	}
	// Nor does looking for other spellings of a name that has none.
	m := newMasker(Defaults())
	if n := testing.AllocsPerRun(100, func() {
		for _, name := range names {
			m.secretHeader(name)
			m.credentialParam(name)
		}
	}); n != 0 {
		t.Errorf("matching names that need no decoding allocated %v times per run", n)
	}
}

// BenchmarkMask masks the input of a typical browser check: a dozen
// headers, a credential among them, and a query with one.
func BenchmarkMask(b *testing.B) {
	m := newMasker(Defaults())
	const path = "/shop/cart;v=2?page=3&sort=price&access_token=abc"
	b.ReportAllocs()
	for range b.N {
		in := map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"method": "GET", "path": path, "headers": map[string]any{
				":authority": "shop.example", ":method": "GET", ":path": path, "accept": "text/html",
				"accept-language": "en", "user-agent": "Mozilla/5.0", "authorization": "Bearer x",
				"x-request-id": "r-1", "x-forwarded-for": "10.0.0.1", "referer": "https://shop.example/",
				"x-amzn-trace-id": "Root=1", "sec-fetch-mode": "navigate",
			},
		}}}}
		m.mask(context.Background(), &Record{}, in, nil)
	}
}

// BenchmarkMaskJSONState masks a query whose OAuth state is JSON with no
// credential, percent-encoded as browsers send it: read whole, at every
// level of decoding, and kept.
func BenchmarkMaskJSONState(b *testing.B) {
	m := newMasker(Defaults())
	const path = "/oauth/callback?code=abc&state=%7B%22return%22%3A%22%2Fshop%2Fcart%3Fpage%3D3%22%2C%22nonce%22%3A%22n-0S6_WzA2Mj%22%2C%22lang%22%3A%22en%22%7D"
	b.ReportAllocs()
	for range b.N {
		in := map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"method": "GET", "path": path, "headers": map[string]any{":path": path, "user-agent": "Mozilla/5.0"},
		}}}}
		m.mask(context.Background(), &Record{}, in, nil)
	}
}
