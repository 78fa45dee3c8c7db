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
