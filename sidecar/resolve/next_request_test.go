package resolve_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A narrowing write (an assignment removed) holds on the replica that
// made it from the next request on: its own cache is evicted before the
// write returns. The other replica evicts when the pub/sub message
// arrives; that one is waited for, bounded, and must come.
func TestNarrowingWriteHoldsOnWritingReplicaAtNextRequest(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	clock := storetest.NewClock(storetest.Epoch)
	a, _, ca, cb := twoReplicas(t, srv, clock)
	const rounds = 50
	for i := 0; i < rounds; i++ {
		if err := a.PutAssignment(ctx, &sidecar.Assignment{Customer: "acme", Reseller: "r1", Domain: "eu.r1"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "assignment visible on both", func() bool {
			x, err1 := ca.GetAssignment(ctx, "acme")
			y, err2 := cb.GetAssignment(ctx, "acme")
			return err1 == nil && err2 == nil && x.Domain == "eu.r1" && y.Domain == "eu.r1"
		})
		// Narrow: remove acme from eu.r1 (what DELETE /reseller/assignments/acme writes).
		if _, err := a.ChangeAssignments(ctx, []sidecar.AssignmentChange{{Customer: "acme", From: "eu.r1"}}); err != nil {
			t.Fatal(err)
		}
		// The write has returned: the next request on the writing replica.
		if x, err := ca.GetAssignment(ctx, "acme"); err == nil {
			t.Fatalf("round %d: the next lookup on the writing replica still found the removed assignment %+v", i, x)
		}
		eventually(t, "eviction on the other replica", func() bool {
			_, err := cb.GetAssignment(ctx, "acme")
			return err != nil
		})
		clock.Advance(2 * time.Minute) // past the negative TTL
	}
}
