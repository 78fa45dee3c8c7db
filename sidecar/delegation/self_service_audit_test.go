package delegation_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// Customers toggling their own consent, as often as they like, never push
// a staff member's impersonation out of the audit trail: their records
// are self-service, trimmed apart. Consent set on behalf, and the session
// a withdrawal ends, stay with the staff records; a lapse is self-service.
func TestOwnConsentCannotPushImpersonationOutOfAudit(t *testing.T) {
	const keep = 50
	stores := map[string]func(t *testing.T, clock *storetest.Clock) sidecar.Store{
		"memory": func(_ *testing.T, clock *storetest.Clock) sidecar.Store {
			return memory.New(memory.WithClock(clock.Now), memory.WithStreamMaxLen(keep, keep), memory.WithAuditSelfMaxLen(keep))
		},
		"redis": func(t *testing.T, clock *storetest.Clock) sidecar.Store {
			s, err := redis.New(redis.Config{Addrs: []string{redistest.Start(t).Addr}, AuditMaxLen: keep, AuditSelfMaxLen: keep,
				ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(clock.Now))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		},
	}
	for name, newStore := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			clock := storetest.NewClock(storetest.Epoch)
			st := newStore(t, clock)
			lc := delegation.NewImpersonation(st, shippedData(t), delegation.WithImpersonationClock(clock.Now))
			lead := &sidecar.Identity{Subject: "lee"}
			if _, err := st.PutCustomer(ctx, &sidecar.Customer{ID: "c42", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := lc.SetConsent(ctx, lead, delegation.ConsentChange{Customer: "c42", Allowed: true}, allowAll); err != nil {
				t.Fatal(err)
			}
			started, err := lc.Start(ctx, &sidecar.Identity{Subject: "alice"}, delegation.StartRequest{Customer: "c42"}, allowAll)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := lc.Redeem(ctx, nil, started.Code, "", "shop.example.com", allowAll); err != nil {
				t.Fatal(err)
			}
			// The customer's own withdrawal ends the session on them.
			if _, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: "c42"}, delegation.ConsentChange{Customer: "c42"}, allowAll); err != nil {
				t.Fatal(err)
			}
			self := &sidecar.Identity{Subject: "c7"}
			if _, _, err := lc.SetConsent(ctx, self, delegation.ConsentChange{Customer: "c7", Allowed: true, ExpiresAt: new(clock.Now().Add(time.Minute))}, allowAll); err != nil {
				t.Fatal(err)
			}
			clock.Advance(2 * time.Minute)
			if err := lc.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			const toggles = 10*keep + 300 // past Redis's approximate trimming, which drops whole nodes of 100
			for i := range toggles {
				c := fmt.Sprint("cust", i/2) // many accounts, each within its budget
				if _, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: c}, delegation.ConsentChange{Customer: c, Allowed: i%2 == 0}, allowAll); err != nil {
					t.Fatal(err)
				}
			}
			var staff, selfService []string
			f := sidecar.StreamFilter{Page: sidecar.Page{Limit: sidecar.MaxPageLimit}}
			for {
				page, next, err := st.ReadAudit(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range page {
					rec := a.Action + " by " + a.Actor
					if a.SelfService {
						selfService = append(selfService, rec)
					} else {
						staff = append(staff, rec)
					}
				}
				if next == "" {
					break
				}
				f.Cursor = next
			}
			want := []string{"consent.set by lee", "impersonation.start by alice", "impersonation.redeem by alice", "impersonation.end by c42"}
			if !slices.Equal(staff, want) {
				t.Fatalf("staff records = %v, want %v", staff, want)
			}
			if len(selfService) == 0 || len(selfService) >= toggles {
				t.Fatalf("kept %d self-service records of %d: not trimmed apart", len(selfService), toggles+3)
			}
			for _, rec := range selfService {
				if !strings.HasPrefix(rec, "consent.set by cust") {
					t.Fatalf("self-service record %q kept past the newest toggles", rec)
				}
			}
		})
	}
}
