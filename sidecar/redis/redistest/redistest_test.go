package redistest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	goredis "github.com/redis/go-redis/v9"
)

func TestServer(t *testing.T) {
	ctx := context.Background()
	s := redistest.Start(t)
	c := s.Client()
	t.Run("serves", func(t *testing.T) {
		if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("stopped_is_unreachable", func(t *testing.T) {
		s.Stop()
		if err := c.Ping(ctx).Err(); err == nil {
			t.Fatal("ping succeeded on a stopped server")
		}
	})
	t.Run("restarts_empty_on_the_same_port", func(t *testing.T) {
		s.Restart()
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatalf("ping after restart: %v", err)
		}
		if n, _ := c.Exists(ctx, "k").Result(); n != 0 {
			t.Fatal("data survived a restart without persistence")
		}
	})
}

func TestCluster(t *testing.T) {
	ctx := context.Background()
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	masters := map[string]bool{}
	for i := range 30 {
		key := fmt.Sprintf("key-%d", i)
		if err := c.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatalf("set %s: %v", key, err)
		}
		node, err := c.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		masters[node.Options().Addr] = true
	}
	if len(masters) != 3 {
		t.Fatalf("keys spread over %d masters, want 3", len(masters))
	}
}

func TestProxy(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	p := redistest.StartProxy(t, srv.Addr)
	direct := srv.Client()
	c := goredis.NewClient(&goredis.Options{Addr: p.Addr, MaxRetries: -1, Protocol: 2, DisableIdentity: true, PoolSize: 1})
	defer c.Close()

	t.Run("counts_each_command", func(t *testing.T) {
		if err := c.Ping(ctx).Err(); err != nil { // opens the connection
			t.Fatal(err)
		}
		p.Reset()
		if err := c.Set(ctx, "a", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		_, err := c.TxPipelined(ctx, func(pl goredis.Pipeliner) error {
			pl.Set(ctx, "b", "1", 0)
			pl.Set(ctx, "c", "1", 0)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Commands(); got != 5 { // SET, MULTI, SET, SET, EXEC
			t.Fatalf("commands = %d, want 5", got)
		}
	})
	t.Run("cut_inside_a_transaction_discards_it", func(t *testing.T) {
		p.Reset()
		p.CutAfter(2) // MULTI and the first SET reach Redis, EXEC does not
		_, err := c.TxPipelined(ctx, func(pl goredis.Pipeliner) error {
			pl.Set(ctx, "x", "1", 0)
			pl.Set(ctx, "y", "1", 0)
			return nil
		})
		if err == nil {
			t.Fatal("transaction succeeded through a cut connection")
		}
		if !p.WasCut() {
			t.Fatal("proxy did not cut")
		}
		if n := direct.Exists(ctx, "x", "y").Val(); n != 0 {
			t.Fatalf("%d keys of a cut transaction were written", n)
		}
	})
	t.Run("stays_cut_until_reset", func(t *testing.T) {
		if err := c.Ping(ctx).Err(); err == nil {
			t.Fatal("ping through a cut proxy succeeded")
		}
		p.Reset()
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatalf("ping after reset: %v", err)
		}
	})
	t.Run("cut_between_commands_keeps_the_first", func(t *testing.T) {
		p.Reset()
		p.CutAfter(1)
		if err := c.Set(ctx, "first", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.Set(ctx, "second", "1", 0).Err(); err == nil {
			t.Fatal("second command passed the cut")
		}
		if direct.Exists(ctx, "first").Val() != 1 || direct.Exists(ctx, "second").Val() != 0 {
			t.Fatal("the cut did not fall between the two commands")
		}
	})
	t.Run("stall_on_stalls_only_that_connection", func(t *testing.T) {
		p.Reset()
		other := goredis.NewClient(&goredis.Options{Addr: p.Addr, MaxRetries: -1, Protocol: 2, DisableIdentity: true, PoolSize: 1})
		defer other.Close()
		if err := other.Ping(ctx).Err(); err != nil { // opens its connection before the stall
			t.Fatal(err)
		}
		p.StallOn("stall:me")
		sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if err := c.Set(sctx, "stall:me", "1", 0).Err(); err == nil {
			t.Fatal("a command holding the stall string was answered")
		}
		if p.Stalled() != 1 {
			t.Fatalf("stalled connections = %d, want 1", p.Stalled())
		}
		if direct.Exists(ctx, "stall:me").Val() != 0 {
			t.Fatal("the stalled command reached Redis")
		}
		if err := other.Set(ctx, "free", "1", 0).Err(); err != nil {
			t.Fatalf("another connection while one is stalled: %v", err)
		}
		p.Reset()
		if p.Stalled() != 0 {
			t.Fatal("Reset left a stalled connection")
		}
		if err := c.Set(ctx, "stall:me", "1", 0).Err(); err != nil {
			t.Fatalf("after reset: %v", err)
		}
	})
}
