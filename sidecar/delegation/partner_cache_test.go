package delegation_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// countingSource counts the store reads that get past the cache.
type countingSource struct {
	sidecar.Store
	reads atomic.Int64
}

func (c *countingSource) EffectiveGrants(ctx context.Context, customer, org, user string) (sidecar.EffectiveGrants, error) {
	c.reads.Add(1)
	return c.Store.EffectiveGrants(ctx, customer, org, user)
}

func (c *countingSource) SharesFor(ctx context.Context, customer, org, user string) ([]string, error) {
	c.reads.Add(1)
	return c.Store.SharesFor(ctx, customer, org, user)
}

func (c *countingSource) GetAssignment(ctx context.Context, customer string) (*sidecar.Assignment, error) {
	c.reads.Add(1)
	return c.Store.GetAssignment(ctx, customer)
}

func cachedResolver(t *testing.T, env *partnerEnv, src resolve.CachedSource) *resolve.OnBehalfResolver {
	t.Helper()
	cs := resolve.NewCachedState(src, resolve.CacheConfig{TTL: time.Hour}, env.clock.Now, nil)
	t.Cleanup(func() { _ = cs.Close() })
	return newTestResolver(t, env, cs)
}

// partnerEventually polls cond for a bounded time: invalidations over
// Redis pub/sub, and the recorder's retries, arrive asynchronously. The
// package's one polling helper.
func partnerEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func resolvedLevel(r *resolve.OnBehalfResolver, caller *sidecar.Identity, customer string) string {
	d, err := r.Resolve(context.Background(), onBehalf(customer), caller)
	if err != nil {
		return sidecar.ErrorMessage(err)
	}
	if d == nil {
		return "none"
	}
	if d.Mode == sidecar.ModeReseller {
		return "reseller:" + d.Domain
	}
	return d.Level
}

func TestResolveThroughCache(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name+"/steady state reads nothing from the store", func(t *testing.T) {
			env := newPartnerEnv(t, ps)
			env.grant(t, patUser, individualRequest(sidecar.LevelCC, 30, "pat"))
			src := &countingSource{Store: env.store}
			r := cachedResolver(t, env, src)
			rita := resellerStaff("shop-a.example", []string{"reseller_admin"}, nil)
			if err := env.store.PutAssignment(context.Background(), &sidecar.Assignment{Customer: "acme", Reseller: "resellerco", Domain: "shop-a.example"}); err != nil {
				t.Fatal(err)
			}
			// The writes above publish invalidations that reach the
			// resolver's subscriber a moment later and may evict what a
			// first lookup cached. Steady state is reached once several
			// lookups in a row read nothing; only then are reads counted.
			quiet := 0
			partnerEventually(t, "the cache to settle", func() bool {
				before := src.reads.Load()
				resolvedLevel(r, patUser, "acme")
				resolvedLevel(r, rita, "acme")
				if src.reads.Load() != before {
					quiet = 0
					return false
				}
				quiet++
				return quiet >= 5
			})
			warm := src.reads.Load()
			for range 100 {
				if got := resolvedLevel(r, patUser, "acme"); got != "cc" {
					t.Fatalf("level = %s, want cc", got)
				}
				if got := resolvedLevel(r, rita, "acme"); got != "reseller:shop-a.example" {
					t.Fatalf("reseller = %s", got)
				}
			}
			if n := src.reads.Load() - warm; n != 0 {
				t.Fatalf("%d store reads for 200 cached checks, want 0", n)
			}
		})
		t.Run(ps.name+"/narrowing changes evict at once", func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			r := cachedResolver(t, env, env.store)
			env.grant(t, patUser, orgRequest(sidecar.LevelFullAdmin, 30))
			if got := resolvedLevel(r, patUser, "acme"); got != "full_admin" {
				t.Fatalf("level = %s", got)
			}
			env.grant(t, patUser, individualRequest(sidecar.LevelLook, 30, "pat"))
			partnerEventually(t, "the lower individual grant", func() bool { return resolvedLevel(r, patUser, "acme") == "look" })

			g, _ := env.partners.Effective(ctx, "acme", "partnerco", "pat")
			if _, err := env.partners.Revoke(ctx, cora, "acme", g.ID, allowAll); err != nil {
				t.Fatal(err)
			}
			// Revoking the individual grant narrows: the organisation
			// grant approved before it does not apply to pat instead.
			partnerEventually(t, "the individual grant's revocation", func() bool { return resolvedLevel(r, patUser, "acme") == "no_live_grant" })
			if got := resolvedLevel(r, paulUser, "acme"); got != "full_admin" {
				t.Fatalf("paul's level = %s, want the organisation's full_admin", got)
			}

			org, _ := env.partners.Effective(ctx, "acme", "partnerco", "paul")
			if _, err := env.partners.Revoke(ctx, patUser, "acme", org.ID, allowAll); err != nil {
				t.Fatal(err)
			}
			partnerEventually(t, "revocation", func() bool { return resolvedLevel(r, paulUser, "acme") == "no_live_grant" })
		})
		t.Run(ps.name+"/expiry does not wait for the cache", func(t *testing.T) {
			env := newPartnerEnv(t, ps)
			r := cachedResolver(t, env, env.store)
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 1))
			if got := resolvedLevel(r, patUser, "acme"); got != "look" {
				t.Fatalf("level = %s", got)
			}
			env.clock.Advance(day)
			if got := resolvedLevel(r, patUser, "acme"); got != "no_live_grant" {
				t.Fatalf("after expiry = %s, want no_live_grant", got)
			}
		})
		t.Run(ps.name+"/reassignment evicts", func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			r := cachedResolver(t, env, env.store)
			rs := delegation.NewResellers(env.store, delegation.ResellerConfig{})
			rita := resellerStaff("shop-a.example", []string{"reseller_admin"}, nil)
			if _, err := rs.Put(ctx, superAdmin, "acme", "shop-a.example", allowAll); err != nil {
				t.Fatal(err)
			}
			if got := resolvedLevel(r, rita, "acme"); got != "reseller:shop-a.example" {
				t.Fatalf("resolved %s", got)
			}
			if _, err := rs.Put(ctx, superAdmin, "acme", "shop-b.example", allowAll); err != nil {
				t.Fatal(err)
			}
			partnerEventually(t, "the move to shop-b", func() bool { return resolvedLevel(r, rita, "acme") == "customer_not_in_domain" })
		})
	}
}

// BenchmarkResolveOnBehalf measures the check path's delegation lookup with the
// grant or assignment in the local cache.
func BenchmarkResolveOnBehalf(b *testing.B) {
	ctx := context.Background()
	env := &partnerEnv{clock: newPartnerClock()}
	store := memory.New(memory.WithClock(env.clock.Now))
	defer store.Close()
	env.store = store
	env.partners = delegation.NewPartners(store, shippedData(b), delegation.PartnerConfig{}, delegation.WithPartnerClock(env.clock.Now))
	r0, err := env.partners.Request(ctx, patUser, orgRequest(sidecar.LevelUpdate, 30), allowAll)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := env.partners.Approve(ctx, cora, r0.ID, allowAll); err != nil {
		b.Fatal(err)
	}
	if err := store.PutAssignment(ctx, &sidecar.Assignment{Customer: "acme", Reseller: "resellerco", Domain: "shop-a.example"}); err != nil {
		b.Fatal(err)
	}
	cs := resolve.NewCachedState(store, resolve.CacheConfig{TTL: time.Hour}, env.clock.Now, nil)
	defer cs.Close()
	r, err := resolve.NewOnBehalfResolver(cs, cs, shippedData(b), delegation.PartnerConfig{}, resolve.WithResolverClock(env.clock.Now))
	if err != nil {
		b.Fatal(err)
	}
	req := onBehalf("acme")
	rita := resellerStaff("shop-a.example", []string{"reseller_admin"}, nil)
	for _, bc := range []struct {
		name string
		id   *sidecar.Identity
		mode string
	}{{"partner", patUser, sidecar.ModePartner}, {"reseller", rita, sidecar.ModeReseller}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				d, err := r.Resolve(ctx, req, bc.id)
				if err != nil || d.Mode != bc.mode {
					b.Fatalf("Resolve = %+v, %v", d, err)
				}
			}
		})
	}
}
