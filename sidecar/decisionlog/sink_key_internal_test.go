package decisionlog

import (
	"bytes"
	"strings"
	"testing"
)

// A record's key in the once-set is its decision id when that is short,
// else a digest: at most maxIDLen bytes, never a newline (the script
// splits a batch's ids on it, and a record would pair with another's id),
// and records with different ids never share one.
func TestRecordKeyIsShortAndOneLine(t *testing.T) {
	cases := []struct {
		name   string
		record string
		want   string // "" for a digest
	}{
		{"decision id", `{"decision_id":"0123456789abcdef0123456789abcdef","result":"allow"}`, "0123456789abcdef0123456789abcdef"},
		{"escaped quote", `{"decision_id":"a\"b","result":"allow"}`, `a\"b`},
		{"long id", `{"decision_id":"` + strings.Repeat("x", 33) + `"}`, ""},
		{"raw newline", "{\"decision_id\":\"a\nb\"}", ""},
		{"escape then raw newline", "{\"decision_id\":\"a\\\nb\"}", ""},
		{"no id", `{"result":"allow"}`, ""},
		{"unterminated", `{"decision_id":"abc`, ""},
	}
	seen := map[string]string{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := string(appendRecordKey(nil, []byte(tc.record)))
			if len(key) > maxIDLen || strings.Contains(key, "\n") {
				t.Fatalf("key %q: longer than %d bytes or holds a newline", key, maxIDLen)
			}
			if tc.want != "" && key != tc.want {
				t.Fatalf("key %q, want the id %q", key, tc.want)
			}
			if tc.want == "" && !bytes.HasPrefix([]byte(key), []byte("#")) {
				t.Fatalf("key %q, want a digest", key)
			}
			if other, dup := seen[key]; dup {
				t.Fatalf("key %q shared with %s", key, other)
			}
			seen[key] = tc.name
		})
	}
}

// The ids of records an unconfirmed write held are never removed early:
// settling a batch removes only its other ids, and forgets the unsure
// ones, whose records are never written again.
func TestSettledKeepsUnsureIDs(t *testing.T) {
	s := &RedisSink{}
	s.keepUnsure("a\nb\nc")
	s.written = "b\nd\ne"
	s.Settled(false)
	if len(s.settled) != 1 || s.settled[0] != "d\ne" {
		t.Errorf("settled %q, want [\"d\\ne\"]", s.settled)
	}
	if _, ok := s.unsure["b"]; ok || len(s.unsure) != 2 {
		t.Errorf("unsure holds %v, want a and c", s.unsure)
	}
	s.written = "a\nc"
	s.Settled(false)
	if len(s.settled) != 1 || len(s.unsure) != 0 {
		t.Errorf("settled %q, unsure %v: a batch of unsure ids removes nothing and is forgotten", s.settled, s.unsure)
	}
	// A batch the logger keeps (another write of it may still come)
	// removes nothing either, and its unsure ids are forgotten all the same.
	s.keepUnsure("f\ng")
	s.written = "f\nh"
	s.Settled(true)
	if len(s.settled) != 1 || len(s.unsure) != 1 {
		t.Errorf("settled %q, unsure %v: want nothing more settled, and only g still unsure", s.settled, s.unsure)
	}
}
