package memory_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now sidecar.Clock) sidecar.Store {
		return memory.New(memory.WithClock(now))
	})
}

func TestStreamsAreBounded(t *testing.T) {
	ctx := context.Background()
	s := memory.New(memory.WithStreamMaxLen(10, 20))
	for i := range 100 {
		if err := s.AppendEvent(ctx, &sidecar.Event{Type: sidecar.EventConsentChanged, Data: map[string]string{"n": strconv.Itoa(i)}}); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendAudit(ctx, &sidecar.AuditEntry{Action: "a", Target: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		read  func() (n int, newest string)
		bound int
	}{
		{"events", func() (int, string) {
			es, _, _ := s.ReadEvents(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: 500}})
			return len(es), es[len(es)-1].Data["n"]
		}, 10},
		{"audit", func() (int, string) {
			as, _, _ := s.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: 500}})
			return len(as), as[len(as)-1].Target
		}, 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, newest := tc.read()
			if n > tc.bound || n == 0 || newest != "99" {
				t.Fatalf("kept %d entries (bound %d), newest %s", n, tc.bound, newest)
			}
		})
	}
}

func TestEndedSessionsAreForgottenAfterRetention(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock(storetest.Epoch)
	s := memory.New(memory.WithClock(clock.Now), memory.WithRetention(24*time.Hour))
	if _, err := s.PutCustomer(ctx, &sidecar.Customer{ID: "c"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetConsent(ctx, &sidecar.Consent{Customer: "c", Allowed: true, SetBy: "c", SetAt: clock.Now()}); err != nil {
		t.Fatal(err)
	}
	start := func(id string) {
		t.Helper()
		now := clock.Now()
		_, err := s.StartSession(ctx, sidecar.SessionStart{CodeHash: "code-" + id, CodeExpiresAt: now.Add(30 * time.Second),
			Session: &sidecar.Session{ID: id, Actor: "a", Customer: "c", StartedAt: now, ExpiresAt: now.Add(time.Hour)}})
		if err != nil {
			t.Fatal(err)
		}
	}
	start("old")
	if _, err := s.EndSession(ctx, "old", "a", sidecar.EndEnded, clock.Now(), sidecar.SessionLimits{}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		advance time.Duration
		kept    bool
	}{
		{"kept_within_retention", 23 * time.Hour, true},
		{"forgotten_after_retention", 2 * time.Hour, false},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.Advance(st.advance)
			start("new" + strconv.Itoa(i)) // writes prune
			_, err := s.GetSession(ctx, "old")
			if kept := err == nil; kept != st.kept {
				t.Fatalf("kept = %v (%v), want %v", kept, err, st.kept)
			}
		})
	}
}

func FuzzReadEventsCursor(f *testing.F) {
	ctx := context.Background()
	s := memory.New()
	for range 3 {
		_ = s.AppendEvent(ctx, &sidecar.Event{Type: sidecar.EventConsentChanged})
	}
	for _, seed := range []string{"", "0-0", "1700000000000-1", "x", "-", "1-", "-1", "99999999999999999999-0"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, cursor string) {
		es, _, err := s.ReadEvents(ctx, sidecar.StreamFilter{Page: sidecar.Page{Cursor: cursor}})
		if err != nil && sidecar.ErrorCode(err) != sidecar.EINVALID {
			t.Fatalf("cursor %q: %v", cursor, err)
		}
		if err != nil && es != nil {
			t.Fatalf("entries with an error")
		}
	})
}

func TestSelfServiceAuditKeepsStaffRecords(t *testing.T) {
	storetest.AuditRetention(t, memory.New(memory.WithStreamMaxLen(50, 50), memory.WithAuditSelfMaxLen(50)), 50)
}

// Deleting many customers within the append-once window costs each delete
// about the same: keeping a deletion does not walk the deletions kept.
// 40,000 deletes took 24 s when each walked them all (and held the store's
// lock meanwhile); in time order they take well under a second.
func TestBulkDeleteIsLinear(t *testing.T) {
	ctx := context.Background()
	const n, budget = 40_000, 8 * time.Second
	s := memory.New()
	for i := range n {
		if _, err := s.PutCustomer(ctx, &sidecar.Customer{ID: "c" + strconv.Itoa(i)}, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for i := range n {
		if _, err := s.DeleteCustomer(ctx, "c"+strconv.Itoa(i), "sync"); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 0 && time.Since(start) > budget {
			t.Fatalf("%d of %d deletes took %v, past %v", i, n, time.Since(start), budget)
		}
	}
	t.Logf("%d deletes: %v", n, time.Since(start))
}
