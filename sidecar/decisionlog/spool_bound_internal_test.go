package decisionlog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// spoolDiskBytes is what the spool's directory holds, every file counted.
func spoolDiskBytes(t *testing.T, dir string) (total, largestSeg int64) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
		if filepath.Ext(e.Name()) == segSuffix {
			largestSeg = max(largestSeg, fi.Size())
		}
	}
	return total, largestSeg
}

// A spool's directory holds at most its bound, plus the delivered part of
// its oldest segment, plus its two small files: a segment never passes
// segMax unless a single record does, whatever the batch it came in. The
// chart sizes the spool's emptyDir on that (past its sizeLimit the kubelet
// evicts the pod). Here a batch of 100 records of 64 KiB (6.4 MiB) meets a
// segMax of 3 MiB; the sink takes all but one record of it, fails again,
// and the spool fills to its bound.
func TestSpoolDirectoryStaysWithinItsBound(t *testing.T) {
	const max = 12 << 20 // three quarters of a 16Mi emptyDir
	dir := t.TempDir()
	s, err := openSpool(dir, max)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	id := 0
	batch := func() [][]byte {
		var out [][]byte
		for range DefaultBatchSize {
			pad := bytes.Repeat([]byte("x"), DefaultMaxRecordBytes-64)
			out = append(out, fmt.Appendf(nil, `{"decision_id":"%08d","pad":"%s"}`, id, pad))
			id++
		}
		return out
	}
	line := int64(DefaultMaxRecordBytes - 64 + len(`{"decision_id":"00000000","pad":""}`) + 1)
	bound := max + s.segMax + 64<<10
	check := func(when string) {
		t.Helper()
		disk, seg := spoolDiskBytes(t, dir)
		if seg > s.segMax {
			t.Errorf("%s: a segment of %d bytes, past segMax %d (a record is %d)", when, seg, s.segMax, line)
		}
		if disk > bound {
			t.Errorf("%s: the directory holds %d bytes, past %d (bound %d, segMax %d, small files)", when, disk, bound, max, s.segMax)
		}
	}
	// The first 60 records, marked unsure, fill more than one segment.
	const unsure = 60
	if n, err := s.append(batch(), unsure); err != nil || n != DefaultBatchSize {
		t.Fatalf("append = %d, %v", n, err)
	}
	check("one batch spooled")
	next := 0
	for next < DefaultBatchSize-1 {
		got, err := s.read(min(10, DefaultBatchSize-1-next))
		if err != nil {
			t.Fatal(err)
		}
		if from, to := next, next+len(got); s.unsure() != (from < unsure) || from < unsure && to > unsure {
			t.Fatalf("records %d to %d read with unsure %v; the first %d are unsure", from, to, s.unsure(), unsure)
		}
		for _, b := range got {
			if want := fmt.Sprintf(`{"decision_id":"%08d"`, next); !bytes.HasPrefix(b, []byte(want)) {
				t.Fatalf("read %.30s, want %s", b, want)
			}
			next++
		}
		if err := s.ack(); err != nil {
			t.Fatal(err)
		}
	}
	for {
		n, err := s.append(batch(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if n < DefaultBatchSize {
			id -= DefaultBatchSize - n
			break
		}
	}
	if err := s.sync(); err != nil {
		t.Fatal(err)
	}
	if s.size() > max || s.size() < max-line {
		t.Fatalf("the spool holds %d bytes undelivered, want it full to its bound %d", s.size(), max)
	}
	check("full after a partial delivery")
	// Every record comes back once, in order, the first 60 marked.
	for next < id {
		got, err := s.read(DefaultBatchSize)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			t.Fatalf("read nothing at record %d of %d", next, id)
		}
		if from, to := next, next+len(got); s.unsure() != (from < unsure) || from < unsure && to > unsure {
			t.Fatalf("records %d to %d read with unsure %v; the first %d are unsure", from, to, s.unsure(), unsure)
		}
		for _, b := range got {
			if want := fmt.Sprintf(`{"decision_id":"%08d"`, next); !bytes.HasPrefix(b, []byte(want)) {
				t.Fatalf("read %.30s, want %s", b, want)
			}
			next++
		}
		if err := s.ack(); err != nil {
			t.Fatal(err)
		}
	}
	if !s.empty() {
		t.Fatalf("%d bytes left after every record was read", s.size())
	}
}
