package decisionlog_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
)

// largeInput is a policy input holding a request body of n bytes, the
// kind of record that makes a queue bounded only in records many
// megabytes large.
func largeInput(n int) map[string]any {
	return map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
		"method": "POST",
		"path":   "/upload",
		"body":   strings.Repeat("x", n),
	}}}}
}

func TestQueueBytesBound(t *testing.T) {
	// The pipeline logs its input as an AST value; other callers may log
	// plain JSON values.
	inputs := map[string]func(n int) any{
		"json": func(n int) any { return largeInput(n) },
		"ast": func(n int) any {
			v, err := ast.InterfaceToValue(largeInput(n))
			if err != nil {
				t.Fatal(err)
			}
			return v
		},
	}
	for name, input := range inputs {
		t.Run(name, func(t *testing.T) { testQueueBytesBound(t, input) })
	}
}

func testQueueBytesBound(t *testing.T, input func(n int) any) {
	const (
		bound  = 64 << 10
		body   = 16 << 10
		logged = 20 // a few fit the bound with their input, all without it
	)
	cfg := testConfig()
	cfg.QueueSize, cfg.BatchSize, cfg.MaxQueueBytes = 10000, 10, bound
	sink := stuckSink{release: make(chan struct{})}
	l := startLogger(t, cfg, sink)
	release := sync.OnceFunc(func() { close(sink.release) })
	t.Cleanup(release) // before the logger's Stop, also when the test fails
	for i := range logged {
		l.Log(impersonationDecision(fmt.Sprint(i), input(body)))
	}
	// Past the byte bound a record is queued without its input, never
	// dropped: the decision is what the log is for.
	if got := l.QueueDepth(); got != logged {
		t.Fatalf("QueueDepth = %d, want all %d records", got, logged)
	}
	if got := l.Dropped(); got != 0 {
		t.Errorf("Dropped = %d, want none: past the byte bound records lose their input, not the decision", got)
	}
	if got := l.QueueBytes(); got > bound || got < body {
		t.Errorf("QueueBytes = %d, want at least one input of %d and at most %d", got, body, bound)
	}
	// The bound still holds: records without input fill it too, and
	// then new ones are dropped and counted.
	for i := range 1000 {
		l.Log(impersonationDecision(fmt.Sprint("more-", i), input(body)))
	}
	more := l.QueueDepth() - logged
	if more < 1 || l.Dropped() != uint64(1000-more) || l.QueueBytes() > bound {
		t.Errorf("of 1000 more records %d queued and %d dropped, holding %d bytes; want some queued, the rest dropped, at most %d bytes", more, l.Dropped(), l.QueueBytes(), bound)
	}
	release()
	waitFor(t, "the queue to drain once the sink answers", func() bool { return l.QueueDepth() == 0 })
	if l.Flushed() != uint64(logged+more) {
		t.Errorf("Flushed = %d, want %d", l.Flushed(), logged+more)
	}
	if kept := logged + more - int(l.Oversized()); kept < 1 || kept > bound/body {
		t.Errorf("%d records kept their input, want between 1 and the %d that fit %d bytes", kept, bound/body, bound)
	}
	if got := l.QueueBytes(); got != 0 {
		t.Errorf("QueueBytes = %d after the drain, want 0", got)
	}
	// Written records give their bytes back: the queue takes a full bound
	// again, inputs included.
	before, dropped := l.Oversized(), l.Dropped()
	for i := range bound / body / 2 {
		l.Log(impersonationDecision(fmt.Sprint("again-", i), input(body)))
	}
	waitFor(t, "the second records to be written", func() bool { return l.Flushed() == uint64(logged+more+bound/body/2) })
	if l.Oversized() != before || l.Dropped() != dropped {
		t.Errorf("after the drain %d records lost their input and %d were dropped, want none", l.Oversized()-before, l.Dropped()-dropped)
	}
}

// A record larger than the whole queue bound (a client chose a long path,
// many headers) is queued and written in its oversized form: without its
// input, counted as oversized, never dropped.
func TestRecordLargerThanTheQueueKeepsTheDecision(t *testing.T) {
	var out lines
	cfg := testConfig()
	cfg.MaxQueueBytes = decisionlog.MinMaxQueueBytes
	l := startLogger(t, cfg, decisionlog.NewWriterSink(&out))
	l.Log(impersonationDecision("d-huge", largeInput(2*decisionlog.MinMaxQueueBytes)))
	l.Log(impersonationDecision("d-small", largeInput(100)))
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := out.records(t)
	if len(recs) != 2 {
		t.Fatalf("%d records written (dropped %d), want both", len(recs), l.Dropped())
	}
	if recs[0]["decision_id"] != "d-huge" || recs[0]["input_dropped"] != decisionlog.InputDroppedOversized || recs[0]["input"] != nil {
		t.Errorf("record of the huge input = %v, want d-huge without its input, input_dropped %q", recs[0], decisionlog.InputDroppedOversized)
	}
	if recs[1]["decision_id"] != "d-small" || recs[1]["input"] == nil || recs[1]["input_dropped"] != nil {
		t.Errorf("record of the small input = %v, want d-small with its input", recs[1])
	}
	if l.Oversized() != 1 || l.Dropped() != 0 {
		t.Errorf("oversized %d, dropped %d; want 1 and 0", l.Oversized(), l.Dropped())
	}
}

func TestQueueBytesBoundSmallRecordsUnaffected(t *testing.T) {
	cfg := testConfig()
	cfg.QueueSize, cfg.BatchSize, cfg.MaxQueueBytes = 100, 10, 1<<20
	sink := stuckSink{release: make(chan struct{})}
	l := startLogger(t, cfg, sink)
	t.Cleanup(func() { close(sink.release) }) // before the logger's Stop
	for i := range 1000 {
		l.Log(impersonationDecision(fmt.Sprint(i), nil))
	}
	// Records without input stay far below the byte bound: the record
	// bound decides, as before.
	if got := l.QueueDepth(); got != 100 {
		t.Errorf("QueueDepth = %d, want the record bound 100", got)
	}
}

func TestQueueBytesBoundStopWritesEveryRecord(t *testing.T) {
	const (
		bound  = 64 << 10
		body   = 16 << 10
		logged = 20 // a few fit the bound with their input, all without it
	)
	sink := &failingSink{broken: true}
	cfg := testConfig()
	cfg.QueueSize, cfg.BatchSize, cfg.MaxQueueBytes = 10000, 10, bound
	l := startLogger(t, cfg, sink)
	t.Cleanup(func() { sink.set(false) }) // before the logger's Stop, also when the test fails
	for i := range logged {
		l.Log(impersonationDecision(fmt.Sprint(i), largeInput(body)))
	}
	if l.QueueDepth() != logged || l.Dropped() != 0 {
		t.Fatalf("queued %d, dropped %d of %d; want every record queued", l.QueueDepth(), l.Dropped(), logged)
	}
	waitFor(t, "a failed write", func() bool { return l.SinkErrors() > 0 })
	sink.set(false)
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := sink.out.records(t)
	if len(recs) != logged {
		t.Fatalf("written %d records, want %d", len(recs), logged)
	}
	kept := 0
	for i, r := range recs {
		if r["decision_id"] != fmt.Sprint(i) {
			t.Errorf("record %d is %v, want the records oldest first", i, r["decision_id"])
		}
		// The first ones fit the bound with their input; from the first
		// that did not on, none kept it: its input was not queued.
		switch {
		case r["input"] != nil && kept == i:
			kept++
		case r["input"] != nil:
			t.Errorf("record %d kept its input after record %d lost its own", i, kept)
		case r["input_dropped"] != decisionlog.InputDroppedOversized:
			t.Errorf("record %d has no input and input_dropped %v, want %q", i, r["input_dropped"], decisionlog.InputDroppedOversized)
		}
	}
	if kept < 1 || kept > bound/body || l.Oversized() != uint64(logged-kept) {
		t.Errorf("%d records kept their input, %d counted oversized; want between 1 and %d, the rest oversized", kept, l.Oversized(), bound/body)
	}
}

func TestQueueBytesBoundSpool(t *testing.T) {
	// With a spool the queue moves to disk while the sink is down, so the
	// byte bound drops nothing as long as the spool has room.
	const body = 16 << 10
	sink := &failingSink{broken: true}
	cfg := testConfig()
	cfg.QueueSize, cfg.BatchSize, cfg.MaxQueueBytes = 10000, 10, 64<<10
	cfg.SpoolDir = t.TempDir()
	l := startLogger(t, cfg, sink)
	t.Cleanup(func() { sink.set(false) }) // before the logger's Stop, also when the test fails
	l.Log(impersonationDecision("0", largeInput(body)))
	waitFor(t, "a failed write", func() bool { return l.SinkErrors() > 0 })
	for i := 1; i < 20; i++ {
		l.Log(impersonationDecision(fmt.Sprint(i), largeInput(body)))
		waitFor(t, "the record to move to the spool", func() bool { return l.QueueDepth() == 0 })
	}
	if l.Dropped() != 0 || l.SpoolBytes() == 0 {
		t.Fatalf("dropped %d, spooled %d bytes; want none dropped and the records on disk", l.Dropped(), l.SpoolBytes())
	}
	sink.set(false)
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(sink.out.records(t)); n != 20 {
		t.Errorf("written %d records, want 20", n)
	}
}
