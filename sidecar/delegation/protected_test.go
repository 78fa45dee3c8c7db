package delegation_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// The storefront syncs a customer's profile as protected, or deletes it,
// through one replica; the staff member's next request on another
// replica, whose caches hold the session and the customer for an hour, is
// denied, and the session is ended in the store with one
// impersonation.ended event.
func TestProfileChangeReachesEveryReplica(t *testing.T) {
	sync := &sidecar.Identity{Subject: "storefront-sync"}
	for _, tc := range []struct {
		name   string
		change func(ctx context.Context, lc *delegation.Impersonation) error
		reason string
	}{
		{"protected", func(ctx context.Context, lc *delegation.Impersonation) error {
			return lc.PutCustomer(ctx, sync, &sidecar.Customer{ID: "c42", DefaultStoreView: "en", Protected: true}, allowAll)
		}, sidecar.EndCustomerProtected},
		{"deleted", func(ctx context.Context, lc *delegation.Impersonation) error {
			return lc.DeleteCustomer(ctx, sync, "c42", allowAll)
		}, sidecar.EndCustomerDeleted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			srv := redistest.Start(t)
			clock := storetest.NewClock(storetest.Epoch)
			a, b := redisReplica(t, srv, tc.name, clock), redisReplica(t, srv, tc.name, clock)
			lc := delegation.NewImpersonation(a, shippedData(t), delegation.WithImpersonationClock(clock.Now))
			st, resolvers, req := liveOnTwoReplicas(t, lc, a, b, clock)
			if err := tc.change(ctx, lc); err != nil {
				t.Fatal(err)
			}
			partnerEventually(t, "replica b denies the session", func() bool {
				_, err := resolvers["b"].Resolve(ctx, req, nil)
				return sidecar.ErrorReason(err) == "session_"+tc.reason
			})
			s, err := b.GetSession(ctx, st.Session.ID)
			if err != nil {
				t.Fatal(err)
			}
			if s.EndReason != tc.reason || s.EndedBy != sync.Subject {
				t.Fatalf("session ended as %q by %q", s.EndReason, s.EndedBy)
			}
			evs, _, err := b.ReadEvents(ctx, sidecar.StreamFilter{Type: "impersonation.ended"})
			if err != nil || len(evs) != 1 {
				t.Fatalf("impersonation.ended events %v (%v), want one", evs, err)
			}
		})
	}
}

// redisReplica is one replica's store on srv, keys under prefix.
func redisReplica(t *testing.T, srv *redistest.Server, prefix string, clock *storetest.Clock) sidecar.Store {
	t.Helper()
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: prefix,
		ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// liveOnTwoReplicas syncs customer c42 with its consent on a, has alice
// start and redeem a session on it through lc, and returns resolvers on a
// and b that cache for an hour, both already resolving the storefront
// request it returns (the cookie's): what a change must get past.
func liveOnTwoReplicas(t *testing.T, lc *delegation.Impersonation, a, b sidecar.Store, clock *storetest.Clock) (*delegation.Started, map[string]*resolve.SessionResolver, *sidecar.Request) {
	t.Helper()
	ctx := context.Background()
	if _, err := a.PutCustomer(ctx, &sidecar.Customer{ID: "c42", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: "c42"}, delegation.ConsentChange{Customer: "c42", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	st, err := lc.Start(ctx, &sidecar.Identity{Subject: "alice"}, delegation.StartRequest{Customer: "c42"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	red, err := lc.Redeem(ctx, nil, st.Code, "", "shop.example.com", allowAll)
	if err != nil {
		t.Fatal(err)
	}
	resolvers := map[string]*resolve.SessionResolver{}
	for name, s := range map[string]sidecar.Store{"a": a, "b": b} {
		r := resolve.NewSessionResolver(s, delegation.ImpersonationConfig{CacheTTL: time.Hour}, resolve.WithSessionClock(clock.Now))
		t.Cleanup(func() { _ = r.Close() })
		resolvers[name] = r
	}
	req := &sidecar.Request{Host: "shop.example.com", Headers: map[string]string{"cookie": "deputy_session=" + red.Token}}
	for name, r := range resolvers {
		if d, err := r.Resolve(ctx, req, nil); err != nil || d == nil || d.Subject != "c42" || d.SubjectProtected {
			t.Fatalf("replica %s before the change: %+v, %v", name, d, err)
		}
	}
	return st, resolvers, req
}

// countingMarks counts staff writes and fails them while failing is set.
type countingMarks struct {
	*memory.Store
	marks   atomic.Int64
	failing atomic.Bool
}

func (c *countingMarks) MarkStaff(ctx context.Context, subject string) ([]sidecar.Session, error) {
	c.marks.Add(1)
	if c.failing.Load() {
		return nil, sidecar.Unavailable("state store unavailable", errors.New("cut"))
	}
	return c.Store.MarkStaff(ctx, subject)
}

// Every staff action records its subject, but the store is written once
// per subject per cache_ttl (TestLostStaffMarkIsWrittenAgain); a write
// that failed is tried again on the subject's next action, and the mark,
// once stored, protects the account.
func TestRecordStaffWritesOncePerSubject(t *testing.T) {
	ctx := context.Background()
	store := &countingMarks{Store: memory.New()}
	lc := delegation.NewImpersonation(store, shippedData(t))
	store.failing.Store(true)
	lc.RecordStaff(ctx, "lee")
	store.failing.Store(false)
	for range 5 {
		lc.RecordStaff(ctx, "lee")
	}
	lc.RecordStaff(ctx, "")
	if n := store.marks.Load(); n != 2 {
		t.Fatalf("%d staff writes for 6 actions of one subject (the first failed), want 2", n)
	}
	st, err := store.GetCustomerState(ctx, "lee")
	if err != nil || !st.Staff {
		t.Fatalf("lee not recorded as staff: %+v, %v", st, err)
	}
}
