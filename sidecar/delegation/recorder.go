package delegation

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// RecordStore is where a Recorder appends: the audit trail (the session
// log is read from it) and the events stream the host's mailer reads.
type RecordStore interface {
	AppendAudit(ctx context.Context, a *sidecar.AuditEntry) error
	AppendEvent(ctx context.Context, e *sidecar.Event) error
}

// Recorder appends the audit entries and events of state changes that
// are already committed: the change stands whatever the append does, so
// an append that fails is not the caller's error but the Recorder's to
// finish. It is queued, in order, and a relay appends it again until the
// store takes it. Every append carries a Once, so one whose reply was lost
// (and which the store may have taken) is not recorded twice. What cannot
// be kept (past the queue's bound, still queued when Stop's deadline runs
// out, refused by the store as invalid, or failing while no relay runs)
// is logged and counted: deputy_audit_dropped_total and
// deputy_events_undelivered_total. The records of session starts and
// ends, of consent settings and lapses, of partner access requests,
// decisions, grant revocations and shares, and of reseller assignment
// puts, imports and deletes are not lost with them: the store keeps those
// changes for sidecar.AppendOnceWindow, and sweeps record again the ones
// whose records are missing (Impersonation.Sweep, Partners.RecordAgain,
// Resellers.RecordAgain).
type Recorder struct {
	store  RecordStore
	logger *slog.Logger

	mu      sync.Mutex
	queue   []record // waiting for the relay, oldest first
	running bool

	wake  chan struct{}
	stopc chan context.Context
	done  chan struct{}

	auditDropped  atomic.Uint64
	eventsDropped atomic.Uint64
}

// record is one queued append: an audit entry or an event.
type record struct {
	audit *sidecar.AuditEntry
	event *sidecar.Event
}

// Recorder bounds.
const (
	// RecorderQueueSize bounds the appends waiting for the store.
	RecorderQueueSize  = 10_000
	recorderBackoffMin = 100 * time.Millisecond
	recorderBackoffMax = 5 * time.Second
)

// NewRecorder returns a recorder appending to store. Until Start, an
// append that fails is dropped (and counted) at once.
func NewRecorder(store RecordStore, logger *slog.Logger) *Recorder {
	if logger == nil {
		logger = slog.Default()
	}
	return &Recorder{store: store, logger: logger, wake: make(chan struct{}, 1),
		stopc: make(chan context.Context), done: make(chan struct{})}
}

// Audit appends a; a.ID is set on the caller's value. Without a.Once,
// it gets one of its own.
func (r *Recorder) Audit(ctx context.Context, a *sidecar.AuditEntry) {
	if a.Once == "" {
		a.Once = onceID()
	}
	r.append(ctx, record{audit: a})
}

// Event appends e; e.ID is set on the caller's value. Without e.Once, it
// gets one of its own.
func (r *Recorder) Event(ctx context.Context, e *sidecar.Event) {
	if e.Once == "" {
		e.Once = onceID()
	}
	r.append(ctx, record{event: e})
}

// append tries rec at once unless older records wait (the trail keeps the
// order of what happened), and queues it for the relay when that fails.
func (r *Recorder) append(ctx context.Context, rec record) {
	r.mu.Lock()
	waiting := len(r.queue) > 0 && r.running
	r.mu.Unlock()
	var err error
	if !waiting {
		if err = r.write(ctx, rec); err == nil {
			return
		}
		if !retryable(err) {
			r.drop(rec, err)
			return
		}
	}
	r.mu.Lock()
	if !r.running || len(r.queue) >= RecorderQueueSize {
		r.mu.Unlock()
		if err == nil {
			err = sidecar.Unavailable(fmt.Sprintf("%d appends already wait for the store", RecorderQueueSize), nil)
		}
		r.drop(rec, err)
		return
	}
	r.queue = append(r.queue, rec)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Recorder) write(ctx context.Context, rec record) error {
	if rec.audit != nil {
		return r.store.AppendAudit(ctx, rec.audit)
	}
	return r.store.AppendEvent(ctx, rec.event)
}

// retryable: an invalid record is refused again on every try.
func retryable(err error) bool { return sidecar.ErrorCode(err) != sidecar.EINVALID }

func (r *Recorder) drop(rec record, err error) {
	if rec.audit != nil {
		r.auditDropped.Add(1)
		r.logger.Error("audit entry lost; counted in deputy_audit_dropped_total", "action", rec.audit.Action,
			"customer", rec.audit.Customer, "target", rec.audit.Target, "actor", rec.audit.Actor, "error", err)
		return
	}
	r.eventsDropped.Add(1)
	r.logger.Error("event lost; counted in deputy_events_undelivered_total", "type", rec.event.Type,
		"customer", rec.event.Customer, "actor", rec.event.Actor, "error", err)
}

// Start runs the relay until Stop. ctx is for start-up only.
func (r *Recorder) Start(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return sidecar.Errorf(sidecar.EINTERNAL, "recorder already started")
	}
	r.running = true
	go r.run()
	return nil
}

// Stop appends what is queued, retrying until ctx ends, then stops the
// relay; what is still queued then is dropped, counted, and reported.
func (r *Recorder) Stop(ctx context.Context) error {
	r.mu.Lock()
	running := r.running
	r.mu.Unlock()
	if !running {
		return nil
	}
	r.stopc <- ctx
	<-r.done
	r.mu.Lock()
	r.running = false
	lost := r.queue
	r.queue = nil
	r.mu.Unlock()
	for _, rec := range lost {
		r.drop(rec, ctx.Err())
	}
	if len(lost) > 0 {
		return sidecar.Unavailable("audit entries and events not appended before shutdown", ctx.Err())
	}
	return nil
}

// Pending is the number of appends waiting for the store.
func (r *Recorder) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

// AuditDropped counts audit entries of committed changes never appended.
func (r *Recorder) AuditDropped() uint64 { return r.auditDropped.Load() }

// EventsDropped counts events of committed changes never appended.
func (r *Recorder) EventsDropped() uint64 { return r.eventsDropped.Load() }

// run appends the queue, oldest first, waiting out a failing store with a
// growing backoff. Once Stop is asked, it keeps going until the queue is
// empty or Stop's ctx ends.
func (r *Recorder) run() {
	defer close(r.done)
	ctx := context.Background()
	stopping := false // Stop asked; ctx is then Stop's
	backoff := recorderBackoffMin
	for {
		r.mu.Lock()
		var rec record
		n := len(r.queue)
		if n > 0 {
			rec = r.queue[0]
		}
		r.mu.Unlock()
		if n == 0 {
			if stopping {
				return
			}
			select {
			case <-r.wake:
			case ctx = <-r.stopc:
				stopping = true
			}
			continue
		}
		err := r.write(ctx, rec)
		if err == nil || !retryable(err) {
			if err != nil {
				r.drop(rec, err)
			}
			r.mu.Lock()
			r.queue[0] = record{}
			r.queue = r.queue[1:]
			r.mu.Unlock()
			backoff = recorderBackoffMin
			continue
		}
		if backoff == recorderBackoffMin {
			r.logger.Warn("audit entries and events wait for the store", "pending", n, "error", err)
		}
		var stopc <-chan context.Context
		if !stopping {
			stopc = r.stopc
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case ctx = <-stopc:
			stopping = true
		case <-ctx.Done():
			t.Stop()
			return
		}
		t.Stop()
		backoff = min(backoff*2, recorderBackoffMax)
	}
}

// keptOverlap is the least a sweep of kept changes reads back from
// before the time of the last one that recorded everything: a change is
// kept at its writer's time, which may lie before a sweep that ran while
// the change was not yet there to read. A narrowing write's mark lands
// up to a second after its write (it goes ahead of a slow mark), and
// replicas' clocks differ. A short sweep interval alone would leave such
// a change behind; reading it twice costs a lookup, as the sweep
// remembers what it recorded.
const keptOverlap = 10 * time.Second

// keptSweep is how far a sweep recording again the changes a store keeps
// for sidecar.AppendOnceWindow (Partners.RecordAgain,
// Resellers.RecordAgain) has got: it reads back what was kept since the
// last sweep that recorded everything it read (one interval, and at least
// keptOverlap, before it: a write made at an earlier time may land late),
// so a change costs each replica one more record at most; the first sweep
// of a process reads
// back the whole window, as its predecessor may have stopped with records
// not appended and left no trace; a sweep that fails to append reads back
// from the same time again.
type keptSweep struct {
	mu   sync.Mutex
	from time.Time            // changes from then on are read back; zero: the whole window
	done map[string]time.Time // Once → when a sweep recorded it, since from
}

// since is the time a sweep at now reads back from.
func (k *keptSweep) since(now time.Time) time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.from.IsZero() {
		return now.Add(-sidecar.AppendOnceWindow)
	}
	return k.from
}

// record runs record, the recording of the change whose records carry
// once, unless a sweep of this process recorded it since from, and
// remembers it as recorded at now when record succeeds.
func (k *keptSweep) record(now time.Time, once string, record func() error) error {
	k.mu.Lock()
	_, done := k.done[once]
	k.mu.Unlock()
	if done {
		return nil
	}
	if err := record(); err != nil {
		return err
	}
	k.mu.Lock()
	if k.done == nil {
		k.done = make(map[string]time.Time)
	}
	k.done[once] = now
	k.mu.Unlock()
	return nil
}

// swept moves the next sweep's start to from, once a sweep recorded all
// it read, forgetting what was recorded before it.
func (k *keptSweep) swept(from time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.from = from
	for once, at := range k.done {
		if at.Before(from) {
			delete(k.done, once)
		}
	}
}

// onceOf is the Once of the records of one change, made of what names
// the change (kind, then its parts) and nothing else: every call recording
// the change, first or again, makes the same one. Parts are hashed, so
// ids of any spelling make a Once of fixed length and alphabet.
func onceOf(kind string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return kind + ":" + hex.EncodeToString(h.Sum(nil)[:16])
}

func onceID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
