package storetest

import (
	"context"
	"testing"
	"time"
)

// testConsentBudget: a customer's consent changes, and what an
// organisation does for itself, are counted per window, in the store every
// replica shares; a window that ended leaves a full budget, and customers
// (or organisations) never share one, nor a customer and an organisation
// of the same name.
// takeFunc is TakeConsentChange or TakeSelfServiceChange.
type takeFunc = func(ctx context.Context, who string, limit int, window time.Duration) (time.Duration, bool, error)

func testConsentBudget(t *testing.T, newEnv func(*testing.T) *env) {
	consent := func(e *env) takeFunc { return e.s.TakeConsentChange }
	self := func(e *env) takeFunc { return e.s.TakeSelfServiceChange }
	for _, b := range []struct {
		name        string
		take, other func(e *env) takeFunc
	}{{"consent", consent, self}, {"self_service", self, consent}} {
		t.Run(b.name, func(t *testing.T) {
			e := newEnv(t)
			budget := func(f takeFunc) func(string) (time.Duration, bool) {
				return func(who string) (time.Duration, bool) {
					t.Helper()
					wait, ok, err := f(e.ctx, who, 3, time.Hour)
					must(t, err)
					return wait, ok
				}
			}
			take, other := budget(b.take(e)), budget(b.other(e))
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
				t.Fatal("another's budget is shared")
			}
			if _, ok := other("c1"); !ok {
				t.Fatal("the other budget of the same name is shared")
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
		})
	}
}
