package decisionlog_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
)

// fsizeChild names the spool directory to the test binary run again as
// the process whose files may not grow past fsizeLimit.
const (
	fsizeChild = "DEPUTY_TEST_SPOOL_FSIZE_DIR"
	fsizeLimit = 8 << 10
)

// fsizeRun is what the process whose disk filled reports.
type fsizeRun struct {
	Sent, Dropped, Flushed, Unconfirmed, SpoolErrors uint64
	// FailureLines are the lines it logged of failed spool writes, over
	// Elapsed.
	FailureLines int
	Elapsed      time.Duration
}

// A spool whose disk is full fails every write, every backoff step. Each
// failure is counted (deputy_decision_log_spool_errors_total), one line
// is logged at first and then at most one a minute, and no record is
// lost unseen: those written before the disk filled are kept whole and
// delivered by the next run, and those that could not be written wait in
// the queue and are counted as dropped when it is full or at Stop. The
// disk fills for real: the writing process runs with its files limited
// to fsizeLimit bytes (RLIMIT_FSIZE), so the segment's writes fail with
// EFBIG, a partial one included.
func TestSpoolWriteFailuresAreCountedAndPaced(t *testing.T) {
	if dir := os.Getenv(fsizeChild); dir != "" {
		fillDisk(t, dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSpoolWriteFailuresAreCountedAndPaced$", "-test.v")
	cmd.Env = append(os.Environ(), fsizeChild+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the process with a full disk failed: %v\n%s", err, out)
	}
	var run fsizeRun
	for line := range strings.Lines(string(out)) {
		if rest, ok := strings.CutPrefix(line, "FSIZE-RUN "); ok {
			if err := json.Unmarshal([]byte(rest), &run); err != nil {
				t.Fatal(err)
			}
		}
	}
	if run.Sent == 0 {
		t.Fatalf("no report from the process with a full disk:\n%s", out)
	}
	if run.SpoolErrors < 5 {
		t.Errorf("spool errors %d, want every failed write counted (5 at least)", run.SpoolErrors)
	}
	if most := 1 + int(run.Elapsed/time.Minute); run.FailureLines < 1 || run.FailureLines > most {
		t.Errorf("%d lines logged of %d failed spool writes in %v, want 1 to %d", run.FailureLines, run.SpoolErrors, run.Elapsed, most)
	}
	if run.Flushed != 0 || run.Unconfirmed != 0 || run.Dropped == 0 || run.Dropped >= run.Sent {
		t.Fatalf("with the sink down: %+v", run)
	}

	// The next run, on a disk with room, delivers what the spool took:
	// the records not counted as dropped, each whole, none twice.
	var got lines
	l := startLogger(t, spoolConfig(dir), decisionlog.NewWriterSink(&got))
	waitFor(t, "the spool delivered", func() bool { return l.SpoolBytes() == 0 })
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, id := range delivered(t, &got) {
		n, err := strconv.Atoi(id)
		if err != nil || ids[id] || uint64(n) >= run.Sent {
			t.Fatalf("record %q delivered: not one of those sent, or twice", id)
		}
		ids[id] = true
	}
	if uint64(len(ids))+run.Dropped != run.Sent {
		t.Errorf("%d sent, %d dropped, %d delivered from the spool: %d lost unseen",
			run.Sent, run.Dropped, len(ids), int(run.Sent)-int(run.Dropped)-len(ids))
	}
}

// fillDisk is the process whose files may not grow past fsizeLimit: with
// the sink down it logs records until the spool's segment is full and
// its writes have failed a few times, stops, and reports.
func fillDisk(t *testing.T, dir string) {
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: fsizeLimit, Max: fsizeLimit}); err != nil {
		t.Fatal(err)
	}
	var logged lines
	cfg := spoolConfig(dir)
	l, err := decisionlog.New(cfg, &failingSink{broken: true}, decisionlog.WithLogger(slog.New(slog.NewJSONHandler(&logged, nil))))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var sent uint64
	for ; l.SpoolErrors() == 0; sent++ {
		if sent == 10_000 {
			t.Fatal("the spool never failed")
		}
		l.Log(impersonationDecision(strconv.FormatUint(sent, 10), nil))
		if (sent+1)%uint64(cfg.BatchSize) == 0 {
			waitFor(t, "the batch spooled, or the spool failing", func() bool { return l.QueueDepth() == 0 || l.SpoolErrors() > 0 })
		}
	}
	for range 2 * cfg.QueueSize { // more than the queue holds
		l.Log(impersonationDecision(strconv.FormatUint(sent, 10), nil))
		sent++
	}
	waitFor(t, "spool writes failing again and again", func() bool { return l.SpoolErrors() >= 5 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := l.Stop(ctx); err == nil {
		t.Error("Stop reported every record written with the sink down and the disk full")
	}
	run := fsizeRun{Sent: sent, Dropped: l.Dropped(), Flushed: l.Flushed(), Unconfirmed: l.Unconfirmed(),
		SpoolErrors: l.SpoolErrors(), Elapsed: time.Since(start)}
	sc := bufio.NewScanner(bytes.NewReader([]byte(logged.String())))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "decision log spool write failed") {
			run.FailureLines++
		}
	}
	b, err := json.Marshal(run)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("\nFSIZE-RUN %s\n", b)
}
