package redis_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

func persistenceOf(t *testing.T, cfg redis.Config) (redis.Persistence, error) {
	t.Helper()
	cfg.ReadTimeout, cfg.WriteTimeout = redistest.ReplyTimeout, redistest.ReplyTimeout
	s, err := redis.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s.Persistence(context.Background())
}

// A single node started with appendonly no reads as without AOF, named
// by its address, and one with appendonly yes as with it: the first
// undoes answered writes when it restarts from its last snapshot.
func TestPersistenceSingleNode(t *testing.T) {
	for _, tc := range []struct {
		appendonly string
		aof        bool
	}{{"no", false}, {"yes", true}} {
		t.Run("appendonly "+tc.appendonly, func(t *testing.T) {
			srv := redistest.Start(t, "--appendonly", tc.appendonly)
			p, err := persistenceOf(t, redis.Config{Addrs: []string{srv.Addr}})
			if err != nil {
				t.Fatal(err)
			}
			if p.AOF() != tc.aof || p.Masters != 1 {
				t.Fatalf("appendonly %s read as %+v (AOF %v), want AOF %v on 1 master", tc.appendonly, p, p.AOF(), tc.aof)
			}
			if !tc.aof && !slices.Equal(p.WithoutAOF, []string{srv.Addr}) {
				t.Fatalf("masters without AOF %v, want %s", p.WithoutAOF, srv.Addr)
			}
		})
	}
}

// On a Cluster every master is read: one master without AOF among
// masters with it makes the whole read as without, naming that one.
func TestPersistenceClusterEveryMaster(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	for _, n := range c.Nodes[1:] {
		if err := n.Client().ConfigSet(context.Background(), "appendonly", "yes").Err(); err != nil {
			t.Fatal(err)
		}
	}
	p, err := persistenceOf(t, redis.Config{Addrs: c.Addrs, Cluster: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.Masters != 3 || p.AOF() || !slices.Equal(p.WithoutAOF, []string{c.Nodes[0].Addr}) {
		t.Fatalf("read %+v, want 3 masters, %s without AOF", p, c.Nodes[0].Addr)
	}
	if err := c.Nodes[0].Client().ConfigSet(context.Background(), "appendonly", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	if p, err = persistenceOf(t, redis.Config{Addrs: c.Addrs, Cluster: true}); err != nil || !p.AOF() || p.Masters != 3 {
		t.Fatalf("all masters with AOF read as %+v, %v", p, err)
	}
}

// An ACL user refused INFO gets an error, not a reading: a reading it
// could not take must not say AOF is on, nor that it is off.
func TestPersistenceRefusedINFO(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "yes")
	if err := srv.Client().Do(context.Background(), "ACL", "SETUSER", "deputy", "on", ">deputy-pw", "~*", "&*", "+@all", "-info").Err(); err != nil {
		t.Fatal(err)
	}
	p, err := persistenceOf(t, redis.Config{Addrs: []string{srv.Addr}, Username: "deputy", Password: "deputy-pw"})
	if err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("read %+v, %v; want a NOPERM error", p, err)
	}
	if p.AOF() {
		t.Fatal("a refused reading says AOF on")
	}
}

// Through Sentinel, the master it names is read: the one holding the
// state, not the Sentinel.
func TestPersistenceSentinelMaster(t *testing.T) {
	master := redistest.Start(t, "--appendonly", "no")
	sentinel := redistest.StartSentinel(t, "deputy", master)
	cfg := redis.Config{Addrs: []string{sentinel.Addr}, MasterName: "deputy"}
	p, err := persistenceOf(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p.AOF() || p.Masters != 1 || !slices.Equal(p.WithoutAOF, []string{"sentinel master deputy"}) {
		t.Fatalf("read %+v, want the Sentinel's master without AOF", p)
	}
	if err := master.Client().ConfigSet(context.Background(), "appendonly", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	if p, err = persistenceOf(t, cfg); err != nil || !p.AOF() {
		t.Fatalf("the master with AOF read as %+v, %v", p, err)
	}
}
