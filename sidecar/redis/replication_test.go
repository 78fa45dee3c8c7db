package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
	goredis "github.com/redis/go-redis/v9"
)

// narrowingEnv is a writer store on master, another replica that records
// what it is told to evict, and a client of master's Redis replica.
type narrowingEnv struct {
	ctx     context.Context
	clock   *storetest.Clock
	prefix  string
	writer  *redis.Store
	setup   *redis.Store // the other replica, narrowing_replicas at its default: it prepares
	heard   *keyLog
	replica *goredis.Client // nil without one
}

// newNarrowingEnv opens the stores on master, the writer with
// narrowing_replicas as given ("" for the default), on client when not
// nil.
// The writer reads master's replicas, as the periodic reading does at
// start.
func newNarrowingEnv(t *testing.T, master, replica *redistest.Server, narrowingReplicas string, client *goredis.Client) *narrowingEnv {
	t.Helper()
	e := &narrowingEnv{ctx: context.Background(), clock: storetest.NewClock(storetest.Epoch), prefix: freshPrefix(), heard: &keyLog{}}
	cfg := redis.Config{Addrs: []string{master.Addr}, KeyPrefix: e.prefix, ReadTimeout: redistest.ReplyTimeout,
		WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout, NarrowingReplicas: narrowingReplicas,
		// Long enough for a live replica on a loaded machine; what a
		// stopped one costs the test.
		NarrowingReplicaTimeout: time.Second}
	if client != nil {
		e.writer = redis.NewFromClient(client, cfg, redis.WithClock(e.clock.Now))
	} else {
		var err error
		if e.writer, err = redis.New(cfg, redis.WithClock(e.clock.Now)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = e.writer.Close() })
	cfg.NarrowingReplicas = ""
	other, err := redis.New(cfg, redis.WithClock(e.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	e.setup = other
	t.Cleanup(e.writer.Subscribe(func(string) {}))
	t.Cleanup(other.Subscribe(e.heard.add))
	eventuallyNoSubscriberBut(t, master.Client(), e.prefix+":invalidate", 2)
	if _, err := e.writer.Persistence(e.ctx); err != nil {
		t.Fatal(err)
	}
	if replica != nil {
		e.replica = replica.Client()
	}
	return e
}

// narrowing is a write that narrows access, the key it evicts, and what
// says on master's replica that the write is there.
type narrowing struct {
	name    string
	prepare func(t *testing.T, e *narrowingEnv)
	narrow  func(e *narrowingEnv) error
	key     string
	held    func(t *testing.T, e *narrowingEnv, on goredis.Cmdable) bool
}

var narrowings = []narrowing{
	{
		name: "grant revoked",
		prepare: func(t *testing.T, e *narrowingEnv) {
			if err := e.setup.PutGrant(e.ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "p1", Level: sidecar.LevelFullAdmin,
				ExpiresAt: e.clock.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
		},
		narrow: func(e *narrowingEnv) error {
			_, err := e.writer.RevokeGrant(e.ctx, "acme", "g1", "cora", "acme")
			return err
		},
		key: sidecar.GrantKey("acme"),
		held: func(t *testing.T, e *narrowingEnv, on goredis.Cmdable) bool {
			n, err := on.HLen(e.ctx, e.prefix+":{cust:acme}:grants").Result()
			if err != nil {
				t.Fatal(err)
			}
			return n == 0
		},
	},
	{
		name: "session ended",
		prepare: func(t *testing.T, e *narrowingEnv) {
			now := e.clock.Now()
			if err := storetest.StartRedeemed(e.ctx, e.setup, &sidecar.Session{ID: "s1", Actor: "staff", Customer: "cust-9", StartedAt: now,
				ExpiresAt: now.Add(time.Hour), Host: "shop.example"}, "tok-1"); err != nil {
				t.Fatal(err)
			}
		},
		narrow: func(e *narrowingEnv) error {
			_, err := e.writer.EndSession(e.ctx, "s1", "lead", sidecar.EndEnded, e.clock.Now(), sidecar.SessionLimits{})
			return err
		},
		key: sidecar.SessionKey("tok-1"),
		held: func(t *testing.T, e *narrowingEnv, on goredis.Cmdable) bool {
			raw, err := on.Get(e.ctx, e.prefix+":{imp}:sess:s1").Result()
			if err != nil {
				t.Fatal(err)
			}
			var ss sidecar.Session
			if err := json.Unmarshal([]byte(raw), &ss); err != nil {
				t.Fatal(err)
			}
			return !ss.EndedAt.IsZero()
		},
	},
}

// ackedEverything has master's replicas acknowledge every write so far:
// WAIT after a write on the same connection.
func ackedEverything(t *testing.T, master *redistest.Server) {
	t.Helper()
	ctx := context.Background()
	conn := master.Client().Conn()
	defer conn.Close()
	if err := conn.Set(ctx, "acked", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Wait(ctx, 1, 10*time.Second).Result(); err != nil || n < 1 {
		t.Fatalf("the replica acknowledged %d writes: %v", n, err)
	}
}

// A planned failover (SENTINEL FAILOVER) promotes a replica and only then
// turns the old master into a replica of it, which throws away what the
// old master took in between: a narrowing write answered as done there
// was undone, and the grant or session honoured again everywhere. So a
// narrowing write is answered as done only once a replica of the master
// that took it has it (WAIT, after a barrier on the same connection), and
// answers 503, to be retried, when none acknowledges it in time (here
// the replica is stopped, as the promoted one stops acknowledging the
// old master): counted, and the eviction still goes out, as the write
// may stand. Before, both answered success at once. With the replica
// live, they succeed, and the replica has the write when they return.
func TestNarrowingWriteWaitsForAReplica(t *testing.T) {
	for _, tc := range narrowings {
		t.Run(tc.name+"/replica_stopped", func(t *testing.T) {
			master := redistest.Start(t)
			replica := redistest.StartReplica(t, master)
			e := newNarrowingEnv(t, master, replica, "", nil)
			tc.prepare(t, e)
			eventually(t, "the set-up's eviction heard", func() bool { return e.heard.has(tc.key) })
			ackedEverything(t, master)
			replica.Freeze()
			before, heard := e.writer.NarrowingUnreplicated(), e.heard.count(tc.key)
			err := tc.narrow(e)
			if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE || sidecar.ErrorReason(err) == sidecar.ReasonUnpublished {
				t.Fatalf("%s with no replica acknowledging: %v, want unavailable (a store fault, not eviction_unpublished)", tc.name, err)
			}
			if got := e.writer.NarrowingUnreplicated(); got != before+1 {
				t.Fatalf("unreplicated narrowings counted %d, want %d", got, before+1)
			}
			eventually(t, "the other replica told to evict "+tc.key, func() bool { return e.heard.count(tc.key) > heard })
			if !tc.held(t, e, master.Client()) {
				t.Fatal("the write is not on the master: this case shows nothing")
			}
		})
		t.Run(tc.name+"/replica_live", func(t *testing.T) {
			master := redistest.Start(t)
			replica := redistest.StartReplica(t, master)
			e := newNarrowingEnv(t, master, replica, "", nil)
			tc.prepare(t, e)
			before := e.writer.NarrowingUnreplicated()
			if err := tc.narrow(e); err != nil {
				t.Fatal(err)
			}
			if !tc.held(t, e, e.replica) {
				t.Fatal("answered before the replica had the write")
			}
			if got := e.writer.NarrowingUnreplicated(); got != before {
				t.Fatalf("unreplicated narrowings counted %d, want %d", got, before)
			}
		})
	}
}

// A retried narrowing write that finds its change made already answers
// as the first would have, and evicts again (Invalidate): that change
// may be one the old master took during a failover, so the eviction too
// waits for a replica to have it, and answers 503 when none does, the
// keys published all the same.
func TestEvictionAgainWaitsForAReplica(t *testing.T) {
	for _, tc := range narrowings {
		t.Run(tc.name, func(t *testing.T) {
			master := redistest.Start(t)
			replica := redistest.StartReplica(t, master)
			e := newNarrowingEnv(t, master, replica, "", nil)
			tc.prepare(t, e)
			if err := tc.narrow(e); err != nil {
				t.Fatal(err)
			}
			if err := e.writer.Invalidate(e.ctx, tc.key); err != nil {
				t.Fatalf("eviction again with the replica live: %v", err)
			}
			ackedEverything(t, master)
			replica.Freeze()
			heard := e.heard.count(tc.key)
			if err := e.writer.Invalidate(e.ctx, tc.key); sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
				t.Fatalf("eviction again with no replica acknowledging: %v, want unavailable", err)
			}
			eventually(t, "the other replica told to evict "+tc.key, func() bool { return e.heard.count(tc.key) > heard })
		})
	}
}

// A single node without replicas has nothing to wait for: narrowing
// writes answer as before. narrowing_replicas set to a number waits for
// that many, there too.
func TestNarrowingWriteOnANodeWithoutReplicas(t *testing.T) {
	for _, tc := range narrowings {
		t.Run(tc.name+"/auto", func(t *testing.T) {
			e := newNarrowingEnv(t, redistest.Start(t), nil, "", nil)
			tc.prepare(t, e)
			if err := tc.narrow(e); err != nil {
				t.Fatal(err)
			}
			if got := e.writer.NarrowingUnreplicated(); got != 0 {
				t.Fatalf("unreplicated narrowings counted %d, want 0", got)
			}
		})
		t.Run(tc.name+"/one_asked", func(t *testing.T) {
			e := newNarrowingEnv(t, redistest.Start(t), nil, "1", nil)
			tc.prepare(t, e)
			if err := tc.narrow(e); sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
				t.Fatalf("%s with narrowing_replicas 1 and no replica: %v, want unavailable", tc.name, err)
			}
		})
	}
}

// WAIT counts the replicas that acknowledged the last write of the
// connection it runs on, and go-redis hands out a pool of connections:
// WAIT on another connection than the narrowing write's proves nothing.
// Here the pool is first in, first out, with several connections idle, so
// consecutive commands run on different ones, each of which last wrote
// before the replica stopped (and acknowledged everything): a WAIT on any
// of them counts the stopped replica. Only a barrier written on the
// connection that then runs WAIT, after the narrowing write, is not
// acknowledged. So a WAIT that did not follow its barrier on one
// connection would answer success here.
func TestNarrowingWaitFollowsItsBarrierOnOneConnection(t *testing.T) {
	for _, tc := range narrowings {
		t.Run(tc.name, func(t *testing.T) {
			master := redistest.Start(t)
			replica := redistest.StartReplica(t, master)
			client := goredis.NewClient(&goredis.Options{Addr: master.Addr, PoolFIFO: true, ReadTimeout: redistest.ReplyTimeout,
				WriteTimeout: redistest.ReplyTimeout})
			t.Cleanup(func() { _ = client.Close() })
			e := newNarrowingEnv(t, master, replica, "", client)
			tc.prepare(t, e)
			eventually(t, "the set-up's eviction heard", func() bool { return e.heard.has(tc.key) })
			// Several idle connections, each having written.
			var conns []*goredis.Conn
			for i := range 6 {
				conn := client.Conn()
				if err := conn.Set(e.ctx, e.prefix+":warm", i, 0).Err(); err != nil {
					t.Fatal(err)
				}
				conns = append(conns, conn)
			}
			for _, conn := range conns {
				_ = conn.Close()
			}
			if n := client.PoolStats().IdleConns; n < 6 {
				t.Fatalf("%d idle connections, want at least 6", n)
			}
			ackedEverything(t, master)
			replica.Freeze()
			if err := tc.narrow(e); sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
				t.Fatalf("%s with no replica acknowledging: %v, want unavailable", tc.name, err)
			}
		})
	}
}

// The finding itself: grants revoked one after another while Sentinel
// fails the master over (SENTINEL FAILOVER, planned: no lag, nothing
// down). Every revocation answered as done must hold once the failover
// is over and the old master replicates the new one; one that the old
// master took after the promotion answers 503 instead. Before, some
// answered success and the grants came back.
func TestSentinelFailoverUndoesNoAnsweredRevocation(t *testing.T) {
	ctx := context.Background()
	master := redistest.Start(t)
	replica := redistest.StartReplica(t, master)
	sentinel := redistest.StartSentinel(t, "deputy", master)
	sc := sentinel.Client()
	eventually(t, "the Sentinel knowing the replica", func() bool {
		rs, err := sc.Do(ctx, "SENTINEL", "REPLICAS", "deputy").Slice()
		if err != nil || len(rs) != 1 {
			return false
		}
		m, _ := rs[0].(map[any]any)
		flags, _ := m["flags"].(string)
		return flags == "slave"
	})
	clock := storetest.NewClock(storetest.Epoch)
	prefix := freshPrefix()
	s, err := redis.New(redis.Config{Addrs: []string{sentinel.Addr}, MasterName: "deputy", KeyPrefix: prefix,
		ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout,
		NarrowingReplicaTimeout: time.Second}, redis.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	t.Cleanup(s.Subscribe(func(string) {}))
	if _, err := s.Persistence(ctx); err != nil {
		t.Fatal(err)
	}
	const grants = 1000
	for i := range grants {
		if err := s.PutGrant(ctx, &sidecar.Grant{ID: "g", Customer: fmt.Sprint("c", i), PartnerOrg: "p1", Level: sidecar.LevelFullAdmin,
			ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}

	// Over when the old master replicates the new one and has caught up.
	over := func() bool {
		info, err := master.Client().Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up") &&
			strings.Contains(info, "master_port:"+strconv.Itoa(replica.Port))
	}
	if err := sc.Do(ctx, "SENTINEL", "FAILOVER", "deputy").Err(); err != nil {
		t.Fatal(err)
	}
	// One revocation per poll until the failover is over (a failover
	// that never ends fails the test).
	answered := map[int]error{}
	next := 0
	eventuallyWithin(t, "the failover over", 30*time.Second, func() bool {
		if over() || next == grants {
			return true
		}
		_, answered[next] = s.RevokeGrant(ctx, fmt.Sprint("c", next), "g", "cora", "acme")
		next++
		return false
	})
	if next == 0 || next == grants {
		t.Fatalf("%d revocations during the failover: none met it, or it outlasted every grant", next)
	}
	newMaster := replica.Client()
	ackedEverything(t, replica)
	var done, refused int
	for i := range next {
		err := answered[i]
		if err != nil {
			if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
				t.Fatalf("revocation %d: %v", i, err)
			}
			refused++
			continue
		}
		done++
		n, err := newMaster.HLen(ctx, fmt.Sprintf("%s:{cust:c%d}:grants", prefix, i)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("revocation %d answered as done, and undone by the failover", i)
		}
	}
	t.Logf("%d revocations during the failover: %d answered as done, %d answered 503", next, done, refused)
}

// On a Cluster the barrier goes to the master of each written slot: an
// assignment move spanning every master waits on each (at once), and a
// barrier in another slot would answer MOVED. Without replicas, auto
// waits for none; narrowing_replicas 1 waits for one on each master and
// answers 503 naming one that has none.
func TestNarrowingWriteOnACluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	for _, tc := range []struct {
		replicas string
		fails    bool
	}{{"", false}, {"1", true}} {
		t.Run("narrowing_replicas="+tc.replicas, func(t *testing.T) {
			ctx := context.Background()
			clock := storetest.NewClock(storetest.Epoch)
			cfg := redis.Config{Addrs: cl.Addrs, Cluster: true, KeyPrefix: freshPrefix(), ReadTimeout: redistest.ReplyTimeout,
				WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout, NarrowingReplicaTimeout: 100 * time.Millisecond}
			setup, err := redis.New(cfg, redis.WithClock(clock.Now))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = setup.Close() })
			cfg.NarrowingReplicas = tc.replicas
			s, err := redis.New(cfg, redis.WithClock(clock.Now))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			if _, err := s.Persistence(ctx); err != nil {
				t.Fatal(err)
			}
			var as []sidecar.Assignment
			var moves []sidecar.AssignmentChange
			for i := range 30 { // spread over the three masters
				c := fmt.Sprint("c", i)
				as = append(as, sidecar.Assignment{Customer: c, Reseller: "r", Domain: "d1", UpdatedBy: "admin", UpdatedAt: clock.Now()})
				moves = append(moves, sidecar.AssignmentChange{Customer: c, From: "d1", By: "admin", At: clock.Now(),
					To: &sidecar.Assignment{Customer: c, Reseller: "r", Domain: "d2", UpdatedBy: "admin", UpdatedAt: clock.Now()}})
			}
			if _, err := setup.PutAssignments(ctx, as); err != nil {
				t.Fatal(err)
			}
			_, err = s.ChangeAssignments(ctx, moves)
			switch {
			case !tc.fails && err != nil:
				t.Fatal(err)
			case tc.fails && (sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE || !strings.Contains(err.Error(), "0 of 1 replicas of 127.0.0.1:")):
				t.Fatalf("moves with narrowing_replicas 1 and no replica: %v, want unavailable, no replica acknowledging", err)
			}
		})
	}
}
