package decisionlog_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// A client controls the path, the query and the headers a record carries.
// Whatever it sends, no record a sink receives passes
// decision_log.max_record_bytes: an oversized one loses its input, keeps
// the decision, and is counted.
func TestOversizedRecordKeepsTheDecision(t *testing.T) {
	for _, sinkName := range []string{decisionlog.SinkStdout, decisionlog.SinkRedis} {
		t.Run(sinkName, func(t *testing.T) {
			cfg := testConfig()
			cfg.Sink = sinkName
			var out lines
			sink := decisionlog.Sink(decisionlog.NewWriterSink(&out))
			var read func() [][]byte
			if sinkName == decisionlog.SinkRedis {
				srv := redistest.Start(t)
				rc := fastClient(t, srv.Addr)
				var err error
				if sink, err = decisionlog.NewSink(cfg, rc, nil); err != nil {
					t.Fatal(err)
				}
				read = func() [][]byte {
					msgs, err := rc.XRange(context.Background(), cfg.Stream, "-", "+").Result()
					if err != nil {
						t.Fatal(err)
					}
					var recs [][]byte
					for _, m := range msgs {
						recs = append(recs, []byte(m.Values[decisionlog.RecordField].(string)))
					}
					return recs
				}
			} else {
				read = func() [][]byte {
					var recs [][]byte
					for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
						recs = append(recs, []byte(line))
					}
					return recs
				}
			}
			l := startLogger(t, cfg, sink)

			// Envoy's default header limit is 60 KiB: a path of '<', each
			// written as \u003c, and a header of them, pass 64 KiB at once.
			hugePath := "/search?q=" + strings.Repeat("<", 60<<10)
			in := requestInput(t)
			http := in["attributes"].(map[string]any)["request"].(map[string]any)["http"].(map[string]any)
			http["path"] = hugePath
			http["headers"].(map[string]any)["x-filler"] = strings.Repeat("&", 60<<10)
			big := impersonationDecision("d-big", in)
			big.Path = hugePath
			l.Log(big)
			l.Log(impersonationDecision("d-small", requestInput(t)))
			if err := l.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}

			raw := read()
			if len(raw) != 2 {
				t.Fatalf("sink holds %d records, want 2", len(raw))
			}
			recs := map[string]map[string]any{}
			for _, b := range raw {
				if len(b) > cfg.MaxRecordBytes {
					t.Errorf("a record of %d bytes passes max_record_bytes %d", len(b), cfg.MaxRecordBytes)
				}
				var r map[string]any
				if err := json.Unmarshal(b, &r); err != nil {
					t.Fatalf("record is not JSON: %v", err)
				}
				recs[r["decision_id"].(string)] = r
			}
			r := recs["d-big"]
			want := map[string]any{
				"result": "allow", "reason": "impersonation_session", "actor": "staff-17", "subject": "cust-42",
				"mode": "impersonation", "session_id": "sess-9", "input_dropped": "oversized",
				"time": "2026-03-01T12:00:00Z", "http_status": 200.0,
			}
			for k, v := range want {
				if r[k] != v {
					t.Errorf("oversized record: %s = %v, want %v", k, r[k], v)
				}
			}
			if _, ok := r["input"]; ok {
				t.Error("oversized record kept its input")
			}
			p, _ := r["path"].(string)
			if !strings.HasPrefix(hugePath, p) || len(p) < len("/search?q=") || len(p) > decisionlog.MaxDroppedPathBytes {
				t.Errorf("oversized record's path is %d bytes, want a prefix of the path of at most %d", len(p), decisionlog.MaxDroppedPathBytes)
			}
			if s := recs["d-small"]; s["input"] == nil || s["input_dropped"] != nil {
				t.Errorf("a record under the bound lost its input: %v", s)
			}
			if got := l.Oversized(); got != 1 {
				t.Errorf("oversized records counted: %d, want 1", got)
			}
			if l.Dropped() != 0 {
				t.Errorf("dropped %d records, want none", l.Dropped())
			}
		})
	}
}
