package decisionlog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A write that fails and leaves bytes its truncate cannot cut off seals
// the segment: its records were counted as lost, and the segment takes no
// more. Across a restart the sealed segment, no longer the newest, still
// ends where its last whole write did: a record counted as lost is never
// delivered, and the torn fragment is cut, not read as a record. The
// failure is real: the segment's writer is swapped for a read-only
// descriptor of the same file, so the write fails (EBADF) and so does the
// truncate (EINVAL), after the bytes a partial write leaves are on disk.
func TestSpoolSealedSegmentKeepsItsSizeAcrossRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		torn string // what the failed write left after the segment's end
		// sealLost: the sealed size could not be recorded either (the
		// disk failed once more); the start-up trim still cuts the fragment.
		sealLost bool
	}{
		{"whole and torn records", `{"decision_id":"b"}` + "\n" + `{"decision_id":"c`, false},
		{"a torn record", `{"decision_id":"b`, false},
		{"a torn record, sealed size not recorded", `{"decision_id":"b`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := openSpool(dir, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.append(spoolLines("a"), 0); err != nil {
				t.Fatal(err)
			}
			p := s.path(s.segs[0].seq)
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(tc.torn); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			ro, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.w.Close(); err != nil {
				t.Fatal(err)
			}
			s.w = ro
			if n, err := s.append(spoolLines("b", "c"), 0); n != 0 || err == nil || !s.sealed {
				t.Fatalf("append on a failing segment: kept %d, err %v, sealed %v; want 0, an error, sealed", n, err, s.sealed)
			}
			if _, err := s.append(spoolLines("d"), 0); err != nil {
				t.Fatal(err)
			}
			if len(s.segs) != 2 {
				t.Fatalf("segments %v; want the sealed one and a new one", s.segs)
			}
			if err := s.close(); err != nil {
				t.Fatal(err)
			}
			if tc.sealLost {
				seals, _ := filepath.Glob(filepath.Join(dir, "*"+sealSuffix))
				if len(seals) != 1 {
					t.Fatalf("seal files %v; want one", seals)
				}
				if err := os.Remove(seals[0]); err != nil {
					t.Fatal(err)
				}
			}

			s, err = openSpool(dir, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.close() })
			if want := int64(len(`{"decision_id":"a"}`+"\n") + len(`{"decision_id":"d"}`+"\n")); s.size() != want {
				t.Fatalf("restarted spool holds %d bytes; want %d", s.size(), want)
			}
			readSteps(t, s, spoolStep{"a", false}, spoolStep{"d", false})
			if b, err := s.read(2); len(b) != 0 || err != nil {
				t.Fatalf("read after all delivered: %q, %v", b, err)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "*"+sealSuffix)); len(left) != 0 {
				t.Fatalf("seal files left: %v", left)
			}
		})
	}
}

// A fragment read as a record (bytes after a segment's last line end,
// within the size the spool holds for it) is skipped alone and named for
// what it is, a torn record, not a record past the read bound.
func TestSpoolSkipsATornRecordNamingIt(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.close() })
	if _, err := s.append(spoolLines("a"), 0); err != nil {
		t.Fatal(err)
	}
	torn := `{"decision_id":"b`
	if _, err := s.w.WriteString(torn); err != nil {
		t.Fatal(err)
	}
	s.segs[0].size += int64(len(torn))
	s.bytes += int64(len(torn))
	readSteps(t, s, spoolStep{"a", false})
	b, err := s.read(2)
	if len(b) != 0 || err == nil || !strings.Contains(err.Error(), "a torn record of 17 bytes") || strings.Contains(err.Error(), "read bound") {
		t.Fatalf("read of a torn record: %q, %v; want none and an error naming a torn record of 17 bytes", b, err)
	}
	if !s.empty() {
		t.Fatalf("spool holds %d bytes after the torn record was skipped", s.size())
	}
}
