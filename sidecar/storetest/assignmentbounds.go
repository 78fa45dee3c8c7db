package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// testAssignmentBounds: a change bounded by MaxInDomain never takes its
// domain past that many customers, and a call that would is refused as a
// whole, with nothing written, also when calls race; the rows a domain
// writes are counted per window, a call taking all its rows or none.
func testAssignmentBounds(t *testing.T, newEnv func(*testing.T) *env) {
	claim := func(customer, domain string, limit int) sidecar.AssignmentChange {
		return sidecar.AssignmentChange{Customer: customer, MaxInDomain: limit,
			To: &sidecar.Assignment{Customer: customer, Reseller: "r1", Domain: domain}}
	}
	count := func(t *testing.T, e *env, domain string) int {
		t.Helper()
		listed, _, err := e.s.AssignmentsByDomain(e.ctx, domain, sidecar.Page{Limit: sidecar.MaxPageLimit})
		must(t, err)
		return len(listed)
	}
	refused := func(t *testing.T, err error) {
		t.Helper()
		if sidecar.ErrorCode(err) != sidecar.ECONFLICT || sidecar.ErrorReason(err) != sidecar.ReasonTooManyAssignments {
			t.Fatalf("error %v (reason %q), want a conflict with reason %s", err, sidecar.ErrorReason(err), sidecar.ReasonTooManyAssignments)
		}
	}

	t.Run("domain_bound", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{claim("c1", "eu.r1", 3), claim("c2", "eu.r1", 3)})
		must(t, err)
		// Two more would make four: neither is written.
		_, err = e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{claim("c3", "eu.r1", 3), claim("c4", "eu.r1", 3)})
		refused(t, err)
		for _, c := range []string{"c3", "c4"} {
			if _, err := e.s.GetAssignment(e.ctx, c); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
				t.Fatalf("%s of a refused call: %v, want unassigned", c, err)
			}
		}
		if n := count(t, e, "eu.r1"); n != 2 {
			t.Fatalf("eu.r1 lists %d customers after a refused call, want 2", n)
		}
		// One more fits; writing a customer again where it is adds none.
		must(t, ignore(e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{claim("c3", "eu.r1", 3)})))
		again := claim("c1", "eu.r1", 3)
		again.From = "eu.r1"
		if conflicts, err := e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{again}); err != nil || len(conflicts) > 0 {
			t.Fatalf("rewriting an assigned customer in a full domain: %v %v", conflicts, err)
		}
		_, err = e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{claim("c4", "eu.r1", 3)})
		refused(t, err)
		// Other domains have their own bound; a removal frees a place.
		must(t, ignore(e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{claim("c4", "us.r1", 3)})))
		must(t, ignore(e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{{Customer: "c1", From: "eu.r1", By: "admin", At: e.now()}})))
		move := claim("c4", "eu.r1", 3)
		move.From = "us.r1"
		must(t, ignore(e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{move})))
		if n, m := count(t, e, "eu.r1"), count(t, e, "us.r1"); n != 3 || m != 0 {
			t.Fatalf("eu.r1 lists %d, us.r1 %d, want 3 and 0", n, m)
		}
		// A change without a bound (putting back what was) is not refused.
		must(t, ignore(e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{claim("c5", "eu.r1", 0)})))
		if n := count(t, e, "eu.r1"); n != 4 {
			t.Fatalf("eu.r1 lists %d after an unbounded change, want 4", n)
		}
	})

	// Ids fold (sidecar.FoldID): a customer the domain holds, written
	// again in another spelling, is not a new one and fits a full domain.
	t.Run("respelling_a_held_customer_adds_none", func(t *testing.T) {
		e := newEnv(t)
		must(t, ignore(e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{claim("q0", "eu.r1", 2), claim("q1", "eu.r1", 2)})))
		respelled := claim("Q0", "eu.r1", 2)
		respelled.From = "eu.r1"
		if conflicts, err := e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{respelled}); err != nil || len(conflicts) > 0 {
			t.Fatalf("respelling a customer of a full domain: %v %v", conflicts, err)
		}
		if a, err := e.s.GetAssignment(e.ctx, "q0"); err != nil || a.Customer != "Q0" {
			t.Fatalf("q0 after respelling: %+v %v, want spelled Q0", a, err)
		}
		if n := count(t, e, "eu.r1"); n != 2 {
			t.Fatalf("eu.r1 lists %d customers after a respelling, want 2", n)
		}
		_, err := e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{claim("q2", "eu.r1", 2)})
		refused(t, err)
	})

	// Calls racing for the last places: their sum never passes the bound,
	// each call is written whole or not at all.
	t.Run("concurrent_calls_share_the_bound", func(t *testing.T) {
		e := newEnv(t)
		const limit, per, callers = 25, 10, 8
		var (
			wg     sync.WaitGroup
			mu     sync.Mutex
			passed int
		)
		for i := range callers {
			wg.Go(func() {
				cs := make([]sidecar.AssignmentChange, per)
				for j := range cs {
					cs[j] = claim(fmt.Sprintf("k%d-%d", i, j), "eu.r1", limit)
				}
				conflicts, err := e.s.ChangeAssignments(e.ctx, cs)
				switch {
				case err == nil && len(conflicts) == 0:
					mu.Lock()
					passed++
					mu.Unlock()
				case sidecar.ErrorReason(err) == sidecar.ReasonTooManyAssignments:
				default:
					t.Errorf("caller %d: %v %v", i, conflicts, err)
				}
			})
		}
		wg.Wait()
		n := count(t, e, "eu.r1")
		if passed != limit/per || n != passed*per {
			t.Fatalf("%d calls of %d passed a bound of %d, %d customers listed; want %d calls and %d customers", passed, per, limit, n, limit/per, limit/per*per)
		}
	})

	t.Run("row_budget", func(t *testing.T) {
		e := newEnv(t)
		take := func(domain string, rows int) (time.Duration, bool) {
			t.Helper()
			wait, ok, err := e.s.TakeAssignmentRows(e.ctx, domain, rows, 10, time.Hour)
			must(t, err)
			return wait, ok
		}
		if _, ok := take("eu.r1", 7); !ok {
			t.Fatal("7 rows of 10 refused")
		}
		e.clock.Advance(time.Minute)
		if wait, ok := take("eu.r1", 4); ok || wait != time.Hour-time.Minute {
			t.Fatalf("4 more rows: ok=%v wait=%v, want refused with %v left", ok, wait, time.Hour-time.Minute)
		}
		if _, ok := take("eu.r1", 3); !ok {
			t.Fatal("a refused call took rows: 3 more do not fit")
		}
		if _, ok := take("eu.r1", 1); ok {
			t.Fatal("the window holds more than 10 rows")
		}
		if _, ok := take("us.r1", 10); !ok {
			t.Fatal("another domain's budget is shared")
		}
		if _, ok, err := e.s.TakeSelfServiceChange(e.ctx, "eu.r1", 1, time.Hour); err != nil || !ok {
			t.Fatalf("an organisation of the domain's name shares its budget: %v %v", ok, err)
		}
		e.clock.Advance(time.Hour - time.Minute)
		if _, ok := take("eu.r1", 10); !ok {
			t.Fatal("the next window is not full")
		}
	})
}
