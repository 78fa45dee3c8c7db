package decisionlog

import (
	"strings"
	"testing"
)

// The spool tells the records a previous run left (it may have sent them
// in a write whose reply was lost) from those this run spooled, also
// when this run appends to the segment the previous one left.
func TestSpoolTellsWhatAPreviousRunLeft(t *testing.T) {
	dir := t.TempDir()
	lines := func(ids ...string) [][]byte {
		var b [][]byte
		for _, id := range ids {
			b = append(b, []byte(`{"decision_id":"`+id+`"}`))
		}
		return b
	}
	s, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.append(lines("a", "b", "c")); err != nil {
		t.Fatal(err)
	}
	if s.fromPreviousRun() {
		t.Error("records of this run taken for a previous run's")
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}

	s, err = openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.close() })
	if _, err := s.append(lines("d", "e")); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		want string
		left bool
	}{
		{"a b", true},
		{"c d", true}, // straddles: c was left
		{"e", false},
	} {
		b, err := s.read(2)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range b {
			got = append(got, strings.Trim(strings.TrimPrefix(string(r), `{"decision_id":`), `"}`))
		}
		if strings.Join(got, " ") != step.want || s.fromPreviousRun() != step.left {
			t.Fatalf("read %q, from a previous run %v; want %q, %v", got, s.fromPreviousRun(), step.want, step.left)
		}
		if err := s.ack(); err != nil {
			t.Fatal(err)
		}
	}
	// Emptied, the spool starts over: what comes next is this run's.
	if _, err := s.append(lines("f")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.read(2); err != nil {
		t.Fatal(err)
	}
	if s.fromPreviousRun() {
		t.Error("a record spooled after the previous run's were delivered taken for theirs")
	}
}
