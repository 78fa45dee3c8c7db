package delegation_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// withdrawBeforePut runs withdraw right before the next PutShare reaches
// the store, once armed: a withdrawal that lands between a share's
// reading of what is stored and its write.
type withdrawBeforePut struct {
	sidecar.Store
	armed    atomic.Bool
	withdraw func()
}

func (s *withdrawBeforePut) PutShare(ctx context.Context, sh *sidecar.Share) (*sidecar.Share, error) {
	if s.armed.CompareAndSwap(true, false) {
		s.withdraw()
	}
	return s.Store.PutShare(ctx, sh)
}

// Cora shares SR-1 with pat, and shares it again a minute later, within
// the once window: a retry, to keep as the first write. Her colleague
// withdraws the share between that retry's look at the stored share and
// its write. The retry puts the share back, so it is a new share, after
// the withdrawal, and must be recorded as one: kept under the first
// write's time and Once, it appended nothing, and the audit trail said
// withdrawn of a share that was live.
func TestShareWithdrawnWhileRetriedIsRecordedAgain(t *testing.T) {
	dora := &sidecar.Identity{Subject: "dora", Org: "acme"}
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			clock := newPartnerClock()
			s := &withdrawBeforePut{Store: ps.open(t, clock.Now)}
			p := delegation.NewPartners(s, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))
			s.withdraw = func() { must(t, p.Unshare(ctx, dora, "acme", sharedSR1, allowAll)) }
			mustShare(ctx, t, p, cora, sharedSR1)
			clock.Advance(time.Minute)
			s.armed.Store(true)
			sh, err := p.Share(ctx, cora, "acme", sharedSR1, allowAll)
			must(t, err)
			if s.armed.Load() {
				t.Fatal("the withdrawal never ran")
			}
			if ok, err := s.IsShared(ctx, "acme", "SR-1", "partnerco", "pat"); err != nil || !ok {
				t.Fatalf("SR-1 shared with pat after the second share: %v, %v", ok, err)
			}
			if !sh.SharedAt.Equal(clock.Now()) {
				t.Errorf("the share put after the withdrawal answered as shared at %v, want %v", sh.SharedAt, clock.Now())
			}
			must(t, delegation.NewPartners(s.Store, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now)).RecordAgain(ctx))
			if n := len(audited(t, s, "share.put", "SR-1")); n != 2 {
				t.Errorf("shared, withdrawn, shared again: audit holds %d share.put entries, want 2", n)
			}
			if n := len(audited(t, s, "share.delete", "SR-1")); n != 1 {
				t.Errorf("audit holds %d share.delete entries, want 1", n)
			}
		})
	}
}
