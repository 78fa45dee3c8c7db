package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/deputyhq/deputy/sidecar/redis"
)

// persistenceCheckEvery is how often Redis's persistence is read;
// persistenceReadTimeout bounds one reading.
const (
	persistenceCheckEvery  = 30 * time.Second
	persistenceReadTimeout = 5 * time.Second
)

// aofCheck names the readiness condition redis.require_aof adds: every
// master reported AOF on at the last reading. Unlike the store's, the
// probes keep it: it is the operator's demand that no replica serve on
// a Redis that would undo answered writes when it restarts.
const aofCheck = "redis_aof"

// Log messages of persistenceWatch, matched by its tests.
const (
	aofOffMsg     = "redis keeps Deputy's state without AOF (appendonly no): a Redis restart reloads its last RDB snapshot and undoes every answered write since; revoked grants, withdrawn consents and removed assignments are honoured again, and their audit entries and events vanish. Set appendonly yes in redis.conf (CONFIG SET alone lasts until the next restart: follow it with CONFIG REWRITE)"
	aofOnMsg      = "redis appends Deputy's state to an AOF again (appendonly yes)"
	aofUnreadMsg  = "redis persistence not read; deputy_redis_aof_enabled is absent until it is"
	aofAtRiskNote = "revocations, consent withdrawals, assignment removals, audit entries, events"
)

// persistenceWatch reads Redis's persistence (INFO persistence on every
// master) at start and every period after, in the background: a check or
// a scrape never waits on Redis, and a Redis that is down or hung costs
// this goroutine a reading's timeout only. It logs one warning when AOF
// is found off and one line each time that changes; a reading that fails
// (Redis down, INFO refused by an ACL or a managed Redis) withdraws the
// figure, is counted, and is logged once until one succeeds.
type persistenceWatch struct {
	periodic
	read    func(context.Context) (redis.Persistence, error)
	timeout time.Duration // bounds one reading
	log     *slog.Logger

	last     atomic.Pointer[redis.Persistence] // the last reading; nil when it failed
	known    atomic.Pointer[redis.Persistence] // the last reading that succeeded
	lastErr  atomic.Pointer[string]            // why the last reading failed
	failures atomic.Uint64

	logged  *bool // AOF as last logged; the loop's own
	failing bool  // the loop's own
}

func newPersistenceWatch(read func(context.Context) (redis.Persistence, error), every time.Duration, log *slog.Logger) *persistenceWatch {
	w := &persistenceWatch{read: read, timeout: min(persistenceReadTimeout, every), log: log}
	w.periodic = periodic{every: every, run: w.check}
	return w
}

// aof is the last reading: whether every master has AOF on, and whether
// the last reading succeeded.
func (w *persistenceWatch) aof() (aof, ok bool) {
	if p := w.last.Load(); p != nil {
		return p.AOF(), true
	}
	return false, false
}

// readErrors counts the failed readings.
func (w *persistenceWatch) readErrors() uint64 { return w.failures.Load() }

// ready is the aofCheck condition. It answers from the last reading that
// succeeded, so a Redis outage (the store's own condition) does not also
// take every replica out of its Service here; until one has succeeded it
// fails, as AOF on is then not known.
func (w *persistenceWatch) ready(context.Context) error {
	p := w.known.Load()
	switch {
	case p == nil:
		why := "not read yet"
		if e := w.lastErr.Load(); e != nil {
			why = *e
		}
		return fmt.Errorf("redis.require_aof: Redis persistence not known: %s", why)
	case !p.AOF():
		return fmt.Errorf("redis.require_aof: AOF is off (appendonly no) on %s", strings.Join(p.WithoutAOF, ", "))
	}
	return nil
}

func (w *persistenceWatch) check(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, w.timeout)
	p, err := w.read(rctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return // stopping
		}
		w.last.Store(nil)
		msg := err.Error()
		w.lastErr.Store(&msg)
		w.failures.Add(1)
		if !w.failing {
			w.failing = true
			w.log.Warn(aofUnreadMsg, "error", err)
		}
		return
	}
	w.failing = false
	w.known.Store(&p)
	w.last.Store(&p)
	aof := p.AOF()
	if w.logged != nil && *w.logged == aof {
		return
	}
	switch {
	case !aof:
		w.log.Warn(aofOffMsg, "masters_without_aof", p.WithoutAOF, "masters", p.Masters, "at_risk", aofAtRiskNote)
	case w.logged != nil: // back on; AOF on at the first reading says nothing
		w.log.Info(aofOnMsg, "masters", p.Masters)
	}
	w.logged = &aof
}
