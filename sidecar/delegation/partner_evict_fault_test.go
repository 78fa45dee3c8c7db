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

// TestLostGrantEvictionAnswersUnavailable cuts the connection after every
// number of Redis commands a grant revocation sends. Whatever the cut, the
// store never answers success without having published the grant's
// eviction: replicas that cached the grant would honour it until their
// cache TTL, with the caller told it was revoked. A revocation stored
// whose eviction was lost is Unpublished (503): Partners.Revoke audits it
// as done and its retry publishes again (TestRetriedRevocationReachesEveryReplica).
func TestLostGrantEvictionAnswersUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	data := shippedData(t)
	ctx := context.Background()
	n := 0
	run := func(cut int) (wasCut bool, err error, evicted, revoked bool) {
		n++
		prefix := fmt.Sprintf("gevict%d", n)
		direct := directStore(t, srv.Addr, prefix, clock.Now)
		setup := &partnerEnv{store: direct, partners: delegation.NewPartners(direct, data, delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))}
		setup.grant(t, patUser, orgRequest(sidecar.LevelCreate, 30))
		g := mustPartners(t, setup, "acme")[0]
		cutStore := faultStore(t, proxy.Addr, prefix, clock.Now)
		got := make(chan struct{}, 1)
		cancel := direct.Subscribe(func(k string) {
			if k == sidecar.GrantKey("acme") {
				select {
				case got <- struct{}{}:
				default:
				}
			}
		})
		defer cancel()
		settle(t, direct, direct, prefix)
		select { // the setup's own evictions
		case <-got:
		default:
		}
		proxy.Reset()
		if cut >= 0 {
			proxy.CutAfter(cut)
		}
		_, err = cutStore.RevokeGrant(ctx, "acme", g.ID)
		wasCut = proxy.WasCut()
		proxy.Reset()
		settle(t, direct, direct, prefix+"-after")
		select {
		case <-got:
			evicted = true
		default:
		}
		if _, gerr := direct.GetGrant(ctx, "acme", g.ID); sidecar.ErrorCode(gerr) == sidecar.ENOTFOUND {
			revoked = true
		}
		return wasCut, err, evicted, revoked
	}
	if _, err, evicted, revoked := run(-1); err != nil || !evicted || !revoked {
		t.Fatalf("without a fault: err %v, evicted %v, revoked %v", err, evicted, revoked)
	}
	// Every cut point, until the revocation runs whole before the cut.
	unpublished, cut := 0, 0
	for ; cut < 100; cut++ {
		wasCut, err, evicted, revoked := run(cut)
		if !wasCut {
			break
		}
		if err == nil && (!evicted || !revoked) {
			t.Fatalf("cut after %d commands: success, evicted %v, revoked %v", cut, evicted, revoked)
		}
		if sidecar.IsUnpublished(err) {
			unpublished++
			if !revoked {
				t.Fatalf("cut after %d: unpublished, yet the grant is still stored", cut)
			}
		}
	}
	if cut == 100 {
		t.Fatal("the revocation never ran whole within 100 commands")
	}
	if unpublished == 0 {
		t.Fatalf("no cut among %d fell between the revocation and its eviction", cut)
	}
}
