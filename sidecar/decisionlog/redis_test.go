package decisionlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
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
var waitFor = decisionlog.WaitFor

func xlen(c *redis.Client, stream string) func() int64 {
	return func() int64 {
		n, err := c.XLen(context.Background(), stream).Result()
		if err != nil {
			return -1
		}
		return n
	}
}
