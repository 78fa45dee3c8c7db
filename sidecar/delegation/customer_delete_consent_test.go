package delegation_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// Deleting a customer withdraws its consent. The mailer and ops read that
// withdrawal where they read every other one: a consent.changed event and
// a consent.set audit entry, saying who withdrew it and why. A customer
// with no consent in force (none given, withdrawn, expired) has nothing
// withdrawn, and no consent change is recorded.
func TestDeleteCustomerRecordsConsentWithdrawal(t *testing.T) {
	stores := map[string]func(t *testing.T, clock *storetest.Clock) sidecar.Store{
		"memory": func(_ *testing.T, clock *storetest.Clock) sidecar.Store {
			return memory.New(memory.WithClock(clock.Now))
		},
		"redis": func(t *testing.T, clock *storetest.Clock) sidecar.Store {
			return redisReplica(t, redistest.Start(t), "del", clock)
		},
	}
	sync := &sidecar.Identity{Subject: "storefront-sync"}
	for name, newStore := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			clock := storetest.NewClock(storetest.Epoch)
			st := newStore(t, clock)
			lc := delegation.NewImpersonation(st, shippedData(t), delegation.WithImpersonationClock(clock.Now))
			consents := map[string]*delegation.ConsentChange{
				"c-live":      {Customer: "c-live", Allowed: true, ExpiresAt: new(clock.Now().Add(time.Hour))},
				"c-withdrawn": {Customer: "c-withdrawn"},
				"c-expired":   {Customer: "c-expired", Allowed: true, ExpiresAt: new(clock.Now().Add(time.Minute))},
				"c-none":      nil,
			}
			for id, ch := range consents {
				if err := lc.PutCustomer(ctx, sync, &sidecar.Customer{ID: id, DefaultStoreView: "en"}, allowAll); err != nil {
					t.Fatal(err)
				}
				if ch != nil {
					if _, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: id}, *ch, allowAll); err != nil {
						t.Fatal(err)
					}
				}
			}
			clock.Advance(2 * time.Minute) // c-expired's consent lapses
			for id := range consents {
				if err := lc.DeleteCustomer(ctx, sync, id, allowAll); err != nil {
					t.Fatal(err)
				}
			}
			for id := range consents {
				evs, _, err := st.ReadEvents(ctx, sidecar.StreamFilter{Type: sidecar.EventConsentChanged, Customer: id})
				if err != nil {
					t.Fatal(err)
				}
				audit, _, err := st.ReadAudit(ctx, sidecar.StreamFilter{Type: "consent.set", Customer: id})
				if err != nil {
					t.Fatal(err)
				}
				var deletion []map[string]string
				for _, e := range evs {
					if e.Actor == sync.Subject {
						deletion = append(deletion, e.Data)
					}
				}
				for _, a := range audit {
					if a.Actor == sync.Subject {
						deletion = append(deletion, a.Data)
					}
				}
				if id != "c-live" {
					if len(deletion) != 0 {
						t.Errorf("%s: consent changes recorded for a deletion that withdrew nothing: %v", id, deletion)
					}
					continue
				}
				if len(deletion) != 2 {
					t.Fatalf("%s: consent changes by %s: %v, want one event and one audit entry", id, sync.Subject, deletion)
				}
				for _, d := range deletion {
					if d["allowed"] != "false" || d["set_by"] != sync.Subject || d["reason"] != sidecar.EndCustomerDeleted {
						t.Errorf("%s: consent change %v, want withdrawn by %s because %s", id, d, sync.Subject, sidecar.EndCustomerDeleted)
					}
				}
			}
		})
	}
}
