package sidecar

import "time"

// FailureLog paces the log lines of a run of failures: the first is
// logged at once, later ones at most once per Every, each line saying how
// many failed since the one before. A failure of another kind than the
// last logged (a 403 in a run of 500s) is logged at once, so that a line
// per interval never hides what changed; callers name kinds coarsely
// enough (a status code, not a server's reason phrase) that they repeat.
// Not safe for concurrent use.
type FailureLog struct {
	Every time.Duration
	at    time.Time // when the run's last line was logged; zero: no run
	since uint64    // failures since that line
	kind  string    // the kind of the failure that line logged
}

// Failed counts a failure of kind at now, and reports whether to log it
// and how many failures that line stands for (this one included).
func (f *FailureLog) Failed(now time.Time, kind string) (log bool, n uint64) {
	f.since++
	if !f.at.IsZero() && now.Sub(f.at) < f.Every && kind == f.kind {
		return false, 0
	}
	n, f.at, f.since, f.kind = f.since, now, 0, kind
	return true, n
}

// OK ends a run of failures: it reports whether one was under way and
// how many of its failures no line logged yet.
func (f *FailureLog) OK() (failing bool, n uint64) {
	failing, n = !f.at.IsZero(), f.since
	f.at, f.since, f.kind = time.Time{}, 0, ""
	return failing, n
}

// Failing reports whether a run of failures is under way.
func (f *FailureLog) Failing() bool { return !f.at.IsZero() }
