package delegation_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
)

// A sweep reads back from before the last one by more than a short
// partner.sweep_interval: a change is kept at its writer's time, and that
// time may lie before a sweep that ran while the change was not yet there
// to read (a replica whose clock is behind the sweeper's; a revocation's
// mark, which lands up to a second after its write). Here replica a's
// clock is two seconds behind b's, b sweeps every half second, and a
// share and its withdrawal whose records a lost are recorded by b's next
// sweep, once.
func TestPartnerSweepReadsBackPastAShortInterval(t *testing.T) {
	ctx := context.Background()
	clockA, clockB := newPartnerClock(), newPartnerClock()
	clockB.Advance(2 * time.Second)
	store := memory.New(memory.WithClock(clockA.Now))
	t.Cleanup(func() { _ = store.Close() })
	b := delegation.NewPartners(store, shippedData(t), delegation.PartnerConfig{SweepInterval: 500 * time.Millisecond},
		delegation.WithPartnerClock(clockB.Now), delegation.WithPartnerRecorder(delegation.NewRecorder(store, nil)))
	must(t, b.RecordAgain(ctx))

	rec := delegation.NewRecorder(appendsLost{store}, nil)
	must(t, rec.Start(ctx))
	a := delegation.NewPartners(appendsLost{store}, shippedData(t), delegation.PartnerConfig{},
		delegation.WithPartnerClock(clockA.Now), delegation.WithPartnerRecorder(rec))
	clockA.Advance(100 * time.Millisecond)
	clockB.Advance(100 * time.Millisecond)
	if _, err := a.Share(ctx, cora, "acme", sharedSR1, allowAll); err != nil {
		t.Fatal(err)
	}
	if err := a.Unshare(ctx, cora, "acme", sharedSR1, allowAll); err != nil {
		t.Fatal(err)
	}
	stopped, cancel := context.WithCancel(ctx)
	cancel()
	if err := rec.Stop(stopped); err == nil {
		t.Fatal("stopping with audit entries queued answered no error")
	}
	if got := requestAndShareRecordsOf(t, store, "none"); got.sharePut+got.shareDelete != 0 {
		t.Fatalf("recorded although a's appends were lost: %+v", got)
	}
	for range 3 {
		clockA.Advance(500 * time.Millisecond)
		clockB.Advance(500 * time.Millisecond)
		must(t, b.RecordAgain(ctx))
	}
	for _, action := range []string{"share.put", "share.delete"} {
		if as := audited(t, store, action, "SR-1"); len(as) != 1 || as[0].Actor != cora.Subject {
			t.Errorf("%s audited as %+v, want once, by cora", action, as)
		}
	}
}
