package decisionlog_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
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
		logged = 100
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
	accepted := l.QueueDepth()
	if accepted < 1 || accepted > bound/body {
		t.Fatalf("QueueDepth = %d, want between 1 and %d records of %d bytes within %d", accepted, bound/body, body, bound)
	}
	if got := l.Dropped(); got != uint64(logged-accepted) {
		t.Errorf("Dropped = %d, want the %d past the byte bound", got, logged-accepted)
	}
	if got := l.QueueBytes(); got > bound || got < int64(accepted*body) {
		t.Errorf("QueueBytes = %d, want at least %d and at most %d", got, accepted*body, bound)
	}
	release()
	waitFor(t, "the queue to drain once the sink answers", func() bool { return l.QueueDepth() == 0 })
	if l.Flushed() != uint64(accepted) {
		t.Errorf("Flushed = %d, want %d", l.Flushed(), accepted)
	}
	if got := l.QueueBytes(); got != 0 {
		t.Errorf("QueueBytes = %d after the drain, want 0", got)
	}
	// Written records give their bytes back: the queue takes a full bound again.
	before := l.Dropped()
	for i := range bound / body / 2 {
		l.Log(impersonationDecision(fmt.Sprint("again-", i), input(body)))
	}
	if l.Dropped() != before {
		t.Errorf("Dropped %d records after the drain, want none", l.Dropped()-before)
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

func TestQueueBytesBoundStopWritesAccepted(t *testing.T) {
	const (
		bound = 64 << 10
		body  = 16 << 10
	)
	sink := &failingSink{broken: true}
	cfg := testConfig()
	cfg.QueueSize, cfg.BatchSize, cfg.MaxQueueBytes = 10000, 10, bound
	l := startLogger(t, cfg, sink)
	t.Cleanup(func() { sink.set(false) }) // before the logger's Stop, also when the test fails
	for i := range 50 {
		l.Log(impersonationDecision(fmt.Sprint(i), largeInput(body)))
	}
	accepted := l.QueueDepth()
	if accepted < 1 || accepted > bound/body || l.Dropped() != uint64(50-accepted) {
		t.Fatalf("accepted %d, dropped %d of 50; want at most %d accepted and the rest dropped", accepted, l.Dropped(), bound/body)
	}
	waitFor(t, "a failed write", func() bool { return l.SinkErrors() > 0 })
	sink.set(false)
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := sink.out.records(t)
	if len(recs) != accepted {
		t.Fatalf("written %d records, want the %d accepted", len(recs), accepted)
	}
	for i, r := range recs {
		if r["decision_id"] != fmt.Sprint(i) {
			t.Errorf("record %d is %v, want the accepted records oldest first", i, r["decision_id"])
		}
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
