package delegation_test

import (
	"context"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
	goredis "github.com/redis/go-redis/v9"
)

// TestRevocationReachesEveryReplica revokes on one replica and watches a
// second replica, whose resolver has the grant cached for an hour, stop
// resolving it: the eviction travels over Redis pub/sub, not the TTL.
func TestRevocationReachesEveryReplica(t *testing.T) {
	srv := redistest.Start(t)
	clock := newPartnerClock()
	replica := func() sidecar.Store {
		s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "replicas",
			ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(clock.Now))
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

// TestRetriedRevocationReachesEveryReplica: a revocation whose write
// reached Redis but whose answer and eviction did not (the connection cut
// in between) answers 503, and the caller retries. The retry finds nothing
// left to revoke; it must still evict the grant on every replica, or a
// replica that cached it keeps honouring it until its cache TTL.
func TestRetriedRevocationReachesEveryReplica(t *testing.T) {
	srv, a, b, clock := twoReplicas(t)
	env := &partnerEnv{store: a, clock: clock, partners: delegation.NewPartners(a, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))}
	ctx := context.Background()

	env.grant(t, patUser, orgRequest(sidecar.LevelCreate, 30))
	g := mustPartners(t, env, "acme")[0]
	resolverB := settledResolver(t, a, b, clock)
	if got := resolvedLevel(resolverB, patUser, "acme"); got != "create" {
		t.Fatalf("replica b resolves %q before the revocation, want create", got)
	}
	// The first attempt's write, without its eviction: the grant moved to
	// the customer's revoked grants, as RevokeGrant's script does.
	raw, err := srv.Client().HGet(ctx, "retry:{cust:acme}:grants", "partnerco\x00").Result()
	if err != nil {
		t.Fatal(err)
	}
	_, err = srv.Client().TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.HDel(ctx, "retry:{cust:acme}:grants", "partnerco\x00")
		p.HSet(ctx, "retry:{cust:acme}:grants:revoked", g.ID, raw)
		p.ZAdd(ctx, "retry:{cust:acme}:grants:revoked:exp", goredis.Z{Score: float64(g.ExpiresAt.UnixMilli()), Member: g.ID})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := resolvedLevel(resolverB, patUser, "acme"); got != "create" {
		t.Fatalf("replica b resolves %q with no eviction sent, want its cached create", got)
	}
	if _, err := env.partners.Revoke(ctx, cora, "acme", g.ID, allowAll); err != nil {
		t.Fatalf("retried revocation: %v", err)
	}
	partnerEventually(t, "the retried revocation on the other replica", func() bool {
		return resolvedLevel(resolverB, patUser, "acme") == "no_live_grant"
	})
}

// TestRetriedUnassignmentReachesEveryReplica is the same for a reseller
// assignment: the retried delete finds no assignment and still evicts it.
func TestRetriedUnassignmentReachesEveryReplica(t *testing.T) {
	srv, a, b, clock := twoReplicas(t)
	rs := delegation.NewResellers(a, delegation.ResellerConfig{})
	ctx := context.Background()
	staff := resellerStaff("shop-a.example", []string{"reseller_admin"}, nil)

	if _, err := rs.Put(ctx, superAdmin, "acme", "shop-a.example", allowAll); err != nil {
		t.Fatal(err)
	}
	resolverB := settledResolver(t, a, b, clock)
	if got := resolvedLevel(resolverB, staff, "acme"); got != "reseller:shop-a.example" {
		t.Fatalf("replica b resolves %q before the delete, want the assignment", got)
	}
	// The first attempt's write, without its eviction.
	if err := srv.Client().Del(ctx, "retry:{cust:acme}:assign").Err(); err != nil {
		t.Fatal(err)
	}
	if got := resolvedLevel(resolverB, staff, "acme"); got != "reseller:shop-a.example" {
		t.Fatalf("replica b resolves %q with no eviction sent, want its cached assignment", got)
	}
	if err := rs.Delete(ctx, superAdmin, "acme", allowAll); err != nil {
		t.Fatalf("retried delete: %v", err)
	}
	partnerEventually(t, "the retried delete on the other replica", func() bool {
		return resolvedLevel(resolverB, staff, "acme") == "customer_not_in_domain"
	})
}

// twoReplicas is two Redis stores on one real redis-server.
func twoReplicas(t *testing.T) (*redistest.Server, sidecar.Store, sidecar.Store, *partnerClock) {
	t.Helper()
	srv := redistest.Start(t)
	clock := newPartnerClock()
	replica := func() sidecar.Store {
		s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "retry",
			ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	return srv, replica(), replica(), clock
}

// settledResolver is a caching resolver on replica b that starts after
// every eviction a has published so far reached b: pub/sub keeps a
// publisher's order, so once a marker published last arrives, no earlier
// eviction can reach the new resolver's cache.
func settledResolver(t *testing.T, a, b sidecar.Store, clock *partnerClock) *resolve.OnBehalfResolver {
	t.Helper()
	settle(t, a, b, t.Name())
	return cachedResolver(t, &partnerEnv{store: b, clock: clock}, b)
}
