package sidecar_test

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

// The host a request is decided on is read strictly: a registered name, an
// IPv4 address or a bracketed IPv6 literal, optionally ":" and a decimal
// port. Anything else is a form proxies and applications read apart (Go
// accepts "," and ";" in Host; Rails and werkzeug's ProxyFix take the last
// comma-separated value of X-Forwarded-Host), so it is refused, never read
// leniently.
func TestParseHost(t *testing.T) {
	ok := []struct{ in, name, port string }{
		{"shop.example", "shop.example", ""},
		{"SHOP.Example", "shop.example", ""},
		{"shop.example.", "shop.example", ""},
		{"shop.example:8080", "shop.example", "8080"},
		{"Shop.Example.:443", "shop.example", "443"},
		{"localhost", "localhost", ""},
		{"xn--hop-wqa.example", "xn--hop-wqa.example", ""},
		{"a-b.c-d", "a-b.c-d", ""},
		{"127.0.0.1", "127.0.0.1", ""},
		{"127.0.0.1:65535", "127.0.0.1", "65535"},
		{"[::1]", "[::1]", ""},
		{"[::1]:8080", "[::1]", "8080"},
		{"[2001:DB8:0:0::1]:1", "[2001:db8::1]", "1"},
		{"shop.example:1", "shop.example", "1"},
		{"shop.example:00080", "shop.example", "80"},
		// Docker Compose service names may hold "_".
		{"shop_web:8080", "shop_web", "8080"},
		{"Shop_Web", "shop_web", ""},
	}
	for _, tc := range ok {
		t.Run(tc.in, func(t *testing.T) {
			h, err := sidecar.ParseHost(tc.in)
			if err != nil {
				t.Fatalf("ParseHost(%q): %v", tc.in, err)
			}
			if h.Name != tc.name || h.Port != tc.port {
				t.Fatalf("ParseHost(%q) = %q port %q, want %q port %q", tc.in, h.Name, h.Port, tc.name, tc.port)
			}
			if again, err := sidecar.ParseHost(h.String()); err != nil || again != h {
				t.Fatalf("ParseHost(%q) of its own form %q = %+v, %v", tc.in, h.String(), again, err)
			}
		})
	}
	refused := []string{
		"",
		"shop.example:1,admin.example",
		"shop.example:,admin.example",
		"shop.example,admin.example",
		"shop.example:80 admin.example",
		"shop.example;admin.example",
		"shop.example:80;x",
		"shop.example:",
		"[::1]:",
		"shop.example:0",
		"shop.example:65536",
		"shop.example:123456",
		"shop.example:+80",
		"shop.example:-1",
		"shop.example:80:81",
		"shop.example:8o",
		"shop.example..",
		"shop..example",
		".shop.example",
		".",
		":80",
		"shop.example ",
		" shop.example",
		"shop.example\x00",
		"shop.example\t",
		"user@shop.example",
		"shop.example/path",
		"shop.example?x",
		"shop.example#x",
		"shop.example%2e",
		"ſhop.example",
		"[shop.example]",
		"[::1",
		"::1",
		"[::1]x",
		"[::1]:0",
		"[fe80::1%25eth0]",
		"[fe80::1%eth0]",
		"[127.0.0.1]",
		"[v1.x]",
		"[::1]]",
		"[[::1]]",
	}
	for _, in := range refused {
		t.Run("refused "+strconv.Quote(in), func(t *testing.T) {
			if h, err := sidecar.ParseHost(in); err == nil {
				t.Fatalf("ParseHost(%q) = %+v, want it refused", in, h)
			}
			if got := sidecar.HostName(in); got != "" {
				t.Fatalf("HostName(%q) = %q, want none", in, got)
			}
		})
	}
}

// The rules, spelled a second way: a registered name (letters, digits,
// "-", "_", non-empty labels, one trailing dot dropped), or a bracketed
// IPv6 literal without a zone; optionally ":" and a decimal port 1-65535.
var (
	regName  = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$`)
	withPort = regexp.MustCompile(`(?s)^(.*?)(?::([0-9]{1,5}))?$`)
)

func referenceHost(s string) (name, port string, ok bool) {
	m := withPort.FindStringSubmatch(s)
	host, port := m[1], m[2]
	if port != "" {
		n, _ := strconv.Atoi(port)
		if n < 1 || n > 65535 {
			return "", "", false
		}
		port = strconv.Itoa(n)
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", "", false
		}
		return "[" + a.String() + "]", port, true
	}
	if !regName.MatchString(host) {
		return "", "", false
	}
	return strings.ToLower(strings.TrimSuffix(host, ".")), port, true
}

func FuzzParseHost(f *testing.F) {
	for _, s := range []string{
		"shop.example", "SHOP.example.:8080", "shop.example:1,admin.example", "shop.example:80 admin",
		"[::1]:443", "[fe80::1%25eth0]", "127.0.0.1:0", "a..b", "x:65536", "x:", "[::ffff:1.2.3.4]",
		"shop.example;x", "ſhop", "a:1:2", "\n", "shop.example\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := sidecar.ParseHost(s)
		name, port, ok := referenceHost(s)
		if (err == nil) != ok {
			t.Fatalf("ParseHost(%q) = %+v, %v; the rules say accepted=%v", s, h, err, ok)
		}
		if !ok {
			if got := sidecar.HostName(s); got != "" {
				t.Fatalf("HostName(%q) = %q, want none", s, got)
			}
			return
		}
		if h.Name != name || h.Port != port {
			t.Fatalf("ParseHost(%q) = %q port %q, the rules say %q port %q", s, h.Name, h.Port, name, port)
		}
		if got := sidecar.HostName(s); got != name {
			t.Fatalf("HostName(%q) = %q, want %q", s, got, name)
		}
		// The decided form reads back as itself, and holds nothing a
		// reader could cut elsewhere.
		if again, err := sidecar.ParseHost(h.String()); err != nil || again != h {
			t.Fatalf("ParseHost(%q) of its form %q = %+v, %v", s, h.String(), again, err)
		}
		if strings.ContainsAny(h.String(), ",; \t@/?#%\\") {
			t.Fatalf("ParseHost(%q) keeps a separator: %q", s, h.String())
		}
	})
}
