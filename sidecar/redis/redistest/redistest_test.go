package redistest_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/deputyhq/deputy/sidecar/redis/redistest"
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
