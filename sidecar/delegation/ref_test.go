package delegation_test

import (
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/delegation"
)

// Identifiers go into Redis keys inside hash tags and after fixed family
// prefixes, and into \x00-joined hash fields: braces and control
// characters would make a key or field read two ways, so they are
// refused; a colon cannot, and namespaced identities need it.
func TestValidRef(t *testing.T) {
	for _, tc := range []struct {
		name, ref string
		ok        bool
	}{
		{name: "plain", ref: "acme", ok: true},
		{name: "namespaced", ref: "partner:acme", ok: true},
		{name: "namespaced domain", ref: "vendor:shopa.example", ok: true},
		{name: "empty", ref: ""},
		{name: "too long", ref: strings.Repeat("a", 257)},
		{name: "hash tag open", ref: "partner:{acme"},
		{name: "hash tag close", ref: "acme}:grants"},
		{name: "space", ref: "partner: acme"},
		{name: "field separator", ref: "acme\x00pat"},
		{name: "delete", ref: "acme\x7f"},
		{name: "c1 control", ref: "acme\u009b"},
		{name: "bidi override", ref: "acme\u202e"},
		{name: "bidi isolate", ref: "\u2067acme"},
		{name: "non-ascii letters", ref: "société", ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := delegation.ValidRef("customer", tc.ref); (err == nil) != tc.ok {
				t.Fatalf("ValidRef(%q) = %v, want ok %v", tc.ref, err, tc.ok)
			}
		})
	}
}
