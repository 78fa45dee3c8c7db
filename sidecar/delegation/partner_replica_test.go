package delegation_test

import (
	"context"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// TestRevocationReachesEveryReplica revokes on one replica and watches a
// second replica, whose resolver has the grant cached for an hour, stop
// resolving it: the eviction travels over Redis pub/sub, not the TTL.
func TestRevocationReachesEveryReplica(t *testing.T) {
	srv := redistest.Start(t)
	clock := newPartnerClock()
	replica := func() sidecar.Store {
		s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "replicas",
			ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout}, redis.WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	a, b := replica(), replica()
	env := &partnerEnv{store: a, clock: clock, partners: delegation.NewPartners(a, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))}
	envB := &partnerEnv{store: b, clock: clock}
	resolverB := cachedResolver(t, envB, b)
	rs := delegation.NewResellers(a, delegation.ResellerConfig{})
	ctx := context.Background()

	steps := []struct {
		name   string
		change func(t *testing.T)
		caller *sidecar.Identity
		want   string
	}{
		{name: "organisation grant", change: func(t *testing.T) { env.grant(t, patUser, orgRequest(sidecar.LevelCreate, 30)) }, caller: patUser, want: "create"},
		{name: "lower individual grant", change: func(t *testing.T) { env.grant(t, patUser, individualRequest(sidecar.LevelLook, 30, "pat")) }, caller: patUser, want: "look"},
		{name: "revoked by the customer", change: func(t *testing.T) {
			for _, g := range mustPartners(t, env, "acme") {
				if _, err := env.partners.Revoke(ctx, cora, "acme", g.ID, allowAll); err != nil {
					t.Fatal(err)
				}
			}
		}, caller: patUser, want: "no_live_grant"},
		{name: "assigned to the domain", change: func(t *testing.T) {
			if _, err := rs.Put(ctx, superAdmin, "acme", "shop-a.example", allowAll); err != nil {
				t.Fatal(err)
			}
		}, caller: resellerStaff("shop-a.example", []string{"reseller_admin"}, nil), want: "reseller:shop-a.example"},
		{name: "unassigned", change: func(t *testing.T) {
			if err := rs.Delete(ctx, superAdmin, "acme", allowAll); err != nil {
				t.Fatal(err)
			}
		}, caller: resellerStaff("shop-a.example", []string{"reseller_admin"}, nil), want: "customer_not_in_domain"},
	}
	for _, st := range steps {
		// Warm replica b's cache with the state before the change.
		resolvedLevel(resolverB, st.caller, "acme")
		st.change(t)
		partnerEventually(t, st.name+" on the other replica", func() bool { return resolvedLevel(resolverB, st.caller, "acme") == st.want })
	}
}

func mustPartners(t *testing.T, env *partnerEnv, customer string) []sidecar.Grant {
	t.Helper()
	gs, err := env.partners.MyPartners(context.Background(), cora, customer, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	return gs
}
