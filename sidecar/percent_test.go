package sidecar_test

import (
	"strconv"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

func TestUnescapeValid(t *testing.T) {
	for in, want := range map[string]string{
		"":          "",
		"plain":     "plain",
		"a%2Fb":     "a/b",
		"a%2fb%3F":  "a/b?",
		"%zz%2":     "%zz%2",
		"%%41":      "%A",
		"a+b%2Bc":   "a+b+c",
		"%253F":     "%3F",
		"%E2%80%AE": "\u202e",
	} {
		if got := sidecar.UnescapeValid(in); got != want {
			t.Errorf("UnescapeValid(%q) = %q, want %q", in, got, want)
		}
	}
	for c := range 256 {
		b := byte(c)
		want := '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F'
		if sidecar.IsHex(b) != want {
			t.Fatalf("IsHex(%q) = %v", b, !want)
		}
		if want {
			if v, err := strconv.ParseUint(string(b), 16, 8); err != nil || uint64(sidecar.Unhex(b)) != v {
				t.Fatalf("Unhex(%q) = %d, want %d", b, sidecar.Unhex(b), v)
			}
		}
	}
}
