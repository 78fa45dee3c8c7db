// Package paramkey reads the name of a query or form field as common
// upstreams key it (PHP, Rack, Node's qs, ASP.NET, Java). The check reads
// names so when it looks for a credential or a parameter the policy reads
// under another spelling, and the decision log masks the same spellings:
// one rule, so that what the check refuses as a credential is never
// logged in clear under a name the log reads differently.
package paramkey

import (
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/text/cases"

	"github.com/deputyhq/deputy/sidecar"
)

// Decode is a raw (still escaped) field name as PHP decodes it: "+" is a
// space, each valid escape is decoded and an invalid one kept as sent. A
// name holding neither "%" nor "+" is returned as it is, with no copy.
func Decode(raw string) string {
	if strings.IndexByte(raw, '%') < 0 && strings.IndexByte(raw, '+') < 0 {
		return raw
	}
	name, _ := decode(raw, false)
	return name
}

// DecodeIIS is a raw field name as IIS and classic ASP.NET decode it
// (HttpUtility.UrlDecode): Decode's readings, and "%uXXXX" as the UTF-16
// unit XXXX (a pair of them as one rune, a lone surrogate as U+FFFD),
// which PHP and Go leave as sent. ok is false when the name holds no such
// escape: it reads as Decode reads it.
func DecodeIIS(raw string) (string, bool) {
	if !strings.Contains(raw, "%u") && !strings.Contains(raw, "%U") {
		return "", false
	}
	name, units := decode(raw, true)
	if !units {
		return "", false
	}
	return name, true
}

// decode is Decode's reading of raw, with "%uXXXX" read too when iis is
// set; units says one was.
func decode(raw string, iis bool) (string, bool) {
	var b strings.Builder
	b.Grow(len(raw))
	units := false
	for i := 0; i < len(raw); i++ {
		if iis {
			if r, n := UnitAt(raw, i); n > 0 {
				b.WriteRune(r)
				i += n - 1
				units = true
				continue
			}
		}
		switch c := raw[i]; {
		case c == '+':
			b.WriteByte(' ')
		case c == '%' && i+2 < len(raw) && sidecar.IsHex(raw[i+1]) && sidecar.IsHex(raw[i+2]):
			b.WriteByte(sidecar.Unhex(raw[i+1])<<4 | sidecar.Unhex(raw[i+2]))
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), units
}

// UnitAt reads an IIS escape "%uXXXX" at s[i:] (u in either case): the
// rune it spells and how many bytes it takes, 6, or 12 for a UTF-16
// surrogate pair of two such escapes; a lone surrogate is U+FFFD, as
// IIS hands it on. n is 0 when s[i:] starts no such escape.
func UnitAt(s string, i int) (r rune, n int) {
	u, ok := hexUnit(s, i)
	if !ok {
		return 0, 0
	}
	r = rune(u)
	if !utf16.IsSurrogate(r) {
		return r, 6
	}
	if u2, ok := hexUnit(s, i+6); ok {
		if pair := utf16.DecodeRune(r, rune(u2)); pair != utf8.RuneError {
			return pair, 12
		}
	}
	return utf8.RuneError, 6
}

// hexUnit reads the UTF-16 unit of "%uXXXX" at s[i:].
func hexUnit(s string, i int) (uint16, bool) {
	if i < 0 || i+6 > len(s) || s[i] != '%' || s[i+1] != 'u' && s[i+1] != 'U' {
		return 0, false
	}
	var u uint16
	for k := i + 2; k < i+6; k++ {
		if !sidecar.IsHex(s[k]) {
			return 0, false
		}
		u = u<<4 | uint16(sidecar.Unhex(s[k]))
	}
	return u, true
}

// Of is the part of a decoded field name every common upstream keys it
// by: leading spaces and brackets dropped (PHP drops leading spaces, Rack 2
// the brackets around a name, qs reads "[name]" as name), cut at the first
// bracket ("name[]" and "name[x]" are arrays of name), folded to ASCII
// when it holds another byte (FoldASCII: ASP.NET reads "ı" as "i"). Of a
// name of ASCII bytes alone it allocates nothing.
func Of(name string) string {
	name = cut(name)
	for i := 0; i < len(name); i++ {
		if name[i] >= utf8.RuneSelf {
			return cut(FoldASCII(name))
		}
	}
	return name
}

// Keys is a decoded field name's key (Of) and, when PHP reads it as
// another name, that name's key (else ""): PHP reads a name whose "[" is
// never closed with that "[" as "_" ("access[token" is
// $_GET['access_token']), where the others cut it at the "[". A name is
// read as a field when either key is the field's (Same).
func Keys(name string) (key, php string) {
	key = Of(name)
	if strings.IndexByte(name, '[') >= 0 {
		if p := Of(sidecar.PHPFieldName(name)); !Same(p, key) {
			php = p
		}
	}
	return key, php
}

func cut(name string) string {
	for name != "" && (name[0] == ' ' || name[0] == '[' || name[0] == ']') {
		name = name[1:]
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '[' || name[i] == ']' {
			return name[:i]
		}
	}
	return name
}

// Same reports whether two keys (Of) name one field: compared ignoring
// ASCII case, with " " and "." read as "_" (PHP).
func Same(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if a[i] != b[i] && phpByte(a[i]) != phpByte(b[i]) {
			return false
		}
	}
	return true
}

func phpByte(c byte) byte {
	switch {
	case c == ' ' || c == '.':
		return '_'
	case c >= 'A' && c <= 'Z':
		return c + 'a' - 'A'
	}
	return c
}

// FoldASCII lower-cases s and reads every non-ASCII rune as the ASCII
// letters a case-insensitive router may take it for: its simple case
// folding orbit ("ſ" is "s", "K" is "k"), its upper or lower case (Java's
// equalsIgnoreCase reads "ı" as "i"), or its full case folding ("ß" is
// "ss", "ﬁ" is "fi", as String.toUpperCase and Unicode-aware routers read
// them). The check folds route segments and header names so too.
func FoldASCII(s string) string {
	s = lower(s)
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return foldRunes(s)
		}
	}
	return s
}

func foldRunes(s string) string {
	var b strings.Builder
	var full cases.Caser
	for _, r := range s {
		if r < utf8.RuneSelf {
			b.WriteRune(r)
			continue
		}
		if a, ok := asciiFold(r); ok {
			b.WriteRune(a)
			continue
		}
		if full == (cases.Caser{}) {
			full = cases.Fold() // a Caser holds state: one per call
		}
		if f := full.String(string(r)); isASCII(f) {
			b.WriteString(lower(f))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// asciiFold is the ASCII letter r's simple folding orbit, upper case or
// lower case holds, if any.
func asciiFold(r rune) (rune, bool) {
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < utf8.RuneSelf {
			return unicode.ToLower(f), true
		}
	}
	if u := unicode.ToUpper(r); u < utf8.RuneSelf {
		return unicode.ToLower(u), true
	}
	if l := unicode.ToLower(r); l < utf8.RuneSelf {
		return l, true
	}
	return r, false
}

func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' || c >= utf8.RuneSelf {
			return strings.ToLower(s)
		}
	}
	return s
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
