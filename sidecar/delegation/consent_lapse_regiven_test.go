package delegation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A consent given until E lapses at E. Whatever comes first after E, the
// customer's next consent change (given again, or withdrawn) or the
// sweep, and on whichever replica, the lapse is recorded once: one
// consent.expired audit entry and one event.
func TestConsentLapseRecordedOnceWhateverReplacesIt(t *testing.T) {
	srv := redistest.Start(t)
	c7 := &sidecar.Identity{Subject: "c7"}
	changes := map[string]delegation.ConsentChange{
		"given_again":             {Customer: "c7", Allowed: true},
		"given_again_until_later": {Customer: "c7", Allowed: true, ExpiresAt: new(storetest.Epoch.Add(time.Hour))},
		"withdrawn":               {Customer: "c7"},
	}
	for _, name := range []string{"memory", "redis"} {
		for change, cc := range changes {
			for _, changeFirst := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/%s/before_the_sweep=%v", name, change, changeFirst), func(t *testing.T) {
					ctx := context.Background()
					clock := storetest.NewClock(storetest.Epoch)
					replicas := []sidecar.Store{memory.New(memory.WithClock(clock.Now))}
					replicas = append(replicas, replicas[0])
					if name == "redis" {
						prefix := fmt.Sprintf("lapsed-%s-%v", change, changeFirst)
						replicas = []sidecar.Store{redisReplica(t, srv, prefix, clock), redisReplica(t, srv, prefix, clock)}
					}
					lcs := make([]*delegation.Impersonation, len(replicas))
					for k, r := range replicas {
						lcs[k] = delegation.NewImpersonation(r, shippedData(t), delegation.WithImpersonationClock(clock.Now))
						t.Cleanup(func() { _ = lcs[k].Close() })
					}
					until := clock.Now().Add(time.Minute)
					_, _, err := lcs[0].SetConsent(ctx, c7, delegation.ConsentChange{Customer: "c7", Allowed: true, ExpiresAt: new(until)}, allowAll)
					must(t, err)
					for _, lc := range lcs {
						must(t, lc.Sweep(ctx))
					}
					clock.Advance(90 * time.Second) // lapsed 30 s ago
					change := func() {
						_, _, err := lcs[1].SetConsent(ctx, c7, cc, allowAll)
						must(t, err)
					}
					if changeFirst {
						change()
						must(t, lcs[0].Sweep(ctx))
					} else {
						must(t, lcs[0].Sweep(ctx))
						change()
					}
					clock.Advance(30 * time.Second)
					for _, lc := range lcs {
						must(t, lc.Sweep(ctx))
					}
					exp := until.UTC().Format(time.RFC3339)
					as, _, err := replicas[0].ReadAudit(ctx, sidecar.StreamFilter{Type: "consent.expired", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
					must(t, err)
					if len(as) != 1 || as[0].Customer != "c7" || as[0].Data["expires_at"] != exp {
						t.Errorf("consent.expired audit entries %+v, want the lapse at %s once", as, exp)
					}
					es, _, err := replicas[0].ReadEvents(ctx, sidecar.StreamFilter{Type: sidecar.EventConsentExpired, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
					must(t, err)
					if len(es) != 1 || es[0].Data["expires_at"] != exp {
						t.Errorf("consent.expired events %+v, want the lapse at %s once", es, exp)
					}
				})
			}
		}
	}
}
