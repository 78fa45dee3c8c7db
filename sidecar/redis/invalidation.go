package redis

import (
	"container/list"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/deputyhq/deputy/sidecar"
)

// Invalidation between replicas. Every replica listens on one pub/sub
// connection to the channel <prefix>:invalidate and hands what arrives to
// its subscribers (the check path's caches), one message at a time, in
// order.
//
// A narrowing write must hold on every replica from the next request on,
// so Invalidate does not return when the keys are published but when
// every replica has handed them over: after the keys it publishes a
// barrier naming the writer and a nonce; PUBLISH answers how many
// subscriptions received it; each replica, having handed over everything
// before the barrier, acknowledges the nonce on the writer's own channel
// (<prefix>:invalidate:ack:<writer id>, which the writer listens to on the
// same connection); the write waits for that many acknowledgements, at
// most Config.InvalidationAckTimeout, and fails otherwise.
//
// PUBLISH counts only the subscriptions of the node it runs on. In a
// Cluster, invalidations are published on the master of the channel's
// slot, every replica subscribes there, and checks at every ping that
// the node still owns the slot, subscribing on the new owner when it
// moved (reshard, rebalance, failover). Each acknowledgement names the
// node its replica listens on, and a writer counts only those from the
// node it published on: a replica heard through the cluster bus was not
// counted, so its acknowledgement does not take the place of one that
// was. Acknowledgements are published on that node too, so they reach
// the writer without crossing the cluster bus. A writer that does not
// listen where it publishes, or whose
// PUBLISH counted nobody (not even itself), or that published on a node
// no longer owning the slot, cannot be confirmed and fails.
//
// PUBLISH does not count a replica whose subscription Redis dropped
// before the replica could tell (its process paused, a partition), and
// that replica would serve its caches until its pings go unanswered. So
// a replica trusts its caches only while it holds a lease that writers
// wait on too (lease.go): the write is confirmed once every subscription
// counted has acknowledged and every replica holding a lease has
// acknowledged or seen it run out.
//
// A replica that is not listening (its connection lost, not yet
// subscribed again) cannot hear narrowing writes: its subscribers get
// sidecar.InvalidationsLost (the caches read hits through meanwhile), and
// sidecar.InvalidateAll once it listens again. It stops listening the
// moment its connection fails, before anything is dialled again: Redis
// has already dropped the subscription, so writers no longer count it.
// That is why the subscription has a client of its own that dials once
// (go-redis would otherwise redial and subscribe again inside the read
// that failed, for up to dial_timeout + read_timeout, before reporting
// the failure); a failed connection is given up, and a new subscription
// opened, on the slot's owner. A connection that stays silent past
// listenerSilence, pings unanswered, is replaced too.

const (
	// barrierPrefix starts a barrier message. No invalidation key starts
	// with a NUL; a replica of an earlier version takes the barrier for a
	// key that matches nothing, and does not acknowledge it.
	barrierPrefix = "\x00barrier\x00"
	// listenerPing is how often the listening connection is pinged.
	listenerPing = time.Second
	// listenerSilence is how long the listening connection may stay
	// silent, pings included, before it is taken for dead and replaced.
	listenerSilence = 3 * listenerPing
	// listenerRetry spaces out the attempts to reach Redis again.
	listenerRetry = 100 * time.Millisecond
	// ackQueueLen bounds the acknowledgements waiting to be sent; past it
	// they are dropped, and the writers waiting for them answer 503.
	ackQueueLen = 1024
	// ackAttempts bounds the sends of one acknowledgement.
	ackAttempts = 4
)

// invalidations is a Store's side of the invalidation channel.
type invalidations struct {
	id string // this store's, naming its acknowledgement channel

	mu        sync.Mutex // all below; held while subscribers are called
	subs      map[int]func(string)
	nextSub   int
	started   bool          // the listening goroutines run
	sub       *subscription // nil while none could be opened
	node      string        // the last subscription's node (Cluster)
	movedAt   time.Time     // when a subscription went to another node than the last
	conn      int           // counts connections: acknowledgements name theirs
	listening bool          // the subscription is confirmed and the connection up
	resumed   chan struct{} // closed when listening again
	closed    bool
	done      chan struct{} // closed by Close: stops the pinger and the acknowledger
	wg        sync.WaitGroup

	heard atomic.Int64 // unix nanos of the last frame read from the subscription
	// owned is when (unix nanos) the subscription's node last confirmed
	// it owns the channel's slot (Cluster).
	owned atomic.Int64
	// resubscribe asks the pinger to replace this subscription: a
	// PUBLISH made while it was the one counted nobody, not even this
	// replica. A subscription opened since is not replaced for it.
	resubscribe atomic.Pointer[subscription]
	// leaseLost asks the pinger to replace this subscription: a lease
	// renewal found it gone from Redis (lease.go). Only that one: a
	// subscription opened since is not replaced for it.
	leaseLost atomic.Pointer[subscription]

	waitMu  sync.Mutex
	waiting map[string]*ackWait // by nonce

	acks        chan ack
	unconfirmed atomic.Uint64

	late lateEvictions // failed narrowing writes' keys, to evict again

	// epoch is the monotonic origin of leaseEnds: this replica's lease
	// on the channel (lease.go) ends at epoch + leaseEnds.
	epoch     time.Time
	leaseEnds atomic.Int64
	renewNow  chan struct{} // asks the leaser to renew at once
}

// ack is an acknowledgement to send: nonce, on writer's channel, from
// this replica's connection conn, subscribed on node (in a Cluster,
// where it is published: the node the writer published the barrier on
// and listens on, so no cluster bus lies between them).
type ack struct {
	writer, nonce, conn, node string
	on                        goredis.Cmdable
}

// ackWait collects the acknowledgements of one barrier.
type ackWait struct {
	node     string              // published on; "" when not a Cluster
	from     map[string]struct{} // connections that acknowledged
	replicas map[string]struct{} // the replicas (store ids) they belong to
	more     chan struct{}       // signalled when one comes
}

// subscription is one subscribed connection. Its PubSub is made by a
// client of its own whose dialer connects once, so that go-redis never
// connects it again by itself.
type subscription struct {
	ps     *goredis.PubSub
	client *goredis.Client // its own; nil for a kind of client it cannot be made for
	node   *goredis.Client // in a Cluster, the master it subscribed on (the store's client for it)
}

// addr is the node the subscription is on; "" when not in a Cluster.
func (sub *subscription) addr() string {
	if sub == nil || sub.node == nil {
		return ""
	}
	return sub.node.Options().Addr
}

func (sub *subscription) close() {
	_ = sub.ps.Close()
	if sub.client != nil {
		_ = sub.client.Close()
	}
}

// errRedial is what a subscription's dialer answers once it has
// connected: the subscription is given up rather than connected again.
var errRedial = errors.New("subscription connection lost")

// dialOnce lets dial connect once; every later call fails at once.
func dialOnce(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var connected atomic.Bool
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if connected.Load() {
			return nil, errRedial
		}
		c, err := dial(ctx, network, addr)
		if err == nil {
			connected.Store(true)
		}
		return c, err
	}
}

func newInvalidations() invalidations {
	return invalidations{id: rand.Text(), subs: map[int]func(string){}, done: make(chan struct{}), resumed: make(chan struct{}),
		waiting: map[string]*ackWait{}, acks: make(chan ack, ackQueueLen), late: newLateEvictions(),
		epoch: time.Now(), renewNow: make(chan struct{}, 1)}
}

func (s *Store) channel() string             { return s.prefix + ":invalidate" }
func (s *Store) ackChannel(id string) string { return s.prefix + ":invalidate:ack:" + id }

// InvalidationsUnconfirmed counts narrowing writes answered Unpublished
// because not every replica confirmed their invalidation in time.
func (s *Store) InvalidationsUnconfirmed() uint64 { return s.inv.unconfirmed.Load() }

// Invalidate publishes keys to every replica, this one included, and
// returns once every replica listening has handed them to its subscribers
// (EUNAVAILABLE when one did not within Config.InvalidationAckTimeout, or
// when this replica is not listening itself and so cannot hear them
// confirm). It is for a narrowing write found made already (a retry's),
// so first it makes sure that write is on Redis replicas (replicated),
// as publishNarrowed does: EUNAVAILABLE when not, the keys published
// anyway, without waiting.
func (s *Store) Invalidate(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	if err := s.replicated(ctx, keys...); err != nil {
		return s.evictDespite(ctx, err, keys...)
	}
	return s.invalidate(ctx, keys...)
}

// invalidate is Invalidate once the write is replicated.
func (s *Store) invalidate(ctx context.Context, keys ...string) error {
	timeout := time.NewTimer(s.cfg.InvalidationAckTimeout)
	defer timeout.Stop()
	if err := s.listen(timeout.C); err != nil {
		s.inv.unconfirmed.Add(1)
		return unavailable(err)
	}
	node, addr, err := s.publisher(ctx)
	if err != nil {
		return unavailable(err)
	}
	s.inv.mu.Lock()
	listening, listensOn, movedAt := s.inv.sub, s.inv.sub.addr(), s.inv.movedAt
	s.inv.mu.Unlock()
	if listensOn != addr {
		// This replica would not be among those PUBLISH counts, nor hear
		// the acknowledgements that count: it listens on the slot's
		// former owner, or the new one is not in its slot map yet.
		s.inv.unconfirmed.Add(1)
		return unavailable(fmt.Errorf("listening for invalidations on %s, publishing them on %s", listensOn, addr))
	}
	if since := time.Since(movedAt); since < s.moveGrace() {
		// The slot moved lately: replicas still subscribed on its former
		// owner are not counted here, and may not have stopped
		// listening yet.
		s.inv.unconfirmed.Add(1)
		return unavailable(fmt.Errorf("invalidation channel's slot moved %s ago, replicas may still listen on its former owner", since.Round(time.Millisecond)))
	}
	nonce := rand.Text()
	w := &ackWait{node: addr, from: map[string]struct{}{}, replicas: map[string]struct{}{}, more: make(chan struct{}, 1)}
	s.inv.waitMu.Lock()
	s.inv.waiting[nonce] = w
	s.inv.waitMu.Unlock()
	defer func() {
		s.inv.waitMu.Lock()
		delete(s.inv.waiting, nonce)
		s.inv.waitMu.Unlock()
	}()
	// Keys, barrier and the leases at that instant, at once (lease.go).
	// In a Cluster, answered MOVED when the node no longer owns the
	// slot: PUBLISH there would not count the replicas that moved.
	args := make([]any, 0, len(keys)+2)
	args = append(args, s.channel())
	for _, k := range keys {
		args = append(args, k)
	}
	args = append(args, barrierPrefix+s.inv.id+" "+nonce)
	v, err := publishScript.Run(ctx, node, []string{s.leasesKey()}, args...).Result()
	if err != nil {
		if _, moved := goredis.IsMovedError(err); moved {
			s.reloadSlots()
			s.inv.unconfirmed.Add(1)
		}
		return unavailable(err)
	}
	want, leases, err := published(v, time.Now())
	if err != nil {
		s.inv.unconfirmed.Add(1)
		return unavailable(err)
	}
	if want < 1 {
		// This replica subscribes where it publishes: a count of 0 says
		// its own subscription is not there (gone, or the master
		// changed), and nobody was counted.
		s.inv.resubscribe.Store(listening)
		s.inv.unconfirmed.Add(1)
		return unavailable(errors.New("the invalidation reached no replica, this one included"))
	}
	// Confirmed once every subscription counted has acknowledged, and
	// every replica holding a lease has acknowledged or let it run out.
	var leaseTimer *time.Timer
	defer func() {
		if leaseTimer != nil {
			leaseTimer.Stop()
		}
	}()
	for {
		s.inv.waitMu.Lock()
		got := len(w.from)
		var held *lease // the lease running longest of those not acknowledged
		now := time.Now()
		for i := range leases {
			l := &leases[i]
			if _, ok := w.replicas[l.id]; !ok && now.Before(l.ends) && (held == nil || l.ends.After(held.ends)) {
				held = l
			}
		}
		s.inv.waitMu.Unlock()
		if got >= want && held == nil {
			return nil
		}
		var leaseOut <-chan time.Time
		if held != nil {
			if leaseTimer == nil {
				leaseTimer = time.NewTimer(held.ends.Sub(now))
			} else {
				leaseTimer.Reset(held.ends.Sub(now))
			}
			leaseOut = leaseTimer.C
		}
		select {
		case <-w.more:
		case <-leaseOut:
		case <-timeout.C:
			s.inv.unconfirmed.Add(1)
			if got < want {
				return unavailable(fmt.Errorf("%d of %d replicas confirmed the invalidation within %s", got, want, s.cfg.InvalidationAckTimeout))
			}
			return unavailable(fmt.Errorf("replica %s neither confirmed the invalidation nor let its lease run out within %s (its lease ends in %s)",
				held.id, s.cfg.InvalidationAckTimeout, time.Until(held.ends).Round(time.Millisecond)))
		}
	}
}

// publisher is where invalidations are published, and its address: in a
// Cluster, the master of the channel's slot, which is where every
// replica subscribes. There, PUBLISH's count of receivers is every
// replica's subscription, not only those on a random node, and keys and
// barrier reach each replica in the order they were published. (While
// the slot moves or fails over, a replica may still listen on another
// node until its next ping: it gets the messages through the cluster
// bus, but is not counted, and its acknowledgements do not count.)
// Elsewhere, the store's client, and "".
func (s *Store) publisher(ctx context.Context) (goredis.Cmdable, string, error) {
	if cc, ok := s.c.(*goredis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, s.channel())
		if err != nil {
			return nil, "", err
		}
		return node, node.Options().Addr, nil
	}
	return s.c, "", nil
}

// moveGrace is how long after its subscription moved to another node a
// replica does not confirm narrowing writes: long enough for a replica
// left on the former owner to have stopped listening. That one's node
// last confirmed owning the slot before it moved, and the replica stops
// listening once that is listenerSilence old, checked after the probe
// of every ping round; between two checks, the ping (write_timeout), the
// wait for the next tick, and the probe (listenerPing).
func (s *Store) moveGrace() time.Duration {
	return listenerSilence + 2*listenerPing + s.cfg.WriteTimeout
}

// reloadSlots has a Cluster client reload its slot map (in the
// background).
func (s *Store) reloadSlots() {
	if cc, ok := s.c.(*goredis.ClusterClient); ok {
		cc.ReloadState(context.Background())
	}
}

// send publishes keys without waiting for the replicas.
func (s *Store) send(ctx context.Context, keys ...string) error {
	node, _, err := s.publisher(ctx)
	if err != nil {
		return unavailable(err)
	}
	_, err = node.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, k := range keys {
			p.Publish(ctx, s.channel(), k)
		}
		return nil
	})
	if err != nil {
		return unavailable(err)
	}
	return nil
}

// publish is for a committed write that widens access (or changes what
// a retry does not repeat): it does not wait for the other replicas, and
// a failure is logged rather than returned, the cache TTL bounding the
// staleness. This replica's subscribers get the keys first, whatever the
// publish then does: the write holds here from the next request on (the
// message comes back too, and evicts again).
func (s *Store) publish(ctx context.Context, keys ...string) {
	s.dispatch(keys...)
	if err := s.send(context.WithoutCancel(ctx), keys...); err != nil {
		s.log.Warn("publish invalidation", "keys", keys, "err", err)
	}
}

// publishNarrowed is for a write that narrows access and that its caller
// can retry (ending sessions, consent, customer deletion, revocation...):
// it returns once every replica has applied the keys (invalidate), so the
// write holds everywhere from the next request on. A failure, or a
// replica that did not confirm in time, is returned as
// sidecar.Unpublished, so the caller answers 503 and its retry publishes
// again, rather than leaving replicas to honour what ended until their
// cache TTL. As publish, it evicts on this replica first.
//
// Before that, the write must be on Redis replicas (replicated), which a
// failover would otherwise undo: when it is not, it answers as a store
// fault (EUNAVAILABLE), the write not known to last, and evicts anyway
// (evictDespite), as the write stands for now and may stay.
func (s *Store) publishNarrowed(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil // nothing narrowed
	}
	s.dispatch(keys...)
	ctx = context.WithoutCancel(ctx) // the write is made: its caller leaving does not undo it
	if err := s.replicated(ctx, keys...); err != nil {
		return s.evictDespite(ctx, err, keys...)
	}
	if err := s.invalidate(ctx, keys...); err != nil {
		return sidecar.Unpublished(err)
	}
	return nil
}

// evictDespite is for a narrowing write that failed with err: when err
// says Redis could not be reached or did not answer, the write may have
// been applied with only its reply lost (a transaction is not retried),
// so the eviction of keys, what the write would have narrowed, goes out
// anyway: this replica drops them at once and the message goes to the
// others, as publish sends it. A write that did land then holds on every
// replica that hears it from its next request on, instead of when their
// caches expire; an eviction for a write that did not happen costs a
// cache miss. It does not wait for the replicas to confirm, as
// publishNarrowed does: the caller is answered 503 either way, and with
// Redis gone the wait would only hold every failing write for the
// confirmation bound. err is returned as it is.
//
// The write may also not have reached Redis yet (a stalled link, a
// stalling proxy or TLS terminator, TCP retransmitting it): the replicas
// that drop the keys now read the old state again, and would cache it
// for their whole TTL once the write lands. So the eviction goes out
// again later (evictLater).
func (s *Store) evictDespite(ctx context.Context, err error, keys ...string) error {
	if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE || len(keys) == 0 {
		return err
	}
	s.publish(ctx, keys...)
	s.evictLater(keys)
	return err
}

// The evictions of a failed narrowing write go out again lateEvictFirst
// after it failed, then at twice that age each time, the last at
// lateEvictLast: a write landing at age a (a >= lateEvictFirst) is
// evicted again by age 2a, so what it narrowed stays allowed after it
// lands for at most as long as it was late (and never past the cache
// TTL, which bounds it anyway). The span is fixed, as the store does not
// know the caches' TTL: two minutes covers what TCP keeps retransmitting
// for a connection its client closed (Linux gives up on it after about
// 100 s at the minimum retransmission timeout). After a write landing
// later, the old state stays allowed until the cache TTL runs out, as
// before. Failed writes happen only under faults: nothing is spent
// otherwise.
const (
	lateEvictFirst = time.Second
	lateEvictLast  = 128 * time.Second
)

// lateEvictMax bounds the keys scheduled to be evicted again: however
// long Redis stays out of reach and however many writes fail meanwhile,
// the schedules take about 11 MB at most (some 170 bytes a key). That
// holds 512 failed writes a second, each naming new keys, for the whole
// span. Past it the oldest schedules, closest to their end, are dropped.
const lateEvictMax = 1 << 16

// lateEvictBatch bounds the keys published together, so that one
// publish fits its timeout even when many fall due at once.
const lateEvictBatch = 1024

// lateEvictions holds the keys of failed narrowing writes that are to be
// evicted again, for one goroutine (lateEvictor) that runs while any
// is scheduled: a key named by many failures is scheduled once, from its
// latest failure, and keys falling due together go out together.
type lateEvictions struct {
	mu   sync.Mutex
	keys map[string]*list.Element // of *lateEviction, in byAge[its step]
	// byAge[i] holds the keys whose next age due is lateEvictFirst << i,
	// by failure time, oldest first: its front falls due first.
	byAge   []list.List
	running bool          // lateEvictor runs
	wake    chan struct{} // tells lateEvictor that keys were scheduled
	max     int           // lateEvictMax, smaller in tests
	dropped int           // schedules dropped past max
	now     func() time.Time
	sent    func(keys []string) // called by lateEvictor after each publish (tests)
}

// lateEviction is one key's schedule.
type lateEviction struct {
	key    string
	failed time.Time // the latest failure that named key
	step   int       // the next age due is lateEvictFirst << step
}

func newLateEvictions() lateEvictions {
	return lateEvictions{wake: make(chan struct{}, 1), max: lateEvictMax, now: time.Now}
}

// schedule (re)starts the schedule of keys from now; l.mu is held.
func (l *lateEvictions) schedule(keys []string) {
	if l.keys == nil {
		l.keys = map[string]*list.Element{}
		for a := lateEvictFirst; a <= lateEvictLast; a *= 2 {
			l.byAge = append(l.byAge, list.List{})
		}
	}
	now := l.now()
	for _, k := range keys {
		le := &lateEviction{key: k}
		if e := l.keys[k]; e != nil {
			// This write may land later than the one that named k
			// before: k's schedule starts again. That one, landing
			// after now at age a, lands at a smaller age of this
			// schedule, and is evicted again as soon.
			le = l.byAge[e.Value.(*lateEviction).step].Remove(e).(*lateEviction)
		} else if len(l.keys) >= l.max {
			l.dropOldest()
		}
		le.failed, le.step = now, 0
		l.keys[k] = l.insert(le)
	}
}

// insert puts le in its step's list at its place by failure time (at
// the back, nearly always) and returns its element.
func (l *lateEvictions) insert(le *lateEviction) *list.Element {
	ll := &l.byAge[le.step]
	for e := ll.Back(); e != nil; e = e.Prev() {
		if !e.Value.(*lateEviction).failed.After(le.failed) {
			return ll.InsertAfter(le, e)
		}
	}
	return ll.PushFront(le)
}

// dropOldest drops the schedule of the oldest failure; l.mu is held.
func (l *lateEvictions) dropOldest() {
	for i := len(l.byAge) - 1; i >= 0; i-- {
		if e := l.byAge[i].Front(); e != nil {
			l.byAge[i].Remove(e)
			delete(l.keys, e.Value.(*lateEviction).key)
			l.dropped++
			return
		}
	}
}

// due takes the keys due at now (at most lateEvictBatch), moving each
// to its next age or, past lateEvictLast, dropping it, and says when the
// next falls due; ok is false when none remains scheduled. l.mu is held.
func (l *lateEvictions) due(now time.Time) (keys []string, next time.Time, ok bool) {
	// From the last age down, so that a key moved to the next age is
	// not taken twice.
	for i := len(l.byAge) - 1; i >= 0; i-- {
		age := lateEvictFirst << i
		for e := l.byAge[i].Front(); e != nil && len(keys) < lateEvictBatch; e = l.byAge[i].Front() {
			le := e.Value.(*lateEviction)
			if le.failed.Add(age).After(now) {
				break
			}
			keys = append(keys, le.key)
			l.byAge[i].Remove(e)
			if le.step++; le.step < len(l.byAge) {
				l.keys[le.key] = l.insert(le)
			} else {
				delete(l.keys, le.key)
			}
		}
	}
	for i := range l.byAge {
		if e := l.byAge[i].Front(); e != nil {
			at := e.Value.(*lateEviction).failed.Add(lateEvictFirst << i)
			if !ok || at.Before(next) {
				next, ok = at, true
			}
		}
	}
	return keys, next, ok
}

// evictLater publishes keys again at lateEvictFirst, twice that, and so
// on up to lateEvictLast after now, from the store's one lateEvictor,
// started here when none runs.
func (s *Store) evictLater(keys []string) {
	s.inv.mu.Lock()
	defer s.inv.mu.Unlock()
	if s.inv.closed {
		return
	}
	l := &s.inv.late
	l.mu.Lock()
	defer l.mu.Unlock()
	dropped := l.dropped
	l.schedule(keys)
	if dropped == 0 && l.dropped > 0 {
		s.log.Warn("failed narrowing writes: more keys to evict again than are kept, the oldest schedules are dropped (said once)", "max", l.max)
	}
	if !l.running {
		l.running = true
		s.inv.wg.Add(1)
		go s.lateEvictor()
		return
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// lateEvictor publishes the keys of evictLater as they fall due, until
// none remains scheduled (nothing runs while no write fails) or Close
// stops it. A publish that fails is
// logged at debug level: the first one has already warned, and Redis is
// likely still out of reach.
func (s *Store) lateEvictor() {
	defer s.inv.wg.Done()
	l := &s.inv.late
	timer := time.NewTimer(lateEvictLast)
	defer timer.Stop()
	for {
		l.mu.Lock()
		keys, next, ok := l.due(l.now())
		if !ok && len(keys) == 0 {
			l.running = false
			l.mu.Unlock()
			return
		}
		wait := next.Sub(l.now())
		l.mu.Unlock()
		if len(keys) > 0 {
			s.dispatch(keys...)
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.WriteTimeout+s.cfg.ReadTimeout)
			if err := s.send(ctx, keys...); err != nil {
				s.log.Debug("publish invalidation again", "keys", len(keys), "err", err)
			}
			cancel()
			if l.sent != nil {
				l.sent(keys)
			}
			// More may have fallen due meanwhile.
			wait = 0
		}
		timer.Reset(wait)
		select {
		case <-s.inv.done:
			return
		case <-l.wake:
		case <-timer.C:
		}
	}
}

// Subscribe calls fn for every key published on the channel from now on.
// The first call subscribes (waiting for Redis to confirm, bounded). While
// the store is not listening, subscribers get sidecar.InvalidationsLost
// (at once if it is not listening when they subscribe); once it listens
// again, sidecar.InvalidateAll.
func (s *Store) Subscribe(fn func(key string)) (cancel func()) {
	s.inv.mu.Lock()
	defer s.inv.mu.Unlock()
	if s.inv.closed {
		return func() {}
	}
	id := s.inv.nextSub
	s.inv.nextSub++
	s.inv.subs[id] = fn
	if !s.inv.started {
		s.startListening()
	}
	if !s.inv.listening {
		fn(sidecar.InvalidationsLost)
	}
	return func() {
		s.inv.mu.Lock()
		defer s.inv.mu.Unlock()
		delete(s.inv.subs, id)
	}
}

// listen starts listening if nothing did yet, and waits until the store
// listens, or until timeout: a writer must listen, to hear the replicas
// confirm.
func (s *Store) listen(timeout <-chan time.Time) error {
	s.inv.mu.Lock()
	if s.inv.closed {
		s.inv.mu.Unlock()
		return errors.New("store closed")
	}
	if !s.inv.started {
		s.startListening()
	}
	resumed := s.inv.resumed
	listening := s.inv.listening
	s.inv.mu.Unlock()
	if listening {
		return nil
	}
	select {
	case <-resumed:
		return nil
	case <-timeout:
		return errors.New("not listening for invalidations")
	}
}

// startListening starts the pinger and the acknowledger, subscribes on
// a new connection, waits (bounded) for Redis to confirm, and starts its
// listener; inv.mu is held. When the subscription cannot be opened, or
// is not confirmed, the listener or the pinger opens another.
func (s *Store) startListening() {
	s.inv.started = true
	s.inv.wg.Add(3)
	go s.pinger()
	go s.acknowledger()
	go s.leaser()
	sub, err := s.subscribe()
	if err != nil {
		s.log.Warn("subscribe to invalidations", "channel", s.channel(), "err", err)
		return
	}
	// Wait for the first confirmation here, so that a subscriber returns
	// listening.
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout+s.cfg.ReadTimeout)
	defer cancel()
	if m, err := sub.ps.Receive(ctx); err != nil {
		s.log.Warn("subscribe to invalidations", "channel", s.channel(), "err", err)
	} else if m, ok := m.(*goredis.Subscription); ok && m.Kind == "subscribe" {
		s.markListening(true)
	}
	s.listenOn(sub)
}

// subscribe opens a connection subscribed to the invalidation channel and
// this store's acknowledgement channel: in a Cluster, on the master of
// the channel's slot (which it checks), through a client of its own that
// connects once.
func (s *Store) subscribe() (*subscription, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout+s.cfg.WriteTimeout)
	defer cancel()
	sub := &subscription{}
	var base *goredis.Client
	switch c := s.c.(type) {
	case *goredis.ClusterClient:
		node, err := c.MasterForKey(ctx, s.channel())
		if err != nil {
			return nil, err
		}
		asked := time.Now()
		if err := node.Exists(ctx, s.channel()).Err(); err != nil {
			if _, moved := goredis.IsMovedError(err); moved {
				c.ReloadState(ctx)
			}
			return nil, err
		}
		s.inv.owned.Store(asked.UnixNano())
		base, sub.node = node, node
	case *goredis.Client: // single node, Sentinel
		base = c
	default:
		sub.ps = s.c.Subscribe(ctx, s.channel(), s.ackChannel(s.inv.id))
		return sub, nil
	}
	o := *base.Options()
	o.Dialer = dialOnce(o.Dialer)
	o.MinIdleConns = 0
	o.PushNotificationProcessor = nil // the store client's, handlers registered: this client makes its own
	// Not the store client's, which it updates under its own lock; and a
	// subscription that a maintenance handoff would redial anyway.
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	sub.client = goredis.NewClient(&o)
	sub.ps = sub.client.Subscribe(ctx, s.channel(), s.ackChannel(s.inv.id))
	return sub, nil
}

// listenOn makes sub the listening connection and starts its listener;
// inv.mu is held.
func (s *Store) listenOn(sub *subscription) {
	s.inv.conn++
	conn := s.inv.id + ":" + strconv.Itoa(s.inv.conn)
	s.inv.sub = sub
	if addr := sub.addr(); addr != s.inv.node {
		if s.inv.node != "" {
			s.inv.movedAt = time.Now()
		}
		s.inv.node = addr
	}
	s.inv.heard.Store(time.Now().UnixNano())
	s.inv.wg.Add(1)
	go s.listener(sub, conn)
}

// listener reads sub until it is closed or replaced, handing keys to the
// subscribers and acknowledging barriers, in the order they arrive. When
// the connection fails, the replica stops listening at once, and the
// listener gives it up for a new one.
func (s *Store) listener(sub *subscription, conn string) {
	defer s.inv.wg.Done()
	ctx := context.Background()
	for {
		m, err := sub.ps.Receive(ctx)
		if !s.current(sub) {
			return
		}
		if err != nil {
			s.setListening(false, err)
			select {
			case <-s.inv.done:
				return
			case <-time.After(listenerRetry):
			}
			s.replaceConnection(sub, err)
			return
		}
		s.inv.heard.Store(time.Now().UnixNano())
		switch m := m.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" && m.Channel == s.channel() {
				s.setListening(true, nil)
			}
		case *goredis.Message:
			switch m.Channel {
			case s.channel():
				if writer, nonce, ok := strings.Cut(strings.TrimPrefix(m.Payload, barrierPrefix), " "); ok && strings.HasPrefix(m.Payload, barrierPrefix) {
					// Everything published before the barrier has been
					// handed over: acknowledge it.
					a := ack{writer: writer, nonce: nonce, conn: conn, node: sub.addr(), on: s.c}
					if sub.node != nil {
						a.on = sub.node
					}
					s.queueAck(a)
				} else {
					s.dispatch(m.Payload)
				}
			case s.ackChannel(s.inv.id):
				s.acked(m.Payload)
			}
		}
	}
}

func (s *Store) current(sub *subscription) bool {
	s.inv.mu.Lock()
	defer s.inv.mu.Unlock()
	return s.inv.sub == sub && !s.inv.closed
}

// setListening records whether the replica hears invalidations and tells
// the subscribers: InvalidationsLost when it stops, InvalidateAll when it
// listens again (every time the subscription is confirmed: messages may
// have been missed in between).
func (s *Store) setListening(on bool, cause error) {
	s.inv.mu.Lock()
	defer s.inv.mu.Unlock()
	if s.inv.closed || (!on && !s.inv.listening) {
		return
	}
	if !on {
		s.log.Warn("invalidations not heard: cache hits read the store until subscribed again", "channel", s.channel(), "err", cause)
	}
	s.markListening(on)
}

// markListening records the state and tells the subscribers; inv.mu is
// held.
func (s *Store) markListening(on bool) {
	s.inv.listening = on
	key := sidecar.InvalidateAll
	switch {
	case !on:
		s.dropLease()
		key = sidecar.InvalidationsLost
		if s.inv.resumed == nil {
			s.inv.resumed = make(chan struct{})
		}
	case s.inv.resumed != nil:
		close(s.inv.resumed)
		s.inv.resumed = nil
	}
	for _, fn := range s.inv.subs {
		fn(key)
	}
	select { // renew, or take the lease out of Redis, at once
	case s.inv.renewNow <- struct{}{}:
	default:
	}
}

// pinger pings the listening connection, so a dead one is noticed even
// when nothing is published, and replaces it once silent too long; in a
// Cluster, also when its node no longer owns the channel's slot. When
// there is none, it opens one.
func (s *Store) pinger() {
	defer s.inv.wg.Done()
	tick := time.NewTicker(listenerPing)
	defer tick.Stop()
	for {
		select {
		case <-s.inv.done:
			return
		case <-tick.C:
		}
		s.inv.mu.Lock()
		sub := s.inv.sub
		s.inv.mu.Unlock()
		if sub == nil {
			s.replaceConnection(nil, errors.New("not subscribed"))
			continue
		}
		if time.Since(time.Unix(0, s.inv.heard.Load())) > listenerSilence {
			s.replaceConnection(sub, errors.New("listening connection silent"))
			continue
		}
		if s.inv.resubscribe.Swap(nil) == sub {
			s.replaceConnection(sub, errors.New("a publish counted no subscriber, this one included"))
			continue
		}
		if s.inv.leaseLost.Swap(nil) == sub {
			s.replaceConnection(sub, errors.New("Redis no longer holds the subscription"))
			continue
		}
		if sub.node != nil {
			asked := time.Now()
			moved, err := s.slotMoved(sub.node)
			if moved {
				s.reloadSlots()
				s.replaceConnection(sub, errors.New("the invalidation channel's slot moved"))
				continue
			}
			if err == nil {
				s.inv.owned.Store(asked.UnixNano())
			}
			if time.Since(time.Unix(0, s.inv.owned.Load())) > listenerSilence {
				s.replaceConnection(sub, errors.New("the node listened on has not confirmed owning the channel's slot"))
				continue
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.WriteTimeout)
		_ = sub.ps.Ping(ctx) // the answer, or its absence, is what counts
		cancel()
	}
}

// slotMoved asks node, where the subscription is, whether it still owns
// the channel's slot: it answers MOVED when not (the store's slot map may
// not know yet). err is any other failure to answer.
func (s *Store) slotMoved(node *goredis.Client) (moved bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), listenerPing)
	defer cancel()
	err = node.Exists(ctx, s.channel()).Err()
	if _, moved = goredis.IsMovedError(err); moved {
		return true, nil
	}
	return false, err
}

// replaceConnection gives up the connection old (nil: none) for a new
// one, whose listener resumes once Redis confirms the subscription. When
// none can be opened, the pinger tries again.
func (s *Store) replaceConnection(old *subscription, cause error) {
	if !s.current(old) {
		return
	}
	s.setListening(false, cause)
	sub, err := s.subscribe()
	s.inv.mu.Lock()
	if s.inv.sub != old || s.inv.closed {
		s.inv.mu.Unlock()
		if sub != nil {
			sub.close()
		}
		return
	}
	if err != nil {
		s.log.Warn("subscribe to invalidations", "channel", s.channel(), "err", err)
		s.inv.sub = nil
	} else {
		s.listenOn(sub)
	}
	s.inv.mu.Unlock()
	if old != nil {
		old.close()
	}
}

func (s *Store) queueAck(a ack) {
	select {
	case s.inv.acks <- a:
	default:
		s.log.Warn("invalidation acknowledgement dropped: too many waiting", "channel", s.channel())
	}
}

// acknowledger sends the acknowledgements the listener queues.
func (s *Store) acknowledger() {
	defer s.inv.wg.Done()
	for {
		select {
		case <-s.inv.done:
			return
		case a := <-s.inv.acks:
			// Sent again when an attempt fails (pooled connections that
			// a cut closed meanwhile, each failing once, with retries
			// off): the writer counts each connection once, and is
			// otherwise held to its bound and answers 503.
			for attempt := 1; attempt <= ackAttempts; attempt++ {
				ctx, cancel := context.WithTimeout(context.Background(), s.cfg.WriteTimeout+s.cfg.ReadTimeout)
				err := a.on.Publish(ctx, s.ackChannel(a.writer), a.nonce+" "+a.conn+" "+a.node).Err()
				cancel()
				if err == nil {
					break
				}
				s.log.Warn("acknowledge invalidation", "channel", s.channel(), "attempt", attempt, "err", err)
				select {
				case <-s.inv.done:
					return
				case <-time.After(time.Duration(attempt) * 10 * time.Millisecond):
				}
			}
		}
	}
}

// acked records an acknowledgement (nonce, the connection that sent it,
// and the node that connection is subscribed on) of a barrier this store
// published. One from a replica on another node than the barrier was
// published on does not count: PUBLISH did not count that replica. (An
// earlier version names no node; its acknowledgement counts.)
func (s *Store) acked(payload string) {
	nonce, from, ok := strings.Cut(payload, " ")
	if !ok {
		return
	}
	from, node, _ := strings.Cut(from, " ")
	s.inv.waitMu.Lock()
	defer s.inv.waitMu.Unlock()
	if w := s.inv.waiting[nonce]; w != nil && (node == "" || node == w.node) {
		w.from[from] = struct{}{}
		replica, _, _ := strings.Cut(from, ":") // a connection is named <store id>:<n>
		w.replicas[replica] = struct{}{}
		select {
		case w.more <- struct{}{}:
		default:
		}
	}
}

// dispatch hands keys to this replica's subscribers.
func (s *Store) dispatch(keys ...string) {
	s.inv.mu.Lock()
	defer s.inv.mu.Unlock()
	for _, k := range keys {
		for _, fn := range s.inv.subs {
			fn(k)
		}
	}
}

// closeInvalidations stops listening and waits for the goroutines.
func (s *Store) closeInvalidations() {
	s.inv.mu.Lock()
	sub := s.inv.sub
	if !s.inv.closed {
		s.inv.closed = true
		close(s.inv.done)
	}
	s.inv.sub = nil
	clear(s.inv.subs)
	s.inv.mu.Unlock()
	if sub != nil {
		sub.close()
	}
	s.inv.wg.Wait()
	s.dropLease()
	if s.inv.started {
		s.removeLease()
	}
}
