package delegation_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// staffWrites counts the staff marks written for one subject.
type staffWrites struct {
	sidecar.Store
	subject string
	n       atomic.Int64
}

func (w *staffWrites) MarkStaff(ctx context.Context, subject string) ([]sidecar.Session, error) {
	ended, err := w.Store.MarkStaff(ctx, subject)
	if err == nil && subject == w.subject {
		w.n.Add(1)
	}
	return ended, err
}

// A staff mark can vanish from the store (Redis restarted without
// persistence, failover to a lagging replica, eviction). A replica the
// staff member keeps using writes it again: once its last write is
// cache_ttl old, or as soon as the store says invalidations may have been
// lost. Then a support agent can no longer start a session as the staff
// member, even though a support lead gave consent for them. Until then a
// staff action costs no write.
func TestLostStaffMarkIsWrittenAgain(t *testing.T) {
	ctx := context.Background()
	ttl := delegation.DefaultCacheTTL
	type world struct {
		store *staffWrites
		lc    *delegation.Impersonation
		clock *storetest.Clock
		lose  func() // removes the mark from the store, where anything can
		srv   *redistest.Server
	}
	open := map[string]func(t *testing.T) *world{
		"memory": func(t *testing.T) *world {
			w := &world{clock: storetest.NewClock(storetest.Epoch), lose: func() {}}
			s := memory.New(memory.WithClock(w.clock.Now))
			t.Cleanup(func() { _ = s.Close() })
			w.store = &staffWrites{Store: s, subject: "admin1"}
			return w
		},
		"redis": func(t *testing.T) *world {
			srv := redistest.Start(t)
			w := &world{clock: storetest.NewClock(storetest.Epoch), srv: srv}
			w.store = &staffWrites{Store: redisReplica(t, srv, "sm", w.clock), subject: "admin1"}
			raw := srv.Client()
			w.lose = func() {
				if err := raw.SRem(ctx, "sm:{imp}:staff", "admin1").Err(); err != nil {
					t.Fatal(err)
				}
			}
			return w
		},
	}
	for _, tc := range []struct {
		name   string
		stores []string
		// trigger makes the replica distrust what it wrote; async when the
		// signal travels over Redis.
		trigger func(t *testing.T, w *world)
		async   bool
	}{
		{"cache_ttl_passed", []string{"memory", "redis"}, func(t *testing.T, w *world) {
			w.clock.Advance(ttl - time.Nanosecond)
			w.lc.RecordStaff(ctx, "admin1")
			if w.store.n.Load() != 1 {
				t.Fatalf("%d staff writes within cache_ttl, want 1", w.store.n.Load())
			}
			w.clock.Advance(time.Nanosecond)
		}, false},
		{"invalidations_lost", []string{"memory", "redis"}, func(t *testing.T, w *world) {
			if err := w.store.Invalidate(ctx, sidecar.InvalidateAll); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"redis_restarted_empty", []string{"redis"}, func(t *testing.T, w *world) {
			w.srv.Restart() // the subscription's reconnect is the signal
			putAdmin(t, w.store)
		}, true},
	} {
		for _, name := range tc.stores {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				w := open[name](t)
				lc := delegation.NewImpersonation(w.store, shippedData(t), delegation.WithImpersonationClock(w.clock.Now))
				t.Cleanup(func() { _ = lc.Close() })
				w.lc = lc
				putAdmin(t, w.store)
				lc.RecordStaff(ctx, "admin1")
				w.lose()
				lc.RecordStaff(ctx, "admin1")
				if n := w.store.n.Load(); n != 1 {
					t.Fatalf("%d staff writes for two actions at once, want 1", n)
				}
				tc.trigger(t, w)
				if tc.async {
					partnerEventually(t, "the mark written again", func() bool {
						lc.RecordStaff(ctx, "admin1")
						return w.store.n.Load() == 2
					})
				} else {
					lc.RecordStaff(ctx, "admin1")
				}
				lc.RecordStaff(ctx, "admin1")
				if n := w.store.n.Load(); n != 2 {
					t.Fatalf("%d staff writes, want 2: one, and one again after the trigger", n)
				}
				wantProtected(t, lc, w.store)
			})
		}
	}
}

// putAdmin syncs admin1's customer profile, which says nothing of staff.
func putAdmin(t *testing.T, store sidecar.Store) {
	t.Helper()
	if _, err := store.PutCustomer(context.Background(), &sidecar.Customer{ID: "admin1", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
}

// wantProtected checks that admin1 is staff in the store and that a
// support agent cannot start a session as admin1 once a support lead has
// set its consent.
func wantProtected(t *testing.T, lc *delegation.Impersonation, store sidecar.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := store.GetCustomerState(ctx, "admin1")
	if err != nil || !st.Staff {
		t.Fatalf("admin1 is not staff in the store: %+v, %v", st, err)
	}
	lead := &sidecar.Identity{Subject: "lead1", Roles: []string{"support_lead"}}
	if _, _, err := lc.SetConsent(ctx, lead, delegation.ConsentChange{Customer: "admin1", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	agent := &sidecar.Identity{Subject: "agent1", Roles: []string{"support_agent"}}
	_, err = lc.Start(ctx, agent, delegation.StartRequest{Customer: "admin1"}, allowAll)
	wantCode(t, err, sidecar.EFORBIDDEN, "customer_protected")
}
