package redis_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
	goredis "github.com/redis/go-redis/v9"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		cfg   redis.Config
		field string
	}{
		{"single_node", redis.Config{Addrs: []string{"127.0.0.1:6379"}}, ""},
		{"sentinel", redis.Config{Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "mymaster"}, ""},
		{"cluster", redis.Config{Addrs: []string{"n1:6379", "n2:6379"}, Cluster: true}, ""},
		{"not_configured", redis.Config{}, ""},
		// The embedded store loses everything on a restart: no AOF can
		// meet the requirement.
		{"require_aof_without_redis", redis.Config{RequireAOF: true}, "redis.require_aof"},
		{"require_aof", redis.Config{Addrs: []string{"a:1"}, RequireAOF: true}, ""},
		{"address_without_port", redis.Config{Addrs: []string{"localhost"}}, "redis.addrs"},
		{"ipv6_address", redis.Config{Addrs: []string{"[::1]:6379"}}, ""},
		{"address_as_url", redis.Config{Addrs: []string{"redis://r:6379"}}, "redis.addrs"},
		{"address_with_password", redis.Config{Addrs: []string{"redis://:S3CRET@r:6379"}}, "redis.addrs"},
		{"address_with_user", redis.Config{Addrs: []string{"deputy:S3CRET@r:6379"}}, "redis.addrs"},
		{"address_bad_port", redis.Config{Addrs: []string{"r:redis"}}, "redis.addrs"},
		{"address_port_zero", redis.Config{Addrs: []string{"r:0"}}, "redis.addrs"},
		{"address_too_many_colons", redis.Config{Addrs: []string{"r:1:2"}}, "redis.addrs"},
		{"several_addresses_no_mode", redis.Config{Addrs: []string{"a:1", "b:1"}}, "redis.addrs"},
		{"cluster_and_sentinel", redis.Config{Addrs: []string{"a:1"}, Cluster: true, MasterName: "m"}, "redis.master_name"},
		{"cluster_db", redis.Config{Addrs: []string{"a:1"}, Cluster: true, DB: 2}, "redis.db"},
		{"negative_db", redis.Config{Addrs: []string{"a:1"}, DB: -1}, "redis.db"},
		{"negative_timeout", redis.Config{Addrs: []string{"a:1"}, ReadTimeout: -time.Second}, "redis.read_timeout"},
		{"negative_maxlen", redis.Config{Addrs: []string{"a:1"}, EventsMaxLen: -1}, "redis.events_maxlen"},
		{"prefix_with_braces", redis.Config{Addrs: []string{"a:1"}, KeyPrefix: "x{y}"}, "redis.key_prefix"},
		{"tls_options_without_tls", redis.Config{Addrs: []string{"a:1"}, TLSServerName: "redis"}, "redis.tls"},
		// go-redis sends no AUTH without a password: the connection would
		// run as the default user, not the ACL user configured.
		{"username_without_password", redis.Config{Addrs: []string{"a:1"}, Username: "deputy"}, "redis.password"},
		{"username_and_password", redis.Config{Addrs: []string{"a:1"}, Username: "deputy", Password: "s3cret"}, ""},
		{"missing_ca_file", redis.Config{Addrs: []string{"a:1"}, TLS: true, TLSCAFile: "testdata/none.pem"}, "redis.tls_ca_file"},
		// Twice the retention must fit a time.Duration: the session log
		// and request indexes are pruned at now-2×retention, which
		// wrapped into the future and pruned every entry.
		{"retention_at_maximum", redis.Config{Addrs: []string{"a:1"}, Retention: 876000 * time.Hour}, ""},
		{"retention_past_maximum", redis.Config{Addrs: []string{"a:1"}, Retention: 876001 * time.Hour}, "redis.retention"},
		{"retention_go_maximum", redis.Config{Addrs: []string{"a:1"}, Retention: 2562047 * time.Hour}, "redis.retention"},
		{"narrowing_replicas_auto", redis.Config{Addrs: []string{"a:1"}, NarrowingReplicas: "auto"}, ""},
		{"narrowing_replicas_none", redis.Config{Addrs: []string{"a:1"}, NarrowingReplicas: "0"}, ""},
		{"narrowing_replicas_two", redis.Config{Addrs: []string{"a:1"}, NarrowingReplicas: "2"}, ""},
		{"narrowing_replicas_negative", redis.Config{Addrs: []string{"a:1"}, NarrowingReplicas: "-1"}, "redis.narrowing_replicas"},
		{"narrowing_replicas_word", redis.Config{Addrs: []string{"a:1"}, NarrowingReplicas: "all"}, "redis.narrowing_replicas"},
		// WAIT 0 would wait for ever.
		{"narrowing_replica_timeout_below_1ms", redis.Config{Addrs: []string{"a:1"}, NarrowingReplicaTimeout: time.Microsecond}, "redis.narrowing_replica_timeout"},
		{"narrowing_replica_timeout_negative", redis.Config{Addrs: []string{"a:1"}, NarrowingReplicaTimeout: -time.Second}, "redis.narrowing_replica_timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Defaults().Validate()
			if got := sidecar.ErrorField(err); got != tc.field || (tc.field == "") != (err == nil) {
				t.Fatalf("err = %v, want field %q", err, tc.field)
			}
			if err != nil && strings.Contains(sidecar.ErrorMessage(err)+err.Error(), "S3CRET") {
				t.Fatalf("err = %v repeats the password", err)
			}
			if _, err := redis.New(tc.cfg); (err == nil) != (tc.field == "" && tc.cfg.Enabled()) {
				t.Fatalf("New err = %v", err)
			}
		})
	}
	t.Run("new_needs_an_address", func(t *testing.T) {
		_, err := redis.New(redis.Config{})
		if sidecar.ErrorField(err) != "redis.addrs" {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestRedisDown(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, DialTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	srv.Stop()
	cases := []struct {
		name string
		call func() error
	}{
		{"ping", func() error { return s.Ping(ctx) }},
		{"read", func() error { _, err := s.SessionByToken(ctx, "h"); return err }},
		{"grant_lookup", func() error { _, err := s.EffectiveGrants(ctx, "acme", "p1", "pat"); return err }},
		{"write", func() error {
			_, err := s.PutCustomer(ctx, &sidecar.Customer{ID: "c1"}, sidecar.Protection{})
			return err
		}},
		{"append", func() error { return s.AppendEvent(ctx, &sidecar.Event{Type: sidecar.EventConsentChanged}) }},
		{"redeem", func() error {
			_, err := s.RedeemSession(ctx, "c", "h", "shop", "", sidecar.SessionLimits{})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE || sidecar.HTTPStatus(err) != 503 {
				t.Fatalf("err = %v, want unavailable (503)", err)
			}
		})
	}
	t.Run("back_after_restart", func(t *testing.T) {
		srv.Restart()
		eventually(t, "store reachable again", func() bool { return s.Ping(ctx) == nil })
		if _, err := s.PutCustomer(ctx, &sidecar.Customer{ID: "c1"}, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
	})
}

// The longest retention allowed keeps what it is meant to keep: the live
// session list and the access requests are still listed after writes
// that prune their indexes.
func TestLongestRetentionKeepsIndexes(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	clock := storetest.NewClock(time.Now())
	cfg := redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "longest", Retention: 876000 * time.Hour}
	if err := cfg.Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := redis.New(cfg, redis.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := clock.Now()
	if _, err := s.PutCustomer(ctx, &sidecar.Customer{ID: "acme"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetConsent(ctx, &sidecar.Consent{Customer: "acme", Allowed: true, SetAt: now}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"s1", "s2"} {
		if _, err := s.StartSession(ctx, sidecar.SessionStart{CodeHash: "code-" + id, CodeExpiresAt: now.Add(30 * time.Second),
			Session: &sidecar.Session{ID: id, Actor: "alice-" + id, Customer: "acme", StartedAt: now, ExpiresAt: now.Add(time.Hour)}}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateRequest(ctx, &sidecar.AccessRequest{ID: "r" + id, Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelLook,
			CreatedAt: now, Status: sidecar.RequestPending, PendingExpiresAt: now.Add(30 * 24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	live, _, err := s.ListSessions(ctx, sidecar.SessionFilter{LiveOnly: true, Page: sidecar.Page{Limit: 10}})
	if err != nil || len(live) != 2 {
		t.Fatalf("live sessions = %d, %v; want 2", len(live), err)
	}
	reqs, _, err := s.ListRequests(ctx, sidecar.RequestFilter{Customer: "acme", Page: sidecar.Page{Limit: 10}})
	if err != nil || len(reqs) != 2 {
		t.Fatalf("requests = %d, %v; want 2", len(reqs), err)
	}
}

func TestTTLsMirrorExpiries(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	c := srv.Client()
	clock := storetest.NewClock(time.Now())
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "ttl", Retention: 24 * time.Hour}, redis.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := clock.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.PutCustomer(ctx, &sidecar.Customer{ID: "acme"}, sidecar.Protection{})
	must(err)
	_, err = s.SetConsent(ctx, &sidecar.Consent{Customer: "acme", Allowed: true, SetAt: now, ExpiresAt: now.Add(2 * time.Hour)})
	must(err)
	_, err = s.StartSession(ctx, sidecar.SessionStart{CodeHash: "code", CodeExpiresAt: now.Add(30 * time.Second),
		Session: &sidecar.Session{ID: "s1", Actor: "alice", Customer: "acme", StartedAt: now, ExpiresAt: now.Add(time.Hour),
			ConsentExpiresAt: now.Add(2 * time.Hour)}})
	must(err)
	_, err = s.RedeemSession(ctx, "code", "tok", "shop", "", sidecar.SessionLimits{})
	must(err)
	_, err = s.StartSession(ctx, sidecar.SessionStart{CodeHash: "code2", CodeExpiresAt: now.Add(30 * time.Second),
		Session: &sidecar.Session{ID: "s2", Actor: "bob", Customer: "acme", StartedAt: now, ExpiresAt: now.Add(time.Hour),
			ConsentExpiresAt: now.Add(2 * time.Hour)}})
	must(err)
	must(s.PutGrant(ctx, &sidecar.Grant{ID: "g", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelLook, ExpiresAt: now.Add(72 * time.Hour)}))
	for _, g := range []struct {
		id, user string
		ttl      time.Duration
	}{{"gi", "pat", 48 * time.Hour}, {"gj", "sam", 24 * time.Hour}} {
		must(s.PutGrant(ctx, &sidecar.Grant{ID: g.id, Customer: "acme", PartnerOrg: "p1", User: g.user, Level: sidecar.LevelCC, ExpiresAt: now.Add(g.ttl)}))
		_, err = s.RevokeGrant(ctx, "acme", g.id, "cora", "acme")
		must(err)
	}
	must(s.CreateRequest(ctx, &sidecar.AccessRequest{ID: "r1", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelLook, CreatedAt: now,
		Status: sidecar.RequestPending, PendingExpiresAt: now.Add(30 * 24 * time.Hour)}))
	// A later, shorter-lived member does not shorten an index.
	must(s.CreateRequest(ctx, &sidecar.AccessRequest{ID: "r2", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelLook, CreatedAt: now,
		Status: sidecar.RequestPending, PendingExpiresAt: now.Add(24 * time.Hour)}))
	cases := []struct {
		name, key string
		want      time.Duration
	}{
		{"session_kept_for_retention_after_expiry", "ttl:{imp}:sess:s1", 25 * time.Hour},
		{"session_pointer_likewise", "ttl:{imp}:tok:tok", 25 * time.Hour},
		{"redeem_code", "ttl:{imp}:code:code2", 30 * time.Second},
		{"consent", "ttl:{imp}:consent:acme", 2 * time.Hour},
		{"grants_until_last_expiry", "ttl:{cust:acme}:grants", 72 * time.Hour},
		{"holds_until_the_last_revoked_grant_would_have_expired", "ttl:{cust:acme}:grants:held", 48 * time.Hour},
		{"pending_request_until_retention_after_expiry", "ttl:{req:r1}", 31 * 24 * time.Hour},
		// Indexes live as long as the longest-living record they index, so
		// one whose records are all gone goes too.
		{"customer_request_index_until_its_last_request_is_forgotten", "ttl:{cust:acme}:requests", 31 * 24 * time.Hour},
		{"partner_request_index_likewise", "ttl:{porg:p1}:requests", 31 * 24 * time.Hour},
		{"session_log_index_until_its_last_session_is_forgotten", "ttl:{imp}:slog", 25 * time.Hour},
		{"actor_session_log_index_likewise", "ttl:{imp}:slog:a:alice", 25 * time.Hour},
		{"customer_session_log_index_likewise", "ttl:{imp}:slog:c:acme", 25 * time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ttl, err := c.PTTL(ctx, tc.key).Result()
			if err != nil {
				t.Fatal(err)
			}
			// The TTL was computed a moment ago: within a minute below want.
			if ttl > tc.want || ttl < tc.want-time.Minute {
				t.Fatalf("TTL of %s = %v, want about %v", tc.key, ttl, tc.want)
			}
		})
	}
	t.Run("ending_shortens_the_session", func(t *testing.T) {
		_, err := s.EndSession(ctx, "s1", "alice", sidecar.EndEnded, now, sidecar.SessionLimits{})
		must(err)
		for _, k := range []string{"ttl:{imp}:sess:s1", "ttl:{imp}:tok:tok"} {
			ttl, _ := c.PTTL(ctx, k).Result()
			if ttl > 24*time.Hour || ttl < 23*time.Hour {
				t.Fatalf("TTL of %s after end = %v, want about the retention", k, ttl)
			}
		}
	})
}

func TestClusterKeysThatChangeTogetherShareASlot(t *testing.T) {
	ctx := context.Background()
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	s, err := redis.New(redis.Config{Addrs: cl.Addrs, Cluster: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	_, _ = s.PutCustomer(ctx, &sidecar.Customer{ID: "acme"}, sidecar.Protection{})
	_, _ = s.SetConsent(ctx, &sidecar.Consent{Customer: "acme", Allowed: true})
	_, err = s.StartSession(ctx, sidecar.SessionStart{CodeHash: "code", CodeExpiresAt: now.Add(30 * time.Second),
		Session: &sidecar.Session{ID: "s1", Actor: "alice", Customer: "acme", StartedAt: now, ExpiresAt: now.Add(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.PutGrant(ctx, &sidecar.Grant{ID: "g", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelLook, ExpiresAt: now.Add(time.Hour)})
	_ = s.PutGrant(ctx, &sidecar.Grant{ID: "gi", Customer: "acme", PartnerOrg: "p1", User: "pat", Level: sidecar.LevelCC, ExpiresAt: now.Add(time.Hour)})
	_, _ = s.RevokeGrant(ctx, "acme", "gi", "cora", "acme") // leaves a hold on pat
	_ = storetest.ErrOf(s.PutShare(ctx, &sidecar.Share{Customer: "acme", Resource: "SR-1", User: "pat", PartnerOrg: "p1"}))
	_ = s.PutAssignment(ctx, &sidecar.Assignment{Customer: "acme", Reseller: "r", Domain: "d"})
	for _, tc := range []struct {
		name, pattern string
		least         int
	}{
		{"a_customers_partner_and_reseller_state", "deputy:{cust:acme}:*", 4},
		{"impersonation_state", "deputy:{imp}:*", 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu   sync.Mutex // ForEachMaster visits the masters concurrently
				keys []string
			)
			err := c.ForEachMaster(ctx, func(ctx context.Context, n *goredis.Client) error {
				ks, err := n.Keys(ctx, tc.pattern).Result()
				mu.Lock()
				keys = append(keys, ks...)
				mu.Unlock()
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) < tc.least {
				t.Fatalf("found only %v", keys)
			}
			slots := map[int64]bool{}
			for _, k := range keys {
				slot, err := c.ClusterKeySlot(ctx, k).Result()
				if err != nil {
					t.Fatal(err)
				}
				slots[slot] = true
			}
			if len(slots) != 1 {
				t.Fatalf("keys spread over %d slots: %v", len(slots), keys)
			}
		})
	}
}

func TestSubscribeWhileRedisDown(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	srv.Stop()
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, DialTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make(chan string, 64)
	defer s.Subscribe(func(k string) {
		select {
		case got <- k:
		default:
		}
	})()
	srv.Restart()
	// Publish until the subscription is back: messages sent before it
	// reconnects are lost, which is what the flush on resubscribe covers.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_ = s.Invalidate(ctx, sidecar.GrantKey("acme"))
		select {
		case k := <-got:
			if k == sidecar.GrantKey("acme") {
				return
			}
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("subscription made while Redis was down never delivered")
		}
	}
}

// Every write that sets a record's TTL keeps the indexes that list it at
// least as long, also when the retention was raised since the record was
// indexed (a restart with a longer redis.retention, or a replica already
// on it): a decided request or an ended session stays in the listings for
// as long as its record lives. An index written before indexes expired
// (no TTL) is never given one shorter than a record it lists.
func TestIndexesOutliveTheirRecords(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	c := srv.Client()
	clock := storetest.NewClock(time.Now())
	open := func(retention time.Duration) *redis.Store {
		s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "ix", Retention: retention}, redis.WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	before, raised := open(time.Hour), open(100*time.Hour)
	now := clock.Now()
	must := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// outlives fails unless each index lives at least as long as record
	// (an index with no TTL lives for good).
	outlives := func(t *testing.T, record string, indexes ...string) {
		t.Helper()
		rt := c.PTTL(ctx, record).Val()
		if rt <= 0 {
			t.Fatalf("record %s: TTL %v", record, rt)
		}
		for _, ix := range indexes {
			it := c.PTTL(ctx, ix).Val()
			if it != -1 && it < rt-time.Second {
				t.Errorf("index %s TTL %v, shorter than its record %s: %v", ix, it, record, rt)
			}
		}
	}
	requestIndexes := []string{"ix:{cust:acme}:requests", "ix:{porg:p1}:requests"}
	request := func(t *testing.T, id string) {
		t.Helper()
		must(t, before.CreateRequest(ctx, &sidecar.AccessRequest{ID: id, Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelLook, CreatedAt: now,
			Status: sidecar.RequestPending, PendingExpiresAt: now.Add(time.Minute)}))
	}
	t.Run("decided_request", func(t *testing.T) {
		request(t, "r1")
		_, err := raised.DecideRequest(ctx, "r1", sidecar.RequestApproved, "cora", now)
		must(t, err)
		outlives(t, "ix:{req:r1}", requestIndexes...)
		for _, f := range []sidecar.RequestFilter{{Customer: "acme"}, {PartnerOrg: "p1"}} {
			f.Page.Limit = 10
			got, _, err := raised.ListRequests(ctx, f)
			if err != nil || len(got) == 0 {
				t.Fatalf("ListRequests(%+v) = %d, %v", f, len(got), err)
			}
		}
	})
	t.Run("updated_request", func(t *testing.T) {
		request(t, "r2")
		_, err := before.DecideRequest(ctx, "r2", sidecar.RequestApproved, "cora", now)
		must(t, err)
		_, err = raised.RecordApproval(ctx, "r2")
		must(t, err)
		outlives(t, "ix:{req:r2}", requestIndexes...)
	})

	_, err := before.PutCustomer(ctx, &sidecar.Customer{ID: "acme"}, sidecar.Protection{})
	must(t, err)
	_, err = before.SetConsent(ctx, &sidecar.Consent{Customer: "acme", Allowed: true, SetAt: now, ExpiresAt: now.Add(2 * time.Hour)})
	must(t, err)
	sessionIndexes := func(actor string) []string {
		return []string{"ix:{imp}:slog", "ix:{imp}:slog:a:" + actor, "ix:{imp}:slog:c:acme"}
	}
	consentUntil := now.Add(2 * time.Hour)
	start := func(t *testing.T, id, actor string, life time.Duration) {
		t.Helper()
		_, err := before.StartSession(ctx, sidecar.SessionStart{CodeHash: "code-" + id, CodeExpiresAt: now.Add(30 * time.Second),
			Session: &sidecar.Session{ID: id, Actor: actor, Customer: "acme", StartedAt: now, ExpiresAt: now.Add(life),
				ConsentExpiresAt: consentUntil}})
		must(t, err)
	}
	t.Run("redeemed_session", func(t *testing.T) {
		start(t, "s1", "alice", time.Hour)
		_, err := raised.RedeemSession(ctx, "code-s1", "tok1", "shop", "", sidecar.SessionLimits{})
		must(t, err)
		outlives(t, "ix:{imp}:sess:s1", sessionIndexes("alice")...)
	})
	t.Run("touched_session", func(t *testing.T) {
		start(t, "s2", "bob", time.Hour)
		must(t, raised.TouchSession(ctx, "s2", now.Add(time.Second)))
		outlives(t, "ix:{imp}:sess:s2", sessionIndexes("bob")...)
	})
	t.Run("ended_session", func(t *testing.T) {
		start(t, "s3", "carol", time.Hour)
		_, err := raised.EndSession(ctx, "s3", "carol", sidecar.EndEnded, now.Add(30*time.Minute), sidecar.SessionLimits{})
		must(t, err)
		outlives(t, "ix:{imp}:sess:s3", sessionIndexes("carol")...)
	})
	t.Run("session_under_a_new_consent", func(t *testing.T) {
		start(t, "s4", "dave", time.Hour)
		_, err := raised.SetConsent(ctx, &sidecar.Consent{Customer: "acme", Allowed: true, SetAt: now, ExpiresAt: now.Add(3 * time.Hour)})
		must(t, err)
		consentUntil = now.Add(3 * time.Hour)
		outlives(t, "ix:{imp}:sess:s4", sessionIndexes("dave")...)
	})
	t.Run("index_written_before_indexes_expired", func(t *testing.T) {
		start(t, "long", "erin", 150*time.Minute)
		for _, k := range sessionIndexes("erin") {
			must(t, c.Persist(ctx, k).Err())
		}
		start(t, "short", "erin", time.Minute)
		outlives(t, "ix:{imp}:sess:long", sessionIndexes("erin")...)
		request(t, "r3")
		for _, k := range requestIndexes {
			must(t, c.Persist(ctx, k).Err())
		}
		must(t, before.CreateRequest(ctx, &sidecar.AccessRequest{ID: "r4", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelLook, CreatedAt: now,
			Status: sidecar.RequestPending, PendingExpiresAt: now.Add(time.Second)}))
		for _, id := range []string{"r1", "r2", "r3"} {
			outlives(t, "ix:{req:"+id+"}", requestIndexes...)
		}
	})
}
