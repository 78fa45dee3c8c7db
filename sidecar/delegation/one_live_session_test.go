package delegation_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// One live session per staff member holds across the idle boundary. The
// store judges idleness from last-seen, written at most once per touch
// interval; a replica once judged it from the last request it saw. A
// session whose last request came 59 s after the last write was idle in
// the store but live on the replica for 59 s more: a start in that window
// passed it over without ending it, the replica kept honouring it, and its
// next last-seen write made it live in the store again, beside the new
// one. Now the start ends it (idle, by deputy, evicted and audited), the
// store refuses to touch a session it holds lapsed, and the replica
// counts only last-seen the store holds.
func TestStartEndsTheStaffMembersLapsedSession(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		clock := storetest.NewClock(storetest.Epoch)
		startAfterIdleBoundary(t, redisReplica(t, srv, "oneidle", clock), clock)
	})
	t.Run("memory", func(t *testing.T) {
		clock := storetest.NewClock(storetest.Epoch)
		startAfterIdleBoundary(t, memory.New(memory.WithClock(clock.Now)), clock)
	})
}

func startAfterIdleBoundary(t *testing.T, store sidecar.Store, clock *storetest.Clock) {
	ctx := context.Background()
	alice := &sidecar.Identity{Subject: "alice", Name: "Alice", Roles: []string{"support_agent"}}
	lc := delegation.NewImpersonation(store, shippedData(t), delegation.WithImpersonationClock(clock.Now))
	for _, c := range []string{"c42", "c43", "c44"} {
		if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: c, DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: c}, delegation.ConsentChange{Customer: c, Allowed: true}, allowAll); err != nil {
			t.Fatal(err)
		}
	}
	// One replica with the shipped defaults: cache TTL 30 s, touch interval 1 min.
	r := resolve.NewSessionResolver(store, delegation.ImpersonationConfig{}, resolve.WithSessionClock(clock.Now))
	t.Cleanup(func() { _ = r.Close() })
	startRedeem := func(c string) (*delegation.Started, *sidecar.Request) {
		t.Helper()
		st, err := lc.Start(ctx, alice, delegation.StartRequest{Customer: c}, allowAll)
		if err != nil {
			t.Fatal(err)
		}
		red, err := lc.Redeem(ctx, nil, st.Code, "", "shop.example.com", allowAll)
		if err != nil {
			t.Fatal(err)
		}
		settle(t, store, store, st.Session.ID) // the evictions of what the start ended reached the resolver
		return st, &sidecar.Request{Host: "shop.example.com", Headers: map[string]string{"cookie": "deputy_session=" + red.Token}}
	}
	honoured := func(req *sidecar.Request) bool {
		t.Helper()
		d, err := r.Resolve(ctx, req, nil)
		var clear *sidecar.ClearCookie
		switch {
		case err == nil && d != nil:
			return true
		case sidecar.ErrorCode(err) != sidecar.EUNAUTHORIZED || !errors.As(err, &clear):
			t.Fatalf("resolve: %+v, %v; want honoured, or denied with the cookie cleared", d, err)
		}
		return false
	}
	liveIDs := func() []string {
		t.Helper()
		live, _, err := store.ListSessions(ctx, sidecar.SessionFilter{Actor: "alice", LiveOnly: true, Page: sidecar.Page{Limit: 10}})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range live {
			ids = append(ids, s.ID)
		}
		return ids
	}
	ends := func(id string) []sidecar.AuditEntry {
		t.Helper()
		entries, _, err := store.ReadAudit(ctx, sidecar.StreamFilter{Type: "impersonation.end", Page: sidecar.Page{Limit: 100}})
		if err != nil {
			t.Fatal(err)
		}
		return slices.DeleteFunc(entries, func(e sidecar.AuditEntry) bool { return e.Target != id })
	}

	s1, req1 := startRedeem("c42")
	if !honoured(req1) { // writes last-seen
		t.Fatal("s1 denied at once")
	}
	clock.Advance(59 * time.Second)
	if !honoured(req1) { // within the touch interval: no write
		t.Fatal("s1 denied within a minute")
	}
	clock.Advance(14*time.Minute + 11*time.Second) // 15m10s after the write, 14m11s after the last request

	s2, req2 := startRedeem("c43")
	if len(s2.Replaced) != 1 || s2.Replaced[0].ID != s1.Session.ID ||
		s2.Replaced[0].EndReason != sidecar.EndIdle || s2.Replaced[0].EndedBy != sidecar.SweepActor {
		t.Fatalf("the start ended %+v, want s1 as idle, by %s", s2.Replaced, sidecar.SweepActor)
	}
	if e := ends(s1.Session.ID); len(e) != 1 || e[0].Actor != sidecar.SweepActor || e[0].Data["end_reason"] != sidecar.EndIdle {
		t.Fatalf("audit of s1's end: %+v, want one impersonation.end by %s as idle", e, sidecar.SweepActor)
	}
	if honoured(req1) {
		t.Fatal("s1 honoured after s2 started")
	}
	if !honoured(req2) {
		t.Fatal("s2 denied")
	}
	if ids := liveIDs(); !slices.Equal(ids, []string{s2.Session.ID}) {
		t.Fatalf("alice's live sessions %v, want only s2", ids)
	}
	if err := lc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if e := ends(s1.Session.ID); len(e) != 1 {
		t.Fatalf("s1's end recorded %d times after a sweep", len(e))
	}

	clock.Advance(time.Second)
	s3, req3 := startRedeem("c44")
	if len(s3.Replaced) != 1 || s3.Replaced[0].ID != s2.Session.ID || s3.Replaced[0].EndReason != sidecar.EndReplaced {
		t.Fatalf("the third start ended %+v, want s2 as replaced", s3.Replaced)
	}
	if honoured(req1) || honoured(req2) || !honoured(req3) {
		t.Fatal("after the third start, a session other than s3 is honoured, or s3 is not")
	}
	if ids := liveIDs(); !slices.Equal(ids, []string{s3.Session.ID}) {
		t.Fatalf("alice's live sessions %v, want only s3", ids)
	}
}
