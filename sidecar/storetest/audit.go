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
