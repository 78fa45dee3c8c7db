package delegation_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/delegation"
)

func TestSafeRedirect(t *testing.T) {
	hosts := []string{"shop.example.com"}
	cases := []struct {
		name, in, want string
		ok             bool
	}{
		{"empty goes home", "", "/", true},
		{"relative path", "/checkout/cart?x=1", "/checkout/cart?x=1", true},
		{"allowed host", "https://shop.example.com/account", "https://shop.example.com/account", true},
		{"allowed host any case", "https://SHOP.example.com/", "https://SHOP.example.com/", true},
		{"scheme relative", "//evil.example/", "", false},
		{"backslash trick", "/\\evil.example", "", false},
		{"other host", "https://evil.example/", "", false},
		{"plain http", "http://shop.example.com/", "", false},
		{"userinfo", "https://shop.example.com@evil.example/", "", false},
		{"userinfo on allowed host", "https://x@shop.example.com/", "", false},
		{"javascript", "javascript:alert(1)", "", false},
		{"no slash", "evil.example", "", false},
		{"header injection", "/a\r\nSet-Cookie: x=1", "", false},
		{"suffix of allowed host", "https://evilshop.example.com/", "", false},
		{"allowed host with port", "https://shop.example.com:8443/", "", false},
		{"allowed host and another", "https://shop.example.com,evil.example/", "", false},
		{"allowed host, a port and another", "https://shop.example.com:443,evil.example/", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := delegation.SafeRedirect(tc.in, hosts)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("SafeRedirect(%q) = %q, %v", tc.in, got, err)
			}
		})
	}
}

// Whatever the input, the answer is a same-host path or an allowed host.
func FuzzSafeRedirect(f *testing.F) {
	for _, s := range []string{"/", "//x", "https://shop.example.com/", "/\\x", "https:/x", "\x00", "/%2F%2Fevil"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := delegation.SafeRedirect(in, []string{"shop.example.com"})
		if err != nil {
			return
		}
		if strings.HasPrefix(got, "/") {
			if strings.HasPrefix(got, "//") || strings.ContainsAny(got, "\\\r\n") {
				t.Fatalf("%q → %q leaves the host", in, got)
			}
			return
		}
		u, perr := url.Parse(got)
		if perr != nil || u.Scheme != "https" || !strings.EqualFold(u.Host, "shop.example.com") {
			t.Fatalf("%q → %q is not an allowed host", in, got)
		}
	})
}
