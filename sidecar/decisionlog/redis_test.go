package decisionlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// fastClient fails at once while the server is down, so an outage shows
// as sink errors rather than as long client-side retries.
func fastClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr: addr, MaxRetries: -1,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds, failing the test after a bound.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func xlen(c *redis.Client, stream string) func() int64 {
	return func() int64 {
		n, err := c.XLen(context.Background(), stream).Result()
		if err != nil {
			return -1
		}
		return n
	}
}
