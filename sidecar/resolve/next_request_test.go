package resolve_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A narrowing write holds on every replica from the next request on: once
// it has returned on replica a, neither a's cache nor b's (an hour's TTL)
// still grants what it took away. Many rounds, since the replica that
// lags behind the write's answer does so only now and then.
func TestNarrowingWriteHoldsOnEveryReplicaAtNextRequest(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	clock := storetest.NewClock(storetest.Epoch)
	a, _, ca, cb := twoReplicas(t, srv, clock)
	for _, tc := range []struct {
		name   string
		widen  func(round int) error
		access func(cs *resolve.CachedState) bool
		narrow func(round int) error
	}{
		{"assignment_removed", func(int) error {
			return a.PutAssignment(ctx, &sidecar.Assignment{Customer: "acme", Reseller: "r1", Domain: "eu.r1"})
		}, func(cs *resolve.CachedState) bool {
			as, err := cs.GetAssignment(ctx, "acme")
			return err == nil && as.Domain == "eu.r1"
		}, func(int) error {
			_, err := a.ChangeAssignments(ctx, []sidecar.AssignmentChange{{Customer: "acme", From: "eu.r1"}})
			return err
		}},
		{"grant_revoked", func(round int) error {
			return a.PutGrant(ctx, &sidecar.Grant{ID: fmt.Sprintf("g%d", round), Customer: "acme", PartnerOrg: "p1", User: "pat",
				Level: sidecar.LevelUpdate, ExpiresAt: clock.Now().Add(24 * time.Hour), Seq: int64(1000 + 10*round)})
		}, func(cs *resolve.CachedState) bool {
			eg, err := cs.EffectiveGrants(ctx, "acme", "p1", "pat")
			return err == nil && eg.Effective() != nil
		}, func(round int) error {
			_, err := a.RevokeGrant(ctx, "acme", fmt.Sprintf("g%d", round), "cora", "acme")
			return err
		}},
		{"share_removed", func(int) error {
			return storetest.ErrOf(a.PutShare(ctx, &sidecar.Share{Customer: "acme", Resource: "SR-1", User: "pat", PartnerOrg: "p1"}))
		}, func(cs *resolve.CachedState) bool {
			v, err := cs.SharesFor(ctx, "acme", "p1", "pat")
			return err == nil && len(v) == 1
		}, func(int) error { _, err := a.DeleteShare(ctx, "acme", "SR-1", "p1", "pat", "cora"); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const rounds = 50
			stale := map[string]int{}
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			for i := range rounds {
				must(tc.widen(i))
				eventually(t, "access visible on both replicas", func() bool { return tc.access(ca) && tc.access(cb) })
				must(tc.narrow(i))
				// The write has returned: the next request on either replica.
				for name, cs := range map[string]*resolve.CachedState{"a": ca, "b": cb} {
					if tc.access(cs) {
						stale[name]++
					}
				}
				clock.Advance(2 * time.Minute) // past the negative TTL
			}
			if len(stale) > 0 {
				t.Fatalf("of %d narrowing writes, the next lookup after the write returned still granted access this often, by replica: %v", rounds, stale)
			}
		})
	}
}
