package redis

import (
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

func TestCursorRoundTrip(t *testing.T) {
	cases := []struct {
		name         string
		at           time.Time
		id, customer string
	}{
		{"plain", time.Unix(1700000000, 5), "s1", "acme"},
		{"odd_ids", time.Unix(0, 0), "id:with:colons", "cust/with\x00nul"},
		{"epoch_start", time.Unix(1, 0), "x", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := logMember(tc.at, tc.id, tc.customer)
			got, err := decodeCursor(encodeCursor(m))
			if err != nil || got != m {
				t.Fatalf("round trip: %q, %v", got, err)
			}
		})
	}
}

func FuzzDecodeCursor(f *testing.F) {
	f.Add(encodeCursor(logMember(time.Unix(1700000000, 0), "s1", "acme")))
	for _, seed := range []string{"", "x", "!!!", "AAAA", "MDAwMDAwMDAwMDAwMDAwMDAwMDA6"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, c string) {
		m, err := decodeCursor(c)
		if err != nil {
			if sidecar.ErrorField(err) != "cursor" {
				t.Fatalf("error does not name the cursor: %v", err)
			}
			return
		}
		if len(m) < 21 || m[20] != ':' {
			t.Fatalf("accepted malformed member %q", m)
		}
		splitMember(m) // must not panic
	})
}

func FuzzValidStreamID(f *testing.F) {
	for _, seed := range []string{"0-0", "1700000000000-1", "-", "1-", "-1", "a-b", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		_, _ = sidecar.ParseStreamID(id) // must not panic; Redis refuses what slips through with an error, never a panic
	})
}
