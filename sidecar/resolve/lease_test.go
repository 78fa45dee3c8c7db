package resolve_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// unheard is a store whose replica hears no invalidation at all, and
// says whether it holds its lease on the bus (sidecar.HearingLease).
type unheard struct {
	*memory.Store
	lease atomic.Bool
}

func (u *unheard) Subscribe(func(string)) (cancel func()) { return func() {} }
func (u *unheard) Hears() bool                            { return u.lease.Load() }

// A cache serves a hit without asking the store only while the store
// holds its lease: once the lease has run out, a narrowing change that
// the replica never heard of holds from its next lookup on. (While the
// lease holds, a change unheard is served stale: the stores' writes wait
// for every lease, so that cannot happen but in this test.)
func TestCacheHitsReadThroughOnceTheLeaseRunsOut(t *testing.T) {
	ctx := context.Background()
	src := &unheard{Store: memory.New()}
	src.lease.Store(true)
	cs := resolve.NewCachedState(src, resolve.CacheConfig{TTL: time.Hour, NegativeTTL: time.Hour}, nil, nil)
	defer cs.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(src.PutGrant(ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelLook, ExpiresAt: time.Now().Add(time.Hour)}))
	must(storetest.ErrOf(src.PutShare(ctx, &sidecar.Share{Customer: "acme", Resource: "SR-1", User: "pat", PartnerOrg: "p1"})))
	must(src.PutAssignment(ctx, &sidecar.Assignment{Customer: "acme", Reseller: "r1", Domain: "eu.r1"}))
	granted := func() bool {
		eg, err := cs.EffectiveGrants(ctx, "acme", "p1", "pat")
		return err == nil && eg.Effective() != nil
	}
	shared := func() bool {
		v, err := cs.SharesFor(ctx, "acme", "p1", "pat")
		return err == nil && len(v) == 1
	}
	assigned := func() bool {
		a, err := cs.GetAssignment(ctx, "acme")
		return err == nil && a != nil
	}
	if !granted() || !shared() || !assigned() {
		t.Fatal("access not cached")
	}
	_, err := src.RevokeGrant(ctx, "acme", "g1", "cora", "acme")
	must(err)
	_, err = src.DeleteShare(ctx, "acme", "SR-1", "p1", "pat", "cora")
	must(err)
	_, err = src.ChangeAssignments(ctx, []sidecar.AssignmentChange{{Customer: "acme", From: "eu.r1"}})
	must(err)
	if !granted() || !shared() || !assigned() {
		t.Fatal("with the lease held, the cache read the store: the test proves nothing")
	}
	src.lease.Store(false)
	if granted() || shared() || assigned() {
		t.Fatalf("lease run out: cache still grants what the store took away (grant %t, share %t, assignment %t)", granted(), shared(), assigned())
	}
}
