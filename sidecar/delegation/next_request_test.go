package delegation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// Two replicas (a, b) on one Redis, both resolving a live session from
// their caches. The customer withdraws consent through a; once the call
// has returned (the API has answered), the staff member's very next
// storefront request, on either replica, is denied: a narrowing write
// answers only when every replica has dropped what it narrows.
func TestConsentWithdrawalHoldsOnEveryReplicaAtNextRequest(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	clock := storetest.NewClock(storetest.Epoch)
	const rounds = 200
	stale := 0
	for i := range rounds {
		prefix := fmt.Sprintf("nextreq%d", i)
		a, b := redisReplica(t, srv, prefix, clock), redisReplica(t, srv, prefix, clock)
		lc := delegation.NewImpersonation(a, shippedData(t), delegation.WithImpersonationClock(clock.Now))
		_, resolvers, req := liveOnTwoReplicas(t, lc, a, b, clock)
		if _, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: "c42"}, delegation.ConsentChange{Customer: "c42"}, allowAll); err != nil {
			t.Fatal(err)
		}
		if _, err := resolvers["a"].Resolve(ctx, req, nil); err == nil {
			t.Fatalf("round %d: the writing replica still honours the session", i)
		}
		if d, err := resolvers["b"].Resolve(ctx, req, nil); err == nil && d != nil {
			stale++
		}
		for _, r := range resolvers {
			_ = r.Close()
		}
		_ = lc.Close()
		_ = a.(interface{ Close() error }).Close()
		_ = b.(interface{ Close() error }).Close()
		clock.Advance(time.Minute)
	}
	if stale > 0 {
		t.Fatalf("%d of %d withdrawals: the call returned, and the staff member's next request on the other replica was still resolved as the customer", stale, rounds)
	}
}
