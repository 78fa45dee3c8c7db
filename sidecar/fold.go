package sidecar

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// FoldID is the form under which Deputy files a customer id that an
// upstream may look up loosely: MySQL's default collations (*_ci,
// *_ai_ci) find one row for "acme", "ACME", "ａｃｍｅ" (full width) and
// "acmé", and so act on one customer for all of them. Ids that fold alike
// are one customer to Deputy too, so no two domains can hold variants of
// one id; the spelling as given stays the record's value.
//
// The fold decomposes by compatibility (NFKD: width, ligatures), drops
// nonspacing marks (accents) and format characters (zero-width spaces,
// soft hyphens, which collations ignore), folds case (Unicode full case
// folding: "ß" is "ss"), does the first two again (folding can yield
// decomposable runes, as "İ" does), and recomposes (NFC). Applying it
// twice changes nothing.
func FoldID(s string) string {
	if folded, ok := foldASCII(s); ok {
		return folded
	}
	s = dropMarks(norm.NFKD.String(s))
	s = cases.Fold().String(s) // a Caser keeps state: one per call
	return norm.NFC.String(dropMarks(norm.NFKD.String(s)))
}

// dropMarks removes nonspacing marks and format characters.
func dropMarks(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.In(r, unicode.Mn, unicode.Cf) {
			return -1
		}
		return r
	}, s)
}

// foldASCII folds an ASCII id without allocating when it has no capital
// letter: for ASCII the fold above is lower-casing A-Z.
func foldASCII(s string) (string, bool) {
	upper := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return "", false
		}
		upper = upper || ('A' <= c && c <= 'Z')
	}
	if !upper {
		return s, true
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b), true
}
