package redis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Leases on the invalidation channel. A replica learns that Redis dropped
// its subscription only when its connection reports it: at once when the
// connection closes, seconds later (listenerSilence) when it goes silent,
// and not at all while the process is paused. Redis may drop it first
// (CLIENT KILL, an output buffer limit, a restart, a failover, a
// partition): from then on a writer's PUBLISH does not count the replica,
// so the writer would answer a narrowing write as holding everywhere
// while that replica still serves what it narrowed from its caches.
//
// So a replica trusts its caches only while it holds a lease, and the
// writers know every lease. Every leaseRenew the replica renews it with a
// script (renewLua) that, on the node the replica subscribes on, checks
// that Redis still holds its subscription there (its acknowledgement
// channel, subscribed on the same connection, has a subscriber) and only
// then sets the replica's lease in a sorted set beside the channel (same
// slot) to Redis's TIME + leaseTerm. The replica's own lease runs from
// before it sent the script, leaseTerm less leaseMargin, by its monotonic
// clock: it ends before Redis's does. Once it has ended, cache hits are
// read through (sidecar.HearingLease), as while not listening.
//
// A writer publishes with a script (publishLua) that, at one instant T,
// publishes keys and barrier and reads every lease running past T. The
// write is confirmed once every subscription PUBLISH counted has
// acknowledged, and every replica holding a lease at T has acknowledged
// or seen its lease run out. A replica not counted at T had lost its
// subscription before T: every renewal after that failed, so its own
// lease ends before the one the writer read. (A renewal after T that
// succeeded did so on a subscription that was counted, whose
// acknowledgement the writer waits for, or on one opened after T, and a
// replica opening one drops its caches when it is confirmed, not hearing
// meanwhile.)
//
// When narrowing writes wait for Redis replicas (narrowing_replicas), so
// does a renewal before the replica's lease starts: a failover does not
// take a writer back to a lease shorter than the one a replica trusts.
//
// A replica that stops without closing its store holds narrowing writes
// for what is left of its lease, leaseTerm at most; Close removes it.

const (
	// leaseTerm is how long a renewed lease runs, from Redis's TIME as
	// the renewal runs.
	leaseTerm = 1500 * time.Millisecond
	// leaseRenew is how often a listening replica renews its lease:
	// three renewals in a term, so that one late or lost does not lapse
	// it.
	leaseRenew = leaseTerm / 3
	// leaseMargin is taken off the replica's own lease: the clocks of
	// replica and Redis may run at slightly different rates, and Redis's
	// TIME is read in whole milliseconds.
	leaseMargin = 50 * time.Millisecond
	// leaseSlack is added to the writer's wait for a lease to run out,
	// for the same reasons.
	leaseSlack = 5 * time.Millisecond
)

// renewLua renews a replica's lease (KEYS[1] the leases, ARGV the
// replica's acknowledgement channel, its id, leaseTerm in ms) when this
// node holds the replica's subscription, answering 1; 0 when it does not.
// Leases that have run out are dropped, and the set expires with the
// last lease.
const renewLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local term = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if tonumber(redis.call('PUBSUB', 'NUMSUB', ARGV[1])[2]) < 1 then
  return 0
end
local ends = now + term
local held = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not held or tonumber(held) < ends then
  redis.call('ZADD', KEYS[1], ends, ARGV[2])
end
if redis.call('PTTL', KEYS[1]) < 2 * term then
  redis.call('PEXPIRE', KEYS[1], 2 * term)
end
return 1
`

// publishLua publishes ARGV[2..n] on channel ARGV[1], the last being the
// barrier, and answers at the same instant the barrier's count of
// subscribers, Redis's TIME in ms, and the leases (KEYS[1]) running past
// it, as id, end pairs.
const publishLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV - 1 do
  redis.call('PUBLISH', ARGV[1], ARGV[i])
end
local n = redis.call('PUBLISH', ARGV[1], ARGV[#ARGV])
return {n, now, redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')}
`

var (
	renewScript   = goredis.NewScript(renewLua)
	publishScript = goredis.NewScript(publishLua)
)

// leasesKey is the sorted set of leases: in the channel's slot, so that
// in a Cluster the scripts run where the replicas subscribe.
func (s *Store) leasesKey() string {
	ch := s.channel()
	if i := strings.IndexByte(ch, '{'); i >= 0 {
		if j := strings.IndexByte(ch[i+1:], '}'); j > 0 {
			return ch + ":leases" // the channel's hash tag decides its slot, and this key's
		}
	}
	return "{" + ch + "}:leases"
}

// Hears reports whether this replica holds its lease on the invalidation
// channel now (sidecar.HearingLease): false from before the lease Redis
// knows of runs out, and while it has none.
func (s *Store) Hears() bool {
	return int64(time.Since(s.inv.epoch)) < s.inv.leaseEnds.Load()
}

// dropLease ends this replica's own lease at once.
func (s *Store) dropLease() { s.inv.leaseEnds.Store(0) }

// leaser renews the lease every leaseRenew while the replica listens,
// and at once when it listens again, until Close. When the replica stops
// listening, it takes the lease out of Redis, so that writers do not
// wait for it to run out: the replica's caches already read every hit
// again.
func (s *Store) leaser() {
	defer s.inv.wg.Done()
	tick := time.NewTicker(leaseRenew)
	defer tick.Stop()
	renewed := false // a renewal succeeded since the lease was last removed
	for {
		select {
		case <-s.inv.done:
			return
		case <-tick.C:
		case <-s.inv.renewNow:
		}
		s.inv.mu.Lock()
		sub, listening := s.inv.sub, s.inv.listening
		s.inv.mu.Unlock()
		if sub == nil || !listening {
			if renewed {
				renewed = !s.removeLease()
			}
			continue
		}
		if err := s.renewLease(sub); err != nil {
			s.log.Debug("renew invalidation lease", "channel", s.channel(), "err", err)
		} else {
			renewed = true
		}
	}
}

// errNotSubscribed is renewLua's 0: the node it ran on does not hold this
// replica's subscription.
var errNotSubscribed = errors.New("the subscription is not on the node renewing the lease")

// renewLease renews the lease where sub subscribes and, once Redis
// replicas have it when narrowing writes wait for them, starts the
// replica's own from before the renewal was sent.
func (s *Store) renewLease(sub *subscription) error {
	start := time.Since(s.inv.epoch)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.WriteTimeout+s.cfg.ReadTimeout+s.cfg.NarrowingReplicaTimeout)
	defer cancel()
	var on goredis.Scripter = s.c
	node, addr := sub.node, ""
	if node != nil {
		on, addr = node, node.Options().Addr
	} else if c, ok := s.c.(*goredis.Client); ok {
		node = c
	}
	want := 0
	if node != nil {
		want = s.wantReplicas(addr)
	}
	var conn *goredis.Conn
	if want > 0 {
		conn = node.Conn() // one connection: WAIT counts for its writes only
		defer conn.Close()
		on = conn
	}
	held, err := renewScript.Run(ctx, on, []string{s.leasesKey()}, s.ackChannel(s.inv.id), s.inv.id, leaseTerm.Milliseconds()).Int()
	switch {
	case err != nil:
		if _, moved := goredis.IsMovedError(err); moved {
			s.reloadSlots()
		}
		return err
	case held != 1:
		// Redis dropped the subscription (or it is on a node that no
		// longer owns the channel's slot): open another.
		s.inv.leaseLost.Store(sub)
		return errNotSubscribed
	}
	if conn != nil {
		got, err := conn.Wait(ctx, want, s.cfg.NarrowingReplicaTimeout).Result()
		if err != nil {
			return fmt.Errorf("WAIT: %w", err)
		}
		if got < int64(want) {
			return fmt.Errorf("%d of %d replicas acknowledged the lease", got, want)
		}
	}
	if s.current(sub) {
		s.inv.leaseEnds.Store(int64(start + leaseTerm - leaseMargin))
	}
	return nil
}

// removeLease takes this replica's lease out of Redis, so that writers
// stop waiting for it: once it stopped listening, and on Close, once no
// renewal can follow. It reports whether Redis answered.
func (s *Store) removeLease() bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.WriteTimeout+s.cfg.ReadTimeout)
	defer cancel()
	if err := s.c.ZRem(ctx, s.leasesKey(), s.inv.id).Err(); err != nil {
		s.log.Debug("remove invalidation lease", "channel", s.channel(), "err", err)
		return false
	}
	return true
}

// lease is one replica's lease as a writer read it.
type lease struct {
	id   string
	ends time.Time // by the writer's clock, the slack included
}

// published is what publishLua answered: the barrier's count, and the
// leases running past its instant, their ends put on the writer's clock
// from read (when the answer arrived, after that instant).
func published(v any, read time.Time) (count int, leases []lease, err error) {
	a, ok := v.([]any)
	if !ok || len(a) != 3 {
		return 0, nil, fmt.Errorf("publish answered %T, not three values", v)
	}
	n, ok1 := a[0].(int64)
	now, ok2 := a[1].(int64)
	pairs, ok3 := a[2].([]any)
	if !ok1 || !ok2 || !ok3 || len(pairs)%2 != 0 {
		return 0, nil, fmt.Errorf("publish answered %v", v)
	}
	for i := 0; i < len(pairs); i += 2 {
		id, ok := pairs[i].(string)
		e, _ := pairs[i+1].(string)
		ends, err := strconv.ParseFloat(e, 64)
		if !ok || err != nil || math.IsNaN(ends) {
			return 0, nil, fmt.Errorf("publish answered a lease %v %v", pairs[i], pairs[i+1])
		}
		left := time.Duration(ends-float64(now)) * time.Millisecond
		leases = append(leases, lease{id: id, ends: read.Add(left + leaseSlack)})
	}
	return int(n), leases, nil
}
