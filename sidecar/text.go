package sidecar

import "strings"

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
