package sidecar

import "time"

// MaxSpan bounds every configured length of time that Deputy adds to an
// instant or multiplies: retention, grant lengths, session limits,
// budget windows. A hundred years keeps what is computed from it in
// range: twice it still fits a time.Duration (at most about 292 years),
// and an instant that far ahead still has a UnixNano (until 2262). Past
// it the arithmetic wraps, and a "keep forever" retention would prune
// everything it was meant to keep.
const MaxSpan = 100 * 365 * 24 * time.Hour

// MaxSpanDays is MaxSpan in whole days, for the settings counted in days.
const MaxSpanDays = int(MaxSpan / (24 * time.Hour))

// ParseTime parses an RFC 3339 time as RFC 3339 writes it:
// YYYY-MM-DDTHH:MM:SS, an optional fraction after a period, then Z or an
// offset ±HH:MM of at most 23:59. time.Parse(time.RFC3339) also takes an
// offset of +24:00 or +23:60, a one-digit hour and a comma before the
// fraction (go.dev/issue/54580); a client sending one of those means
// another instant than the one parsed, and a time at such an offset does
// not encode as JSON again.
func ParseTime(s string) (time.Time, bool) {
	if !rfc3339Shape(s) {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, s)
	return t, err == nil
}

func rfc3339Shape(s string) bool {
	const date = "0000-00-00T00:00:00"
	if len(s) < len(date)+1 {
		return false
	}
	for i := range len(date) {
		if date[i] == '0' && !isDigit(s[i]) || date[i] != '0' && s[i] != date[i] {
			return false
		}
	}
	s = s[len(date):]
	if s[0] == '.' {
		n := 1
		for n < len(s) && isDigit(s[n]) {
			n++
		}
		if n == 1 {
			return false
		}
		s = s[n:]
	}
	if s == "Z" {
		return true
	}
	return len(s) == len("+00:00") && (s[0] == '+' || s[0] == '-') && s[3] == ':' &&
		isDigit(s[1]) && isDigit(s[2]) && isDigit(s[4]) && isDigit(s[5]) &&
		(s[1] < '2' || s[1] == '2' && s[2] <= '3') && s[4] <= '5'
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }
