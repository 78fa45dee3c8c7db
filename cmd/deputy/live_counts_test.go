package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/memory"
)

// TestLiveCountsReadEveryPage: the live-session gauge counts every live
// session, not the first page of the list (at most sidecar.MaxPageLimit,
// fewer on Redis when the read stops at its scan limit).
func TestLiveCountsReadEveryPage(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	t.Cleanup(func() { _ = store.Close() })
	if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: "c1"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetConsent(ctx, &sidecar.Consent{Customer: "c1", Allowed: true, SetBy: "c1", SetAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	const live = sidecar.MaxPageLimit + 100
	for i := range live {
		now := time.Now()
		s := &sidecar.Session{ID: fmt.Sprintf("imp_%04d", i), Actor: fmt.Sprintf("agent%d", i), Customer: "c1",
			StartedAt: now, ExpiresAt: now.Add(time.Hour)}
		if _, err := store.StartSession(ctx, sidecar.SessionStart{Session: s, CodeHash: "code-" + s.ID, CodeExpiresAt: now.Add(time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	l := newLiveCounts(store, time.Hour)
	l.refresh(ctx)
	if got := l.get()[sidecar.ModeImpersonation]; got != live {
		t.Fatalf("live sessions counted: %d, want %d", got, live)
	}
}
