package decisionlog

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds, failing the test after a bound: the
// one polling helper of this package's tests, internal and external.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
