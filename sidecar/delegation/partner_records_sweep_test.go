package delegation_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// streamsRefused is a replica whose audit and events streams refuse
// writes from refuse until accept, and the store as any replica sees it.
type streamsRefused struct {
	replica        sidecar.Store // the replica whose appends are refused
	store          sidecar.Store // the state, through a replica that appends but while refused
	refuse, accept func()
}

// refusedStreams opens one: on Redis, the ACL user the replicas connect
// as may run every command but XADD, as a node out of memory or
// read-only refuses the streams' appends while the state's writes go
// elsewhere; through memory, the replica's appends fail.
func refusedStreams(t *testing.T, backend string, clock sidecar.Clock) streamsRefused {
	t.Helper()
	if backend == "memory" {
		s := memory.New(memory.WithClock(clock))
		t.Cleanup(func() { _ = s.Close() })
		return streamsRefused{replica: appendsLost{s}, store: s, refuse: func() {}, accept: func() {}}
	}
	srv := redistest.Start(t)
	acl := func(rules ...any) {
		t.Helper()
		args := append([]any{"ACL", "SETUSER", "deputy"}, rules...)
		if err := srv.Client().Do(context.Background(), args...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	acl("on", ">deputy-pw", "~*", "&*", "+@all")
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "rec", Username: "deputy", Password: "deputy-pw",
		ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return streamsRefused{replica: s, store: s, refuse: func() { acl("-xadd") }, accept: func() { acl("+xadd") }}
}

// refusedSweepCases runs f on each store, with its streams able to refuse
// writes (refusedStreams), and for each replica that sweeps: a fresh one,
// whose first sweep reads back the whole window, and one that swept
// before the changes (sweptBefore), which reads back from its last sweep.
func refusedSweepCases(t *testing.T, f func(t *testing.T, backend string, clock *partnerClock, rs streamsRefused, sweptBefore bool)) {
	for _, backend := range []string{"memory", "redis"} {
		for _, other := range []string{"fresh", "swept_before"} {
			t.Run(backend+"/"+other, func(t *testing.T) {
				clock := newPartnerClock()
				f(t, backend, clock, refusedStreams(t, backend, clock.Now), other == "swept_before")
			})
		}
	}
}

// partnerRecords counts the audit entries of action on target and the
// events of typ whose key field is target.
func partnerRecords(t *testing.T, s sidecar.Store, action, typ, key, target string) (audit, events int) {
	t.Helper()
	audit = len(audited(t, s, action, target))
	es, _, err := s.ReadEvents(context.Background(), sidecar.StreamFilter{Type: typ, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Data[key] == target {
			events++
		}
	}
	return audit, events
}

// Grants are approved, a request rejected and a grant revoked while the
// node of the audit and events streams refuses writes: each change is
// committed and its records wait in the replica's memory, or fail. The
// replica stops (its queue lost). Once the streams take writes again, the
// next sweep of another replica — one that swept before, or a fresh one —
// records each change once: who approved, rejected or revoked, and the
// events the customer's mailer reads. A sweep while the streams still
// refuse writes loses nothing; later sweeps, of any replica, append
// nothing more.
func TestPartnerRecordsRefusedAreRecordedBySweeps(t *testing.T) {
	refusedSweepCases(t, func(t *testing.T, backend string, clock *partnerClock, rs streamsRefused, sweptBefore bool) {
		ctx := context.Background()
		store := rs.store
		if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: "paul", Org: "partnerco"}, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
		ids := 0
		replica := func(s sidecar.Store, rec *delegation.Recorder) *delegation.Partners {
			return delegation.NewPartners(s, shippedData(t), delegation.PartnerConfig{},
				delegation.WithPartnerClock(clock.Now), delegation.WithPartnerRecorder(rec),
				delegation.WithPartnerIDs(func() string { ids++; return "req" + string(rune('a'+ids)) }))
		}
		b := replica(store, delegation.NewRecorder(store, nil))
		if sweptBefore {
			if err := b.RecordAgain(ctx); err != nil {
				t.Fatal(err)
			}
		}
		var reqs []*sidecar.AccessRequest
		for _, in := range []delegation.AccessRequestInput{
			orgRequest(sidecar.LevelCreate, 30),
			individualRequest(sidecar.LevelLook, 30, "paul"),
			individualRequest(sidecar.LevelLook, 30, "pat"),
		} {
			r, err := b.Request(ctx, patUser, in, allowAll)
			if err != nil {
				t.Fatal(err)
			}
			reqs = append(reqs, r)
		}
		approved, rejected, revokedOf := reqs[0], reqs[1], reqs[2]
		clock.Advance(time.Minute)

		// Replica a's appends are refused; its recorder queues them.
		rs.refuse()
		rec := delegation.NewRecorder(rs.replica, nil)
		if err := rec.Start(ctx); err != nil {
			t.Fatal(err)
		}
		a := replica(rs.replica, rec)
		if _, _, err := a.Approve(ctx, cora, approved.ID, allowAll); err == nil {
			t.Fatal("approval with the events stream refusing writes answered no error")
		}
		if _, err := a.Reject(ctx, cora, rejected.ID, allowAll); err == nil {
			t.Fatal("rejection with the events stream refusing writes answered no error")
		}
		_, gs, _ := a.Approve(ctx, cora, revokedOf.ID, allowAll)
		if len(gs) != 1 {
			t.Fatalf("approval of %s issued %+v, want pat's grant", revokedOf.ID, gs)
		}
		clock.Advance(time.Second)
		if _, err := a.Revoke(ctx, cora, "acme", gs[0].ID, allowAll); err == nil {
			t.Fatal("revocation with the events stream refusing writes answered no error")
		}
		if rec.Pending() == 0 {
			t.Fatal("no audit entry waits for the refusing stream")
		}
		// a stops before the streams take writes: what waits is lost.
		stopped, cancel := context.WithCancel(ctx)
		cancel()
		if err := rec.Stop(stopped); err == nil {
			t.Fatal("stopping with audit entries queued answered no error")
		}
		// A sweep while the streams still refuse writes records
		// nothing, and the next reads the changes back again.
		clock.Advance(2 * delegation.RecordInterval)
		if backend == "redis" {
			if err := b.RecordAgain(ctx); err == nil {
				t.Fatal("a sweep whose appends are refused answered no error")
			}
		}
		clock.Advance(2 * delegation.RecordInterval)
		rs.accept()
		checks := []struct {
			action, typ, key, target string
			audit, events            int
		}{
			{"partner.approve", sidecar.EventGrantApproved, "request_id", approved.ID, 1, 1},
			{"partner.reject", sidecar.EventGrantRejected, "request_id", rejected.ID, 1, 1},
			{"partner.approve", sidecar.EventGrantApproved, "request_id", revokedOf.ID, 1, 1},
			{"partner.revoke", sidecar.EventGrantRevoked, "grant_id", gs[0].ID, 1, 1},
		}
		for _, c := range checks {
			if au, ev := partnerRecords(t, store, c.action, c.typ, c.key, c.target); au+ev != 0 {
				t.Fatalf("%s of %s recorded while refused: %d audit entries, %d events", c.action, c.target, au, ev)
			}
		}
		recorded := func(when string) {
			t.Helper()
			for _, c := range checks {
				au, ev := partnerRecords(t, store, c.action, c.typ, c.key, c.target)
				if au != c.audit || ev != c.events {
					t.Errorf("%s: %s of %s: %d audit entries, %d events; want %d and %d", when, c.action, c.target, au, ev, c.audit, c.events)
				}
			}
		}
		if err := b.RecordAgain(ctx); err != nil {
			t.Fatal(err)
		}
		recorded("after b's sweep")
		for range 2 {
			clock.Advance(time.Minute)
			for _, p := range []*delegation.Partners{b, replica(store, delegation.NewRecorder(store, nil))} {
				if err := p.RecordAgain(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		recorded("after later sweeps")
		if as := audited(t, store, "partner.approve", approved.ID); len(as) == 1 && as[0].Actor != cora.Subject {
			t.Errorf("approval audited as %s's, want cora's", as[0].Actor)
		}
		if as := audited(t, store, "partner.revoke", gs[0].ID); len(as) == 1 && as[0].Actor != cora.Subject {
			t.Errorf("revocation audited as %s's, want cora's", as[0].Actor)
		}
		es, _, err := store.ReadEvents(ctx, sidecar.StreamFilter{Type: sidecar.EventGrantApproved, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
		if err != nil {
			t.Fatal(err)
		}
		if i := slices.IndexFunc(es, func(e sidecar.Event) bool { return e.Data["request_id"] == revokedOf.ID }); i >= 0 && es[i].Data["users"] != "pat" {
			t.Errorf("approval of %s announced for users %q, want pat, whose grant it issued", revokedOf.ID, es[i].Data["users"])
		}
	})
}
