package delegation_test

import (
	"context"
	"sync/atomic"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// afterPipelineOf, armed, runs fn once, right after the next pipeline whose
// first command is name has been answered.
type afterPipelineOf struct {
	name  string
	armed atomic.Bool
	fn    func()
}

func (h *afterPipelineOf) DialHook(next goredis.DialHook) goredis.DialHook          { return next }
func (h *afterPipelineOf) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }
func (h *afterPipelineOf) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		err := next(ctx, cmds)
		if len(cmds) > 0 && cmds[0].Name() == h.name && h.armed.CompareAndSwap(true, false) {
			h.fn()
		}
		return err
	}
}

// Customer-care staff of shop-a.example list their domain while a
// reseller super admin assigns acme to it, between the put's index write
// and its assignment write: the listing finds acme in the index but not
// yet assigned. Once the put is done, acme is listed in its domain.
func TestListDuringPutKeepsTheAssignmentListed(t *testing.T) {
	srv := redistest.Start(t)
	clock := storetest.NewClock(storetest.Epoch)
	ctx := context.Background()
	admin := &sidecar.Identity{Subject: "sa", Domain: "shop-a.example", Org: "resellerA"}
	direct := directStore(t, srv.Addr, "listrace", clock.Now)
	lister := delegation.NewResellers(direct, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now))
	var (
		during  []sidecar.Assignment
		listErr error
	)
	hook := &afterPipelineOf{name: "zadd", fn: func() {
		during, _, listErr = lister.List(ctx, admin, sidecar.Page{Limit: 50}, allowAll)
	}}
	r := delegation.NewResellers(stallingStore(t, srv, "listrace", hook, clock.Now), delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now))
	hook.armed.Store(true)
	if _, err := r.Put(ctx, admin, "acme", "shop-a.example", allowAll); err != nil {
		t.Fatal(err)
	}
	if hook.armed.Load() || listErr != nil || len(during) != 0 {
		t.Fatalf("the listing did not run inside the put, before acme was assigned: %+v, %v", during, listErr)
	}
	if a, err := direct.GetAssignment(ctx, "acme"); err != nil || a.Domain != "shop-a.example" {
		t.Fatalf("acme = %+v, %v; want assigned to shop-a.example", a, err)
	}
	got, _, err := lister.List(ctx, admin, sidecar.Page{Limit: 50}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Customer != "acme" {
		t.Errorf("acme is assigned to shop-a.example, but the domain's listing holds %+v", got)
	}
}
