package envoy

import (
	"strings"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// Envoy removes request headers by exact name only, so the shipped Envoy
// configs clear every spelling of the client headers they list (see
// examples/envoycheck.ClientHeaders), while nginx and Caddy clear whole
// families by prefix: X-Forwarded-*, X-Auth-Request-* and Remote-*. Other
// names of those families (X-Auth-Request-Redirect, Remote-Addr,
// X-Forwarded-Uid) are what authenticating proxies and applications
// behind them trust for the user or the client, and a client must no more
// name them behind Envoy than behind nginx. Deputy sees every header of
// the request, so on Envoy it lists the client's copies for removal
// itself: in headers_to_remove over gRPC, in
// x-envoy-auth-headers-to-remove over http_service.

// clearedPrefixes are the families, as spelled with "-" in lower case.
var clearedPrefixes = [...]string{"x-forwarded-", "x-auth-request-", "remote-"}

// proxyOwn are the names of those families that Envoy sets itself, as it
// sends them (its own view of the peer and scheme, and the client
// certificate it verified): the client's copy is replaced or sanitized by
// Envoy, and removing the name would remove Envoy's value.
var proxyOwn = [...]string{"x-forwarded-for", "x-forwarded-proto", "x-forwarded-client-cert"}

// clientPrefixed reports whether name, as a client sent it through Envoy,
// is of a cleared family: letter case ignored, "_" read as "-" (CGI, PHP
// and WSGI upstreams read both as one name), bar Envoy's own names.
func clientPrefixed(name string) bool {
	if len(name) < len("remote-") {
		return false
	}
	// Most names start with neither letter: one comparison for them.
	if c := name[0] | 0x20; c != 'x' && c != 'r' {
		return false
	}
	for _, p := range clearedPrefixes {
		if len(name) > len(p) && sameSpelling(name[:len(p)], p) {
			// Envoy's own in any letter case (Go's server canonicalizes
			// its lower-case names on http_service), but not in "_".
			return !proxys(name)
		}
	}
	return false
}

// sameSpelling reports whether s reads as p (lower case, "-") with letter
// case ignored and "_" read as "-".
func sameSpelling(s, p string) bool {
	for i := range len(p) {
		c := s[i]
		if c == '_' {
			c = '-'
		} else if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != p[i] {
			return false
		}
	}
	return true
}

// respelled reports whether a client's header name is another spelling of
// a name the answer sets: the same once letter case is ignored and "_" is
// read as "-", but not the same name. Envoy sets (overwrites) and removes
// by name alone, so a client's x_current_user stayed beside the
// x-current-user a policy set from the verified token, and CGI, PHP and
// WSGI upstreams read both as HTTP_X_CURRENT_USER.
func respelled(name string, set [][]authz.Header) bool {
	if proxys(name) {
		return false
	}
	for _, hs := range set {
		for _, h := range hs {
			if len(h.Key) == len(name) && !strings.EqualFold(h.Key, name) && foldedEqual(h.Key, name) {
				return true
			}
		}
	}
	return false
}

// respelledName reports whether a client's header name is another
// spelling of one of names (see respelled): a policy that removes
// x-user-role means the client's x_user_role too, which Envoy, removing by
// name, leaves for CGI, PHP and WSGI to read as HTTP_X_USER_ROLE.
func respelledName(name string, names []string) bool {
	if proxys(name) {
		return false
	}
	for _, n := range names {
		if len(n) == len(name) && !strings.EqualFold(n, name) && foldedEqual(n, name) {
			return true
		}
	}
	return false
}

// proxys reports whether name is one Envoy sets itself (proxyOwn), in any
// letter case: Envoy's own value, which a policy's x_forwarded_for does
// not name.
func proxys(name string) bool {
	for _, own := range proxyOwn {
		if strings.EqualFold(name, own) {
			return true
		}
	}
	return false
}

// foldedEqual reports whether two names of one length read alike with
// letter case ignored and "_" read as "-".
func foldedEqual(a, b string) bool {
	for i := range len(a) {
		x, y := a[i], b[i]
		if x == '_' {
			x = '-'
		}
		if y == '_' {
			y = '-'
		}
		if x|0x20 != y|0x20 || x != y && (x|0x20 < 'a' || x|0x20 > 'z') {
			return false
		}
	}
	return true
}

// removeClientCopies is removals with name (as sent) added when it is of
// a cleared family or another spelling of a header the answer sets
// (respelled) or removes (respelledName: removed is the answer's own
// list), not listed yet, and not a name
// the answer sets (set: Envoy removes after it sets, so listing it would
// remove the policy's or Deputy's own value; setting it already replaces
// the client's). Nothing is allocated for the common name, and removals
// is copied before the first addition, so a response's own list is never
// written through.
func removeClientCopies(removals []string, copied *bool, name string, removed []string, set ...[]authz.Header) []string {
	if !clientPrefixed(name) && !respelled(name, set) && !respelledName(name, removed) {
		return removals
	}
	for _, hs := range set {
		for _, h := range hs {
			if strings.EqualFold(h.Key, name) {
				return removals
			}
		}
	}
	lower := strings.ToLower(name)
	for _, s := range removals {
		if strings.EqualFold(s, lower) {
			return removals
		}
	}
	if !*copied {
		removals = append(make([]string, 0, len(removals)+2), removals...)
		*copied = true
	}
	return append(removals, lower)
}
