package redis_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	goredis "github.com/redis/go-redis/v9"
)

// skewedReplicas opens two stores on one Redis under one prefix: honest
// judges at the real clock (Redis's), ahead at the real clock plus skew.
// raw reads Redis as is, keys under prefix.
func skewedReplicas(t *testing.T, skew time.Duration) (honest, ahead *redis.Store, raw goredis.UniversalClient, prefix string) {
	t.Helper()
	srv := redistest.Start(t)
	prefix = freshPrefix()
	cfg := redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: prefix, ReadTimeout: redistest.ReplyTimeout,
		WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}
	open := func(now func() time.Time) *redis.Store {
		s, err := redis.New(cfg, redis.WithClock(now))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	return open(time.Now), open(func() time.Time { return time.Now().Add(skew) }), srv.Client(), prefix
}

// A write through a replica whose clock runs ahead must not end, for
// every replica, a user's individual grant or hold that is still live by
// the others' clocks and Redis's: the individual grant restricts its user
// below the organisation's, and ending it early widens. Each case leaves
// pat with 150 s of a restriction, lets a replica 5 minutes ahead write,
// and asks the honest replica what pat holds. Nor may Redis forget the
// grants before the last one ends.
func TestWriterAheadEndsNoLiveRestriction(t *testing.T) {
	const skew, left, day = 5 * time.Minute, 150 * time.Second, 24 * time.Hour
	ctx := context.Background()
	seq := int64(1000) // above every Seq a revocation takes here
	grant := func(t *testing.T, s *redis.Store, id, customer, org, user string, level sidecar.Level, ends time.Time) {
		t.Helper()
		seq++
		g := &sidecar.Grant{ID: id, Customer: customer, PartnerOrg: org, User: user, Level: level, ExpiresAt: ends,
			ApprovedBy: "boss", ApprovedAt: time.Now(), RequestID: "r-" + id, Seq: seq}
		if err := s.PutGrant(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	revoke := func(t *testing.T, s *redis.Store, customer, id string) {
		t.Helper()
		if _, err := s.RevokeGrant(ctx, customer, id, "cora", customer); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		org  sidecar.Level // p1's organisation grant at acme
		// setup runs on the honest replica, write on the one ahead.
		setup, write func(t *testing.T, honest, ahead *redis.Store)
		want         string // pat's effective grant at p1 afterwards, "" for none
	}{
		{
			name: "unrelated_approval_keeps_the_individual_grant",
			org:  sidecar.LevelFullAdmin,
			setup: func(t *testing.T, honest, _ *redis.Store) {
				grant(t, honest, "g-pat", "acme", "p1", "pat", sidecar.LevelLook, time.Now().Add(left))
			},
			write: func(t *testing.T, _, ahead *redis.Store) {
				grant(t, ahead, "g-other", "acme", "p2", "", sidecar.LevelCC, time.Now().Add(30*day))
			},
			want: "g-pat",
		},
		{
			name: "shorter_replacement_leaves_a_hold",
			org:  sidecar.LevelFullAdmin,
			setup: func(t *testing.T, honest, _ *redis.Store) {
				grant(t, honest, "g-pat", "acme", "p1", "pat", sidecar.LevelLook, time.Now().Add(left))
			},
			write: func(t *testing.T, _, ahead *redis.Store) {
				grant(t, ahead, "g-pat2", "acme", "p1", "pat", sidecar.LevelCC, time.Now().Add(left/2))
			},
			want: "g-pat2",
		},
		{
			// The look hold keeps pat from the organisation's update grant;
			// the later update hold does not.
			name: "a_later_hold_keeps_a_live_one",
			org:  sidecar.LevelUpdate,
			setup: func(t *testing.T, honest, _ *redis.Store) {
				grant(t, honest, "g-pat", "acme", "p1", "pat", sidecar.LevelLook, time.Now().Add(left))
				revoke(t, honest, "acme", "g-pat")
				grant(t, honest, "g-pat2", "acme", "p1", "pat", sidecar.LevelUpdate, time.Now().Add(day))
			},
			write: func(t *testing.T, _, ahead *redis.Store) { revoke(t, ahead, "acme", "g-pat2") },
			want:  "",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			honest, ahead, raw, prefix := skewedReplicas(t, skew)
			last := time.Now().Add(30 * day)
			grant(t, honest, "g-org", "acme", "p1", "", tc.org, last)
			tc.setup(t, honest, ahead)
			tc.write(t, honest, ahead)
			eg, err := honest.EffectiveGrants(ctx, "acme", "p1", "pat")
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if g := eg.At(time.Now()); g != nil {
				got = g.ID
			}
			if got != tc.want {
				t.Fatalf("pat's effective grant = %q, want %q (individual %+v, holds %+v)", got, tc.want, eg.Individual, eg.Held)
			}
			// The TTL was set a moment ago: within a few seconds below.
			if ttl := raw.PTTL(ctx, prefix+":{cust:acme}:grants").Val(); ttl < time.Until(last)-5*time.Second {
				t.Fatalf("grants kept %v, the organisation grant lives %v", ttl, time.Until(last))
			}
		})
	}
}

// A replica whose clock runs ahead must not take a consent's lapse, nor
// keep one as due when it replaces the consent, while the consent is in
// force by Redis's clock: its sweep would record consent.expired (event,
// audit, the customer's mail) early, and nothing at the real lapse. The
// lapse is taken once it is due by both clocks, through that replica too.
func TestWriterAheadTakesNoLapseEarly(t *testing.T) {
	const skew = 5 * time.Minute
	ctx := context.Background()
	give := func(t *testing.T, s *redis.Store, ends time.Time) {
		t.Helper()
		if _, err := s.SetConsent(ctx, &sidecar.Consent{Customer: "acme", Allowed: true, ExpiresAt: ends, SetBy: "acme", SetAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	noneKept := func(t *testing.T, s *redis.Store, since time.Time) {
		t.Helper()
		kept, err := s.LapsedConsentsTaken(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		if len(kept) != 0 {
			t.Fatalf("lapses kept as taken before the consent lapsed: %+v", kept)
		}
	}
	t.Run("sweep", func(t *testing.T) {
		honest, ahead, _, _ := skewedReplicas(t, skew)
		since := time.Now().Add(-time.Minute)
		ends := time.Now().Add(3 * time.Second)
		give(t, honest, ends)
		took, err := ahead.TakeLapsedConsents(ctx, time.Now().Add(skew))
		if err != nil {
			t.Fatal(err)
		}
		if len(took) != 0 {
			t.Fatalf("took %+v with the consent in force until %v", took, ends)
		}
		noneKept(t, honest, since)
		eventually(t, "the lapse taken through the replica ahead", func() bool {
			took, err = ahead.TakeLapsedConsents(ctx, time.Now().Add(skew))
			return err != nil || len(took) > 0
		})
		if err != nil || len(took) != 1 || !took[0].ExpiresAt.Equal(ends.Truncate(time.Millisecond)) || time.Now().Before(ends.Truncate(time.Millisecond)) {
			t.Fatalf("took %+v (%v) at %v, want the consent ending at %v, once it ended", took, err, time.Now(), ends)
		}
	})
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, ahead *redis.Store)
	}{
		{"replacing_the_consent", func(t *testing.T, ahead *redis.Store) { give(t, ahead, time.Now().Add(2*time.Hour)) }},
		{"deleting_the_customer", func(t *testing.T, ahead *redis.Store) {
			if _, err := ahead.DeleteCustomer(ctx, "acme", "cora"); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			honest, ahead, _, _ := skewedReplicas(t, skew)
			since := time.Now().Add(-time.Minute)
			if _, err := honest.PutCustomer(ctx, &sidecar.Customer{ID: "acme"}, sidecar.Protection{}); err != nil {
				t.Fatal(err)
			}
			give(t, honest, time.Now().Add(150*time.Second))
			tc.write(t, ahead)
			noneKept(t, honest, since)
		})
	}
}

// A budget counted through a replica whose clock lags by more than its
// window still counts: its window must not end, by Redis's clock, before
// it began. (The window's end, on the replica's clock, was handed to
// PEXPIREAT, which Redis judges at its own: a window already over there
// dropped the count at once.)
func TestLaggingReplicaCountsBudgets(t *testing.T) {
	const window, limit = time.Minute, 3
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		take func(*redis.Store) func(context.Context, string, int, time.Duration) (time.Duration, bool, error)
	}{
		{"consent", func(s *redis.Store) func(context.Context, string, int, time.Duration) (time.Duration, bool, error) {
			return s.TakeConsentChange
		}},
		{"self_service", func(s *redis.Store) func(context.Context, string, int, time.Duration) (time.Duration, bool, error) {
			return s.TakeSelfServiceChange
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, lagging, _, _ := skewedReplicas(t, -2*window)
			var got []bool
			for range 8 {
				_, ok, err := tc.take(lagging)(ctx, "acme", limit, window)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, ok)
			}
			want := []bool{true, true, true, false, false, false, false, false}
			if !slices.Equal(got, want) {
				t.Fatalf("8 changes through a replica lagging 2 windows: taken %v, want %v", got, want)
			}
		})
	}
}

// A revocation through a replica whose clock runs ahead must revoke a
// grant that the others and Redis still hold live: found over by that
// replica's clock alone, it was left in force for every other replica
// while the revocation answered success. Revoke finds the grant (GetGrant),
// revokes it (RevokeGrant), and a retry finds it revoked (RevokedGrant):
// each judges at the earlier of the two clocks.
func TestWriterAheadRevokesLiveGrant(t *testing.T) {
	const skew, left = 5 * time.Minute, 150 * time.Second
	ctx := context.Background()
	for _, user := range []string{"", "pat"} {
		t.Run("user="+user, func(t *testing.T) {
			honest, ahead, _, _ := skewedReplicas(t, skew)
			g := &sidecar.Grant{ID: "g1", Customer: "acme3", PartnerOrg: "thirdco", User: user, Level: sidecar.LevelLook,
				ExpiresAt: time.Now().Add(left), ApprovedBy: "cora", ApprovedAt: time.Now(), RequestID: "r1", Seq: 1}
			if err := honest.PutGrant(ctx, g); err != nil {
				t.Fatal(err)
			}
			if _, err := ahead.GetGrant(ctx, "acme3", "g1"); err != nil {
				t.Fatalf("the revocation's lookup through the replica ahead: %v, want the live grant", err)
			}
			if _, err := ahead.RevokeGrant(ctx, "acme3", "g1", "cora", "acme3"); err != nil {
				t.Fatalf("revoking through the replica ahead: %v", err)
			}
			if got, err := honest.GetGrant(ctx, "acme3", "g1"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
				t.Fatalf("the honest replica still finds %+v (%v) after the revocation", got, err)
			}
			e, err := honest.EffectiveGrants(ctx, "acme3", "thirdco", "pat")
			if err != nil || e.Organisation != nil || e.Individual != nil {
				t.Fatalf("the honest replica resolves %+v (%v) after the revocation, want nothing", e, err)
			}
			for name, s := range map[string]*redis.Store{"honest": honest, "ahead": ahead} {
				rev, err := s.RevokedGrant(ctx, "acme3", "g1")
				if err != nil || rev.RevokedBy != "cora" {
					t.Fatalf("the revocation as the %s replica finds it: %+v (%v), want kept with its revoker", name, rev, err)
				}
			}
		})
	}
}

// Deleting a customer through a replica whose clock runs ahead withdraws
// a consent still in force by Redis's clock, and says so: judged over at
// that replica's clock alone, the withdrawal went unrecorded, while the
// lapse was not taken either (it was not due by Redis's clock), so the
// consent's end was recorded nowhere.
func TestWriterAheadRecordsWithdrawalOnDelete(t *testing.T) {
	ctx := context.Background()
	honest, ahead, _, _ := skewedReplicas(t, 5*time.Minute)
	if _, err := honest.PutCustomer(ctx, &sidecar.Customer{ID: "acme"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	ends := time.Now().Add(150 * time.Second)
	if _, err := honest.SetConsent(ctx, &sidecar.Consent{Customer: "acme", Allowed: true, ExpiresAt: ends, SetBy: "acme", SetAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	del, err := ahead.DeleteCustomer(ctx, "acme", "cora")
	if err != nil {
		t.Fatal(err)
	}
	if del.Withdrawn == nil || del.Withdrawn.Reason != sidecar.EndCustomerDeleted {
		t.Fatalf("deletion %+v records no withdrawal of the consent in force until %v", del, ends)
	}
}

// liveSession starts, through s, a session of alice on acme that ends in
// left (consent given without expiry), redeems it with token hash h, and
// returns it as stored.
func liveSession(t *testing.T, s *redis.Store, id, h string, left time.Duration, roles ...string) *sidecar.Session {
	t.Helper()
	ctx := context.Background()
	if _, err := s.GetCustomer(ctx, "acme"); sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		if _, err := s.PutCustomer(ctx, &sidecar.Customer{ID: "acme"}, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetConsent(ctx, &sidecar.Consent{Customer: "acme", Allowed: true, SetBy: "acme", SetAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	ss := &sidecar.Session{ID: id, Actor: "alice", Customer: "acme", ActorRoles: roles, StartedAt: now, ExpiresAt: now.Add(left)}
	if _, err := s.StartSession(ctx, sidecar.SessionStart{Session: ss, CodeHash: "code-" + id, CodeExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.RedeemSession(ctx, "code-"+id, h, "shop.example.com", "", sidecar.SessionLimits{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// heardBy returns what s hands its subscribers, once quiet.
func heardBy(t *testing.T, s, other *redis.Store) *keyLog {
	t.Helper()
	heard := &keyLog{}
	t.Cleanup(s.Subscribe(heard.add))
	quiet(t, heard, other)
	return heard
}

// quiet forgets what heard holds once everything published before has
// reached it: a write's key comes back over pub/sub after the write
// returned, in the order published, so once a probe published through
// other is heard, the keys before it went by.
func quiet(t *testing.T, heard *keyLog, other *redis.Store) {
	t.Helper()
	probe := "probe:" + freshPrefix()
	eventually(t, "a probe published through the other replica", func() bool {
		_ = other.Invalidate(context.Background(), probe)
		return heard.has(probe)
	})
	heard.mu.Lock()
	heard.keys = nil
	heard.mu.Unlock()
}

// endedEverywhere fails unless the session of token hash h is ended, for
// reason, as the honest replica reads it, the write reported it among
// those it ended (so that it is recorded), and the honest replica heard
// its eviction before the write returned.
func endedEverywhere(t *testing.T, honest *redis.Store, heard *keyLog, h, reason string, reported []sidecar.Session) {
	t.Helper()
	got, err := honest.SessionByToken(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	if got.Live(time.Now()) || got.EndReason != reason {
		t.Fatalf("the honest replica reads the session %+v: live %v, end reason %q; want ended as %q",
			got, got.Live(time.Now()), got.EndReason, reason)
	}
	if !slices.ContainsFunc(reported, func(s sidecar.Session) bool { return s.ID == got.ID }) {
		t.Fatalf("the write reported %+v ended, not %s", reported, got.ID)
	}
	if !heard.has(sidecar.SessionKey(h)) {
		t.Fatalf("the honest replica heard %v, not the session's eviction", heard.keys)
	}
}

// A narrowing write through a replica whose clock runs ahead must end,
// and evict, every session that is still live for the others: judged
// live at that replica's clock alone, a session with 2 minutes left was
// taken for expired by a writer 5 minutes ahead, neither ended nor
// evicted, and every honest replica went on honouring it after the write
// had answered success. Each kind of narrowing write leaves the session
// to the honest replica to read.
func TestWriterAheadEndsEveryLiveSessionWhenNarrowing(t *testing.T) {
	const skew, left = 5 * time.Minute, 2 * time.Minute
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		reason string
		write  func(t *testing.T, ahead *redis.Store) []sidecar.Session
	}{
		{"consent_withdrawn", sidecar.EndConsentWithdrawn, func(t *testing.T, ahead *redis.Store) []sidecar.Session {
			ended, err := ahead.SetConsent(ctx, &sidecar.Consent{Customer: "acme", SetBy: "acme", SetAt: time.Now().Add(skew)})
			if err != nil {
				t.Fatal(err)
			}
			return ended
		}},
		{"consent_shortened", sidecar.EndConsentWithdrawn, func(t *testing.T, ahead *redis.Store) []sidecar.Session {
			ended, err := ahead.SetConsent(ctx, &sidecar.Consent{Customer: "acme", Allowed: true, ExpiresAt: time.Now().Add(left / 2),
				SetBy: "cora", SetAt: time.Now().Add(skew)})
			if err != nil {
				t.Fatal(err)
			}
			return ended
		}},
		{"customer_protected", sidecar.EndCustomerProtected, func(t *testing.T, ahead *redis.Store) []sidecar.Session {
			ended, err := ahead.PutCustomer(ctx, &sidecar.Customer{ID: "acme", Protected: true, UpdatedBy: "sync"}, sidecar.Protection{})
			if err != nil {
				t.Fatal(err)
			}
			return ended
		}},
		{"customer_deleted", sidecar.EndCustomerDeleted, func(t *testing.T, ahead *redis.Store) []sidecar.Session {
			del, err := ahead.DeleteCustomer(ctx, "acme", "sync")
			if err != nil {
				t.Fatal(err)
			}
			return del.Ended
		}},
		{"marked_staff", sidecar.EndCustomerProtected, func(t *testing.T, ahead *redis.Store) []sidecar.Session {
			ended, err := ahead.MarkStaff(ctx, "acme")
			if err != nil {
				t.Fatal(err)
			}
			return ended
		}},
		{"replaced_by_a_start", sidecar.EndReplaced, func(t *testing.T, ahead *redis.Store) []sidecar.Session {
			now := time.Now().Add(skew)
			ss := &sidecar.Session{ID: "s2", Actor: "alice", Customer: "acme", StartedAt: now, ExpiresAt: now.Add(time.Hour)}
			replaced, err := ahead.StartSession(ctx, sidecar.SessionStart{Session: ss, CodeHash: "code-s2", CodeExpiresAt: now.Add(time.Minute),
				ReplaceLive: true})
			if err != nil {
				t.Fatal(err)
			}
			return replaced
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			honest, ahead, _, _ := skewedReplicas(t, skew)
			t.Cleanup(ahead.Subscribe(func(string) {}))
			heard := heardBy(t, honest, ahead)
			liveSession(t, honest, "s1", "h1", left)
			quiet(t, heard, ahead)
			endedEverywhere(t, honest, heard, "h1", tc.reason, tc.write(t, ahead))
		})
	}
}

// The sweeps that end sessions policy data no longer allows (the
// customer protected, the actor's roles no longer granting
// login_as_customer) must end, through a replica whose clock runs ahead,
// every session still live for the others: judged at the sweeper's clock
// alone, a session with 2 minutes left was passed over as expired by a
// sweeper 5 minutes ahead, and the others honoured it until their own
// sweep.
func TestWriterAheadSweepsJudgeLiveAtRedisClock(t *testing.T) {
	const skew, left = 5 * time.Minute, 2 * time.Minute
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		reason string
		sweep  func(ahead *redis.Store, now time.Time) ([]sidecar.Session, error)
	}{
		{"protected", sidecar.EndCustomerProtected, func(ahead *redis.Store, now time.Time) ([]sidecar.Session, error) {
			return ahead.EndProtectedSessions(ctx, sidecar.Protection{Customers: []string{"acme"}}, now)
		}},
		{"unpermitted", sidecar.EndActorNotPermitted, func(ahead *redis.Store, now time.Time) ([]sidecar.Session, error) {
			return ahead.EndUnpermittedSessions(ctx, []string{"admin"}, now)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			honest, ahead, _, _ := skewedReplicas(t, skew)
			t.Cleanup(ahead.Subscribe(func(string) {}))
			heard := heardBy(t, honest, ahead)
			liveSession(t, honest, "s1", "h1", left, "agent")
			quiet(t, heard, ahead)
			ended, err := tc.sweep(ahead, time.Now().Add(skew))
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "the honest replica hears the session's eviction", func() bool { return heard.has(sidecar.SessionKey("h1")) })
			endedEverywhere(t, honest, heard, "h1", tc.reason, ended)
		})
	}
}

// A replica whose clock runs ahead records activity no later than
// Redis's clock: a last-seen 5 minutes in the future kept the session
// from going idle, for every replica, 5 minutes past its idle timeout.
func TestWriterAheadTouchExtendsNoIdle(t *testing.T) {
	const skew, idle = 5 * time.Minute, 10 * time.Minute
	ctx := context.Background()
	honest, ahead, _, _ := skewedReplicas(t, skew)
	if _, err := honest.PutCustomer(ctx, &sidecar.Customer{ID: "acme"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, err := honest.SetConsent(ctx, &sidecar.Consent{Customer: "acme", Allowed: true, SetBy: "acme", SetAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ss := &sidecar.Session{ID: "s1", Actor: "alice", Customer: "acme", StartedAt: now, ExpiresAt: now.Add(time.Hour), IdleTimeout: idle}
	if _, err := honest.StartSession(ctx, sidecar.SessionStart{Session: ss, CodeHash: "code-s1", CodeExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := ahead.TouchSession(ctx, "s1", time.Now().Add(skew)); err != nil {
		t.Fatal(err)
	}
	got, err := honest.GetSession(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	if got.LastSeen.After(after) || got.EndState(after.Add(idle)) != sidecar.EndIdle {
		t.Fatalf("last seen %v, touched at %v by Redis's clock: idle at %v is %q, want %q",
			got.LastSeen, after, after.Add(idle), got.EndState(after.Add(idle)), sidecar.EndIdle)
	}
}

// A start through a replica whose clock runs ahead is stamped no later
// than Redis's clock: stamped 5 minutes ahead, the session outlived
// max_session, and its redeem code its TTL, by 5 minutes on every honest
// replica (and idled from a start in the future).
func TestWriterAheadStartOutlivesNoMaxSession(t *testing.T) {
	const skew, maxSession, codeTTL = 5 * time.Minute, 10 * time.Minute, time.Minute
	ctx := context.Background()
	honest, ahead, raw, prefix := skewedReplicas(t, skew)
	if _, err := honest.PutCustomer(ctx, &sidecar.Customer{ID: "acme"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, err := honest.SetConsent(ctx, &sidecar.Consent{Customer: "acme", Allowed: true, SetBy: "acme", SetAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(skew) // the replica ahead's
	ss := &sidecar.Session{ID: "s1", Actor: "alice", Customer: "acme", StartedAt: now, ExpiresAt: now.Add(maxSession), IdleTimeout: maxSession / 2}
	l := sidecar.SessionLimits{MaxSession: maxSession}
	if _, err := ahead.StartSession(ctx, sidecar.SessionStart{Session: ss, CodeHash: "code-s1", CodeExpiresAt: now.Add(codeTTL),
		Limits: l, StartNoLater: true}); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	got, err := honest.GetSession(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got.StartedAt.After(after) || got.LiveWithin(after.Add(maxSession), l) || got.LiveWithin(after.Add(maxSession), sidecar.SessionLimits{}) {
		t.Fatalf("started %v, expiring %v, stored at %v by Redis's clock: live past max_session (%v) as the honest replica judges it",
			got.StartedAt, got.ExpiresAt, after, maxSession)
	}
	if !got.StartedAt.Equal(ss.StartedAt) || !got.ExpiresAt.Equal(ss.ExpiresAt) {
		t.Fatalf("the starter holds the session as started %v, expiring %v; stored %v, %v", ss.StartedAt, ss.ExpiresAt, got.StartedAt, got.ExpiresAt)
	}
	var ref struct {
		Expires time.Time `json:"exp"`
	}
	code := raw.Get(ctx, prefix+":{imp}:code:code-s1").Val()
	if err := json.Unmarshal([]byte(code), &ref); err != nil {
		t.Fatalf("redeem code %q: %v", code, err)
	}
	if ref.Expires.After(after.Add(codeTTL)) || raw.PTTL(ctx, prefix+":{imp}:code:code-s1").Val() < codeTTL-5*time.Second {
		t.Fatalf("redeem code expiring %v (kept %v), stored at %v: past its TTL (%v), or gone before it",
			ref.Expires, raw.PTTL(ctx, prefix+":{imp}:code:code-s1").Val(), after, codeTTL)
	}
	if _, err := honest.RedeemSession(ctx, "code-s1", "h1", "shop.example.com", "alice", l); err != nil {
		t.Fatalf("redeeming through the honest replica: %v", err)
	}
}
