package redis

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

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
// A replica that is not listening (its connection lost, not yet
// subscribed again) cannot hear narrowing writes: its subscribers get
// sidecar.InvalidationsLost (the caches read hits through meanwhile), and
// sidecar.InvalidateAll once it listens again. A connection that stays silent past
// listenerSilence, pings unanswered, is replaced.

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
)

// invalidations is a Store's side of the invalidation channel.
type invalidations struct {
	id string // this store's, naming its acknowledgement channel

	mu        sync.Mutex // all below; held while subscribers are called
	subs      map[int]func(string)
	nextSub   int
	ps        *goredis.PubSub
	conn      int           // counts connections: acknowledgements name theirs
	listening bool          // the subscription is confirmed and the connection up
	resumed   chan struct{} // closed when listening again
	closed    bool
	done      chan struct{} // closed by Close: stops the pinger and the acknowledger
	wg        sync.WaitGroup

	heard atomic.Int64 // unix nanos of the last frame read from ps

	waitMu  sync.Mutex
	waiting map[string]*ackWait // by nonce

	acks        chan ack
	unconfirmed atomic.Uint64
}

// ack is an acknowledgement to send: nonce, on writer's channel, from
// this replica's connection conn.
type ack struct{ writer, nonce, conn string }

// ackWait collects the acknowledgements of one barrier.
type ackWait struct {
	from map[string]struct{} // connections that acknowledged
	more chan struct{}       // signalled when one comes
}

func newInvalidations() invalidations {
	return invalidations{id: rand.Text(), subs: map[int]func(string){}, done: make(chan struct{}), resumed: make(chan struct{}),
		waiting: map[string]*ackWait{}, acks: make(chan ack, ackQueueLen)}
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
// confirm).
func (s *Store) Invalidate(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	timeout := time.NewTimer(s.cfg.InvalidationAckTimeout)
	defer timeout.Stop()
	if err := s.listen(timeout.C); err != nil {
		s.inv.unconfirmed.Add(1)
		return unavailable(err)
	}
	nonce := rand.Text()
	w := &ackWait{from: map[string]struct{}{}, more: make(chan struct{}, 1)}
	s.inv.waitMu.Lock()
	s.inv.waiting[nonce] = w
	s.inv.waitMu.Unlock()
	defer func() {
		s.inv.waitMu.Lock()
		delete(s.inv.waiting, nonce)
		s.inv.waitMu.Unlock()
	}()
	node, err := s.publisher(ctx)
	if err != nil {
		return unavailable(err)
	}
	var barrier *goredis.IntCmd
	_, err = node.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, k := range keys {
			p.Publish(ctx, s.channel(), k)
		}
		barrier = p.Publish(ctx, s.channel(), barrierPrefix+s.inv.id+" "+nonce)
		return nil
	})
	if err != nil {
		return unavailable(err)
	}
	want := int(barrier.Val())
	for {
		s.inv.waitMu.Lock()
		got := len(w.from)
		s.inv.waitMu.Unlock()
		if got >= want {
			return nil
		}
		select {
		case <-w.more:
		case <-timeout.C:
			s.inv.unconfirmed.Add(1)
			return unavailable(fmt.Errorf("%d of %d replicas confirmed the invalidation within %s", got, want, s.cfg.InvalidationAckTimeout))
		}
	}
}

// publisher is where invalidations are published: in a Cluster, the
// master of the channel's slot, which is where go-redis subscribes every
// replica (to the master of its first channel's slot). There, PUBLISH's
// count of receivers is every replica's subscription, not only those on
// a random node, and keys and barrier reach each replica in the order
// they were published. (While the slot moves or fails over, a replica may
// still listen on another node: it gets the messages through the cluster
// bus, but is not counted.)
func (s *Store) publisher(ctx context.Context) (goredis.Cmdable, error) {
	if cc, ok := s.c.(*goredis.ClusterClient); ok {
		return cc.MasterForKey(ctx, s.channel())
	}
	return s.c, nil
}

// send publishes keys without waiting for the replicas.
func (s *Store) send(ctx context.Context, keys ...string) error {
	node, err := s.publisher(ctx)
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
// it returns once every replica has applied the keys (Invalidate), so the
// write holds everywhere from the next request on. A failure, or a
// replica that did not confirm in time, is returned as
// sidecar.Unpublished, so the caller answers 503 and its retry publishes
// again, rather than leaving replicas to honour what ended until their
// cache TTL. As publish, it evicts on this replica first.
func (s *Store) publishNarrowed(ctx context.Context, keys ...string) error {
	s.dispatch(keys...)
	if err := s.Invalidate(context.WithoutCancel(ctx), keys...); err != nil {
		return sidecar.Unpublished(err)
	}
	return nil
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
	if s.inv.ps == nil {
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
	if s.inv.ps == nil {
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

// startListening subscribes on a new connection, waits (bounded) for
// Redis to confirm, and starts its listener; inv.mu is held.
func (s *Store) startListening() {
	ps := s.subscribe()
	// Wait for the first confirmation here, so that a subscriber returns
	// listening. When it does not come, go-redis keeps trying; the
	// listener then hears it and resumes.
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout+s.cfg.ReadTimeout)
	defer cancel()
	if m, err := ps.Receive(ctx); err != nil {
		s.log.Warn("subscribe to invalidations", "channel", s.channel(), "err", err)
	} else if sub, ok := m.(*goredis.Subscription); ok && sub.Kind == "subscribe" {
		s.markListening(true)
	}
	s.listenOn(ps)
}

// subscribe opens a connection subscribed to the invalidation channel and
// this store's acknowledgement channel.
func (s *Store) subscribe() *goredis.PubSub {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout+s.cfg.WriteTimeout)
	defer cancel()
	return s.c.Subscribe(ctx, s.channel(), s.ackChannel(s.inv.id))
}

// listenOn makes ps the listening connection and starts its listener; the
// first time, also the pinger and the acknowledger. inv.mu is held.
func (s *Store) listenOn(ps *goredis.PubSub) {
	first := s.inv.conn == 0
	s.inv.conn++
	conn := s.inv.id + ":" + strconv.Itoa(s.inv.conn)
	s.inv.ps = ps
	s.inv.heard.Store(time.Now().UnixNano())
	s.inv.wg.Add(1)
	go s.listener(ps, conn)
	if first {
		s.inv.wg.Add(2)
		go s.pinger()
		go s.acknowledger()
	}
}

// listener reads ps until it is closed or replaced, handing keys to the
// subscribers and acknowledging barriers, in the order they arrive.
func (s *Store) listener(ps *goredis.PubSub, conn string) {
	defer s.inv.wg.Done()
	ctx := context.Background()
	for {
		m, err := ps.Receive(ctx)
		if !s.current(ps) {
			return
		}
		if err != nil {
			// go-redis connects again on the next Receive; until it has
			// subscribed again, this replica hears nothing.
			s.setListening(false, err)
			select {
			case <-s.inv.done:
				return
			case <-time.After(listenerRetry):
			}
			continue
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
					s.queueAck(ack{writer: writer, nonce: nonce, conn: conn})
				} else {
					s.dispatch(m.Payload)
				}
			case s.ackChannel(s.inv.id):
				s.acked(m.Payload)
			}
		}
	}
}

func (s *Store) current(ps *goredis.PubSub) bool {
	s.inv.mu.Lock()
	defer s.inv.mu.Unlock()
	return s.inv.ps == ps && !s.inv.closed
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
}

// pinger pings the listening connection, so a dead one is noticed even
// when nothing is published, and replaces it once silent too long.
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
		ps := s.inv.ps
		s.inv.mu.Unlock()
		if ps == nil {
			continue
		}
		if time.Since(time.Unix(0, s.inv.heard.Load())) > listenerSilence {
			s.replaceConnection(ps)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.WriteTimeout)
		_ = ps.Ping(ctx) // the answer, or its absence, is what counts
		cancel()
	}
}

// replaceConnection gives up the silent connection old for a new one,
// whose listener resumes once Redis confirms the subscription.
func (s *Store) replaceConnection(old *goredis.PubSub) {
	if !s.current(old) {
		return
	}
	s.setListening(false, errors.New("listening connection silent"))
	ps := s.subscribe()
	s.inv.mu.Lock()
	if s.inv.ps != old || s.inv.closed {
		s.inv.mu.Unlock()
		_ = ps.Close()
		return
	}
	s.listenOn(ps)
	s.inv.mu.Unlock()
	_ = old.Close()
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
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.WriteTimeout+s.cfg.ReadTimeout)
			if err := s.c.Publish(ctx, s.ackChannel(a.writer), a.nonce+" "+a.conn).Err(); err != nil {
				s.log.Warn("acknowledge invalidation", "channel", s.channel(), "err", err)
			}
			cancel()
		}
	}
}

// acked records an acknowledgement (nonce, then the connection that sent
// it) of a barrier this store published.
func (s *Store) acked(payload string) {
	nonce, from, ok := strings.Cut(payload, " ")
	if !ok {
		return
	}
	s.inv.waitMu.Lock()
	defer s.inv.waitMu.Unlock()
	if w := s.inv.waiting[nonce]; w != nil {
		w.from[from] = struct{}{}
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
	ps := s.inv.ps
	if !s.inv.closed {
		s.inv.closed = true
		close(s.inv.done)
	}
	s.inv.ps = nil
	clear(s.inv.subs)
	s.inv.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
	s.inv.wg.Wait()
}
