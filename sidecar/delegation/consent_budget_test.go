package delegation_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A customer toggling their own consent through two replicas gets the
// budget policy data sets (max_consent_changes per consent_change_window)
// once, not once per replica: past it, giving consent again is
// rate_limited with how long to wait. Withdrawing it is never refused, and
// staff setting it on the customer's behalf do not draw on it.
func TestOwnConsentChangesShareOneBudget(t *testing.T) {
	stores := map[string]func(t *testing.T, clock *storetest.Clock) (a, b sidecar.Store){
		"memory": func(_ *testing.T, clock *storetest.Clock) (sidecar.Store, sidecar.Store) {
			s := memory.New(memory.WithClock(clock.Now))
			return s, s
		},
		"redis": func(t *testing.T, clock *storetest.Clock) (sidecar.Store, sidecar.Store) {
			srv := redistest.Start(t)
			return redisReplica(t, srv, "budget", clock), redisReplica(t, srv, "budget", clock)
		},
	}
	for name, newStores := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			clock := storetest.NewClock(storetest.Epoch)
			a, b := newStores(t, clock)
			data := shippedData(t)
			replicas := []*delegation.Impersonation{
				delegation.NewImpersonation(a, data, delegation.WithImpersonationClock(clock.Now)),
				delegation.NewImpersonation(b, data, delegation.WithImpersonationClock(clock.Now)),
			}
			sw, err := replicas[0].Switches()
			if err != nil {
				t.Fatal(err)
			}
			customer := &sidecar.Identity{Subject: "c1"}
			set := func(n int, by *sidecar.Identity, allowed bool) error {
				_, _, err := replicas[n%2].SetConsent(ctx, by, delegation.ConsentChange{Customer: "c1", Allowed: allowed}, allowAll)
				return err
			}
			for n := range sw.MaxConsentChanges {
				if err := set(n, customer, true); err != nil {
					t.Fatalf("giving consent %d of %d: %v", n+1, sw.MaxConsentChanges, err)
				}
				clock.Advance(time.Second)
				if err := set(n+1, customer, false); err != nil {
					t.Fatalf("withdrawal %d: %v", n+1, err)
				}
			}
			err = set(0, customer, true)
			var ra *sidecar.RetryAfter
			if sidecar.ErrorCode(err) != sidecar.ERATELIMIT || !errors.As(err, &ra) ||
				ra.Wait != sw.ConsentChangeWindow-time.Duration(sw.MaxConsentChanges)*time.Second {
				t.Fatalf("giving consent past the budget: %v (retry after %+v)", err, ra)
			}
			if c, err := a.GetConsent(ctx, "c1"); err == nil && c.Allowed {
				t.Fatalf("consent given past the budget: %+v", c)
			}
			lead := &sidecar.Identity{Subject: "lee"}
			if err := set(1, lead, true); err != nil {
				t.Fatalf("staff setting consent on behalf: %v", err)
			}
			if err := set(0, customer, false); err != nil {
				t.Fatalf("withdrawal past the budget: %v", err)
			}
			clock.Advance(sw.ConsentChangeWindow)
			if err := set(1, customer, true); err != nil {
				t.Fatalf("giving consent in the next window: %v", err)
			}
		})
	}
}
