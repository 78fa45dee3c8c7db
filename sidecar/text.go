package sidecar

import (
	"strings"
	"unicode"
)

// IsControl reports whether r is a C0 or C1 control character, DEL, or a
// bidirectional embedding, override or isolate (U+202A-U+202E,
// U+2066-U+2069): the runes that end a mail header line (CR, LF), drive a
// terminal (ESC, CSI, OSC, BEL), cut a C string (NUL), or make text read
// other than it is stored ("Trojan Source": "\u202egnp.exe" shows as
// "exe.png", and a reason can show a ticket or a name it does not hold).
// The bidi marks LRM, RLM and ALM are not among them: they only settle
// the direction of the characters next to them, and right-to-left text
// written by hand may hold them. Tab is a control character; callers that
// let it through say so.
func IsControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
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

// Blank reports whether s has no visible character: it is empty, or holds
// only white space and characters that print as nothing (Unicode's
// default-ignorable code points: format characters such as the zero-width
// space and joiners, the word joiner, BOM and soft hyphen; the Hangul
// fillers; variation selectors), and the blank Braille pattern, a glyph
// drawn as nothing. A reason, a name or a ticket that is blank reads as
// empty in the session log, the audit trail and the customer's email, so
// Deputy treats it as empty.
func Blank(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return !Invisible(r) })
}

// Invisible reports whether r prints as nothing, as Blank reads it.
func Invisible(r rune) bool {
	switch {
	case unicode.IsSpace(r), IsControl(r), r == '\u2800':
		return true
	case unicode.Is(unicode.Cf, r):
		// Prepended concatenation marks (the Arabic number sign) are
		// format characters drawn as signs.
		return !unicode.Is(unicode.Prepended_Concatenation_Mark, r)
	}
	return unicode.In(r, unicode.White_Space, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector)
}
