package delegation_test

import (
	"context"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// Impersonation.Start reads the switches (max_session, protected
// accounts, enabled) from the rules serving, and the manage policy that
// authorizes it is evaluated on the rules serving when it is asked. A
// reload between the two (simulated in the authorize callback) had
// revision B's manage rules authorize a session stored under revision A's
// switches: 1h after B cut max_session to 15m. The attempt is now retried
// on the switches serving after the authorization.
func TestStartUnderOneRevision(t *testing.T) {
	ctx := context.Background()
	set, err := policy.LoadPaths([]string{"../../policies"})
	if err != nil {
		t.Fatal(err)
	}
	a := set.Data
	b := maps.Clone(a)
	dep := maps.Clone(b["deputy"].(map[string]any))
	imp := maps.Clone(dep["impersonation"].(map[string]any))
	imp["max_session"] = "15m"
	dep["impersonation"] = imp
	b["deputy"] = dep
	var cur atomic.Pointer[map[string]any]
	cur.Store(&a)
	store := memory.New()
	t.Cleanup(func() { _ = store.Close() })
	lc := delegation.NewImpersonation(store, func() map[string]any { return *cur.Load() })
	sync := &sidecar.Identity{Subject: "storefront-sync"}
	if err := lc.PutCustomer(ctx, sync, &sidecar.Customer{ID: "c42", DefaultStoreView: "en"}, allowAll); err != nil {
		t.Fatal(err)
	}
	if _, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: "c42"}, delegation.ConsentChange{Customer: "c42", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}
	authorize := func(string, map[string]any) error {
		cur.Store(&b) // the reload lands while the manage policy is asked
		return nil    // B's manage rules allow the start
	}
	start := time.Now()
	st, err := lc.Start(ctx, &sidecar.Identity{Subject: "alice", Roles: []string{"support_agent"}}, delegation.StartRequest{Customer: "c42"}, authorize)
	if err != nil {
		t.Fatal(err)
	}
	sw, _ := lc.Switches()
	life := st.Session.ExpiresAt.Sub(start)
	t.Logf("session lifetime %v; max_session of the revision that authorized it: %v", life.Round(time.Minute), sw.MaxSession)
	if life > sw.MaxSession+time.Minute {
		t.Errorf("session authorized under max_session %v lives %v (the previous revision's switches)", sw.MaxSession, life.Round(time.Minute))
	}
}
