package decisionlog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"gopkg.in/yaml.v3"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/logtest"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// lines collects the JSON lines a sink writes.
type lines struct{ logtest.Lines }

func (l *lines) records(t *testing.T) []map[string]any { return l.Records(t) }

func testConfig() decisionlog.Config {
	cfg := decisionlog.Defaults()
	cfg.FlushInterval = 10 * time.Millisecond
	cfg.BackoffMin = 10 * time.Millisecond
	cfg.BackoffMax = 50 * time.Millisecond
	return cfg
}

func requestInput(t testing.TB) map[string]any {
	t.Helper()
	b, err := os.ReadFile("testdata/request.json")
	if err != nil {
		t.Fatal(err)
	}
	var in map[string]any
	if err := json.Unmarshal(b, &in); err != nil {
		t.Fatal(err)
	}
	return in
}

func impersonationDecision(id string, input any) *sidecar.Decision {
	return &sidecar.Decision{
		ID:         id,
		Time:       time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Allowed:    true,
		HTTPStatus: 200,
		Reason:     "impersonation_session",
		Method:     "POST",
		Host:       "shop.example.com",
		Path:       "/search",
		TraceID:    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Identity:   &sidecar.Identity{Subject: "staff-17"},
		Delegation: &sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "sess-9", Actor: "staff-17", Subject: "cust-42"},
		Revision:   "rev-abc",
		Latency:    1500 * time.Microsecond,
		Input:      input,
	}
}

func startLogger(t *testing.T, cfg decisionlog.Config, sink decisionlog.Sink, opts ...decisionlog.Option) *decisionlog.Logger {
	t.Helper()
	l, err := decisionlog.New(cfg, sink, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Stop(context.Background()) })
	return l
}

func TestStdoutRecordShape(t *testing.T) {
	var out lines
	l := startLogger(t, testConfig(), decisionlog.NewWriterSink(&out))
	l.Log(impersonationDecision("d-1", requestInput(t)))
	l.Log(&sidecar.Decision{ID: "d-2", Time: time.Unix(0, 0), HTTPStatus: 401, Reason: "no_identity", Method: "GET", Path: "/"})
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := out.records(t)
	if len(recs) != 2 {
		t.Fatalf("got %d lines, want 2", len(recs))
	}
	want := map[string]any{
		"decision_id": "d-1", "time": "2026-03-01T12:00:00Z", "actor": "staff-17", "subject": "cust-42",
		"mode": "impersonation", "session_id": "sess-9", "method": "POST", "host": "shop.example.com",
		"path": "/search", "result": "allow", "reason": "impersonation_session", "http_status": 200.0,
		"bundle_revision": "rev-abc", "latency_ms": 1.5, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
	}
	for k, v := range want {
		t.Run(k, func(t *testing.T) {
			if recs[0][k] != v {
				t.Errorf("%s = %v, want %v", k, recs[0][k], v)
			}
		})
	}
	t.Run("deny without identity", func(t *testing.T) {
		if recs[1]["result"] != "deny" || recs[1]["http_status"] != 401.0 || recs[1]["actor"] != nil {
			t.Errorf("record = %v", recs[1])
		}
	})
}

func TestDefaultMasking(t *testing.T) {
	var out lines
	l := startLogger(t, testConfig(), decisionlog.NewWriterSink(&out))
	in := requestInput(t)
	astIn, err := ast.InterfaceToValue(requestInput(t))
	if err != nil {
		t.Fatal(err)
	}
	l.Log(impersonationDecision("map", in))
	l.Log(impersonationDecision("ast", astIn))
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	secrets := []string{"eyJhbGciOiJFUzI1NiJ9", "s3cr3t", "4111111111111111", "eyJjYXJkIjoiNDExMSJ9"}
	for _, rec := range out.records(t) {
		t.Run(rec["decision_id"].(string), func(t *testing.T) {
			b, _ := json.Marshal(rec)
			for _, s := range secrets {
				if strings.Contains(string(b), s) {
					t.Errorf("secret %q reached the sink: %s", s, b)
				}
			}
			headers := rec["input"].(map[string]any)["attributes"].(map[string]any)["request"].(map[string]any)["http"].(map[string]any)["headers"].(map[string]any)
			if headers["x-request-id"] != "r-1" {
				t.Errorf("harmless header lost: %v", headers)
			}
			erased := fmt.Sprint(rec["erased"])
			for _, p := range []string{"/headers/Authorization", "/headers/cookie", "/headers/x-deputy-token", "/http/body", "/http/raw_body", "/input/parsed_body"} {
				if !strings.Contains(erased, p) {
					t.Errorf("erased %s does not list %s", erased, p)
				}
			}
		})
	}
	t.Run("caller input untouched", func(t *testing.T) {
		h := in["attributes"].(map[string]any)["request"].(map[string]any)["http"].(map[string]any)["headers"].(map[string]any)
		if h["Authorization"] == nil {
			t.Error("masking changed the caller's input")
		}
	})
}

func TestExtraMaskHeadersAndInputOff(t *testing.T) {
	cases := []struct {
		name     string
		cfg      func(*decisionlog.Config)
		absent   []string
		hasInput bool
	}{
		{"mask_headers", func(c *decisionlog.Config) { c.MaskHeaders = []string{"X-Request-Id"} }, []string{"r-1"}, true},
		// Configured with "_", the name is x-request-id to CGI, PHP and
		// WSGI upstreams, and to the log's masking.
		{"mask_headers spelled with _", func(c *decisionlog.Config) { c.MaskHeaders = []string{"X_Request_ID"} }, []string{"r-1"}, true},
		{"include_input off", func(c *decisionlog.Config) { c.IncludeInput = new(false) }, []string{"staff-17@", "boots"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out lines
			cfg := testConfig()
			tc.cfg(&cfg)
			l := startLogger(t, cfg, decisionlog.NewWriterSink(&out))
			l.Log(impersonationDecision("d", requestInput(t)))
			if err := l.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			rec := out.records(t)[0]
			b, _ := json.Marshal(rec)
			for _, s := range tc.absent {
				if strings.Contains(string(b), s) {
					t.Errorf("%q logged: %s", s, b)
				}
			}
			if _, ok := rec["input"]; ok != tc.hasInput {
				t.Errorf("input present = %v, want %v", ok, tc.hasInput)
			}
		})
	}
}

func engineWith(t testing.TB, dir string) *policy.Engine {
	t.Helper()
	set, err := policy.LoadPaths([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	e := policy.New()
	if err := e.Activate(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	return e
}

// decidedBy makes d a decision of the activation eng serves, whose mask
// rules the log applies to it.
func decidedBy(d *sidecar.Decision, eng *policy.Engine) *sidecar.Decision {
	d.Policy = eng.Current()
	return d
}

func TestMaskPolicy(t *testing.T) {
	eng := engineWith(t, "testdata/mask")
	if err := decisionlog.ValidateMask(context.Background(), eng); err != nil {
		t.Fatalf("valid mask policy refused: %v", err)
	}
	var out lines
	l := startLogger(t, testConfig(), decisionlog.NewWriterSink(&out), decisionlog.WithMaskPolicy())
	search := requestInput(t)
	other := requestInput(t)
	other["parsed_path"] = []any{"cart"}
	l.Log(decidedBy(impersonationDecision("search", search), eng))
	l.Log(decidedBy(impersonationDecision("cart", other), eng))
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := out.records(t)
	cases := []struct {
		name       string
		rec        map[string]any
		queryShown bool
	}{
		{"search request", recs[0], false},
		{"cart request", recs[1], true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.rec["input"].(map[string]any)
			headers := in["attributes"].(map[string]any)["request"].(map[string]any)["http"].(map[string]any)["headers"].(map[string]any)
			if _, ok := headers["x-api-key"]; ok {
				t.Error("x-api-key not erased by the policy")
			}
			if got := in["identity"].(map[string]any)["email"]; got != "***" {
				t.Errorf("email = %v, want upserted ***", got)
			}
			if _, ok := in["parsed_query"]; ok != tc.queryShown {
				t.Errorf("parsed_query present = %v, want %v", ok, tc.queryShown)
			}
			if fmt.Sprint(tc.rec["masked"]) != "[/input/identity/email]" {
				t.Errorf("masked = %v", tc.rec["masked"])
			}
			if _, ok := headers["Authorization"]; ok {
				t.Error("policy mask disabled the default masking")
			}
		})
	}
}

func TestMaskPolicyAbsent(t *testing.T) {
	cases := []struct {
		name string
		eng  *policy.Engine
	}{
		{"policy without system.log", engineWith(t, "testdata/nomask")},
		{"no policy loaded yet", policy.New()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out lines
			l := startLogger(t, testConfig(), decisionlog.NewWriterSink(&out), decisionlog.WithMaskPolicy())
			l.Log(decidedBy(impersonationDecision("d", requestInput(t)), tc.eng))
			if err := l.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			rec := out.records(t)[0]
			if rec["mask_error"] != nil || rec["input"] == nil {
				t.Errorf("input = %v, mask_error = %v; want the input with the default masking only", rec["input"] != nil, rec["mask_error"])
			}
			if l.MaskErrors() != 0 {
				t.Errorf("MaskErrors = %d", l.MaskErrors())
			}
		})
	}
}

func TestRecordDefaults(t *testing.T) {
	var out lines
	l := startLogger(t, testConfig(), decisionlog.NewWriterSink(&out))
	l.Log(&sidecar.Decision{Allowed: true})
	l.Log(&sidecar.Decision{Allowed: true})
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := out.records(t)
	t.Run("decision id generated", func(t *testing.T) {
		a, b := recs[0]["decision_id"].(string), recs[1]["decision_id"].(string)
		if len(a) != 32 || a == b {
			t.Errorf("ids %q, %q; want distinct generated ids", a, b)
		}
	})
	t.Run("time set", func(t *testing.T) {
		if ts, _ := time.Parse(time.RFC3339, recs[0]["time"].(string)); ts.Year() < 2020 {
			t.Errorf("time = %v", recs[0]["time"])
		}
	})
}

func TestInvalidMaskPolicy(t *testing.T) {
	t.Run("refused at start naming the rules", func(t *testing.T) {
		err := decisionlog.ValidateMask(context.Background(), engineWith(t, "testdata/badmask"))
		if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != decisionlog.MaskField {
			t.Fatalf("err = %v, want EINVALID on %s", err, decisionlog.MaskField)
		}
		if msg := err.Error(); !strings.Contains(msg, "/result/allowed") && !strings.Contains(msg, "rename") {
			t.Errorf("error does not name the bad rule: %v", msg)
		}
	})
	t.Run("failing on an input drops that input", func(t *testing.T) {
		eng := engineWith(t, "testdata/inputmask")
		if err := decisionlog.ValidateMask(context.Background(), eng); err != nil {
			t.Fatalf("mask valid on empty input refused: %v", err)
		}
		var out lines
		l := startLogger(t, testConfig(), decisionlog.NewWriterSink(&out), decisionlog.WithMaskPolicy())
		in := requestInput(t)
		in["ticket"] = "T-1"
		l.Log(decidedBy(impersonationDecision("d", in), eng))
		if err := l.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		rec := out.records(t)[0]
		if _, ok := rec["input"]; ok {
			t.Error("input logged although its mask failed")
		}
		if !strings.Contains(fmt.Sprint(rec["mask_error"]), "42") {
			t.Errorf("mask_error = %v, want the bad rule named", rec["mask_error"])
		}
		if l.MaskErrors() != 1 {
			t.Errorf("MaskErrors = %d, want 1", l.MaskErrors())
		}
	})
}

// Ops learn that masking ran out of its bound from a counter: a client
// sending queries built to cost the logger work, or a portal whose queries
// are longer than the bound allows for (its values then logged masked).
func TestMaskingPastTheWorkBoundIsCounted(t *testing.T) {
	// Distinct values, so each is read: 64 of 32 KB, twice the bound.
	var pairs []string
	for i := range 64 {
		pairs = append(pairs, fmt.Sprintf("v%d=[%s%d]", i, strings.Repeat(`{"a":1},`, 4000), i))
	}
	long := "/?" + strings.Join(pairs, "&")
	var out lines
	l := startLogger(t, testConfig(), decisionlog.NewWriterSink(&out))
	for _, path := range []string{"/?q=shoes", long, "/?q=socks", long} {
		l.Log(&sidecar.Decision{Allowed: true, Path: "/", Input: map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{"path": path}}}}})
	}
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(out.records(t)); n != 4 {
		t.Fatalf("%d records, want 4", n)
	}
	if got := l.MaskWorkSpent(); got != 2 {
		t.Errorf("MaskWorkSpent = %d, want 2 (the two long queries)", got)
	}
}

func TestParseMask(t *testing.T) {
	cases := []struct {
		name    string
		rego    string
		wantErr string
	}{
		{"erase strings", `{"/input/a", "/input/b~1c"}`, ""},
		{"upsert and remove objects", `[{"op": "upsert", "path": "/input/a", "value": 1}, {"op": "remove", "path": "/input/b"}]`, ""},
		{"whole input", `{"/input"}`, ""},
		{"not a collection", `"/input/a"`, "set or array"},
		{"number", `{1}`, "path string or an operation"},
		{"outside input", `{"/result/allowed"}`, "start with /input"},
		{"prefix lookalike", `{"/inputs/a"}`, "start with /input"},
		{"unknown op", `[{"op": "rename", "path": "/input/a"}]`, "op must be"},
		{"missing path", `[{"op": "remove"}]`, "missing path"},
		{"upsert without value", `[{"op": "upsert", "path": "/input/a"}]`, "needs a value"},
		{"unknown field", `[{"op": "remove", "path": "/input/a", "when": true}]`, "unknown field"},
		{"empty segment", `{"/input//a"}`, "empty segment"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			term, err := ast.ParseTerm(tc.rego)
			if err != nil {
				t.Fatal(err)
			}
			_, err = decisionlog.ParseMask(term.Value)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("err = %v, want it to say %q", err, tc.wantErr)
			case tc.wantErr != "" && sidecar.ErrorField(err) != decisionlog.MaskField:
				t.Errorf("error field = %q", sidecar.ErrorField(err))
			}
		})
	}
}

func FuzzParseMask(f *testing.F) {
	for _, s := range []string{`{"/input/a"}`, `[{"op": "upsert", "path": "/input/a", "value": 1}]`, `{1, "x"}`, `[{"op": 1}]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		term, err := ast.ParseTerm(s)
		if err != nil {
			return
		}
		rules, err := decisionlog.ParseMask(term.Value)
		if err == nil {
			for _, r := range rules {
				if !strings.HasPrefix(r.Path, "/input") {
					t.Fatalf("accepted path %q", r.Path)
				}
			}
		}
	})
}

func TestTraceID(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"bare id", "4BF92F3577B34DA6A3CE929D0E0E4736", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"future version with extra field", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"version 00 with extra field", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz", ""},
		{"version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""},
		{"all zero", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""},
		{"not hex", "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01", ""},
		{"short", "4bf92f35", ""},
		{"empty", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := decisionlog.TraceID(tc.in); got != tc.want {
				t.Errorf("TraceID(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzTraceID(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("4bf92f3577b34da6a3ce929d0e0e4736")
	f.Fuzz(func(t *testing.T, s string) {
		id := decisionlog.TraceID(s)
		if id != "" && (len(id) != 32 || strings.ToLower(id) != id) {
			t.Fatalf("TraceID(%q) = %q", s, id)
		}
	})
}

// failingSink fails until healed, like a sink whose server is away.
type failingSink struct {
	mu     sync.Mutex
	broken bool
	out    lines
}

func (s *failingSink) set(broken bool) { s.mu.Lock(); s.broken = broken; s.mu.Unlock() }

func (s *failingSink) Write(ctx context.Context, batch [][]byte) error {
	s.mu.Lock()
	broken := s.broken
	s.mu.Unlock()
	if broken {
		return errors.New("sink away")
	}
	return decisionlog.NewWriterSink(&s.out).Write(ctx, batch)
}

// stuckSink never returns until released, like a Redis that accepted the
// connection and stopped answering.
type stuckSink struct{ release chan struct{} }

func (s stuckSink) Write(ctx context.Context, _ [][]byte) error {
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestLogNeverWaitsOnTheSink(t *testing.T) {
	cfg := testConfig()
	cfg.QueueSize, cfg.BatchSize = 100, 10
	sink := stuckSink{release: make(chan struct{})}
	l := startLogger(t, cfg, sink)
	for i := range 1000 { // would hang here if Log waited on the sink
		l.Log(impersonationDecision(fmt.Sprint(i), nil))
	}
	if got := l.Dropped(); got != 900 {
		t.Errorf("Dropped = %d, want the 900 past the bound", got)
	}
	if got := l.QueueDepth(); got != 100 {
		t.Errorf("QueueDepth = %d, want 100", got)
	}
	close(sink.release)
	waitFor(t, "the queue to drain once the sink answers", func() bool { return l.QueueDepth() == 0 })
	if l.Flushed() != 100 {
		t.Errorf("Flushed = %d, want 100", l.Flushed())
	}
}

func TestStop(t *testing.T) {
	t.Run("flushes a partial batch at once", func(t *testing.T) {
		var out lines
		cfg := testConfig()
		cfg.FlushInterval = time.Hour
		l := startLogger(t, cfg, decisionlog.NewWriterSink(&out))
		for i := range 7 {
			l.Log(impersonationDecision(fmt.Sprint(i), nil))
		}
		if err := l.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := len(out.records(t)); n != 7 {
			t.Errorf("flushed %d records, want 7", n)
		}
	})
	t.Run("retries a failing sink until the deadline and reports the loss", func(t *testing.T) {
		sink := &failingSink{broken: true}
		l := startLogger(t, testConfig(), sink)
		for i := range 5 {
			l.Log(impersonationDecision(fmt.Sprint(i), nil))
		}
		ctx, cancel := context.WithCancel(context.Background())
		waitFor(t, "a failed write", func() bool { return l.SinkErrors() > 0 })
		cancel()
		err := l.Stop(ctx)
		if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE || !strings.Contains(err.Error(), "5 records") {
			t.Errorf("Stop = %v, want 5 records reported", err)
		}
		if l.Dropped() != 5 {
			t.Errorf("Dropped = %d, want 5", l.Dropped())
		}
	})
	t.Run("sink back during stop gets everything", func(t *testing.T) {
		sink := &failingSink{broken: true}
		l := startLogger(t, testConfig(), sink)
		for i := range 5 {
			l.Log(impersonationDecision(fmt.Sprint(i), nil))
		}
		waitFor(t, "a failed write", func() bool { return l.SinkErrors() > 0 })
		go func() {
			time.Sleep(30 * time.Millisecond)
			sink.set(false)
		}()
		if err := l.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := len(sink.out.records(t)); n != 5 || l.Dropped() != 0 {
			t.Errorf("written %d, dropped %d; want 5 and 0", n, l.Dropped())
		}
	})
	t.Run("the start context ending does not stop the writer", func(t *testing.T) {
		// The shutdown signal ends the start context while in-flight checks
		// still log; only Stop, after them, ends the writer.
		var out lines
		l, err := decisionlog.New(testConfig(), decisionlog.NewWriterSink(&out))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := l.Start(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		l.Log(impersonationDecision("after-signal", nil))
		if err := l.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := out.records(t); len(got) != 1 || got[0]["decision_id"] != "after-signal" || l.Dropped() != 0 {
			t.Errorf("records %v, dropped %d; want the one logged after the signal", got, l.Dropped())
		}
	})
	t.Run("log after stop is counted as dropped", func(t *testing.T) {
		l := startLogger(t, testConfig(), decisionlog.DiscardSink{})
		_ = l.Stop(context.Background())
		l.Log(impersonationDecision("late", nil))
		if l.Dropped() != 1 {
			t.Errorf("Dropped = %d, want 1", l.Dropped())
		}
	})
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*decisionlog.Config)
		field string
	}{
		{"defaults", func(*decisionlog.Config) {}, ""},
		{"sink", func(c *decisionlog.Config) { c.Sink = "kafka" }, "decision_log.sink"},
		{"queue", func(c *decisionlog.Config) { c.QueueSize = 0 }, "decision_log.queue_size"},
		{"queue bytes", func(c *decisionlog.Config) { c.MaxQueueBytes = decisionlog.MinMaxQueueBytes - 1 }, "decision_log.max_queue_bytes"},
		{"batch over queue", func(c *decisionlog.Config) { c.QueueSize = 10; c.BatchSize = 11 }, "decision_log.batch_size"},
		{"flush", func(c *decisionlog.Config) { c.FlushInterval = 0 }, "decision_log.flush_interval"},
		{"flush timeout", func(c *decisionlog.Config) { c.FlushTimeout = -time.Second }, "decision_log.flush_timeout"},
		{"stream", func(c *decisionlog.Config) { c.Stream = "" }, "decision_log.stream"},
		{"redis stream with braces and no hash tag", func(c *decisionlog.Config) { c.Sink = decisionlog.SinkRedis; c.Stream = "logs{}:decisions" }, "decision_log.stream"},
		{"max_len", func(c *decisionlog.Config) { c.MaxLen = -1 }, "decision_log.max_len"},
		{"mask header", func(c *decisionlog.Config) { c.MaskHeaders = []string{""} }, "decision_log.mask_headers"},
		{"backoff", func(c *decisionlog.Config) { c.BackoffMax = time.Millisecond }, "decision_log.backoff_max"},
		// A client can make every record max_record_bytes long: a redis
		// sink's stream must fit in stream_max_bytes at that size, or it
		// could fill the Redis that holds delegation state (1,000,000
		// records of 64 KiB are 64 GiB).
		{"redis stream over budget", func(c *decisionlog.Config) { c.Sink = decisionlog.SinkRedis; c.MaxLen = 1_000_000 }, "decision_log.max_len"},
		// The once-set's ids count in the same budget.
		{"redis stream just over budget", func(c *decisionlog.Config) {
			c.Sink, c.StreamMaxBytes, c.DedupMaxIDs = decisionlog.SinkRedis, 100<<20, 10_000
			c.MaxLen = (100<<20-10_000*decisionlog.DedupIDBytes)/int64(c.MaxRecordBytes) + 1
		}, "decision_log.max_len"},
		{"redis stream at budget", func(c *decisionlog.Config) {
			c.Sink, c.StreamMaxBytes, c.DedupMaxIDs = decisionlog.SinkRedis, 100<<20, 10_000
			c.MaxLen = (100<<20 - 10_000*decisionlog.DedupIDBytes) / int64(c.MaxRecordBytes)
		}, ""},
		{"redis once-set over budget", func(c *decisionlog.Config) {
			c.Sink, c.StreamMaxBytes, c.MaxLen, c.DedupMaxIDs = decisionlog.SinkRedis, 100<<20, 1, 100<<20/decisionlog.DedupIDBytes
		}, "decision_log.dedup_max_ids"},
		{"redis once-set, huge", func(c *decisionlog.Config) { c.Sink = decisionlog.SinkRedis; c.DedupMaxIDs = 1 << 62 }, "decision_log.dedup_max_ids"},
		{"redis once-set under a batch", func(c *decisionlog.Config) { c.Sink = decisionlog.SinkRedis; c.DedupMaxIDs = int64(c.BatchSize) - 1 }, "decision_log.dedup_max_ids"},
		{"once-set not positive", func(c *decisionlog.Config) { c.DedupMaxIDs = -1 }, "decision_log.dedup_max_ids"},
		{"redis stream, huge max_len", func(c *decisionlog.Config) { c.Sink = decisionlog.SinkRedis; c.MaxLen = 1 << 62 }, "decision_log.max_len"},
		{"stdout ignores the stream bound", func(c *decisionlog.Config) { c.MaxLen = 1_000_000 }, ""},
		{"stream budget under a record", func(c *decisionlog.Config) { c.StreamMaxBytes = int64(c.MaxRecordBytes) - 1 }, "decision_log.stream_max_bytes"},
		{"dedup window under a second", func(c *decisionlog.Config) { c.DedupWindow = time.Millisecond }, "decision_log.dedup_window"},
		{"dedup window over a day", func(c *decisionlog.Config) { c.DedupWindow = 25 * time.Hour }, "decision_log.dedup_window"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := decisionlog.Defaults()
			tc.edit(&c)
			if got := sidecar.ErrorField(c.Validate()); got != tc.field {
				t.Errorf("field = %q, want %q (%v)", got, tc.field, c.Validate())
			}
		})
	}
}

// A redis sink left at its defaults fits its stream, at max_record_bytes
// per record, and its once-set in stream_max_bytes, whatever those two
// are set to.
func TestRedisSinkDefaultsFitTheStreamBudget(t *testing.T) {
	cases := []struct {
		name                    string
		maxRecord, streamBudget int
	}{
		{"defaults", 0, 0},
		{"smallest records", decisionlog.MinMaxRecordBytes, 0},
		{"small budget", 0, 1 << 20},
		{"large budget", decisionlog.MinMaxRecordBytes, 1 << 40}, // capped at DefaultMaxLen
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := decisionlog.Config{Sink: decisionlog.SinkRedis, MaxRecordBytes: tc.maxRecord, StreamMaxBytes: int64(tc.streamBudget)}
			c.SetDefaults()
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if c.MaxLen < 1 || c.MaxLen > decisionlog.DefaultMaxLen || c.MaxLen*int64(c.MaxRecordBytes)+c.DedupMaxIDs*decisionlog.DedupIDBytes > c.StreamMaxBytes {
				t.Errorf("max_len %d × max_record_bytes %d + dedup_max_ids %d × %d over stream_max_bytes %d",
					c.MaxLen, c.MaxRecordBytes, c.DedupMaxIDs, decisionlog.DedupIDBytes, c.StreamMaxBytes)
			}
		})
	}
}

// BenchmarkLog measures what a check pays to log: "enqueue" is Log alone
// (nothing drains, the queue is sized to hold every record); "pipeline"
// runs the writer with its masking and encoding on a discarding sink, as
// the server does, so both cores are shared with the background work.
func TestNewSink(t *testing.T) {
	cases := []struct {
		sink  string
		field string
	}{
		{decisionlog.SinkStdout, ""},
		{decisionlog.SinkNone, ""},
		{decisionlog.SinkRedis, "decision_log.sink"}, // no Redis configured
	}
	for _, tc := range cases {
		t.Run(tc.sink, func(t *testing.T) {
			cfg := decisionlog.Defaults()
			cfg.Sink = tc.sink
			_, err := decisionlog.NewSink(cfg, nil, &lines{})
			if sidecar.ErrorField(err) != tc.field {
				t.Errorf("err = %v, want field %q", err, tc.field)
			}
		})
	}
}

func TestStopWithoutStart(t *testing.T) {
	var out lines
	l, err := decisionlog.New(testConfig(), decisionlog.NewWriterSink(&out))
	if err != nil {
		t.Fatal(err)
	}
	l.Log(impersonationDecision("early", nil))
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if recs := out.records(t); len(recs) != 1 || recs[0]["decision_id"] != "early" {
		t.Errorf("records logged before Start were not flushed by Stop: %v", recs)
	}
}

func TestConfigFromYAML(t *testing.T) {
	b, err := os.ReadFile("testdata/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := decisionlog.Defaults()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		got, want any
	}{
		{"sink", cfg.Sink, decisionlog.SinkRedis},
		{"flush_interval", cfg.FlushInterval, 100 * time.Millisecond},
		{"backoff_max", cfg.BackoffMax, 10 * time.Second},
		{"stream", cfg.Stream, "{deputy}:decisions"},
		{"mask_headers", fmt.Sprint(cfg.MaskHeaders), "[x-api-key X-Session-Secret]"},
		{"actor_token_header default kept", cfg.ActorTokenHeader, "x-deputy-token"},
		{"max_len", cfg.MaxLen, int64(200000)},
		{"stream_max_bytes", cfg.StreamMaxBytes, int64(2 << 30)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %v, want %v", tc.got, tc.want)
			}
		})
	}
}

func BenchmarkLog(b *testing.B) {
	d := impersonationDecision("bench", nil)
	b.Run("enqueue", func(b *testing.B) {
		cfg := decisionlog.Defaults()
		cfg.QueueSize = b.N + 1
		cfg.MaxQueueBytes = 1 << 40 // never the bound: measure the enqueue
		cfg.BatchSize = min(cfg.BatchSize, cfg.QueueSize)
		l, err := decisionlog.New(cfg, decisionlog.DiscardSink{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			l.Log(d)
		}
		b.StopTimer()
		if l.Dropped() != 0 {
			b.Fatalf("dropped %d", l.Dropped())
		}
	})
	b.Run("pipeline", func(b *testing.B) {
		cfg := decisionlog.Defaults()
		cfg.QueueSize = 1 << 16
		cfg.MaxQueueBytes = 1 << 40 // the record bound, as before
		cfg.BatchSize = 512
		l, err := decisionlog.New(cfg, decisionlog.DiscardSink{})
		if err != nil {
			b.Fatal(err)
		}
		_ = l.Start(context.Background())
		start := time.Now()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Log(d)
			}
		})
		b.StopTimer()
		_ = l.Stop(context.Background())
		b.ReportMetric(float64(l.Dropped())/float64(b.N), "dropped/op")
		b.ReportMetric(float64(l.Flushed())/time.Since(start).Seconds(), "written/s")
	})
}
