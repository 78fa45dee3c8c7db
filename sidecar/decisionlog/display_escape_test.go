package decisionlog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// rawDisplayControl reports whether r, written raw, makes a record read
// other than it is stored: DEL and the C1 controls (U+009B is a
// terminal's CSI), the bidi embeddings, overrides and isolates, and the
// marks LRM, RLM and ALM.
func rawDisplayControl(r rune) bool {
	return r == 0x7f || (r >= 0x80 && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) ||
		r == 0x200e || r == 0x200f || r == 0x061c
}

// A client chooses the path and the headers a record holds: through the
// stdout and Redis sinks a "/catalog/\u202egnp.exe" rendered reversed in
// a log viewer ("exe.png", and the rest of the line after it), and U+009B
// drove the terminal of whoever ran kubectl logs. Both sinks now write
// these as \u escapes, as `deputy decisions tail --json` does: still JSON,
// reading back to the same values.
func TestSinksEscapeBidiAndC1(t *testing.T) {
	const hostile = "/catalog/\u202egnp.exe\u2066\u2069\u200e\u200f\u061c\u202a\u202d\x7f\u0085x\u009b31m"
	d := &sidecar.Decision{ID: "d-1", Allowed: true, HTTPStatus: 200, Reason: "public_route", Method: "GET",
		Host: "shop.example", Path: hostile,
		Input: map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"path": hostile, "headers": map[string]any{"user-agent": hostile, "x-\u202ename": "v"}}}}}}
	check := func(t *testing.T, line []byte) {
		t.Helper()
		if i := bytes.IndexFunc(line, rawDisplayControl); i >= 0 {
			t.Fatalf("record holds %q raw at %d: %q", line[i:i+3], i, line)
		}
		var r decisionlog.Record
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("record is not JSON: %v: %q", err, line)
		}
		http := r.Input.(map[string]any)["attributes"].(map[string]any)["request"].(map[string]any)["http"].(map[string]any)
		headers := http["headers"].(map[string]any)
		if r.Path != hostile || http["path"] != hostile || headers["user-agent"] != hostile || headers["x-\u202ename"] != "v" {
			t.Fatalf("record reads back otherwise: %q", line)
		}
	}

	t.Run("stdout", func(t *testing.T) {
		var out bytes.Buffer
		cfg := testConfig()
		l, err := decisionlog.New(cfg, decisionlog.NewWriterSink(&out))
		if err != nil {
			t.Fatal(err)
		}
		l.Log(d)
		if err := l.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		check(t, bytes.TrimSuffix(out.Bytes(), []byte("\n")))
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		cfg := redisConfig(100)
		sink, err := decisionlog.NewSink(cfg, srv.Client(), nil)
		if err != nil {
			t.Fatal(err)
		}
		l, err := decisionlog.New(cfg, sink)
		if err != nil {
			t.Fatal(err)
		}
		l.Log(d)
		if err := l.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		msgs, err := srv.Client().XRange(context.Background(), cfg.Stream, "-", "+").Result()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("stream holds %v (%v), want one record", msgs, err)
		}
		check(t, []byte(msgs[0].Values[decisionlog.RecordField].(string)))
	})
	t.Run("tail --json", func(t *testing.T) {
		// The tail reads what the sinks wrote and writes it again: the
		// same runes escaped, LRM, RLM and ALM among them.
		line, err := decisionlog.JSONLine(&decisionlog.Record{DecisionID: "d-1", Result: "allow", Path: hostile})
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.IndexFunc(line, rawDisplayControl); i >= 0 {
			t.Fatalf("tail line holds %q raw at %d: %q", line[i:i+3], i, line)
		}
	})
}
