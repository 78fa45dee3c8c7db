package decisionlog_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
)

// probingSink is a failingSink that can be probed, as the Redis sink can.
type probingSink struct {
	failingSink
	mu     sync.Mutex
	probes int
}

func (s *probingSink) Probe(context.Context) error {
	s.mu.Lock()
	s.probes++
	s.mu.Unlock()
	return s.Write(context.Background(), nil)
}

func (s *probingSink) probed() int { s.mu.Lock(); defer s.mu.Unlock(); return s.probes }

func spoolConfig(dir string) decisionlog.Config {
	cfg := testConfig()
	cfg.QueueSize, cfg.BatchSize = 20, 5
	cfg.SpoolDir = dir
	return cfg
}

// logSpilled logs ids from..to-1 in chunks the queue holds, waiting after
// each chunk until the writer moved it to the spool: more records than
// the queue bound, none dropped.
func logSpilled(t *testing.T, l *decisionlog.Logger, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		l.Log(impersonationDecision(strconv.Itoa(i), nil))
		if (i+1-from)%10 == 0 || i == to-1 {
			waitFor(t, "the queue to move to the spool", func() bool { return l.QueueDepth() == 0 })
		}
	}
}

// delivered is the decision ids the sink received, in order.
func delivered(t *testing.T, out *lines) []string {
	t.Helper()
	var ids []string
	for _, r := range out.records(t) {
		ids = append(ids, r["decision_id"].(string))
	}
	return ids
}

func wantInOrder(t *testing.T, ids []string, from, to int) {
	t.Helper()
	if len(ids) != to-from {
		t.Fatalf("delivered %d records, want %d", len(ids), to-from)
	}
	for i, id := range ids {
		if id != strconv.Itoa(from+i) {
			t.Fatalf("record %d is %s, want %d: out of order", i, id, from+i)
		}
	}
}

func TestSpool(t *testing.T) {
	t.Run("an outage longer than the queue loses nothing and delivers in order", func(t *testing.T) {
		sink := &probingSink{failingSink: failingSink{broken: true}}
		l := startLogger(t, spoolConfig(t.TempDir()), sink)
		logSpilled(t, l, 0, 200) // ten times the queue
		if l.SpoolBytes() == 0 || l.Dropped() != 0 {
			t.Fatalf("spool %d bytes, dropped %d; want records on disk, none dropped", l.SpoolBytes(), l.Dropped())
		}
		sink.set(false)
		logSpilled(t, l, 200, 210) // while the backlog drains: after it
		waitFor(t, "the spool to drain", func() bool { return l.SpoolBytes() == 0 && l.Flushed() == 210 })
		wantInOrder(t, delivered(t, &sink.out), 0, 210)
	})
	t.Run("records spooled before a restart are delivered after it", func(t *testing.T) {
		dir := t.TempDir()
		down := &failingSink{broken: true}
		l1, err := decisionlog.New(spoolConfig(dir), down)
		if err != nil {
			t.Fatal(err)
		}
		if err := l1.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		logSpilled(t, l1, 0, 50)
		l1.Log(impersonationDecision("50", nil)) // still queued at Stop
		// Stop writes again until its deadline, then keeps what is left on disk.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := l1.Stop(ctx); err != nil {
			t.Fatalf("Stop with a spool = %v, want the records kept on disk", err)
		}
		if l1.Dropped() != 0 {
			t.Fatalf("dropped %d", l1.Dropped())
		}

		var out lines
		l2 := startLogger(t, spoolConfig(dir), decisionlog.NewWriterSink(&out))
		if l2.SpoolBytes() == 0 {
			t.Fatal("the restarted logger found no spooled records")
		}
		l2.Log(impersonationDecision("51", nil))
		if err := l2.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		wantInOrder(t, delivered(t, &out), 0, 52)
		if segs, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(segs) != 0 {
			t.Errorf("segments left after delivery: %v", segs)
		}
	})
	t.Run("past the spool bound records wait in the queue, past both are dropped and counted", func(t *testing.T) {
		cfg := spoolConfig(t.TempDir())
		cfg.SpoolMaxBytes = decisionlog.MinSpoolMaxBytes
		sink := &probingSink{failingSink: failingSink{broken: true}}
		l := startLogger(t, cfg, sink)
		const n = 500 // several hundred bytes each: well past 64 KiB
		buffered := fillSpool(t, l, cfg, n) + cfg.QueueSize
		sink.set(false)
		waitFor(t, "the spool to drain", func() bool { return l.SpoolBytes() == 0 && l.QueueDepth() == 0 })
		wantOldest(t, delivered(t, &sink.out), buffered)
		if l.Flushed()+l.Dropped() != n {
			t.Fatalf("flushed %d + dropped %d != %d logged", l.Flushed(), l.Dropped(), n)
		}
	})
	t.Run("a torn last line from a crash is cut, the rest delivered", func(t *testing.T) {
		dir := t.TempDir()
		seg := filepath.Join(dir, fmt.Sprintf("%020d.seg", 0))
		if err := os.WriteFile(seg, []byte(`{"decision_id":"0"}`+"\n"+`{"decision_id":"1"}`+"\n"+`{"decision_`), 0o600); err != nil {
			t.Fatal(err)
		}
		var out lines
		l := startLogger(t, spoolConfig(dir), decisionlog.NewWriterSink(&out))
		l.Log(impersonationDecision("2", nil))
		if err := l.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		wantInOrder(t, delivered(t, &out), 0, 3)
	})
	t.Run("an unusable spool_dir fails Start naming it", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := decisionlog.New(spoolConfig(file), decisionlog.DiscardSink{})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "decision_log.spool_dir") {
			t.Fatalf("Start = %v, want decision_log.spool_dir named", err)
		}
	})
}

// A sink that comes back after a long outage is written to at once: the
// logger probes it every backoff_min instead of waiting out a backoff
// grown to backoff_max (an hour here).
func TestProbedSinkIsWrittenAsSoonAsItIsBack(t *testing.T) {
	cfg := testConfig()
	cfg.BackoffMax = time.Hour
	sink := &probingSink{failingSink: failingSink{broken: true}}
	l := startLogger(t, cfg, sink)
	l.Log(impersonationDecision("0", nil))
	// Twenty failed probes: a doubling backoff would be waiting hours by now.
	waitFor(t, "twenty failed probes", func() bool { return sink.probed() >= 20 })
	sink.set(false)
	waitFor(t, "the record written after the sink returned", func() bool { return l.Flushed() == 1 })
	if got := l.SinkErrors(); got != 1 {
		t.Errorf("SinkErrors = %d, want 1: probes, not batches, find the sink back", got)
	}
}
