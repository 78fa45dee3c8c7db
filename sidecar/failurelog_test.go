package sidecar_test

import (
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// A run of failures is logged at its first, then at most once per
// interval, each line counting the failures since the one before; the
// run's end reports those no line counted yet.
func TestFailureLogPacesLines(t *testing.T) {
	f := sidecar.FailureLog{Every: time.Minute}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	type step struct {
		at   time.Duration
		log  bool
		want uint64
	}
	for i, s := range []step{
		{0, true, 1},
		{time.Second, false, 0},
		{30 * time.Second, false, 0},
		{59 * time.Second, false, 0},
		{60 * time.Second, true, 4}, // the three unlogged and this one
		{61 * time.Second, false, 0},
		{200 * time.Second, true, 2},
		{201 * time.Second, false, 0},
	} {
		if log, n := f.Failed(t0.Add(s.at), ""); log != s.log || n != s.want {
			t.Fatalf("failure %d at %v: log %v with %d, want %v with %d", i, s.at, log, n, s.log, s.want)
		}
	}
	if failing, n := f.OK(); !failing || n != 1 {
		t.Fatalf("end of the run: failing %v, %d unlogged; want true, 1", failing, n)
	}
	if failing, _ := f.OK(); failing {
		t.Fatal("a second success reported a run of failures")
	}
	if log, n := f.Failed(t0.Add(202*time.Second), ""); !log || n != 1 {
		t.Fatalf("a new run's first failure: log %v with %d, want logged with 1", log, n)
	}
}

// A failure of another kind within the interval is logged at once, and
// starts the interval again.
func TestFailureLogNewKindLoggedAtOnce(t *testing.T) {
	f := sidecar.FailureLog{Every: time.Minute}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i, s := range []struct {
		at   time.Duration
		kind string
		log  bool
		want uint64
	}{
		{0, "status 500", true, 1},
		{time.Second, "status 500", false, 0},
		{2 * time.Second, "status 403", true, 2},
		{3 * time.Second, "status 403", false, 0},
		{4 * time.Second, "status 500", true, 2},
	} {
		if log, n := f.Failed(t0.Add(s.at), s.kind); log != s.log || n != s.want {
			t.Fatalf("failure %d (%s) at %v: log %v with %d, want %v with %d", i, s.kind, s.at, log, n, s.log, s.want)
		}
	}
}
