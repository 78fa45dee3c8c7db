package redis_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// TestDomainListingPastStalePointersSaysItStopped: a domain's index may
// hold pointers its records no longer back (a move whose index removal
// failed); a listing skips them, and past the most one read examines it
// must still answer a cursor, not end the list before the customers
// assigned there. That cursor does not name the stale customer it
// stopped at.
func TestDomainListingPastStalePointersSaysItStopped(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	prefix := freshPrefix()
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: prefix,
		ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	const stale = 11 * sidecar.MaxPageLimit // past ten full pages, whatever the batch
	moved := make([]sidecar.Assignment, stale)
	pointers := make([]goredis.Z, stale)
	staleIDs := make([]string, stale)
	for i := range moved {
		c := fmt.Sprintf("a%05d", i)
		staleIDs[i] = c
		moved[i] = sidecar.Assignment{Customer: c, Reseller: "resellerco", Domain: "shop-b"}
		pointers[i] = goredis.Z{Member: c}
	}
	if n, err := s.PutAssignments(ctx, moved); err != nil || n != stale {
		t.Fatalf("stored %d of %d: %v", n, stale, err)
	}
	if err := srv.Client().ZAdd(ctx, prefix+":{dom:shop-a}:customers", pointers...).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAssignment(ctx, &sidecar.Assignment{Customer: "zeta", Reseller: "resellerco", Domain: "shop-a"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	p := sidecar.Page{}
	for pages := 0; ; pages++ {
		as, next, err := s.AssignmentsByDomain(ctx, "shop-a", p)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			got = append(got, a.Customer)
		}
		if leak, ok := storetest.Reveals(next, staleIDs...); ok {
			t.Fatalf("page %d's cursor %q names %s, a customer of another domain", pages, next, leak)
		}
		if next == "" {
			break
		}
		if pages > stale {
			t.Fatal("cursor does not advance")
		}
		p.Cursor = next
	}
	if !slices.Equal(got, []string{"zeta"}) {
		t.Fatalf("shop-a lists %v, want [zeta]", got)
	}
}
