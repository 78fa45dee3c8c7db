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
