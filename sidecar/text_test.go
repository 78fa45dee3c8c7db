package sidecar_test

import (
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

func TestControlText(t *testing.T) {
	for _, tc := range []struct {
		name, in, stripped string
		has                bool
	}{
		{"plain", "Chloé Martin /a?b=1", "Chloé Martin /a?b=1", false},
		{"tab", "a\tb", "ab", false},
		{"crlf", "Sam\r\nBcc: x", "SamBcc: x", true},
		{"esc and bel", "al\x1b[31mice\x1b]0;title\a", "al[31mice]0;title", true},
		{"c1 csi", "a\u009b2J", "a2J", true},
		{"del and nul", "a\x7fb\x00", "ab", true},
		{"backslash", `a\x1b`, `a\x1b`, false},
		{"invalid utf-8", "a\xffb", "a\xffb", false},
		{"replacement char", "a\uFFFDb", "a\uFFFDb", false},
		// Trojan Source: embeddings, overrides and isolates reorder what a
		// reader sees ("\u202egnp.exe" shows as "exe.png").
		{"bidi override", "inv\u202egnp.exe", "invgnp.exe", true},
		{"bidi embeddings", "\u202aa\u202bb\u202cc\u202dd", "abcd", true},
		{"bidi isolates", "\u2066a\u2067b\u2068c\u2069", "abc", true},
		{"bidi marks and arabic", "\u200e\u200fمرحبا", "\u200e\u200fمرحبا", false},
		{"next to the ranges", "\u2029\u202f\u2065\u206a", "\u2029\u202f\u2065\u206a", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sidecar.HasControl(tc.in); got != tc.has {
				t.Errorf("HasControl = %v, want %v", got, tc.has)
			}
			if got := sidecar.StripControl(tc.in); got != tc.stripped {
				t.Errorf("StripControl = %q, want %q", got, tc.stripped)
			}
		})
	}
}

// Text with no visible character reads as no text in the session log,
// the audit trail and the mail an event becomes: white space, format
// characters (zero-width space and joiners, word joiner, BOM, soft
// hyphen), Hangul fillers, variation selectors and the blank Braille
// pattern.
func TestBlank(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		blank    bool
	}{
		{"empty", "", true},
		{"spaces and tab", "  \t ", true},
		{"no-break and ideographic spaces", "\u00a0\u3000", true},
		{"zero-width space", "\u200b", true},
		{"word joiner", "\u2060", true},
		{"byte order mark", "\ufeff", true},
		{"soft hyphen", "\u00ad", true},
		{"hangul filler", "\u3164", true},
		{"other hangul fillers", "\u115f\u1160\uffa0", true},
		{"zero-width joiners", "\u200b\u200c\u200d", true},
		{"variation selector and grapheme joiner", "\ufe0f\u034f", true},
		{"mongolian vowel separator and tags", "\u180e\U000e0001\U000e0041", true},
		{"braille blank", "\u2800", true},
		{"a letter", "x", false},
		{"a letter among invisible ones", "\u200bx\u3164", false},
		{"arabic", "مرحبا", false},
		{"arabic number sign", "\u0600", false},
		{"emoji", "\U0001f600", false},
		{"punctuation", ".", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sidecar.Blank(tc.in); got != tc.blank {
				t.Errorf("Blank(%q) = %v, want %v", tc.in, got, tc.blank)
			}
		})
	}
}
