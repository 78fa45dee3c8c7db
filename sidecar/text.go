package sidecar

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// IsControl reports whether r is a C0 or C1 control character or DEL: the
// runes that end a mail header line (CR, LF), drive a terminal (ESC, CSI,
// OSC, BEL) or cut a C string (NUL). Tab is one of them; callers that let
// it through say so.
func IsControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f)
}

// HasControl reports whether s holds a control character other than tab.
func HasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r != '\t' && IsControl(r) })
}

// StripControl drops every control character (tab too) from s. It is for
// text Deputy relays but cannot refuse, such as a token's name claim.
func StripControl(s string) string {
	if !strings.ContainsFunc(s, IsControl) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if IsControl(r) {
			return -1
		}
		return r
	}, s)
}

// EscapeControl returns s with control characters and invalid UTF-8
// written as Go escapes (\n, \x1b, \u009b) and backslash doubled, so text
// printed to a terminal can neither drive it nor pass for an escape; plain
// text comes back as it was.
func EscapeControl(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r == '\\' || r == utf8.RuneError || IsControl(r) }) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(s[i])>>4, 16))
			b.WriteString(strconv.FormatUint(uint64(s[i])&0xf, 16))
		case r == '\\' || IsControl(r):
			q := strconv.QuoteRune(r) // '\x1b', '\n', '\\', '\u009b'
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
