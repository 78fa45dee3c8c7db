package strictjson

import (
	"bytes"
	"testing"
	"unicode"
	"unicode/utf8"
)

// foldName must fold two runes alike exactly when bytes.EqualFold holds,
// as encoding/json's does: every rune of an orbit of Unicode simple
// folding to one rune of that orbit.
func TestFoldNameIsEqualFold(t *testing.T) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		f := foldName(string(r))
		if !bytes.EqualFold([]byte(f), []byte(string(r))) {
			t.Fatalf("foldName(%q) = %q, not EqualFold to it", r, f)
		}
		for o := unicode.SimpleFold(r); o != r; o = unicode.SimpleFold(o) {
			if g := foldName(string(o)); g != f {
				t.Fatalf("foldName(%q) = %q but foldName(%q) = %q", r, f, o, g)
			}
		}
	}
}
