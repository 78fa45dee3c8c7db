package redis_test

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// TestCloseWaitsForMarks: a narrowing write goes ahead once its mark has
// taken markWait, and the mark goes on. A replica stopping right after
// (a rollout) must not take the mark with it: the write's records may
// rest on the sweep that reads the mark. Redis is made to hold writes,
// so the mark is still on its way when Close is called; it lands.
func TestCloseWaitsForMarks(t *testing.T) {
	srv := redistest.Start(t)
	admin := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer admin.Close()
	ctx := context.Background()
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: freshPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	const key = "marks-under-close"
	if err := admin.Do(ctx, "CLIENT", "PAUSE", "400", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.KeepChangeAhead(ctx, key, "acme\x00g1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 400*time.Millisecond {
		// Close returned while Redis still held writes: whatever it did,
		// the mark cannot have landed yet.
		t.Errorf("Close returned after %v, with the mark still held by Redis", time.Since(start))
	}
	// Once Redis runs writes again, a mark whose connection Close cut
	// before it ran is gone; one Close waited for is there.
	deadline := time.Now().Add(3 * time.Second)
	for {
		n, err := admin.ZCard(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mark never landed (%d members)", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
