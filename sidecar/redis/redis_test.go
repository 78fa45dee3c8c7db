package redis_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

var prefixes atomic.Int64

// freshPrefix gives each store its own key space on a shared server, so
// cases start empty without flushing.
func freshPrefix() string { return fmt.Sprintf("t%d", prefixes.Add(1)) }

func TestContractSingleNode(t *testing.T) {
	srv := redistest.Start(t)
	storetest.RunReplicated(t, replicas(redis.Config{Addrs: []string{srv.Addr}}))
}

func TestContractCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	storetest.RunReplicated(t, replicas(redis.Config{Addrs: cl.Addrs, Cluster: true}))
}

// replicas opens two stores on cfg's Redis under a fresh prefix: two
// replicas of one state.
func replicas(cfg redis.Config) storetest.NewReplicas {
	return func(t *testing.T, now sidecar.Clock) (a, b sidecar.Store) {
		cfg := cfg
		cfg.KeyPrefix, cfg.ReadTimeout, cfg.WriteTimeout = freshPrefix(), redistest.ReplyTimeout, redistest.ReplyTimeout
		cfg.InvalidationAckTimeout = redistest.AckTimeout
		open := func() sidecar.Store {
			s, err := redis.New(cfg, redis.WithClock(now))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		return open(), open()
	}
}

func TestSelfServiceAuditKeepsStaffRecords(t *testing.T) {
	srv := redistest.Start(t)
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: freshPrefix(), AuditMaxLen: 50, AuditSelfMaxLen: 50,
		ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	storetest.AuditRetention(t, s, 50)
}
