package decisionlog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func spoolLines(ids ...string) [][]byte {
	var b [][]byte
	for _, id := range ids {
		b = append(b, []byte(`{"decision_id":"`+id+`"}`))
	}
	return b
}

type spoolStep struct {
	want   string
	unsure bool
}

// readSteps reads the spool two records at a time, acknowledging each
// read, and fails unless the reads and their marks are steps.
func readSteps(t *testing.T, s *spool, steps ...spoolStep) {
	t.Helper()
	for _, step := range steps {
		b, err := s.read(2)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range b {
			got = append(got, strings.Trim(strings.TrimPrefix(string(r), `{"decision_id":`), `"}`))
		}
		if strings.Join(got, " ") != step.want || s.unsure() != step.unsure {
			t.Fatalf("read %q, unsure %v; want %q, %v", got, s.unsure(), step.want, step.unsure)
		}
		if err := s.ack(); err != nil {
			t.Fatal(err)
		}
	}
}

// The spool marks the records a write whose reply was lost held, and
// only those, also across a restart; a read never mixes marked records
// with others, so the sink keeps the ids of the first for the window and
// settles the others.
func TestSpoolMarksUnsureRecordsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.append(spoolLines("a", "b", "c"), 1); err != nil { // a's write lost its reply
		t.Fatal(err)
	}
	if _, err := s.append(spoolLines("d", "e", "f"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.read(2); err != nil { // a alone: the mark ends after it
		t.Fatal(err)
	}
	if err := s.ack(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.read(2); err != nil { // b c, written from the spool: the reply is lost
		t.Fatal(err)
	}
	s.markRead()
	if err := s.close(); err != nil {
		t.Fatal(err)
	}

	s, err = openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.close() })
	if _, err := s.append(spoolLines("g"), 0); err != nil {
		t.Fatal(err)
	}
	readSteps(t, s,
		spoolStep{"b c", true},
		spoolStep{"d e", false},
		spoolStep{"f g", false},
	)
	// Emptied, the spool starts over; a new mark is this run's.
	if _, err := s.append(spoolLines("h", "i"), 1); err != nil {
		t.Fatal(err)
	}
	readSteps(t, s, spoolStep{"h", true}, spoolStep{"i", false})
}

// A spool without marks that describe it (left by a version that did not
// write them, or by a crash, which leaves none: they are written at close)
// may hold any record a write with a lost reply held: all that the
// previous run left are marked, not what this run adds.
func TestSpoolWithoutMarksTakesEveryLeftRecordAsUnsure(t *testing.T) {
	for _, tc := range []struct {
		name  string
		marks func(t *testing.T, dir string)
	}{
		{"no unsure file", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, unsureFile)); err != nil {
				t.Fatal(err)
			}
		}},
		{"marks of other segments", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, unsureFile), []byte("end 0 3\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"a torn unsure file", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, unsureFile), []byte("end 0"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := openSpool(dir, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.append(spoolLines("a", "b", "c"), 0); err != nil {
				t.Fatal(err)
			}
			if err := s.close(); err != nil {
				t.Fatal(err)
			}
			tc.marks(t, dir)
			s, err = openSpool(dir, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.close() })
			if _, err := s.append(spoolLines("d", "e"), 0); err != nil {
				t.Fatal(err)
			}
			readSteps(t, s,
				spoolStep{"a b", true},
				spoolStep{"c", true},
				spoolStep{"d e", false},
			)
		})
	}
}
