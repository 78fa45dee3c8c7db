package identity_test

import (
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/identity"
)

// containsFold answers as a plain search of the ASCII-lower-cased value
// does, for every word the bearer check asks about, whatever bytes the
// value holds (its word-at-a-time test may only err towards looking
// closer). "ſ" and "K" (Kelvin) fold to "s" and "k" in strings.EqualFold
// but in no upstream's scheme comparison: they do not match here.
func FuzzContainsFold(f *testing.F) {
	for _, s := range []string{"", "b", "Bearer x", "xxxxxxxbearer", "xxxxxxxBEARE", "bbbbbbbbbbbbbbbbasic", "Basi\u017fc",
		"\x42\x62\xc2\xe2BASIC", "negotiate YII", strings.Repeat("b", 64) + "EARER", "bea\x00rer", "\xff\xdf\xdfbasic\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lower := []byte(s)
		for i, c := range lower {
			if c >= 'A' && c <= 'Z' {
				lower[i] = c + 'a' - 'A'
			}
		}
		for _, w := range []string{"bearer", "basic"} {
			if got, want := identity.ContainsFold(s, w), strings.Contains(string(lower), w); got != want {
				t.Fatalf("containsFold(%q, %q) = %v, want %v", s, w, got, want)
			}
		}
	})
}
