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
