package redis_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

var prefixes atomic.Int64

// freshPrefix gives each store its own key space on a shared server, so
// cases start empty without flushing.
func freshPrefix() string { return fmt.Sprintf("t%d", prefixes.Add(1)) }

// contractTimeout is how long a contract case waits for a reply. The
// contract is about what the store does, not how fast: on a machine
// loaded by the rest of the test run, a reply can take longer than the
// production default (500 ms), and an i/o timeout there would fail a race
// case for a reason it does not test. Fault behaviour has its own tests.
const contractTimeout = 10 * time.Second

func TestContractSingleNode(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T, now sidecar.Clock) sidecar.Store {
		s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: freshPrefix(),
			ReadTimeout: contractTimeout, WriteTimeout: contractTimeout}, redis.WithClock(now))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestContractCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	storetest.Run(t, func(t *testing.T, now sidecar.Clock) sidecar.Store {
		s, err := redis.New(redis.Config{Addrs: cl.Addrs, Cluster: true, KeyPrefix: freshPrefix(),
			ReadTimeout: contractTimeout, WriteTimeout: contractTimeout}, redis.WithClock(now))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
