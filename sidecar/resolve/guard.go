package resolve

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// Defaults of the check path's state lookups.
const (
	// DefaultStateBudget stays below Envoy's default ext_authz timeout
	// (200 ms), so Envoy gets Deputy's 503 rather than its own timeout.
	DefaultStateBudget          = 100 * time.Millisecond
	DefaultStateBreakerFailures = 5
	DefaultStateProbeInterval   = 250 * time.Millisecond
)

// LookupConfig bounds how long a check waits for state.
type LookupConfig struct {
	Budget          time.Duration `yaml:"budget" usage:"time one state lookup of a check may take before the check fails closed (503 state_unavailable); a check may wait on up to three lookups in turn, so keep it under a quarter of Envoy's ext_authz timeout (the chart enforces that)"`
	BreakerFailures int           `yaml:"breaker_failures" usage:"consecutive failed state lookups after which checks needing state fail at once, until a probe finds the store back"`
	ProbeInterval   time.Duration `yaml:"probe_interval" usage:"how often the store is probed while state lookups fail at once"`
}

// SetDefaults fills every unset field with its default.
func (c *LookupConfig) SetDefaults() {
	if c.Budget == 0 {
		c.Budget = DefaultStateBudget
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = DefaultStateBreakerFailures
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultStateProbeInterval
	}
}

// Validate checks a defaulted config.
func (c LookupConfig) Validate() error {
	switch {
	case c.Budget <= 0:
		return sidecar.Invalid("state_lookup.budget", "must be positive")
	case c.BreakerFailures < 1:
		return sidecar.Invalid("state_lookup.breaker_failures", "must be at least 1")
	case c.ProbeInterval <= 0:
		return sidecar.Invalid("state_lookup.probe_interval", "must be positive")
	}
	return nil
}

// GuardedSource is the state the check path reads: sessions and consents
// for impersonation, grants, shares and assignments for acting on behalf.
type GuardedSource interface {
	SessionState
	CachedSource
}

// Why a lookup failed, as reported to a GuardObserver.
const (
	LookupBreakerOpen = "breaker_open" // refused at once: the breaker is open
	LookupOverBudget  = "over_budget"  // the store did not answer within the budget
	LookupUnavailable = "unavailable"  // the store answered with a failure
)

// LookupFailures lists every reason a GuardObserver may be told, so
// metrics can show each one at zero before the first failure.
func LookupFailures() []string {
	return []string{LookupBreakerOpen, LookupOverBudget, LookupUnavailable}
}

// GuardObserver learns what a StateGuard does (the metrics package
// implements it). StateBreakerChanged is called once per transition, in
// order; StateLookupFailed once per failed lookup, on the check path.
type GuardObserver interface {
	StateBreakerChanged(open bool)
	StateLookupFailed(reason string)
}

type nopGuardObserver struct{}

func (nopGuardObserver) StateBreakerChanged(bool) {}
func (nopGuardObserver) StateLookupFailed(string) {}

// GuardOption configures a StateGuard.
type GuardOption func(*StateGuard)

// WithGuardObserver reports the breaker's transitions and failed lookups.
func WithGuardObserver(o GuardObserver) GuardOption {
	return func(g *StateGuard) { g.obs = o }
}

// StateGuard stands between the check path and the store. Every lookup
// gets the budget; after BreakerFailures consecutive failures the breaker
// opens and lookups fail at once (EUNAVAILABLE, so the check answers 503
// state_unavailable) without calling the store, until a probe (Ping) run
// every ProbeInterval finds it back. Lookups served from the resolvers'
// caches never reach the guard, so fresh entries keep deciding.
type StateGuard struct {
	src   GuardedSource
	probe func(context.Context) error
	cfg   LookupConfig
	log   *slog.Logger
	obs   GuardObserver

	failures atomic.Int64
	open     atomic.Bool
	rejected atomic.Uint64

	mu      sync.Mutex // orders trips and recoveries, so observers see them in order
	since   time.Time  // when the breaker last opened, under mu
	closed  bool
	stop    chan struct{}
	probing sync.WaitGroup
}

var (
	_ SessionState = (*StateGuard)(nil)
	_ CachedSource = (*StateGuard)(nil)
)

// errBreakerOpen is why a lookup failed without reaching the store.
var errBreakerOpen = errors.New("state store failing: lookups refused until a probe succeeds")

// NewStateGuard guards src; probe tells whether the store answers again.
// cfg must be valid.
func NewStateGuard(src GuardedSource, probe func(context.Context) error, cfg LookupConfig, log *slog.Logger, opts ...GuardOption) *StateGuard {
	if log == nil {
		log = slog.Default()
	}
	g := &StateGuard{src: src, probe: probe, cfg: cfg, log: log, obs: nopGuardObserver{}, stop: make(chan struct{})}
	for _, o := range opts {
		o(g)
	}
	return g
}

// Open reports whether lookups are refused without reaching the store.
func (g *StateGuard) Open() bool { return g.open.Load() }

// Rejected is the number of lookups refused while the breaker was open.
func (g *StateGuard) Rejected() uint64 { return g.rejected.Load() }

// Close stops the probe and waits for it.
func (g *StateGuard) Close() error {
	g.mu.Lock()
	if !g.closed {
		g.closed = true
		close(g.stop)
	}
	g.mu.Unlock()
	g.probing.Wait()
	return nil
}

// guarded runs one lookup through g.
func guarded[T any](g *StateGuard, ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	var zero T
	if g.open.Load() {
		g.rejected.Add(1)
		g.obs.StateLookupFailed(LookupBreakerOpen)
		return zero, sidecar.Unavailable("state_breaker_open", errBreakerOpen)
	}
	lctx, cancel := context.WithTimeout(ctx, g.cfg.Budget)
	v, err := fn(lctx)
	over := lctx.Err() == context.DeadlineExceeded && ctx.Err() == nil
	cancel()
	switch {
	case err == nil, sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE && !over:
		// Answered (a not-found is an answer too).
		g.failures.Store(0)
		return v, err
	case ctx.Err() != nil:
		// The check's caller gave up: says nothing about the store.
		return v, err
	}
	if over {
		g.obs.StateLookupFailed(LookupOverBudget)
	} else {
		g.obs.StateLookupFailed(LookupUnavailable)
	}
	if g.failures.Add(1) >= int64(g.cfg.BreakerFailures) {
		g.trip(err)
	}
	if over {
		return zero, sidecar.Unavailable("state lookup over its budget of "+g.cfg.Budget.String(), err)
	}
	return v, err
}

// guardedErr is guarded for lookups that return only an error.
func guardedErr(g *StateGuard, ctx context.Context, fn func(context.Context) error) error {
	_, err := guarded(g, ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
	return err
}

// trip opens the breaker and starts the probe that closes it. This and
// the recovery are the two lines Deputy logs about an outage, however
// long it lasts.
func (g *StateGuard) trip(cause error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || !g.open.CompareAndSwap(false, true) {
		return
	}
	g.since = time.Now()
	g.obs.StateBreakerChanged(true)
	g.log.Warn("state unavailable: checks needing state are denied (503 state_unavailable) until the store answers a probe",
		"failures", g.failures.Load(), "error", cause)
	g.probing.Add(1)
	go g.probeUntilBack()
}

func (g *StateGuard) probeUntilBack() {
	defer g.probing.Done()
	t := time.NewTicker(g.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), g.cfg.Budget)
		err := g.probe(ctx)
		cancel()
		if err == nil {
			g.resume()
			return
		}
	}
}

// resume closes the breaker once a probe found the store back.
func (g *StateGuard) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.failures.Store(0)
	g.open.Store(false)
	g.obs.StateBreakerChanged(false)
	g.log.Info("state available again: lookups reach the store",
		"down_for", time.Since(g.since).Round(time.Millisecond).String(), "refused_total", g.rejected.Load())
}

func (g *StateGuard) SessionByToken(ctx context.Context, tokenHash string) (*sidecar.Session, error) {
	return guarded(g, ctx, func(ctx context.Context) (*sidecar.Session, error) { return g.src.SessionByToken(ctx, tokenHash) })
}

func (g *StateGuard) GetCustomerState(ctx context.Context, customer string) (*sidecar.CustomerState, error) {
	return guarded(g, ctx, func(ctx context.Context) (*sidecar.CustomerState, error) {
		return g.src.GetCustomerState(ctx, customer)
	})
}

func (g *StateGuard) TouchSession(ctx context.Context, id string, at time.Time) error {
	return guardedErr(g, ctx, func(ctx context.Context) error { return g.src.TouchSession(ctx, id, at) })
}

func (g *StateGuard) EffectiveGrants(ctx context.Context, customer, partnerOrg, user string) (sidecar.EffectiveGrants, error) {
	return guarded(g, ctx, func(ctx context.Context) (sidecar.EffectiveGrants, error) {
		return g.src.EffectiveGrants(ctx, customer, partnerOrg, user)
	})
}

func (g *StateGuard) SharesFor(ctx context.Context, customer, partnerOrg, user string) ([]string, error) {
	return guarded(g, ctx, func(ctx context.Context) ([]string, error) { return g.src.SharesFor(ctx, customer, partnerOrg, user) })
}

func (g *StateGuard) GetAssignment(ctx context.Context, customer string) (*sidecar.Assignment, error) {
	return guarded(g, ctx, func(ctx context.Context) (*sidecar.Assignment, error) { return g.src.GetAssignment(ctx, customer) })
}

// Subscribe passes through: invalidations are not lookups.
func (g *StateGuard) Subscribe(fn func(key string)) (cancel func()) { return g.src.Subscribe(fn) }

// Hears passes the store's sidecar.HearingLease through: true for a
// store that needs none.
func (g *StateGuard) Hears() bool {
	if h, ok := g.src.(sidecar.HearingLease); ok {
		return h.Hears()
	}
	return true
}
