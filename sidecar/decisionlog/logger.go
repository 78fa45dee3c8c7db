// Package decisionlog owns Deputy's decision log: every check becomes one
// Record, masked so credentials and bodies never reach a sink, queued in a
// bounded buffer off the request path, and written in batches to stdout or
// a Redis stream. When the sink fails, records wait in the queue (and,
// when a spool directory is set, on local disk, across restarts) and are
// written, oldest first, as soon as a probe finds the sink back; only
// records past those bounds are dropped, and those are counted.
package decisionlog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// Sink writes a batch of encoded records (one JSON object each). A sink
// either writes the whole batch or returns an error; the batch is then
// written again later, so a sink that fails half-way may repeat records
// (decision_id tells them apart; the Redis sink skips the ones it already
// wrote). A sink keeps neither the batch nor its
// records once Write returns: their memory holds the next batch.
type Sink interface {
	Write(ctx context.Context, batch [][]byte) error
}

// Prober is a sink that can tell cheaply whether a write would succeed
// now. After a failed write the logger probes it every backoff_min
// instead of waiting out a growing backoff, so a sink that comes back is
// written to at once.
type Prober interface {
	Probe(ctx context.Context) error
}

// Settler is a sink that keeps something of each written batch so that it
// can be written again without repeating records (the Redis sink's
// decision ids). The logger calls Settled after a successful Write once
// this logger will never write that batch's records again: released from
// the queue, or acknowledged in the spool. With keep, another write of
// them may still reach the sink (one whose reply was lost, of this run or
// of a previous one, which the spool marked; or a next run's, when the
// spool's acknowledgement failed): the sink keeps what it holds of them
// for its own bounded time. What is never settled (a crash before the
// acknowledgement) it keeps so too.
type Settler interface {
	Settled(keep bool)
}

// Logger is the asynchronous decision logger. Start it once, Stop it on
// shutdown to flush what is queued.
type Logger struct {
	cfg    Config
	sink   Sink
	masker *masker
	log    *slog.Logger

	mu       sync.Mutex
	ring     []queued
	head     int   // index of the oldest queued decision
	n        int   // queued decisions
	inflight int   // taken by the worker, not yet written
	bytes    int64 // the sizes of the queued and in-flight decisions
	stopped  bool

	wake    chan struct{}
	stopc   chan context.Context
	done    chan struct{}
	started atomic.Bool

	dropped     atomic.Uint64
	unconfirmed atomic.Uint64
	flushed     atomic.Uint64
	sinkErrors  atomic.Uint64
	maskErrors  atomic.Uint64
	maskSpent   atomic.Uint64
	oversized   atomic.Uint64
	statsErrors atomic.Uint64 // failed reads of the redis sink's stream
	spoolErrors atomic.Uint64 // failed writes to the spool

	// Owned by the worker. pending holds records taken from the queue,
	// encoded, in flight until written or spooled; spooled records are
	// read into spoolBatch, apart: while the spool is full, pending waits
	// in memory behind the spool's older records.
	pending      [][]byte
	pendingSizes []int64 // the queued size of each record of pending
	spoolBatch   [][]byte
	batchBuf     []byte // what the records of pending are encoded in
	taken        []queued
	spool        *spool // nil unless cfg.SpoolDir is set
	down         bool   // the last write failed
	// unsure is how many records at the front of pending a failed write
	// may have made (ErrUnconfirmed): at Stop's deadline they are not
	// known lost.
	unsure int
	// A full or failing disk fails every spool write, every backoff
	// step: the failures are counted each time and logged at most once
	// per spoolErrorLogEvery, appends and acknowledgements apart.
	appendFailures, ackFailures sidecar.FailureLog

	spooled atomic.Int64 // spool bytes, for QueueDepth's readers

	// The redis sink's stream as last read (watchStream), and when.
	statsMu     sync.Mutex
	stats       streamRead
	statsAt     time.Time
	statsCancel context.CancelFunc // nil unless watchStream runs
	statsDone   chan struct{}
}

var _ sidecar.DecisionLogger = (*Logger)(nil)

// queued is a decision waiting for the writer.
type queued struct {
	d    *sidecar.Decision
	size int64 // what it weighs against max_queue_bytes
	// cut: it did not fit the queue with its input, so it waits without
	// it and is written in its oversized form.
	cut bool
}

// Option configures a Logger.
type Option func(*Logger)

// WithMaskPolicy makes the logger honour the policy's data.system.log.mask
// rules, evaluated on the activation that made each decision
// (sidecar.Decision.Policy), not on the one serving when the record is
// written: a reload between the two must not unmask what the deciding
// revision hid.
func WithMaskPolicy() Option { return func(l *Logger) { l.masker.policy = true } }

// WithCredentialCarriers masks the other places requests carry a bearer
// token in (identity.credential_carriers), whatever mask_headers and
// mask_query_params say: each header as those of mask_headers are (in
// headers and header_map, any case, "_" as "-", any other spelling), each
// query parameter as those of mask_query_params are (the path and its
// ";name=" parameters, Envoy's query, the URI headers and parsed_query).
// Cookies and bodies, where the other carriers are, are erased whole
// already.
func WithCredentialCarriers(headers, queryParams []string) Option {
	return func(l *Logger) { l.masker.addCarriers(headers, queryParams) }
}

// WithLogger sets where the logger reports sink failures.
func WithLogger(lg *slog.Logger) Option { return func(l *Logger) { l.log = lg } }

// New returns a logger writing to sink. cfg must be valid.
func New(cfg Config, sink Sink, opts ...Option) (*Logger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Logger{
		cfg:    cfg,
		sink:   sink,
		masker: newMasker(cfg),
		log:    slog.Default(),
		ring:   make([]queued, cfg.QueueSize),
		wake:   make(chan struct{}, 1),
		stopc:  make(chan context.Context, 1),
		done:   make(chan struct{}),

		appendFailures: sidecar.FailureLog{Every: spoolErrorLogEvery},
		ackFailures:    sidecar.FailureLog{Every: spoolErrorLogEvery},
	}
	for _, o := range opts {
		o(l)
	}
	return l, nil
}

// Log queues d and returns at once. The logger keeps d: the caller must
// not change it afterwards. A decision whose input does not fit the
// queue's byte bound is queued without it and written in its oversized
// form (a client chooses much of what an input weighs: its size must not
// cost the decision its record); when the queue is full in records, or in
// bytes even without the input, d is dropped and counted.
func (l *Logger) Log(d *sidecar.Decision) {
	if d == nil || l.cfg.Sink == SinkNone {
		// Sink none: no queueing, masking or encoding for records no one
		// will read.
		return
	}
	bare := decisionSize(d)
	size := bare + inputSize(d.Input) // outside the lock: it walks the input
	l.mu.Lock()
	cut := d.Input != nil && l.bytes+size > l.cfg.MaxQueueBytes
	if cut {
		size = bare
	}
	if l.stopped || l.n+l.inflight >= len(l.ring) || l.bytes+size > l.cfg.MaxQueueBytes {
		l.mu.Unlock()
		l.dropped.Add(1)
		return
	}
	if cut {
		d.Input = nil // the queue does not hold what it did not count
	}
	l.ring[(l.head+l.n)%len(l.ring)] = queued{d: d, size: size, cut: cut}
	l.n++
	half := l.cfg.MaxQueueBytes / 2
	// A batch's worth of records, or half the byte bound, wakes the
	// writer: large records would otherwise wait for the flush interval
	// (or, while the sink is down, for the backoff before they spill)
	// with the byte bound dropping what comes meanwhile.
	full := l.n == l.cfg.BatchSize || (l.bytes < half && l.bytes+size >= half)
	l.bytes += size
	l.mu.Unlock()
	if full {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// QueueDepth is the number of records waiting to be written.
func (l *Logger) QueueDepth() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n + l.inflight
}

// QueueBytes is the estimated memory of the records waiting to be
// written, as decision_log.max_queue_bytes bounds it.
func (l *Logger) QueueBytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bytes
}

// SpoolBytes is the size of the records waiting on disk.
func (l *Logger) SpoolBytes() int64 { return l.spooled.Load() }

// Flushed is the number of records written to the sink.
func (l *Logger) Flushed() uint64 { return l.flushed.Load() }

// Dropped is the number of records lost: past the queue bound (or the
// spool's), or still queued when Stop's deadline ran out with no spool
// (but for the Unconfirmed ones).
func (l *Logger) Dropped() uint64 { return l.dropped.Load() }

// Unconfirmed is the number of records given up at Stop's deadline whose
// last write failed with its reply lost: the sink may hold them, or not.
func (l *Logger) Unconfirmed() uint64 { return l.unconfirmed.Load() }

// SinkErrors is the number of failed writes to the sink.
func (l *Logger) SinkErrors() uint64 { return l.sinkErrors.Load() }

// SpoolErrors is the number of failed writes to the spool (a full or
// read-only disk): appends, whose records stay in memory within the
// queue's bound (past it they are dropped, and counted), and
// acknowledgements of delivered records, which may then be written again.
func (l *Logger) SpoolErrors() uint64 { return l.spoolErrors.Load() }

// MaskErrors is the number of records whose input was dropped because the
// mask policy failed on it.
func (l *Logger) MaskErrors() uint64 { return l.maskErrors.Load() }

// MaskWorkSpent is the number of records whose masking read its bound of
// query values (1 MiB) and masked the values past it whole, unread: a
// client sending queries built to cost the logger work, or queries longer
// than the bound allows for, whose values are then logged masked.
func (l *Logger) MaskWorkSpent() uint64 { return l.maskSpent.Load() }

// Oversized is the number of records written without their input because
// their encoding passed decision_log.max_record_bytes, or because they did
// not fit decision_log.max_queue_bytes with it.
func (l *Logger) Oversized() uint64 { return l.oversized.Load() }

// Start runs the writer until Stop. ctx is for start-up only: the writer
// outlives it, because records keep arriving while in-flight checks
// finish after the shutdown signal; only Stop ends it, after the flush.
func (l *Logger) Start(context.Context) error {
	if !l.started.CompareAndSwap(false, true) {
		return sidecar.Errorf(sidecar.EINTERNAL, "decision logger already started")
	}
	if l.cfg.SpoolDir != "" {
		sp, err := openSpool(l.cfg.SpoolDir, l.cfg.SpoolMaxBytes)
		if err != nil {
			l.started.Store(false)
			return sidecar.Invalid("decision_log.spool_dir", "%v", err)
		}
		l.spool = sp
		l.spooled.Store(sp.size())
		if !sp.empty() {
			l.log.Info("decision log spool holds records of an earlier run; delivering them first", "bytes", sp.size())
		}
	}
	go l.run()
	if r, ok := l.sink.(statsReader); ok {
		ctx, cancel := context.WithCancel(context.Background())
		l.statsCancel, l.statsDone = cancel, make(chan struct{})
		go l.watchStream(ctx, r)
	}
	return nil
}

// Stop writes what is queued, retrying a failing sink until ctx ends, and
// then stops the writer. It reports the records it could not write.
func (l *Logger) Stop(ctx context.Context) error {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return nil
	}
	l.stopped = true
	l.mu.Unlock()
	if !l.started.Load() {
		// Never started: nothing drains the queue, so drain it here.
		l.started.Store(true)
		go l.run()
	}
	before := l.dropped.Load()
	l.stopc <- ctx
	<-l.done
	if l.statsCancel != nil {
		l.statsCancel()
		<-l.statsDone
	}
	if n := l.spooled.Load(); n > 0 {
		l.log.Warn("decision log stopped with records in the spool: the next start on this spool_dir sends them", "spooled_bytes", n, "spool_dir", l.cfg.SpoolDir)
	}
	if lost := l.dropped.Load() - before; lost > 0 {
		return sidecar.Unavailable(fmt.Sprintf("decision log: %d records not written", lost), ctx.Err())
	}
	return nil
}

// statsReader is a sink whose stream can be read for its metrics: the
// redis sink.
type statsReader interface {
	readStats(ctx context.Context) (streamRead, error)
}

// StreamStats is the redis sink's stream as last read: see
// metrics.DecisionLogStream, which has the same fields.
type StreamStats struct {
	// Length is the entries the stream holds.
	Length int64
	// Trimmed is how many entries the stream discarded since it was
	// created: XINFO STREAM's entries-added minus its length, negative
	// when Redis does not report entries-added (before 7.0).
	Trimmed int64
	// OldestAge is the age of the oldest entry, by its id; 0 when the
	// stream holds none.
	OldestAge time.Duration
	// MaxLen is decision_log.max_len.
	MaxLen int64
}

// statsReadTimeout bounds one read of the stream's figures.
const statsReadTimeout = time.Second

// StreamStats reports the redis sink's stream as last read, and false
// when it was not read within the last two stats_interval (Redis is
// down, or the sink is not redis): stale figures would say the stream
// reaches further back than it may. It never waits on Redis, so a scrape
// does not either.
func (l *Logger) StreamStats() (StreamStats, bool) {
	l.statsMu.Lock()
	r, at := l.stats, l.statsAt
	l.statsMu.Unlock()
	since := time.Since(at)
	if at.IsZero() || since > 2*l.cfg.StatsInterval+l.statsTimeout() {
		return StreamStats{}, false
	}
	s := StreamStats{Length: r.length, Trimmed: r.trimmed, MaxLen: l.cfg.MaxLen}
	if r.oldestAge > 0 || r.length > 0 {
		s.OldestAge = r.oldestAge + since // it ages between reads
	}
	return s, true
}

// StreamReadErrors is the number of failed reads of the redis sink's
// stream for its figures (Redis down, an ACL user without XINFO, a key of
// another type at the stream's name): while they fail the figures are
// absent, and this is what says why.
func (l *Logger) StreamReadErrors() uint64 { return l.statsErrors.Load() }

func (l *Logger) statsTimeout() time.Duration { return min(statsReadTimeout, l.cfg.StatsInterval) }

// watchStream reads the sink's stream every stats_interval, until Stop.
// Periodically, and not at scrape time: a scrape (two Prometheus
// servers, a person's curl) never waits on Redis and adds no round trip
// to it, however many there are, and a Redis that is down or hung costs
// this goroutine a read's timeout, never a scrape or a check. On a
// goroutine of its own, not the writer's: a slow read must not hold
// records back. Every replica writing the stream reads it: one short
// script each per interval.
func (l *Logger) watchStream(ctx context.Context, r statsReader) {
	defer close(l.statsDone)
	t := time.NewTicker(l.cfg.StatsInterval)
	defer t.Stop()
	failing := false
	for {
		rctx, cancel := context.WithTimeout(ctx, l.statsTimeout())
		got, err := r.readStats(rctx)
		cancel()
		switch {
		case err == nil:
			l.statsMu.Lock()
			l.stats, l.statsAt = got, time.Now()
			l.statsMu.Unlock()
			failing = false
		case ctx.Err() != nil:
			return
		default:
			// Counted each time, logged once until a read succeeds.
			l.statsErrors.Add(1)
			if !failing {
				failing = true
				l.log.Warn("decision log stream not read; its metrics are absent until it is", "stream", l.cfg.Stream, "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (l *Logger) run() {
	defer close(l.done)
	defer l.closeSpool()
	ctx := context.Background()
	tick := time.NewTicker(l.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case sctx := <-l.stopc:
			l.drain(sctx, true)
			return
		case <-l.wake:
		case <-tick.C:
		}
		l.drain(ctx, false)
	}
}

// drain writes batches until nothing is queued or spooled. A failing
// sink is waited for (probed when it can be); records stay queued, or
// move to the spool, meanwhile. When final, drain keeps writing again
// until ctx ends, records staying in memory (a write that failed on a
// dead pooled connection is most often followed by one that succeeds on
// a fresh one); then what is left goes to the spool, or is counted as
// dropped without one.
func (l *Logger) drain(ctx context.Context, final bool) {
	backoff := l.cfg.BackoffMin
	for {
		batch, spooled := l.next(ctx)
		if len(batch) == 0 {
			return
		}
		err := l.sink.Write(ctx, batch)
		if err == nil {
			l.delivered(spooled)
			backoff = l.cfg.BackoffMin
			continue
		}
		l.sinkErrors.Add(1)
		if errors.Is(err, ErrUnconfirmed) {
			if spooled {
				l.spool.markRead()
			} else {
				l.unsure = len(batch)
			}
		}
		if !l.down {
			l.down = true
			l.log.Warn("decision log sink failed; records wait until it is back", "queued", l.QueueDepth(), "spooled_bytes", l.spooled.Load(), "error", err)
		}
		if l.spool != nil && !final {
			l.spill(ctx)
		}
		if !l.wait(ctx, backoff, final) {
			if final {
				l.giveUp(ctx)
			}
			return
		}
		backoff = min(backoff*2, l.cfg.BackoffMax)
	}
}

// next returns the oldest batch, and whether it was read from the spool:
// from the spool while it holds anything (what it holds is older than
// what is queued, so queued records join it first, as far as it has room),
// else pending, filled from the queue.
func (l *Logger) next(ctx context.Context) (batch [][]byte, spooled bool) {
	if l.spool == nil || l.spool.empty() {
		if len(l.pending) == 0 {
			l.take(ctx)
		}
		return l.pending, false
	}
	l.spill(ctx)
	// Read again after a failed write: the spool hands out the same
	// records until they are acknowledged.
	b, err := l.spool.read(l.cfg.BatchSize)
	if err != nil {
		l.log.Error("decision log spool unreadable", "error", err)
	}
	l.spooled.Store(l.spool.size())
	l.spoolBatch = append(l.spoolBatch[:0], b...)
	return l.spoolBatch, true
}

// delivered accounts for the batch next returned, written to the sink.
func (l *Logger) delivered(spooled bool) {
	keep := false
	if spooled {
		// A write of these whose reply was lost (this run's, or a
		// previous run's) may still be on its way: the sink keeps them.
		keep = l.spool.unsure()
		l.flushed.Add(uint64(len(l.spoolBatch)))
		if err := l.spool.ack(); err != nil {
			keep = true
			l.spoolErrors.Add(1)
			if log, n := l.ackFailures.Failed(time.Now(), ""); log {
				l.log.Error("decision log spool: acknowledgement not written; delivered records may be written again", "failures_since_last_log", n, "error", err)
			}
		} else if failing, n := l.ackFailures.OK(); failing {
			l.log.Info("decision log spool acknowledgements written again", "failures_since_last_log", n)
		}
		l.spooled.Store(l.spool.size())
		clear(l.spoolBatch)
		l.spoolBatch = l.spoolBatch[:0]
	} else {
		l.flushed.Add(uint64(len(l.pending)))
		l.release(len(l.pending))
	}
	if s, ok := l.sink.(Settler); ok {
		s.Settled(keep)
	}
	if l.down {
		l.down = false
		l.log.Info("decision log sink is back", "queued", l.QueueDepth(), "spooled_bytes", l.spooled.Load())
	}
}

// spill moves pending and everything queued to the spool, in order, as
// far as the spool has room. What it cannot take stays in memory (pending
// first, then the queue, both within the queue's bound) until the sink is
// back or the spool has room again: a full spool never costs a record the
// queue can hold.
func (l *Logger) spill(ctx context.Context) {
	for {
		if len(l.pending) > 0 {
			kept, err := l.spool.append(l.pending, l.unsure)
			if err != nil {
				l.spoolErrors.Add(1)
				if log, n := l.appendFailures.Failed(time.Now(), ""); log {
					l.log.Error("decision log spool write failed; records wait in memory within the queue's bound, past it they are dropped",
						"failures_since_last_log", n, "queued", l.QueueDepth(), "spool_dir", l.cfg.SpoolDir, "error", err)
				}
			} else if failing, n := l.appendFailures.OK(); failing {
				l.log.Info("decision log spool written again", "failures_since_last_log", n, "spool_dir", l.cfg.SpoolDir)
			}
			l.release(kept)
			if len(l.pending) > 0 {
				break
			}
		}
		if !l.take(ctx) {
			break
		}
	}
	l.spooled.Store(l.spool.size())
}

// release removes the first n records of pending, now written or on
// disk, and gives back the queue's room, in records and bytes, they held.
func (l *Logger) release(n int) {
	var size int64
	for _, b := range l.pendingSizes[:n] {
		size += b
	}
	l.unsure = max(l.unsure-n, 0)
	l.mu.Lock()
	l.inflight -= n
	l.bytes -= size
	l.mu.Unlock()
	rest := copy(l.pending, l.pending[n:])
	clear(l.pending[rest:])
	l.pending = l.pending[:rest]
	l.pendingSizes = l.pendingSizes[:copy(l.pendingSizes, l.pendingSizes[n:])]
}

// giveUp ends the final drain at Stop's deadline: what is left goes to
// the spool, as far as it has room, and the rest is discarded. The
// records are encoded for the spool past the deadline: masking them with
// the ended context would cost them their input.
func (l *Logger) giveUp(ctx context.Context) {
	if l.spool != nil {
		l.spill(context.WithoutCancel(ctx))
	}
	l.discard()
}

func (l *Logger) closeSpool() {
	if l.spool == nil {
		return
	}
	if err := l.spool.close(); err != nil {
		l.spoolErrors.Add(1)
		l.log.Error("decision log spool close", "error", err)
	}
}

// discard gives up on everything queued, counting it as dropped, but for
// the records a write whose reply was lost may have made: those are
// counted as unconfirmed.
func (l *Logger) discard() {
	l.mu.Lock()
	left := l.n + l.inflight
	clear(l.ring)
	l.head, l.n, l.inflight, l.bytes = 0, 0, 0, 0
	l.mu.Unlock()
	clear(l.pending)
	l.pending, l.pendingSizes = l.pending[:0], l.pendingSizes[:0]
	unsure := min(l.unsure, left)
	l.unsure = 0
	if unsure > 0 {
		l.unconfirmed.Add(uint64(unsure))
		l.log.Warn("decision log stopped with records whose write is not confirmed: the sink may hold them", "unconfirmed", unsure)
	}
	if lost := left - unsure; lost > 0 {
		l.dropped.Add(uint64(lost))
		l.log.Error("decision log stopped with records not written", "lost", lost)
	}
}

// wait pauses after a failed write until the sink is likely back. A sink
// that can probe is probed every backoff_min and the wait ends at the
// first probe that succeeds; another sink waits out backoff. With a
// spool, queued records move to disk while waiting (also while a probe
// is under way: one to a Redis that refuses connections takes its dial
// retries), so the queue fills only once the spool is full; but not in
// the final drain, where no record arrives and the queue's records stay
// for the next write until Stop's deadline. wait reports
// false when it was cut short and the drain should return (ctx ended, or
// Stop was asked while not final).
func (l *Logger) wait(ctx context.Context, backoff time.Duration, final bool) bool {
	prober, probes := l.sink.(Prober)
	step := backoff
	if probes {
		step = l.cfg.BackoffMin
	}
	spills := l.spool != nil && !final
	var wake chan struct{}
	if spills {
		wake = l.wake
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends a probe still under way
	var probed chan error
	t := time.NewTimer(step)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if !probes {
				return ctx.Err() == nil
			}
			probed = make(chan error, 1)
			go func(c chan<- error) { c <- prober.Probe(pctx) }(probed)
		case err := <-probed:
			if err == nil {
				return ctx.Err() == nil
			}
			probed = nil
			t.Reset(step)
		case <-wake:
			l.spill(ctx)
		case <-ctx.Done():
			return false
		case sctx := <-l.stopc:
			if final {
				return true
			}
			// Stop arrived while waiting: hand it back to run.
			l.stopc <- sctx
			return false
		}
		if spills {
			l.spill(ctx)
		}
	}
}

// take moves up to one batch from the queue to pending, encoding it.
func (l *Logger) take(ctx context.Context) bool {
	l.mu.Lock()
	k := min(l.n, l.cfg.BatchSize)
	batch := slices.Grow(l.taken[:0], k)[:k]
	l.taken = batch
	for i := range k {
		idx := (l.head + i) % len(l.ring)
		batch[i] = l.ring[idx]
		l.ring[idx] = queued{}
	}
	l.head = (l.head + k) % len(l.ring)
	l.n -= k
	l.inflight += k
	l.mu.Unlock()
	if k == 0 {
		return false
	}
	// One buffer holds the whole batch, reused from batch to batch: one
	// record per check no longer costs a copy of its own. pending is
	// empty here, so nothing still reads the buffer.
	buf := l.batchBuf[:0]
	for _, q := range batch {
		start := len(buf)
		b, err := l.appendRecord(ctx, buf, q.d, q.cut)
		if err != nil {
			l.log.Error("decision log record not encodable", "decision_id", q.d.ID, "error", err)
			l.mu.Lock()
			l.inflight--
			l.bytes -= q.size
			l.mu.Unlock()
			l.dropped.Add(1)
			continue
		}
		buf = b
		l.pending = append(l.pending, buf[start:len(buf):len(buf)])
		l.pendingSizes = append(l.pendingSizes, q.size)
	}
	clear(batch) // encoded: the decisions are no longer needed
	l.batchBuf = buf
	if cap(buf) > maxBatchBuffer {
		l.batchBuf = nil // the pending records keep it while they need it
	}
	return len(l.pending) > 0 || l.take(ctx)
}

// maxBatchBuffer keeps a burst of large records from pinning its buffer.
const maxBatchBuffer = 1 << 20

// appendRecord appends d's record to dst, in its oversized form when cut;
// on an error dst is returned as it was.
func (l *Logger) appendRecord(ctx context.Context, dst []byte, d *sidecar.Decision, cut bool) ([]byte, error) {
	rec := newRecord(d)
	// The record's path is the request's without its query; its path
	// parameters (/app;jsessionid=...) are masked as the input's are,
	// whether or not the record keeps its input.
	rec.Path, _ = l.masker.maskPathParams(rec.Path)
	if rec.DecisionID == "" {
		// Sinks may repeat a batch after a failure; an id tells repeats apart.
		rec.DecisionID = randomID()
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	if l.cfg.InputIncluded() && d.Input != nil {
		l.masker.mask(ctx, rec, d.Input, d.Policy)
		if rec.MaskError != "" {
			// Log the first failure and then every 1000th, not every record.
			if n := l.maskErrors.Add(1); n%1000 == 1 {
				l.log.Warn("decision log mask policy failed; input left out of the record", "failures", n, "error", rec.MaskError)
			}
		}
		if rec.unread {
			l.maskSpent.Add(1)
		}
	}
	b, err := rec.appendJSON(dst)
	if err != nil && rec.Input != nil {
		// An input that cannot be written costs the record its input,
		// never the record.
		rec.Input, rec.MaskError = nil, "input not loggable: "+err.Error()
		b, err = rec.appendJSON(dst)
	}
	if err == nil && (cut || len(b)-len(dst) > l.cfg.MaxRecordBytes) {
		// A client chooses much of what a record holds; past the bound
		// (or the queue's) the record keeps the decision and loses the
		// input.
		l.oversized.Add(1)
		rec.dropInput()
		b, err = rec.appendJSON(dst)
	}
	if err != nil {
		return dst, err
	}
	return b, nil
}

// spoolErrorLogEvery is how often, at most, a run of failing spool
// writes is logged.
const spoolErrorLogEvery = time.Minute

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
