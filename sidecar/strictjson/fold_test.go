package strictjson

import (
	"testing"
	"unicode"
	"unicode/utf8"
)

// foldName must fold alike every two runes that a decoder matching names
// in any letter case reads as one: encoding/json's bytes.EqualFold (the
// orbits of Unicode simple folding), .NET's OrdinalIgnoreCase (equal
// upper cases) and Java's equalsIgnoreCase (equal upper or lower cases).
// Those relations are made of r ~ SimpleFold(r), r ~ ToUpper(r) and
// r ~ ToLower(r), so a fold constant along each of them folds alike
// whatever any of them joins.
func TestFoldNameJoinsWhatCaseInsensitiveDecodersJoin(t *testing.T) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		f := foldName(string(r))
		for _, o := range []rune{unicode.SimpleFold(r), unicode.ToUpper(r), unicode.ToLower(r)} {
			if !utf8.ValidRune(o) {
				continue
			}
			if g := foldName(string(o)); g != f {
				t.Fatalf("foldName(%q) = %q but foldName(%q) = %q", r, f, o, g)
			}
		}
	}
	// And it keeps apart what all of them keep apart.
	for _, pair := range [][2]string{{"a", "b"}, {"s", "z"}, {"i", "j"}, {"\u00e9", "e"}} {
		if foldName(pair[0]) == foldName(pair[1]) {
			t.Errorf("foldName(%q) = foldName(%q)", pair[0], pair[1])
		}
	}
}
