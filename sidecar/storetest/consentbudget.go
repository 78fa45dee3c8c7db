package storetest

import (
	"testing"
	"time"
)

// testConsentBudget: a customer's consent changes are counted per window,
// in the store every replica shares; a window that ended leaves a full
// budget, and customers never share one.
func testConsentBudget(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	take := func(customer string) (time.Duration, bool) {
		t.Helper()
		wait, ok, err := e.s.TakeConsentChange(e.ctx, customer, 3, time.Hour)
		must(t, err)
		return wait, ok
	}
	for i := range 3 {
		if _, ok := take("c1"); !ok {
			t.Fatalf("change %d refused within the budget", i+1)
		}
		e.clock.Advance(time.Minute)
	}
	wait, ok := take("c1")
	if ok || wait != time.Hour-3*time.Minute {
		t.Fatalf("fourth change in the window: ok=%v wait=%v, want refused with %v left", ok, wait, time.Hour-3*time.Minute)
	}
	if _, ok := take("c2"); !ok {
		t.Fatal("another customer's budget is shared")
	}
	e.clock.Advance(time.Hour - 3*time.Minute)
	for i := range 3 {
		if _, ok := take("c1"); !ok {
			t.Fatalf("change %d refused in the next window", i+1)
		}
	}
	if _, ok := take("c1"); ok {
		t.Fatal("the next window holds more than the limit")
	}
}
