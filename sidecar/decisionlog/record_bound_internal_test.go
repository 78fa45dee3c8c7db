package decisionlog

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// boundedRecord encodes d with the smallest bound allowed and checks what
// every record must be, whatever its content: JSON, within the bound, with
// the decision's id and result.
func boundedRecord(t *testing.T, d *sidecar.Decision) map[string]any {
	t.Helper()
	b, err := smallestBound(t).appendRecord(context.Background(), nil, d, false)
	if err != nil {
		t.Fatalf("record not written: %v", err)
	}
	if len(b) > MinMaxRecordBytes {
		t.Fatalf("record of %d bytes passes the bound %d", len(b), MinMaxRecordBytes)
	}
	var r map[string]any
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("record is not JSON: %v", err)
	}
	want := ResultDeny
	if d.Allowed {
		want = ResultAllow
	}
	if r["result"] != want {
		t.Fatalf("result = %v, want %v", r["result"], want)
	}
	if id, _ := r["decision_id"].(string); d.ID != "" && !strings.HasPrefix(asLogged(t, d.ID), id) {
		t.Fatalf("decision_id = %q, not the decision's", id)
	}
	return r
}

// smallestBound is a logger with the smallest max_record_bytes allowed.
func smallestBound(t *testing.T) *Logger {
	t.Helper()
	cfg := Defaults()
	cfg.MaxRecordBytes = MinMaxRecordBytes
	l, err := New(cfg, DiscardSink{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// asLogged is s as a JSON reader gets it back: invalid UTF-8 as U+FFFD.
func asLogged(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// decisionOf puts s in every field a record writes, and in the input.
func decisionOf(s string) *sidecar.Decision {
	return &sidecar.Decision{
		ID: s, Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Allowed: true, HTTPStatus: 200,
		Reason: s, Method: s, Host: s, Path: s, TraceID: s, Revision: s, Error: s,
		Latency:    time.Millisecond,
		Identity:   &sidecar.Identity{Subject: s},
		Delegation: &sidecar.Delegation{Mode: s, Level: s, ID: s, Actor: s, Subject: s},
		Attempt:    &sidecar.Attempt{OnBehalfOf: s, Session: s, SessionActor: s},
		Input:      map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{"path": s, "headers": map[string]any{s: s}}}}},
	}
}

// The worst a field can be: what JSON escapes sixfold (HTML characters,
// control bytes, invalid UTF-8, U+2028), in every field at once.
func TestRecordBoundWorstCase(t *testing.T) {
	for _, tc := range []struct{ name, s string }{
		{"html", strings.Repeat("<>&", 1<<18)},
		{"control", strings.Repeat("\x01", 1<<20)},
		{"invalid utf-8", strings.Repeat("\xff", 1<<20)},
		{"line separator", strings.Repeat("\u2028", 1<<18)},
		{"multibyte cut", strings.Repeat("é", 1<<19)},
		{"plain", strings.Repeat("a", 1<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := boundedRecord(t, decisionOf(tc.s))
			logged := asLogged(t, tc.s)
			if r["input_dropped"] != InputDroppedOversized || r["input"] != nil {
				t.Errorf("input_dropped = %v, input present %v", r["input_dropped"], r["input"] != nil)
			}
			for _, f := range []string{"actor", "subject", "reason", "path", "host", "attempted_on_behalf_of", "attempted_session", "attempted_session_actor"} {
				if v, _ := r[f].(string); v == "" || !strings.HasPrefix(logged, v) {
					t.Errorf("%s = %.20q..., want a prefix of the decision's", f, v)
				}
			}
		})
	}
}

// A record under the bound is written whole; one byte over it loses its
// input.
func TestRecordBoundEdge(t *testing.T) {
	d := decisionOf("x")
	d.Input = map[string]any{"pad": ""}
	empty, err := smallestBound(t).appendRecord(context.Background(), nil, d, false)
	if err != nil {
		t.Fatal(err)
	}
	pad := MinMaxRecordBytes - len(empty)
	for _, tc := range []struct {
		name    string
		pad     int
		dropped bool
	}{{"at the bound", pad, false}, {"one byte over", pad + 1, true}} {
		t.Run(tc.name, func(t *testing.T) {
			d.Input = map[string]any{"pad": strings.Repeat("a", tc.pad)}
			r := boundedRecord(t, d)
			if got := r["input_dropped"] == InputDroppedOversized; got != tc.dropped || (r["input"] == nil) != tc.dropped {
				t.Errorf("input dropped %v (input %v), want %v", got, r["input"] != nil, tc.dropped)
			}
		})
	}
}

func FuzzRecordBound(f *testing.F) {
	f.Add("/search?q=<script>", "x-filler", 1)
	f.Add("\xff\xfe\u2028", "é", 2000)
	f.Add(strings.Repeat("<", 3000), "&", 3)
	f.Fuzz(func(t *testing.T, s, header string, repeat int) {
		if repeat < 0 || repeat > 5000 || (len(s)+len(header))*repeat > 64<<10 {
			return // the worst cases of larger fields are TestRecordBoundWorstCase's
		}
		big := strings.Repeat(s, repeat)
		d := decisionOf(big)
		d.Input.(map[string]any)[header] = strings.Repeat(header, repeat)
		boundedRecord(t, d)
	})
}
