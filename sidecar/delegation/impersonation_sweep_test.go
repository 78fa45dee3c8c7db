package delegation_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// Two replicas sweep the same store: a session that went idle ends with
// one impersonation.ended event, and a consent that lapsed gives one
// consent.expired event.
func TestSweepEmitsEventsOnce(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock(storetest.Epoch)
	store := memory.New(memory.WithClock(clock.Now))
	replicas := []*delegation.Impersonation{
		delegation.NewImpersonation(store, shippedData(t), delegation.WithImpersonationClock(clock.Now)),
		delegation.NewImpersonation(store, shippedData(t), delegation.WithImpersonationClock(clock.Now)),
	}
	lc := replicas[0]
	for _, c := range []string{"c1", "c2"} {
		if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: c, DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: "c1"}, delegation.ConsentChange{Customer: "c1", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	if _, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: "c2"},
		delegation.ConsentChange{Customer: "c2", Allowed: true, ExpiresAt: new(clock.Now().Add(10 * time.Minute))}, allowAll); err != nil {
		t.Fatal(err)
	}
	st, err := lc.Start(ctx, &sidecar.Identity{Subject: "alice"}, delegation.StartRequest{Customer: "c1"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	sw, err := lc.Switches()
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(sw.IdleTimeout)
	for range 2 {
		for _, r := range replicas {
			if err := r.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	count := func(typ string) []sidecar.Event {
		evs, _, err := store.ReadEvents(ctx, sidecar.StreamFilter{Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	ended := count(sidecar.EventImpersonationEnded)
	if len(ended) != 1 || ended[0].Data["session"] != st.Session.ID || ended[0].Data["end_reason"] != sidecar.EndIdle {
		t.Fatalf("impersonation.ended events: %+v", ended)
	}
	lapsed := count(sidecar.EventConsentExpired)
	if len(lapsed) != 1 || lapsed[0].Customer != "c2" {
		t.Fatalf("consent.expired events: %+v", lapsed)
	}
}
