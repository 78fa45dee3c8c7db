package redis

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
)

// Replication of narrowing writes. Redis replicates asynchronously: a
// master answers a write before any replica has it, and a failover to a
// replica without it throws it away. A planned failover (SENTINEL
// FAILOVER) does so with no lag at all: it promotes a replica, and the
// old master keeps taking writes until it is made a replica of the new
// one, which discards them. A narrowing write answered as done must not
// be undone so (a revoked grant, an ended session honoured again on
// every replica), so before it is answered, Redis replicas of the master
// that took it must have it (Config.NarrowingReplicas): else the write
// answers 503, to be retried, and its retry lands on the new master.
//
// WAIT counts the replicas that acknowledged the last write of the
// connection it runs on, and the store's connections are pooled: the
// narrowing write may have gone on any of them. So a barrier, a
// short-lived key in the write's slot (the same master), is written first
// and WAIT follows it on the same connection. Replication is ordered: a
// replica that acknowledged the barrier has every write its master took
// before it, the narrowing write included.

const (
	// barrierName ends the barrier key in a narrowed record's slot.
	barrierName = "narrowing-barrier"
	// barrierTTL keeps the barrier key no longer than its WAIT needs.
	barrierTTL = 10 * time.Second
)

// replication is a Store's side of the wait for Redis replicas.
type replication struct {
	// replicas is how many replicas each master had connected at the
	// last reading (INFO replication, by Persistence), by address in a
	// Cluster, under "" otherwise; nil until one succeeded.
	replicas     atomic.Pointer[map[string]int]
	unreplicated atomic.Uint64
}

// NarrowingUnreplicated counts narrowing writes answered 503 because
// fewer Redis replicas than redis.narrowing_replicas acknowledged them.
func (s *Store) NarrowingUnreplicated() uint64 { return s.repl.unreplicated.Load() }

// barrierKey is the barrier key in the slot of the record that the
// invalidation key k names, which is where the write that narrowed it
// went; "" for a key that names no record.
func (s *Store) barrierKey(k string) string {
	kind, id, _ := strings.Cut(k, ":")
	switch kind + ":" {
	case sidecar.SessionKey(""), sidecar.ConsentKey(""), sidecar.CustomerKey(""):
		return s.imp(barrierName)
	case sidecar.GrantKey(""), sidecar.ShareKey(""), sidecar.AssignmentKey(""):
		return s.cust(id, barrierName) // an assignment's id is folded, as assignKey's
	}
	return ""
}

// wantReplicas is how many replicas of the master at addr a narrowing
// write waits for: narrowing_replicas, or with auto one when that master
// had one at the last reading, none when it had none or was not read.
func (s *Store) wantReplicas(addr string) int {
	n, auto := s.cfg.narrowingReplicas()
	if !auto {
		return n
	}
	read := s.repl.replicas.Load()
	if read == nil {
		return 0
	}
	return min((*read)[addr], 1)
}

// replicated returns once the writes that narrowed what keys name are on
// as many Redis replicas as wantReplicas says, or an error (EUNAVAILABLE,
// counted and logged) when fewer acknowledged a barrier after them within
// Config.NarrowingReplicaTimeout: one barrier per master (in a Cluster,
// one for each master of the keys' slots, at once).
func (s *Store) replicated(ctx context.Context, keys ...string) error {
	type master struct {
		node    *goredis.Client
		barrier string
	}
	masters := map[string]master{}
	for _, k := range keys {
		b := s.barrierKey(k)
		if b == "" {
			continue
		}
		switch c := s.c.(type) {
		case *goredis.ClusterClient:
			node, err := c.MasterForKey(ctx, b)
			if err != nil {
				return s.unreplicated(keys, err)
			}
			masters[node.Options().Addr] = master{node, b}
		case *goredis.Client: // single node, Sentinel
			masters[""] = master{c, b}
		}
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for addr, m := range masters {
		want := s.wantReplicas(addr)
		if want == 0 {
			continue
		}
		wg.Go(func() {
			if err := s.barrier(ctx, m.node, m.barrier, want); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first != nil {
		return s.unreplicated(keys, first)
	}
	return nil
}

// barrier writes key on one connection to node and waits there for want
// replicas to acknowledge it.
func (s *Store) barrier(ctx context.Context, node *goredis.Client, key string, want int) error {
	conn := node.Conn() // one connection: WAIT counts for its writes only
	defer conn.Close()
	name := node.Options().Addr
	if s.cfg.MasterName != "" {
		name = "sentinel master " + s.cfg.MasterName
	}
	if err := conn.Set(ctx, key, "1", barrierTTL).Err(); err != nil {
		return fmt.Errorf("barrier on %s: %w", name, err)
	}
	got, err := conn.Wait(ctx, want, s.cfg.NarrowingReplicaTimeout).Result()
	switch {
	case err != nil:
		return fmt.Errorf("WAIT on %s: %w", name, err)
	case got < int64(want):
		return fmt.Errorf("%d of %d replicas of %s acknowledged the write within %s", got, want, name, s.cfg.NarrowingReplicaTimeout)
	}
	return nil
}

// unreplicated counts and logs a narrowing write that its replicas did
// not confirm, and returns err as EUNAVAILABLE.
func (s *Store) unreplicated(keys []string, err error) error {
	s.repl.unreplicated.Add(1)
	s.log.Warn("narrowing write not confirmed on a Redis replica: answered 503, to be retried, as a failover now would undo it",
		"keys", keys, "error", err)
	return unavailable(err)
}
