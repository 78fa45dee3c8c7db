package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

// testAuditTrail: self-service records live apart (AuditEntry.SelfService)
// but the trail reads as one: every record once, in the order appended,
// filters and cursors alike across both kinds.
func testAuditTrail(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	// p: privileged, s: self-service; runs of each so pages end on both.
	kinds := "pssppspsssp"
	var want []string
	for i, k := range kinds {
		a := &sidecar.AuditEntry{Action: "consent.set", Actor: "c1", Customer: "c1", Target: fmt.Sprint(i), SelfService: k == 's'}
		if k == 'p' {
			a.Action, a.Actor = "impersonation.start", "alice"
		}
		must(t, e.s.AppendAudit(e.ctx, a))
		want = append(want, fmt.Sprint(i))
	}
	read := func(t *testing.T, f sidecar.StreamFilter) (targets []string, self string) {
		t.Helper()
		for pages := 0; ; pages++ {
			got, next, err := e.s.ReadAudit(e.ctx, f)
			must(t, err)
			for _, a := range got {
				targets = append(targets, a.Target)
				if a.SelfService {
					self += "s"
				} else {
					self += "p"
				}
			}
			if next == "" {
				return targets, self
			}
			if pages > len(kinds) {
				t.Fatal("cursor does not advance")
			}
			f.Cursor = next
		}
	}
	for _, limit := range []int{0, 1, 2, 3} {
		t.Run(fmt.Sprintf("in_order_limit_%d", limit), func(t *testing.T) {
			got, self := read(t, sidecar.StreamFilter{Page: sidecar.Page{Limit: limit}})
			if !slices.Equal(got, want) || self != kinds {
				t.Fatalf("got %v (%s), want %v (%s)", got, self, want, kinds)
			}
		})
	}
	t.Run("filter_spans_both", func(t *testing.T) {
		got, self := read(t, sidecar.StreamFilter{Customer: "c1", Page: sidecar.Page{Limit: 2}})
		if len(got) != len(kinds) || self != kinds {
			t.Fatalf("got %v (%s)", got, self)
		}
		got, self = read(t, sidecar.StreamFilter{Actor: "alice", Page: sidecar.Page{Limit: 1}})
		if !slices.Equal(got, []string{"0", "3", "4", "6", "10"}) || self != "ppppp" {
			t.Fatalf("staff records = %v (%s)", got, self)
		}
		got, self = read(t, sidecar.StreamFilter{Type: "consent.set"})
		if !slices.Equal(got, []string{"1", "2", "5", "7", "8", "9"}) || self != "ssssss" {
			t.Fatalf("consent records = %v (%s)", got, self)
		}
	})
}

// AuditRetention checks a store whose audit trail keeps about keep records
// of each kind (redis.audit_maxlen and redis.audit_self_maxlen, or the
// memory store's bounds): however many self-service records customers
// write, the records of staff actions stay, and the self-service ones are
// trimmed.
func AuditRetention(t *testing.T, s sidecar.Store, keep int) {
	t.Helper()
	ctx := context.Background()
	staff := []string{"impersonation.start", "impersonation.redeem", "impersonation.end"}
	for i, action := range staff {
		must(t, s.AppendAudit(ctx, &sidecar.AuditEntry{Action: action, Actor: "alice", Customer: "c1", Target: fmt.Sprint("s", i)}))
	}
	flood := 10*keep + 300 // beyond Redis's approximate trimming, which drops whole nodes of 100
	for i := range flood {
		c := fmt.Sprint("cust", i%3)
		must(t, s.AppendAudit(ctx, &sidecar.AuditEntry{Action: "consent.set", Actor: c, Customer: c, Target: c, SelfService: true,
			Data: map[string]string{"allowed": fmt.Sprint(i%2 == 0)}}))
	}
	var kept []string
	self := 0
	f := sidecar.StreamFilter{Page: sidecar.Page{Limit: sidecar.MaxPageLimit}}
	for {
		got, next, err := s.ReadAudit(ctx, f)
		must(t, err)
		for _, a := range got {
			if a.SelfService {
				self++
			} else {
				kept = append(kept, a.Action)
			}
		}
		if next == "" {
			break
		}
		f.Cursor = next
	}
	if !slices.Equal(kept, staff) {
		t.Fatalf("staff records kept: %v, want %v", kept, staff)
	}
	if self == 0 || self >= flood {
		t.Fatalf("kept %d of %d self-service records: not trimmed to about %d", self, flood, keep)
	}
}

// testAppendOnce: an event or audit entry appended again with the same
// Once (a writer retrying an append whose reply it never got) is in the
// stream once, and the retry learns the first one's ID; Once values of
// events and of the audit trail are apart, and without one every append
// counts.
func testAppendOnce(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	var ids []string
	for range 2 {
		ev := &sidecar.Event{Type: sidecar.EventImpersonationStarted, Customer: "c1", Once: "op-1"}
		must(t, e.s.AppendEvent(e.ctx, ev))
		ids = append(ids, ev.ID)
	}
	for _, self := range []bool{false, true, false} {
		a := &sidecar.AuditEntry{Action: "impersonation.start", Actor: "alice", Customer: "c1", Target: "s1", SelfService: self, Once: "op-1"}
		must(t, e.s.AppendAudit(e.ctx, a))
		ids = append(ids, a.ID)
	}
	must(t, e.s.AppendAudit(e.ctx, &sidecar.AuditEntry{Action: "impersonation.end", Actor: "alice", Customer: "c1", Target: "s1"}))
	must(t, e.s.AppendAudit(e.ctx, &sidecar.AuditEntry{Action: "impersonation.end", Actor: "alice", Customer: "c1", Target: "s1"}))
	events, _, err := e.s.ReadEvents(e.ctx, sidecar.StreamFilter{})
	must(t, err)
	audit, _, err := e.s.ReadAudit(e.ctx, sidecar.StreamFilter{})
	must(t, err)
	var actions []string
	for _, a := range audit {
		actions = append(actions, a.Action)
	}
	if len(events) != 1 || events[0].ID != ids[0] || ids[1] != ids[0] {
		t.Errorf("events = %+v, ids %v; want the event once, both appends with its id", events, ids[:2])
	}
	if !slices.Equal(actions, []string{"impersonation.start", "impersonation.end", "impersonation.end"}) ||
		audit[0].ID != ids[2] || ids[3] != ids[2] || ids[4] != ids[2] {
		t.Errorf("audit = %v, ids %v; want the start once (all three appends with its id), both ends", actions, ids[2:])
	}
}
