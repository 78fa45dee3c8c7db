package delegation_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// shippedData is the policy data Deputy ships: the one place the partner
// limits and reseller roles are defined.
func shippedData(tb testing.TB) delegation.PolicyData {
	tb.Helper()
	set, err := policy.LoadPaths([]string{"../../policies"})
	if err != nil {
		tb.Fatal(err)
	}
	return func() map[string]any { return set.Data }
}

// partnerClock is a settable clock shared by the store and the lifecycle,
// so expiry is decided at the same instant everywhere.
type partnerClock struct {
	mu  sync.Mutex
	now time.Time
}

// newPartnerClock is a partnerClock in the past: a session's start, or a
// request's decision, later than Redis's clock is moved back to it.
func newPartnerClock() *partnerClock { return &partnerClock{now: storetest.Epoch} }

func (c *partnerClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *partnerClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

const day = 24 * time.Hour

// partnerStore is one store implementation the partner tests run on.
type partnerStore struct {
	name string
	open func(t *testing.T, clock sidecar.Clock) sidecar.Store
}

// partnerStores lists the stores every partner and reseller test runs on:
// memory, and a real redis-server started for the calling test with a
// fresh key prefix per store so cases start empty.
func partnerStores(t *testing.T) []partnerStore {
	srv := redistest.Start(t)
	return []partnerStore{
		{name: "memory", open: func(t *testing.T, clock sidecar.Clock) sidecar.Store {
			s := memory.New(memory.WithClock(clock))
			t.Cleanup(func() { _ = s.Close() })
			return s
		}},
		{name: "redis", open: func(t *testing.T, clock sidecar.Clock) sidecar.Store {
			s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: fmt.Sprintf("pt%d", partnerPrefixes.Add(1)),
				ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(clock))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}},
	}
}

var partnerPrefixes atomic.Int64

var (
	patUser     = &sidecar.Identity{Subject: "pat", Name: "Pat Partner", Org: "partnerco", Roles: []string{"partner_user"}}
	paulUser    = &sidecar.Identity{Subject: "paul", Org: "partnerco"}
	cora        = &sidecar.Identity{Subject: "cora", Org: "acme", Email: "cora@acme.example", Roles: []string{"contact_manager"}}
	otherOrgBob = &sidecar.Identity{Subject: "bob", Org: "otherco"}
)

type partnerEnv struct {
	store    sidecar.Store
	clock    *partnerClock
	partners *delegation.Partners
	ids      int
}

func newPartnerEnv(t *testing.T, ps partnerStore) *partnerEnv {
	t.Helper()
	env := &partnerEnv{clock: newPartnerClock()}
	env.store = ps.open(t, env.clock.Now)
	env.partners = delegation.NewPartners(env.store, shippedData(t), delegation.PartnerConfig{},
		delegation.WithPartnerClock(env.clock.Now),
		delegation.WithPartnerIDs(func() string {
			env.ids++
			return "id" + string(rune('a'+env.ids/26)) + string(rune('a'+env.ids%26))
		}))
	// paul is a known member of partnerco; mallory belongs elsewhere.
	for _, c := range []*sidecar.Customer{{ID: "paul", Org: "partnerco"}, {ID: "mallory", Org: "otherco"}} {
		if _, err := env.store.PutCustomer(context.Background(), c, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
	}
	return env
}

// grant requests and approves access, returning the request.
func (env *partnerEnv) grant(t *testing.T, caller *sidecar.Identity, in delegation.AccessRequestInput) *sidecar.AccessRequest {
	t.Helper()
	ctx := context.Background()
	r, err := env.partners.Request(ctx, caller, in, allowAll)
	if err != nil {
		t.Fatalf("check request: %v", err)
	}
	if _, _, err := env.partners.Approve(ctx, cora, r.ID, allowAll); err != nil {
		t.Fatalf("approve: %v", err)
	}
	return r
}

func orgRequest(level sidecar.Level, expiryDays int) delegation.AccessRequestInput {
	return delegation.AccessRequestInput{Customer: "acme", ContactEmail: "cora@acme.example", ExpiryDays: expiryDays, Level: level, Scope: sidecar.ScopeOrganisation}
}

func individualRequest(level sidecar.Level, expiryDays int, users ...string) delegation.AccessRequestInput {
	in := orgRequest(level, expiryDays)
	in.Scope, in.Users = sidecar.ScopeIndividual, users
	return in
}

// wantCode fails unless err has the code and, when msg is set, the message.
func wantCode(t *testing.T, err error, code, msg string) {
	t.Helper()
	var e *sidecar.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v, want %s %q", err, code, msg)
	}
	if e.Code != code || (msg != "" && e.Message != msg) {
		t.Fatalf("error = %s %q, want %s %q", e.Code, e.Message, code, msg)
	}
}

func events(t *testing.T, s sidecar.Store, typ string) []sidecar.Event {
	t.Helper()
	es, _, err := s.ReadEvents(context.Background(), sidecar.StreamFilter{Type: typ, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	return es
}
