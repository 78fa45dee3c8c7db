package envoy

import (
	"strings"
	"unicode"

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

// clientCopies lists for removal the client's copies of what an answer
// sets, removes or clears by family (see add), one header name at a time.
// A client chooses how many headers it sends, and how many of them the
// answer removes (every one under the owned prefix): past a few, the
// answer's removals and the list built are looked up in maps keyed by
// spelling rather than searched, so that n headers cost n lookups, not
// n² comparisons (a gRPC check of 20,000 owned headers took seconds). The
// few of the common case allocate nothing.
type clientCopies struct {
	removals []string          // the list built: the answer's, then the client's copies
	removed  []string          // the answer's own list of removals
	set      [2][]authz.Header // what the answer sets: its policy's and Deputy's own
	copied   bool              // removals is no longer the answer's slice
	respelt  map[string]spelt  // removed, by folded; nil while removed is short
	listed   map[string]bool   // removals, by foldKey; nil while removals is short
}

// spelt is what removed holds of one folded name: the foldKey of the
// first spelling seen, and whether another spelling reads otherwise with
// letter case ignored (strings.EqualFold).
type spelt struct {
	key   string
	mixed bool
}

// shortList is how many names a list may hold and still be searched
// rather than indexed.
const shortList = 16

// newClientCopies starts from removals, the answer's removals as rendered;
// removed is the answer's own list; headers and injected are what it sets
// (held in an array, not a slice, which would be allocated for each check).
func newClientCopies(removals, removed []string, headers, injected []authz.Header) clientCopies {
	c := clientCopies{removals: removals, removed: removed, set: [2][]authz.Header{headers, injected}}
	if len(removed) > shortList {
		c.respelt = make(map[string]spelt, len(removed))
		for _, n := range removed {
			f, k := folded(n), foldKey(n)
			if sp, ok := c.respelt[f]; !ok {
				c.respelt[f] = spelt{key: k}
			} else if !sp.mixed && sp.key != k {
				c.respelt[f] = spelt{key: sp.key, mixed: true}
			}
		}
	}
	return c
}

// add lists name, as sent, for removal when it is of a cleared family or
// another spelling of a header the answer sets (respelled) or removes
// (respelledName), not listed yet, and not a name the answer sets (Envoy
// removes after it sets, so listing it would remove the policy's or
// Deputy's own value; setting it already replaces the client's). Nothing
// is allocated for the common name, and removals is copied before the
// first addition, so a response's own list is never written through.
func (c *clientCopies) add(name string) {
	if !clientPrefixed(name) && !respelled(name, c.set[:]) && !c.respelledName(name) {
		return
	}
	for _, hs := range c.set {
		for _, h := range hs {
			if strings.EqualFold(h.Key, name) {
				return
			}
		}
	}
	lower := strings.ToLower(name)
	if c.listed == nil && len(c.removals) > shortList {
		c.listed = make(map[string]bool, 2*len(c.removals))
		for _, s := range c.removals {
			c.listed[foldKey(s)] = true
		}
	}
	if c.listed != nil {
		k := foldKey(lower)
		if c.listed[k] {
			return
		}
		c.listed[k] = true
	} else {
		for _, s := range c.removals {
			if strings.EqualFold(s, lower) {
				return
			}
		}
	}
	if !c.copied {
		c.removals = append(make([]string, 0, len(c.removals)+2), c.removals...)
		c.copied = true
	}
	c.removals = append(c.removals, lower)
}

// respelledName is respelledName(name, c.removed), looked up once removed
// is long: names of one folded spelling are another spelling of name when
// one of them is not name with letter case ignored. EqualFold is equality
// of foldKey, so one spelling (the first) and whether any other differs
// from it tell that.
func (c *clientCopies) respelledName(name string) bool {
	if c.respelt == nil {
		return respelledName(name, c.removed)
	}
	if proxys(name) {
		return false
	}
	sp, ok := c.respelt[folded(name)]
	return ok && (sp.mixed || sp.key != foldKey(name))
}

// folded is name as foldedEqual reads it: ASCII letters in lower case and
// "_" as "-", every other byte as it is. Two names are foldedEqual exactly
// when their folded forms are equal.
func folded(name string) string {
	b := []byte(name)
	for i, c := range b {
		switch {
		case c == '_':
			b[i] = '-'
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// foldKey is s with each rune (an invalid byte read as U+FFFD, as
// strings.EqualFold reads it) replaced by the least rune of its simple
// case-folding orbit: two strings are strings.EqualFold exactly when
// their foldKeys are equal.
func foldKey(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}
