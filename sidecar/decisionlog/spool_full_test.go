package decisionlog_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// spooledRecords counts the records on disk in dir (nothing delivered
// yet, so every line is one).
func spooledRecords(t *testing.T, dir string) int {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range segs {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		n += bytes.Count(b, []byte{'\n'})
	}
	return n
}

// fillSpool logs sent records d-000… with the sink down, each batch
// reaching the spool before the next is logged, until the spool has no
// room for another record. It checks that the queue then holds its bound
// and that only the records past both were dropped, and returns how many
// the spool holds.
func fillSpool(t *testing.T, l *decisionlog.Logger, cfg decisionlog.Config, sent int) int {
	t.Helper()
	line := 0 // bytes of one record on disk; all are the same size
	full := func() bool { return line > 0 && l.SpoolBytes()+int64(line) > cfg.SpoolMaxBytes }
	for i := range sent {
		l.Log(impersonationDecision(fmt.Sprintf("d-%03d", i), requestInput(t)))
		if (i+1)%cfg.BatchSize != 0 {
			continue
		}
		waitFor(t, "the writer to spill the batch", func() bool { return l.QueueDepth() == 0 || full() })
		if line == 0 && l.SpoolBytes() > 0 {
			line = int(l.SpoolBytes()) / spooledRecords(t, cfg.SpoolDir)
		}
	}
	if !full() {
		t.Fatalf("spool holds %d bytes of %d: never filled", l.SpoolBytes(), cfg.SpoolMaxBytes)
	}
	spooled := spooledRecords(t, cfg.SpoolDir)
	if d := l.QueueDepth(); d != cfg.QueueSize {
		t.Fatalf("queue depth %d with a full spool, want the queue full (%d)", d, cfg.QueueSize)
	}
	if got, want := l.Dropped(), uint64(sent-spooled-cfg.QueueSize); got != want {
		t.Fatalf("dropped %d, want %d: %d sent, %d spooled, %d queued", got, want, sent, spooled, cfg.QueueSize)
	}
	return spooled
}

// wantOldest checks that ids are d-000… up to n, in order.
func wantOldest(t *testing.T, ids []string, n int) {
	t.Helper()
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("d-%03d", i)
	}
	if strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Fatalf("delivered %d records, want the oldest %d in order", len(ids), n)
	}
}

// The buffer is the queue plus the spool. Once the spool is full, records
// wait in the queue up to its bound, and only records past both are
// dropped; when Redis returns, the spool's then the queue's are written,
// oldest first.
func TestFullSpoolLeavesRecordsQueued(t *testing.T) {
	srv := redistest.Start(t)
	rc := fastClient(t, srv.Addr)
	cfg := redisConfig(50)
	cfg.BatchSize = 10
	cfg.SpoolDir, cfg.SpoolMaxBytes = t.TempDir(), decisionlog.MinSpoolMaxBytes
	sink, err := decisionlog.NewSink(cfg, rc, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := startLogger(t, cfg, sink)
	srv.Stop()

	const sent = 400
	buffered := fillSpool(t, l, cfg, sent) + cfg.QueueSize

	srv.Restart()
	waitFor(t, "spool and queue written", func() bool { return l.QueueDepth() == 0 && l.SpoolBytes() == 0 })
	wantOldest(t, streamIDs(t, srv, cfg.Stream), buffered)
	if l.Flushed()+l.Dropped() != sent || l.Flushed() != uint64(buffered) {
		t.Fatalf("flushed %d + dropped %d, want %d + %d", l.Flushed(), l.Dropped(), buffered, sent-buffered)
	}
}
