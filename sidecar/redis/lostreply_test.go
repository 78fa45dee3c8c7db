package redis_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A narrowing write whose reply is lost after Redis applied it (its
// transaction is not retried: the caller gets an error and cannot tell
// whether it happened) still evicts what it may have narrowed on every
// replica. Before, the writer returned before publishing, and another
// replica kept honouring the ended session from its cache until the
// cache's lifetime ran out.
func TestNarrowingWriteWithLostReplyStillEvicts(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	px := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch)
	prefix := freshPrefix()
	open := func(addr string) *redis.Store {
		s, err := redis.New(redis.Config{Addrs: []string{addr}, KeyPrefix: prefix, ReadTimeout: redistest.ReplyTimeout,
			WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	// The writer reaches Redis through the proxy; the other replica does
	// not, and records what it is told to evict.
	writer, other := open(px.Addr), open(srv.Addr)
	t.Cleanup(writer.Subscribe(func(string) {}))
	heard := &keyLog{}
	t.Cleanup(other.Subscribe(heard.add))
	eventuallyNoSubscriberBut(t, srv.Client(), prefix+":invalidate", 2)

	live := func(t *testing.T, customer string) *sidecar.Session {
		t.Helper()
		now := clock.Now()
		ss := &sidecar.Session{ID: "s-" + customer, Actor: "staff-" + customer, Customer: customer, StartedAt: now,
			ExpiresAt: now.Add(time.Hour), Host: "shop.example"}
		if err := storetest.StartRedeemed(ctx, writer, ss, "tok-"+customer); err != nil {
			t.Fatal(err)
		}
		return ss
	}
	ended := func(t *testing.T, id string) {
		t.Helper()
		ss, err := other.GetSession(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if ss.EndedAt.IsZero() {
			t.Fatalf("session %s is not ended in Redis: the write did not land, so this case shows nothing", id)
		}
	}
	n := 0
	for _, tc := range []struct {
		name  string
		write func(customer string) error
		check func(t *testing.T, customer string)
		keys  func(customer string) []string
	}{
		{"consent withdrawn", func(c string) error {
			_, err := writer.SetConsent(ctx, &sidecar.Consent{Customer: c, Allowed: false, SetBy: c, SetAt: clock.Now()})
			return err
		}, func(t *testing.T, c string) { ended(t, "s-"+c) }, func(c string) []string {
			return []string{sidecar.ConsentKey(c), sidecar.SessionKey("tok-" + c)}
		}},
		{"session ended by staff", func(c string) error {
			_, err := writer.EndSession(ctx, "s-"+c, "lead", sidecar.EndEnded, clock.Now(), sidecar.SessionLimits{})
			return err
		}, func(t *testing.T, c string) { ended(t, "s-"+c) }, func(c string) []string {
			return []string{sidecar.SessionKey("tok-" + c)}
		}},
		{"customer marked as staff", func(c string) error {
			_, err := writer.MarkStaff(ctx, c)
			return err
		}, func(t *testing.T, c string) { ended(t, "s-"+c) }, func(c string) []string {
			return []string{sidecar.CustomerKey(c), sidecar.SessionKey("tok-" + c)}
		}},
		{"customer synced as protected", func(c string) error {
			_, err := writer.PutCustomer(ctx, &sidecar.Customer{ID: c, Protected: true, UpdatedBy: "sync"}, sidecar.Protection{})
			return err
		}, func(t *testing.T, c string) { ended(t, "s-"+c) }, func(c string) []string {
			return []string{sidecar.CustomerKey(c), sidecar.SessionKey("tok-" + c)}
		}},
		{"customer deleted", func(c string) error {
			_, err := writer.DeleteCustomer(ctx, c, "sync")
			return err
		}, func(t *testing.T, c string) { ended(t, "s-"+c) }, func(c string) []string {
			return []string{sidecar.ConsentKey(c), sidecar.CustomerKey(c), sidecar.SessionKey("tok-" + c)}
		}},
		{"session replaced by the same staff's next", func(c string) error {
			now := clock.Now()
			_, err := writer.StartSession(ctx, sidecar.SessionStart{CodeHash: "code-next-" + c, CodeExpiresAt: now.Add(30 * time.Second),
				ReplaceLive: true, Session: &sidecar.Session{ID: "next-" + c, Actor: "staff-" + c, Customer: c, StartedAt: now,
					ExpiresAt: now.Add(time.Hour)}})
			return err
		}, func(t *testing.T, c string) { ended(t, "s-"+c) }, func(c string) []string {
			return []string{sidecar.SessionKey("tok-" + c)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			customer := fmt.Sprintf("c%d", n)
			n++
			live(t, customer)
			// Setting up publishes some of the same keys, the redeem's
			// without waiting for replicas: once that one is heard, only
			// what is heard after the write counts.
			eventually(t, "the redeem heard", func() bool { return heard.has(sidecar.SessionKey("tok-" + customer)) })
			before := map[string]int{}
			for _, k := range tc.keys(customer) {
				before[k] = heard.count(k)
			}
			px.LoseReply("exec")
			err := tc.write(customer)
			if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
				t.Fatalf("write whose reply was lost: %v, want unavailable", err)
			}
			tc.check(t, customer)
			for _, k := range tc.keys(customer) {
				eventually(t, "the other replica told to evict "+k, func() bool { return heard.count(k) > before[k] })
			}
		})
	}
}

// The partner and reseller writes that narrow access (a grant revoked or
// lowered, a share withdrawn, an assignment deleted or moved) evict from
// every replica's state cache when their reply is lost after Redis
// applied them, as the ones above do. The writer makes no retry of its
// own (max_retries -1): a script or pipeline would otherwise be sent
// again, and the lost reply is the caller's error. Before, each returned
// 503 without a message, and every replica, the writer included, kept
// answering the old access from its cache until the cache's lifetime
// (here an hour) ran out.
func TestPartnerAndResellerNarrowingWithLostReplyStillEvicts(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	px := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch)
	prefix := freshPrefix()
	open := func(addr string) (*redis.Store, *resolve.CachedState) {
		s, err := redis.New(redis.Config{Addrs: []string{addr}, KeyPrefix: prefix, MaxRetries: -1, ReadTimeout: redistest.ReplyTimeout,
			WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		cached := resolve.NewCachedState(s, resolve.CacheConfig{TTL: time.Hour, NegativeTTL: time.Hour}, clock.Now, nil)
		t.Cleanup(func() { _ = cached.Close() })
		return s, cached
	}
	// The writer reaches Redis through the proxy; the other replica does
	// not.
	writer, writerCache := open(px.Addr)
	other, otherCache := open(srv.Addr)
	eventuallyNoSubscriberBut(t, srv.Client(), prefix+":invalidate", 2)

	must := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	orgGrant := func(c string, level sidecar.Level) *sidecar.Grant {
		return &sidecar.Grant{ID: "g-" + string(level) + "-" + c, Customer: c, PartnerOrg: "pco", Level: level,
			ExpiresAt: clock.Now().Add(time.Hour), ApprovedBy: c, ApprovedAt: clock.Now()}
	}
	orgLevel := func(cs *resolve.CachedState, c string) sidecar.Level {
		eg, err := cs.EffectiveGrants(ctx, c, "pco", "")
		if err != nil || eg.Organisation == nil {
			return ""
		}
		return eg.Organisation.Level
	}
	assign := func(c, domain string) *sidecar.Assignment {
		return &sidecar.Assignment{Customer: c, Reseller: "r-" + domain, Domain: domain}
	}
	claim := func(t *testing.T, c, domain string) {
		t.Helper()
		conflicts, err := writer.ChangeAssignments(ctx, []sidecar.AssignmentChange{{Customer: c, To: assign(c, domain), By: "admin", At: clock.Now()}})
		must(t, err)
		if len(conflicts) > 0 {
			t.Fatalf("claim of %s refused", c)
		}
	}
	domainOf := func(cs *resolve.CachedState, c string) string {
		a, err := cs.GetAssignment(ctx, c)
		if err != nil {
			return ""
		}
		return a.Domain
	}
	sharedWithPat := func(cs *resolve.CachedState, c string) bool {
		rs, err := cs.SharesFor(ctx, c, "pco", "pat")
		return err == nil && len(rs) > 0
	}
	for _, tc := range []struct {
		name  string
		lose  string // the command whose reply is lost
		setup func(t *testing.T, customer string)
		write func(customer string) error
		// narrowed reads, through a replica's cache, whether the write
		// holds there.
		narrowed func(cs *resolve.CachedState, customer string) bool
	}{
		{"grant revoked", "evalsha", func(t *testing.T, c string) {
			must(t, writer.PutGrant(ctx, orgGrant(c, sidecar.LevelUpdate)))
		}, func(c string) error {
			_, err := writer.RevokeGrant(ctx, c, "g-update-"+c, "boss", "cust")
			return err
		}, func(cs *resolve.CachedState, c string) bool { return orgLevel(cs, c) == "" }},
		{"grant lowered", "evalsha", func(t *testing.T, c string) {
			must(t, writer.PutGrant(ctx, orgGrant(c, sidecar.LevelUpdate)))
		}, func(c string) error {
			return writer.PutGrant(ctx, orgGrant(c, sidecar.LevelLook))
		}, func(cs *resolve.CachedState, c string) bool { return orgLevel(cs, c) == sidecar.LevelLook }},
		{"share withdrawn", "evalsha", func(t *testing.T, c string) {
			must(t, storetest.ErrOf(writer.PutShare(ctx, &sidecar.Share{Customer: c, Resource: "orders", User: "pat", PartnerOrg: "pco", SharedBy: c, SharedAt: clock.Now()})))
		}, func(c string) error {
			_, err := writer.DeleteShare(ctx, c, "orders", "pco", "pat", c)
			return err
		}, func(cs *resolve.CachedState, c string) bool { return !sharedWithPat(cs, c) }},
		{"assignment deleted by its domain", "eval", func(t *testing.T, c string) { claim(t, c, "d1.example") }, func(c string) error {
			_, err := writer.ChangeAssignments(ctx, []sidecar.AssignmentChange{{Customer: c, From: "d1.example", By: "admin", At: clock.Now()}})
			return err
		}, func(cs *resolve.CachedState, c string) bool { return domainOf(cs, c) == "" }},
		{"assignment moved to another domain", "eval", func(t *testing.T, c string) { claim(t, c, "d1.example") }, func(c string) error {
			_, err := writer.ChangeAssignments(ctx, []sidecar.AssignmentChange{{Customer: c, From: "d1.example", To: assign(c, "d2.example"),
				By: "admin", At: clock.Now()}})
			return err
		}, func(cs *resolve.CachedState, c string) bool { return domainOf(cs, c) == "d2.example" }},
		{"assignment deleted", "getdel", func(t *testing.T, c string) { claim(t, c, "d1.example") }, func(c string) error {
			return writer.DeleteAssignment(ctx, c)
		}, func(cs *resolve.CachedState, c string) bool { return domainOf(cs, c) == "" }},
		{"assignment loaded into another domain", "set", func(t *testing.T, c string) { claim(t, c, "d1.example") }, func(c string) error {
			_, err := writer.PutAssignments(ctx, []sidecar.Assignment{*assign(c, "d2.example")})
			return err
		}, func(cs *resolve.CachedState, c string) bool { return domainOf(cs, c) == "d2.example" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Once with every reply, so that the write's script is cached
			// in Redis (a lost reply to a script Redis does not know yet
			// loses a NOSCRIPT, and nothing is written), then with one lost.
			warm := "warm-" + strings.ReplaceAll(tc.name, " ", "-")
			tc.setup(t, warm)
			must(t, tc.write(warm))
			customer := strings.ReplaceAll(tc.name, " ", "-")
			tc.setup(t, customer)
			// What the setup published is heard on every replica once
			// this returns: what a cache drops after it is the write's.
			must(t, writer.Invalidate(ctx, "fence:"+customer))
			for _, cs := range []*resolve.CachedState{writerCache, otherCache} {
				if tc.narrowed(cs, customer) {
					t.Fatal("narrowed before the write: this case shows nothing")
				}
			}
			px.LoseReply(tc.lose)
			err := tc.write(customer)
			if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
				t.Fatalf("write whose reply was lost: %v, want unavailable", err)
			}
			// Read from Redis itself, through a cache of its own.
			fresh := resolve.NewCachedState(other, resolve.CacheConfig{}.Defaults(), clock.Now, nil)
			defer fresh.Close()
			if !tc.narrowed(fresh, customer) {
				t.Fatal("not narrowed in Redis: the write did not land, so this case shows nothing")
			}
			if !tc.narrowed(writerCache, customer) {
				t.Error("the writer still answers the old access from its cache")
			}
			eventually(t, "the other replica's cache drops the old access", func() bool { return tc.narrowed(otherCache, customer) })
		})
	}
}

// A revocation whose command reaches Redis late, after the writer's read
// timeout (a stalled link), answers 503 and is evicted at once; every
// replica's next check may then read Redis before the revocation lands
// and cache the old grant again. The eviction goes out again later, so
// the caches drop it once Redis holds the revocation, rather than
// honouring it for their whole TTL. Before, nothing was published after
// the first eviction, and both replicas kept the revoked grant.
func TestNarrowingWriteArrivingLateIsEvictedAgain(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	px := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch)
	prefix := freshPrefix()
	// The production read timeout for the writer: its revocation is the
	// write that times out.
	const readTimeout = redis.DefaultReadTimeout
	open := func(addr string, timeout time.Duration) (*redis.Store, *resolve.CachedState) {
		s, err := redis.New(redis.Config{Addrs: []string{addr}, KeyPrefix: prefix, MaxRetries: -1, ReadTimeout: timeout,
			WriteTimeout: timeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		// The TTL never runs out in the test (the clock stands still):
		// only an eviction drops the old grant.
		cached := resolve.NewCachedState(s, resolve.CacheConfig{TTL: time.Hour, NegativeTTL: time.Hour}, clock.Now, nil)
		t.Cleanup(func() { _ = cached.Close() })
		return s, cached
	}
	// The writer reaches Redis through the proxy; the other replica does
	// not, and makes the setup.
	writer, writerCache := open(px.Addr, readTimeout)
	other, otherCache := open(srv.Addr, redistest.ReplyTimeout)
	eventuallyNoSubscriberBut(t, srv.Client(), prefix+":invalidate", 2)

	const customer, grant = "late-revoke", "g-late-revoke"
	// level is the organisation's level for customer as src reads it.
	level := func(src interface {
		EffectiveGrants(ctx context.Context, customer, partnerOrg, user string) (sidecar.EffectiveGrants, error)
	}) (sidecar.Level, error) {
		eg, err := src.EffectiveGrants(ctx, customer, "pco", "")
		if err != nil || eg.Organisation == nil {
			return "", err
		}
		return eg.Organisation.Level, nil
	}
	revoked := func(src interface {
		EffectiveGrants(ctx context.Context, customer, partnerOrg, user string) (sidecar.EffectiveGrants, error)
	}) bool {
		l, err := level(src)
		return err == nil && l == ""
	}
	// A grant revoked once, so that Redis knows the script (the writer's
	// EVALSHA would otherwise be answered NOSCRIPT, late, and write
	// nothing).
	for _, c := range []string{"warm-" + customer, customer} {
		if err := other.PutGrant(ctx, &sidecar.Grant{ID: "g-" + c, Customer: c, PartnerOrg: "pco", Level: sidecar.LevelUpdate,
			ExpiresAt: clock.Now().Add(time.Hour), ApprovedBy: c, ApprovedAt: clock.Now()}); err != nil {
			t.Fatal(err)
		}
		if c != customer {
			if _, err := other.RevokeGrant(ctx, c, "g-"+c, "boss", "cust"); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The revocation reaches Redis well after the writer gave up on it.
	start := time.Now()
	// The script's keys name the customer's revoked grants: held is the
	// revocation itself, not the mark a sweep reads that goes before it.
	px.DelayOn("{cust:"+customer+"}:grants:revoked", 4*readTimeout)
	_, err := writer.RevokeGrant(ctx, customer, grant, "boss", "cust")
	if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
		t.Fatalf("revocation that reached Redis late: %v, want unavailable", err)
	}
	failed := time.Since(start)
	// Once every replica heard the eviction that went out at once, each
	// reads the grant again, before Redis holds the revocation.
	if err := other.Invalidate(ctx, "fence:"+customer); err != nil {
		t.Fatal(err)
	}
	for name, cs := range map[string]*resolve.CachedState{"writer": writerCache, "other replica": otherCache} {
		if l, err := level(cs); err != nil || l != sidecar.LevelUpdate {
			t.Fatalf("%s read %q, %v, before the revocation landed, want the grant: the revocation was not late enough to show anything", name, l, err)
		}
	}
	if revoked(other) {
		t.Fatal("revoked in Redis before the caches read the grant again: this case shows nothing")
	}
	// Checks keep coming on both replicas meanwhile: each cache reads the
	// grant again whenever something evicted it before Redis held the
	// revocation.
	eventually(t, "Redis holds the revocation", func() bool {
		_, _ = level(writerCache)
		_, _ = level(otherCache)
		return revoked(other)
	})
	landed := time.Since(start)
	eventually(t, "both caches drop the revoked grant", func() bool { return revoked(writerCache) && revoked(otherCache) })
	t.Logf("revocation answered 503 after %s, landed after %s, dropped by both caches after %s",
		failed.Round(time.Millisecond), landed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
