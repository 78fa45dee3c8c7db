package sidecar_test

import (
	"regexp"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// rfc3339 is RFC 3339's date-time with an upper-case T and Z, as Go
// writes it: offsets up to 23:59, a fraction of at least one digit.
var rfc3339 = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$`)

// ParseTime takes exactly the strings of RFC 3339's form that Go parses,
// and what it takes is written back by Go as the same instant.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{
		"2030-01-02T03:04:05Z", "2030-01-02T03:04:05.123456789+23:59", "0001-01-01T00:00:00Z",
		"2030-01-02T03:04:05+24:00", "2030-01-02T03:04:05+23:60", "2030-01-02T03:04:05,5Z",
		"2030-01-02T3:04:05Z", "2030-01-02t03:04:05z", "2030-01-02T03:04:05", "2030-02-30T03:04:05Z",
		"2030-01-02T03:04:05.Z", "2030-01-02T03:04:05+1:00", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := sidecar.ParseTime(s)
		_, err := time.Parse(time.RFC3339, s)
		if want := rfc3339.MatchString(s) && err == nil; ok != want {
			t.Fatalf("ParseTime(%q) ok = %v, want %v (Go: %v)", s, ok, want, err)
		}
		if !ok {
			return
		}
		back, err := time.Parse(time.RFC3339Nano, got.Format(time.RFC3339Nano))
		if err != nil || !back.Equal(got) {
			t.Fatalf("ParseTime(%q) = %v, written back as %v (%v)", s, got, back, err)
		}
	})
}
