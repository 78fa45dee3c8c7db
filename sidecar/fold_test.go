package sidecar_test

import (
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

func TestFoldID(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"lower ascii", "acme", "acme"},
		{"upper ascii", "ACME", "acme"},
		{"mixed ascii with digits and punctuation", "Acme-42_X.y", "acme-42_x.y"},
		{"full width", "ａｃｍｅ", "acme"},
		{"full width capitals", "ＡＣＭＥ", "acme"},
		{"precomposed accent", "acm\u00e9", "acme"},
		{"combining accent", "acme\u0301", "acme"},
		{"capital with accent", "ACM\u00c9", "acme"},
		{"zero-width space", "ac\u200bme", "acme"},
		{"soft hyphen", "ac\u00adme", "acme"},
		{"sharp s folds to ss", "stra\u00dfe", "strasse"},
		{"dotted capital I", "\u0130NITECH", "initech"},
		{"kelvin sign", "\u212acorp", "kcorp"},
		{"ligature", "\ufb01rm", "firm"},
		{"greek final sigma", "\u03a3\u039f\u03a3", "\u03c3\u03bf\u03c3"},
		{"cyrillic stays cyrillic", "\u0430\u0441me", "\u0430\u0441me"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := sidecar.FoldID(tc.in)
			if got != tc.want {
				t.Fatalf("FoldID(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if again := sidecar.FoldID(got); again != got {
				t.Fatalf("FoldID(FoldID(%q)) = %q, want %q: folding twice changed it", tc.in, again, got)
			}
		})
	}
}

func TestFoldIDInvalidUTF8MatchesNoValidID(t *testing.T) {
	if got := sidecar.FoldID("acm\xe9"); got == "acme" || got == sidecar.FoldID("acm\u00e9") {
		t.Fatalf("FoldID of invalid UTF-8 = %q, folds like a valid id", got)
	}
}

func FuzzFoldID(f *testing.F) {
	for _, s := range []string{"acme", "ACME", "ａｃｍｅ", "acmé", "ǅ", "İ", "ß", "\u1e9e", "ﬃ", "\u0345"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		once := sidecar.FoldID(s)
		if twice := sidecar.FoldID(once); twice != once {
			t.Fatalf("FoldID not idempotent: %q -> %q -> %q", s, once, twice)
		}
	})
}

func BenchmarkFoldID(b *testing.B) {
	for _, s := range []string{"acme-corp-000123", "ACME-CORP-000123", "acmé-corp"} {
		b.Run(s, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = sidecar.FoldID(s)
			}
		})
	}
}
