package sidecar

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
)

// Host is the host of an HTTP request as Deputy decides on it: the one
// form every check, session binding, storefront and redeem comparison and
// decision record uses.
type Host struct {
	// Name is a registered name in lower case without its trailing dot,
	// an IPv4 address, or an IPv6 literal in brackets in its canonical
	// form ("[2001:db8::1]").
	Name string
	// Port is the decimal port the host named, without leading zeros;
	// empty when it named none.
	Port string
}

// String is the host as name[:port].
func (h Host) String() string {
	if h.Port == "" {
		return h.Name
	}
	return h.Name + ":" + h.Port
}

// ParseHost reads an HTTP host (a Host header, Envoy's :authority, a
// proxy's X-Forwarded-Host) strictly: a registered name (letters, digits,
// "-", "_" (Docker Compose service names hold it) and "." between
// non-empty labels, in any case, with at most one trailing dot), an IPv4
// address, or an IPv6 literal in brackets without a zone, then optionally
// ":" and a decimal port from 1 to 65535 (not an empty one, which Rack
// reads as part of the name). Nothing else: proxies and applications read other forms apart. Go's HTTP server
// (Caddy) accepts "," and ";" in Host, Rails' request.host and werkzeug's
// ProxyFix read the last comma-separated value of X-Forwarded-Host, nginx
// cuts at the first ":", and a reader cutting at the last ":" finds yet
// another host in "shop.example:1,admin.example". No browser sends such a
// form, so it is refused rather than read leniently.
func ParseHost(s string) (Host, error) {
	if s == "" {
		return Host{}, errors.New("empty")
	}
	var h Host
	rest := s
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return Host{}, errors.New(`an IPv6 literal without its closing "]"`)
		}
		a, err := netip.ParseAddr(s[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return Host{}, errors.New("not an IPv6 address (without a zone) between brackets")
		}
		h.Name, rest = "["+a.String()+"]", s[end+1:]
		if rest != "" && rest[0] != ':' {
			return Host{}, errors.New(`an IPv6 literal followed by something other than ":" and a port`)
		}
	} else {
		name := s
		if i := strings.IndexByte(s, ':'); i >= 0 {
			name, rest = s[:i], s[i:]
		} else {
			rest = ""
		}
		var ok bool
		if h.Name, ok = regName(name); !ok {
			return Host{}, errors.New(`not a host name: letters, digits, "-", "_" and "." between non-empty labels`)
		}
	}
	if rest != "" {
		p, ok := port(rest[1:])
		if !ok {
			return Host{}, errors.New(`":" not followed by a decimal port from 1 to 65535, and nothing more`)
		}
		h.Port = p
	}
	return h, nil
}

// RefuseHost is the refusal (EINVALID: 400 malformed_request) of a host
// that ParseHost refused with err, on the field or header that named it.
func RefuseHost(field string, err error) error {
	return Invalid(field, `not a host (a host name, an IPv4 address or a bracketed IPv6 literal, optionally ":" and a port from 1 to 65535): %v. Refused: proxies and applications read such a form as different hosts`, err)
}

// HostName is ParseHost's Name, or "" when s is not a host ParseHost
// accepts: what a session is bound to and storefront hosts are compared
// on (browsers ignore ports for cookies).
func HostName(s string) string {
	h, err := ParseHost(s)
	if err != nil {
		return ""
	}
	return h.Name
}

// regName returns s lower-cased without one trailing dot, and whether it
// is a registered name of non-empty labels of letters, digits, "-" and
// "_".
func regName(s string) (string, bool) {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return "", false
	}
	upper, label := false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			label++
		case c >= 'A' && c <= 'Z':
			upper = true
			label++
		case c == '.':
			if label == 0 {
				return "", false
			}
			label = 0
		default:
			return "", false
		}
	}
	if label == 0 {
		return "", false
	}
	if upper {
		s = strings.ToLower(s)
	}
	return s, true
}

// port returns the decimal port s names without leading zeros, and
// whether s is one to five digits naming 1 to 65535.
func port(s string) (string, bool) {
	if len(s) == 0 || len(s) > 5 {
		return "", false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return "", false
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 || n > 65535 {
		return "", false
	}
	if s[0] != '0' {
		return s, true
	}
	return strconv.Itoa(n), true
}
