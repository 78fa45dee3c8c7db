package delegation_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// endFirstStore ends a session as another party (first) right before the
// caller's EndSession reaches the store: the caller read the session live,
// and loses the end to someone else.
type endFirstStore struct {
	sidecar.Store
	first *sidecar.Identity
	once  sync.Once
}

func (s *endFirstStore) EndSession(ctx context.Context, id, by, reason string, at time.Time, l sidecar.SessionLimits) (*sidecar.Session, error) {
	s.once.Do(func() {
		if _, err := s.Store.EndSession(ctx, id, s.first.Subject, sidecar.EndRevoked, at, l); err != nil {
			panic(err)
		}
	})
	return s.Store.EndSession(ctx, id, by, reason, at, l)
}

// liveSession has alice start and redeem a session on c42 through lc.
func liveSession(t *testing.T, lc *delegation.Impersonation) *sidecar.Session {
	t.Helper()
	ctx := context.Background()
	must(t, lc.PutCustomer(ctx, &sidecar.Identity{Subject: "sync"}, &sidecar.Customer{ID: "c42", DefaultStoreView: "en"}, allowAll))
	_, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: "c42"}, delegation.ConsentChange{Customer: "c42", Allowed: true}, allowAll)
	must(t, err)
	st, err := lc.Start(ctx, alice, delegation.StartRequest{Customer: "c42", Reason: "help"}, allowAll)
	must(t, err)
	if _, err := lc.Redeem(ctx, nil, st.Code, "", "shop.example.com", allowAll); err != nil {
		t.Fatal(err)
	}
	return st.Session
}

// checkEndRecorded requires the one impersonation.end entry of session
// id, and its impersonation.ended event, to name whoever the store kept
// as having ended it, and why.
func checkEndRecorded(t *testing.T, s sidecar.Store, id string) {
	t.Helper()
	ctx := context.Background()
	got, err := s.GetSession(ctx, id)
	must(t, err)
	as, _, err := s.ReadAudit(ctx, sidecar.StreamFilter{Type: "impersonation.end", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	must(t, err)
	n := 0
	for _, a := range as {
		if a.Target != id {
			continue
		}
		n++
		if a.Actor != got.EndedBy || a.Data["ended_by"] != got.EndedBy || a.Data["end_reason"] != got.EndReason {
			t.Errorf("ended by %s (%s); recorded as ended by actor=%s ended_by=%s (%s)",
				got.EndedBy, got.EndReason, a.Actor, a.Data["ended_by"], a.Data["end_reason"])
		}
	}
	if n != 1 {
		t.Errorf("%d impersonation.end entries, want 1", n)
	}
	evs, _, err := s.ReadEvents(ctx, sidecar.StreamFilter{Type: sidecar.EventImpersonationEnded, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	must(t, err)
	if len(evs) != 1 || evs[0].Data["ended_by"] != got.EndedBy {
		t.Errorf("impersonation.ended events %+v, want one ended_by %s", evs, got.EndedBy)
	}
}

// An admin ends alice's session between alice's End reading it live and
// its store write: the store keeps the admin's end, and alice's End is
// answered as an End of an ended session is (the session, no error). The
// end is recorded once, as the admin's, who ended it: not as alice's.
func TestEndLostToAnotherPartyRecordsTheirEnd(t *testing.T) {
	srv := redistest.Start(t)
	ops := &sidecar.Identity{Subject: "ops-admin", Roles: []string{"admin"}}
	for _, name := range []string{"memory", "redis"} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			clock := storetest.NewClock(storetest.Epoch)
			var base sidecar.Store = memory.New(memory.WithClock(clock.Now))
			if name == "redis" {
				base = redisReplica(t, srv, "endlost", clock)
			}
			store := &endFirstStore{Store: base, first: ops}
			lc := delegation.NewImpersonation(store, shippedData(t), delegation.WithImpersonationClock(clock.Now))
			t.Cleanup(func() { _ = lc.Close() })
			s := liveSession(t, lc)
			clock.Advance(time.Second)
			got, err := lc.End(ctx, alice, s.ID, allowAll)
			if err != nil {
				t.Fatalf("alice's End of a session the admin ended: %v, want the ended session", err)
			}
			if got == nil || got.EndedBy != ops.Subject || got.EndReason != sidecar.EndRevoked {
				t.Fatalf("alice's End answered %+v, want the session as the admin ended it", got)
			}
			checkEndRecorded(t, store, s.ID)
		})
	}
}

// Alice, the customer and an admin end one session at once, on two
// replicas of one Redis (and on one memory store): one of them ends it,
// every End answers without error, and the end is recorded once, as
// the store kept it.
func TestConcurrentEndsRecordWhoEnded(t *testing.T) {
	srv := redistest.Start(t)
	customer := &sidecar.Identity{Subject: "c42"}
	ops := &sidecar.Identity{Subject: "ops-admin", Roles: []string{"admin"}}
	const rounds = 15
	for _, name := range []string{"memory", "redis"} {
		t.Run(name, func(t *testing.T) {
			for round := range rounds {
				ctx := context.Background()
				clock := storetest.NewClock(storetest.Epoch)
				replicas := []sidecar.Store{memory.New(memory.WithClock(clock.Now))}
				replicas = append(replicas, replicas[0])
				if name == "redis" {
					prefix := fmt.Sprintf("endrace%d", round)
					replicas = []sidecar.Store{redisReplica(t, srv, prefix, clock), redisReplica(t, srv, prefix, clock)}
				}
				lcs := make([]*delegation.Impersonation, len(replicas))
				for k, r := range replicas {
					lcs[k] = delegation.NewImpersonation(r, shippedData(t), delegation.WithImpersonationClock(clock.Now))
					defer lcs[k].Close()
				}
				s := liveSession(t, lcs[0])
				var wg sync.WaitGroup
				start := make(chan struct{})
				for k, by := range []*sidecar.Identity{alice, customer, ops} {
					wg.Go(func() {
						<-start
						if _, err := lcs[k%2].End(ctx, by, s.ID, allowAll); err != nil {
							t.Errorf("round %d: end by %s: %v", round, by.Subject, err)
						}
					})
				}
				close(start)
				wg.Wait()
				checkEndRecorded(t, replicas[0], s.ID)
				if t.Failed() {
					t.Fatalf("round %d", round)
				}
			}
		})
	}
}
