package main

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/actortoken"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/metrics"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// component is one part of `deputy serve`, with the lifecycle of OPA's
// plugins: Start uses ctx for start-up only (background work runs on a
// context the component owns), Stop bounds shutdown by ctx. serve starts
// components in order and stops them in reverse.
type component interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// readiness is one condition /readyz reports.
type readiness struct {
	name  string
	check func(context.Context) error
}

// policyPart is the policy engine and the source that feeds it (a
// directory, a bundle file or a bundle server).
type policyPart struct {
	engine *policy.Engine
	source *policy.Source

	onChange atomic.Pointer[func()] // told after every attempt that found something new
}

func newPolicyPart(cfg policy.Config, log *slog.Logger, m *metrics.Metrics) (*policyPart, error) {
	// Activations are counted where they happen, refusals where every
	// attempt ends: a bundle refused before compiling (unreadable, badly
	// signed) never reaches the engine. Failed fetches, which recur at
	// every poll, are counted apart, by the source.
	p := &policyPart{}
	engine := newEngine(cfg, log, policy.OnActivate(func(a *policy.Activation, err error) {
		if err == nil {
			m.ObserveActivation(a.Revision, a.ActivatedAt, nil)
		}
	}))
	src, err := policy.NewSource(cfg, engine, policy.WithSourceLogger(log),
		policy.OnAttempt(func(_ policy.Status, err error) {
			if err != nil && !policy.FetchFailed(err) {
				m.ObserveActivation("", time.Time{}, err)
			}
			if f := p.onChange.Load(); f != nil {
				(*f)()
			}
		}))
	if err != nil {
		return nil, err
	}
	p.engine, p.source = engine, src
	if err := m.RegisterBundleSource(func() bool { return src.Status().LastError != "" }, src.FetchFailures); err != nil {
		return nil, err
	}
	if err := m.RegisterPolicyAnswers(engine.AnswersKept); err != nil {
		return nil, err
	}
	return p, nil
}

// Start loads the policies; a set failing an activation check (newEngine)
// is refused here as on every later reload.
func (p *policyPart) Start(ctx context.Context) error { return p.source.Start(ctx) }

func (p *policyPart) Stop(ctx context.Context) error { return p.source.Stop(ctx) }

// notify has f called after every policy attempt that found something
// new: readiness may have changed.
func (p *policyPart) notify(f func()) { p.onChange.Store(&f) }

func (p *policyPart) ready(context.Context) error {
	if st := p.source.Status(); !st.Ready {
		if st.LastError != "" {
			return errors.New(st.LastError)
		}
		return errors.New("no policy active")
	}
	return nil
}

// data is the active policy's data document (nil before the first
// activation): business rules the delegation lifecycles read.
func (p *policyPart) data() map[string]any {
	if a := p.engine.Current(); a != nil {
		return a.Data()
	}
	return nil
}

// statePart is the state store: Redis when configured, else the embedded
// in-process store. It is stopped after the decision log, which may write
// through the same Redis client.
type statePart struct {
	store  sidecar.Store
	client goredis.UniversalClient // nil on the embedded store
	ping   func(context.Context) error
	redis  *redis.Store // nil on the embedded store
	log    *slog.Logger
}

func newStatePart(cfg *Config, log *slog.Logger, m *metrics.Metrics) (*statePart, error) {
	if !cfg.Redis.Enabled() {
		if !cfg.Dev {
			log.Warn("no redis configured: state lives in this process only; run a single replica")
		}
		// The embedded store's events have no consumer groups, so none is
		// ever dropped before one acknowledged it: the family is exported
		// at zero, as the dashboard and rules query it on every instance.
		if err := m.RegisterEventsDropped(func() uint64 { return 0 }); err != nil {
			return nil, err
		}
		// One process: every invalidation is applied before the write returns.
		if err := m.RegisterInvalidationsUnconfirmed(func() uint64 { return 0 }); err != nil {
			return nil, err
		}
		// No Redis replicas: nothing to wait for.
		if err := m.RegisterNarrowingUnreplicated(func() uint64 { return 0 }); err != nil {
			return nil, err
		}
		// One process hears every invalidation.
		if err := m.RegisterInvalidationLease(func() bool { return true }); err != nil {
			return nil, err
		}
		// One process, one clock: nothing judges at another clock.
		if err := m.RegisterRedisClockOffset(func() (time.Duration, bool) { return 0, true }); err != nil {
			return nil, err
		}
		return &statePart{store: memory.New()}, nil
	}
	if !cfg.Dev && !cfg.Redis.TLS && cfg.Redis.Remote() {
		log.Warn("redis.tls is off: sessions, grants, consents and the Redis password cross the network in clear; "+
			"set redis.tls (or keep Redis on loopback)", "setting", "redis.tls")
	}
	client, err := redis.NewClient(cfg.Redis)
	if err != nil {
		return nil, err
	}
	client.AddHook(m.RedisHook())
	// go-redis has one process-wide logger, which reports every failed
	// dial: route it through Deputy's log, bounded per kind of message.
	goredis.SetLogger(redis.NewClientLogger(log, redis.DefaultClientLogInterval, time.Now))
	rs := redis.NewFromClient(client, cfg.Redis, redis.WithLogger(log))
	if err := m.RegisterEventsDropped(rs.EventsDropped); err != nil {
		_ = client.Close()
		return nil, err
	}
	if err := m.RegisterInvalidationsUnconfirmed(rs.InvalidationsUnconfirmed); err != nil {
		_ = client.Close()
		return nil, err
	}
	if err := m.RegisterNarrowingUnreplicated(rs.NarrowingUnreplicated); err != nil {
		_ = client.Close()
		return nil, err
	}
	if err := m.RegisterInvalidationLease(rs.Hears); err != nil {
		_ = client.Close()
		return nil, err
	}
	return &statePart{store: rs, client: client, ping: rs.Ping, redis: rs, log: log}, nil
}

// Start files the assignments an earlier version stored under an unfolded
// customer id under the folded one, and removes those of ids that may not
// be assigned (redis.FoldAssignments). Redis being
// down does not stop the start: until a later start moves them, such
// assignments count as unassigned, which withdraws access and widens none.
func (s *statePart) Start(ctx context.Context) error {
	if s.redis == nil {
		return nil
	}
	rep, err := s.redis.FoldAssignments(ctx)
	switch {
	case err != nil:
		s.log.Error("assignments under unfolded customer ids not moved; they count as unassigned until a start moves them", "error", err)
	case rep != (redis.FoldReport{}):
		s.log.Warn("assignments under unfolded customer ids moved", "moved", rep.Moved, "merged", rep.Merged, "conflicts_removed", rep.Conflicts, "refused_ids_removed", rep.Refused)
	}
	return nil
}

func (s *statePart) Stop(context.Context) error {
	err := s.store.Close()
	if s.client != nil {
		err = errors.Join(err, s.client.Close())
	}
	return err
}

// newDecisionLog builds the asynchronous, bounded, masked decision logger.
// Its writer runs until Stop, which flushes what is queued: it must not
// end with the signal that starts the shutdown, while checks still run.
// It masks the credential carriers as credential headers and query
// parameters: an upstream reads a bearer token from them, so a record
// holding one in clear hands that token to every reader of the log.
func newDecisionLog(cfg decisionlog.Config, carriers []string, client goredis.UniversalClient, log *slog.Logger, m *metrics.Metrics) (*decisionlog.Logger, error) {
	cc, err := authz.ParseCredentialCarriers(carriers)
	if err != nil {
		return nil, err
	}
	sink, err := decisionlog.NewSink(cfg, client, os.Stdout)
	if err != nil {
		return nil, err
	}
	dlog, err := decisionlog.New(cfg, sink, decisionlog.WithMaskPolicy(), decisionlog.WithLogger(log),
		decisionlog.WithCredentialCarriers(cc.HeaderNames(), cc.QueryNames()))
	if err != nil {
		return nil, err
	}
	if err := m.RegisterDecisionLog(dlog); err != nil {
		return nil, err
	}
	if cfg.Sink == decisionlog.SinkRedis {
		// Any client's checks rotate the stream: these show how far back
		// it reaches, and how much it discarded.
		if err := m.RegisterDecisionLogStream(func() (metrics.DecisionLogStream, bool) {
			s, ok := dlog.StreamStats()
			return metrics.DecisionLogStream(s), ok
		}, dlog.StreamReadErrors); err != nil {
			return nil, err
		}
	}
	return dlog, nil
}

// identityPart verifies callers' tokens and signs the actor token
// upstreams receive.
type identityPart struct {
	verifier *identity.Verifier
	signer   *actortoken.Signer
}

func newIdentityPart(cfg *Config, log *slog.Logger) (*identityPart, error) {
	if cfg.Dev {
		cfg.Identity.Dev.Enabled = true
	}
	idOpts := []identity.Option{identity.WithLogger(log)}
	// Only dev mode loads (or writes) the dev key: identity.dev.enabled
	// alone fails below, before any key reaches the disk.
	if cfg.Dev {
		dev, err := identity.LoadDevIssuer(cfg.Identity.Dev.KeyFile)
		if err != nil {
			return nil, err
		}
		idOpts = append(idOpts, identity.WithDevIssuer(dev))
	}
	verifier, err := identity.New(cfg.Identity.Config, idOpts...)
	if err != nil {
		return nil, err
	}
	if !cfg.Identity.HasIssuer() && !cfg.Identity.Dev.Enabled {
		log.Warn("identity.anonymous_only: no issuer is trusted, every bearer token is refused")
	}
	if len(cfg.Identity.CredentialCarriers) == 0 {
		log.Warn("identity.credential_carriers is empty: no credential carrier is checked, a token an upstream reads from the query, body, a cookie or a header beside a delegation is not seen")
	}
	var atOpts []actortoken.Option
	if cfg.Dev && len(cfg.ActorToken.KeyFiles) == 0 {
		k, err := actortoken.GenerateKey()
		if err != nil {
			return nil, err
		}
		atOpts = append(atOpts, actortoken.WithKeys(k))
	}
	signer, err := actortoken.New(cfg.ActorToken, atOpts...)
	if err != nil {
		return nil, err
	}
	return &identityPart{verifier: verifier, signer: signer}, nil
}

func (p *identityPart) Start(ctx context.Context) error { return p.verifier.Start(ctx) }
func (p *identityPart) Stop(context.Context) error      { return p.verifier.Close() }

// keySets reports the verifier's key sets to the metrics.
func (p *identityPart) keySets() []metrics.KeySet {
	var out []metrics.KeySet
	for _, ks := range p.verifier.KeySets() {
		out = append(out, metrics.KeySet{Issuer: ks.Issuer, Age: ks.Age, FetchFailures: ks.FetchFailures})
	}
	return out
}

// ready reads the state the last key set load left (Ready never waits
// for a load), so a fetch that hangs cannot hold the evaluation past ctx.
func (p *identityPart) ready(context.Context) error { return p.verifier.Ready() }

// readyNamespaced is ready's for the issuers with a namespace, reported
// apart (namespacedIdentityCheck).
func (p *identityPart) readyNamespaced(context.Context) error { return p.verifier.NamespacedReady() }

// delegationPart is impersonation, partner grants and reseller domains:
// their management lifecycles, the check path's resolvers and caches,
// and the sweeper of expiring grants.
type delegationPart struct {
	imp       *delegation.Impersonation
	sessions  *resolve.SessionResolver
	cached    *resolve.CachedState
	onBehalf  *resolve.OnBehalfResolver
	partners  *delegation.Partners
	resellers *delegation.Resellers
	guard     *resolve.StateGuard // nil on the embedded store
	records   *delegation.Recorder

	stopSweep context.CancelFunc
	swept     chan struct{}
}

func newDelegationPart(cfg *Config, state *statePart, policyData func() map[string]any, log *slog.Logger, m *metrics.Metrics) (*delegationPart, error) {
	m.InitCaches(resolve.CacheKinds()...)
	m.InitStateLookups(resolve.LookupFailures()...)
	store := state.store
	// The check path reads state through the guard: a time budget per
	// lookup, and a breaker while the store is down. (The embedded store
	// cannot be down.)
	var lookups resolve.GuardedSource = store
	var guard *resolve.StateGuard
	if state.ping != nil {
		guard = resolve.NewStateGuard(store, state.ping, cfg.StateLookup, log, resolve.WithGuardObserver(m))
		lookups = guard
	}
	// One recorder appends every lifecycle's audit entries and events,
	// retrying those the store did not take.
	records := delegation.NewRecorder(store, log)
	if err := m.RegisterRecords(metrics.RecordsFuncs{AuditDropped: records.AuditDropped, EventsDropped: records.EventsDropped, Pending: records.Pending}); err != nil {
		return nil, err
	}
	d := &delegationPart{
		guard:   guard,
		records: records,
		imp: delegation.NewImpersonation(store, policyData, delegation.WithImpersonationRecorder(records),
			delegation.WithImpersonationConfig(cfg.Impersonation), delegation.WithImpersonationLogger(log)),
		sessions: resolve.NewSessionResolver(lookups, cfg.Impersonation, resolve.WithSessionPolicyData(policyData),
			resolve.WithSessionLogger(log), resolve.WithSessionObserver(cacheMetrics{m})),
		cached:    resolve.NewCachedState(lookups, cfg.StateCache, time.Now, cacheMetrics{m}),
		partners:  delegation.NewPartners(store, policyData, cfg.Partner, delegation.WithPartnerLogger(log), delegation.WithPartnerRecorder(records)),
		resellers: delegation.NewResellers(store, cfg.Reseller, delegation.WithResellerPolicyData(policyData), delegation.WithResellerLogger(log), delegation.WithResellerRecorder(records)),
	}
	var err error
	// On the storefront hosts a consented session is the only way of
	// acting for a customer: no one is acted for there by header or path.
	if d.onBehalf, err = resolve.NewOnBehalfResolver(d.cached, d.cached, policyData, cfg.Partner,
		resolve.WithStorefrontHosts(cfg.Impersonation.StorefrontHosts)); err != nil {
		d.closeResolvers()
		return nil, err
	}
	return d, nil
}

func (d *delegationPart) Start(ctx context.Context) error {
	if err := d.records.Start(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.stopSweep, d.swept = cancel, make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); d.partners.RunSweeper(ctx) }()
	go func() { defer wg.Done(); d.imp.RunSweeper(ctx) }()
	go func() { defer wg.Done(); d.resellers.RunSweeper(ctx) }()
	go func() { wg.Wait(); close(d.swept) }()
	return nil
}

func (d *delegationPart) Stop(ctx context.Context) error {
	var err error
	if d.stopSweep != nil {
		d.stopSweep()
		select {
		case <-d.swept:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	// After the sweepers, whose ends it records.
	err = errors.Join(err, d.records.Stop(ctx))
	return errors.Join(err, d.closeResolvers())
}

func (d *delegationPart) closeResolvers() error {
	err := errors.Join(d.sessions.Close(), d.cached.Close(), d.imp.Close())
	if d.guard != nil {
		err = errors.Join(err, d.guard.Close())
	}
	return err
}

// cacheMetrics counts the delegation caches' traffic.
type cacheMetrics struct{ m *metrics.Metrics }

func (c cacheMetrics) Hit(kind string)   { c.m.CacheHit(kind) }
func (c cacheMetrics) Miss(kind string)  { c.m.CacheMiss(kind) }
func (c cacheMetrics) Evict(kind string) { c.m.CacheEviction(kind, "invalidated") }

// liveCounts keeps the live sessions and grants counted in the
// background, so a scrape never waits on the store: a frozen Redis makes
// the gauges stale, never /metrics slow.
type liveCounts struct {
	periodic
	store  sidecar.Store
	counts atomic.Pointer[map[string]int]
}

func newLiveCounts(store sidecar.Store, every time.Duration) *liveCounts {
	l := &liveCounts{store: store}
	l.periodic = periodic{every: every, run: l.refresh}
	return l
}

// get is the last count (empty before the first one).
func (l *liveCounts) get() map[string]int {
	if c := l.counts.Load(); c != nil {
		return *c
	}
	return nil
}

// liveSessions counts the live sessions started in the last day, reading
// every page: a page may be short, even empty, with more to follow.
func (l *liveCounts) liveSessions(ctx context.Context) (int, error) {
	f := sidecar.SessionFilter{LiveOnly: true, From: time.Now().Add(-24 * time.Hour), Page: sidecar.Page{Limit: sidecar.MaxPageLimit}}
	n := 0
	for {
		ss, next, err := l.store.ListSessions(ctx, f)
		if err != nil {
			return 0, err
		}
		n += len(ss)
		if next == "" {
			return n, nil
		}
		f.Cursor = next
	}
}

// refresh recounts; a count the store cannot give keeps its last value.
func (l *liveCounts) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out := maps.Clone(l.get())
	if out == nil {
		out = map[string]int{}
	}
	if n, err := l.liveSessions(ctx); err == nil {
		out[sidecar.ModeImpersonation] = n
	}
	grants, err := l.store.GrantsExpiringBefore(ctx, time.Now().AddDate(100, 0, 0), 100000)
	if err == nil {
		out[sidecar.ModePartner] = len(grants)
	}
	l.counts.Store(&out)
}

// clockCheckEvery is how often Redis's clock is measured against this
// replica's; clockSkewWarn is the difference past which it is logged.
const (
	clockCheckEvery = 30 * time.Second
	clockSkewWarn   = time.Second
)

// What the clock watch logs on crossing clockSkewWarn, each way.
const (
	clockApartMsg = "clock apart from Redis's: this replica judges expiry at its own clock; run NTP here and on the Redis hosts"
	clockBackMsg  = "clock back within 1s of Redis's"
)

// clockWatch measures Redis's clock against this replica's at start and
// every period after, for deputy_redis_clock_offset_seconds, in the
// background: a scrape never waits on Redis. Reads judge expiry at the
// replica's own clock, writes at the earlier of the writer's and Redis's,
// so a replica lagging by d honours what has ended for up to d. It warns
// once when the offset passes clockSkewWarn and says once when it is back
// within, not at every measurement. A failed measurement keeps the last.
type clockWatch struct {
	periodic
	measure func(context.Context) (time.Duration, error)
	log     *slog.Logger
	offset  atomic.Pointer[time.Duration]
	apart   bool // past clockSkewWarn at the last measurement; the loop's own
}

func newClockWatch(measure func(context.Context) (time.Duration, error), every time.Duration, log *slog.Logger) *clockWatch {
	w := &clockWatch{measure: measure, log: log}
	w.periodic = periodic{every: every, run: w.check}
	return w
}

// get is the last offset measured, and whether one was.
func (w *clockWatch) get() (time.Duration, bool) {
	if d := w.offset.Load(); d != nil {
		return *d, true
	}
	return 0, false
}

// periodic runs run at Start and every period after, on a goroutine of
// its own, until Stop: the background readings of the store (live counts,
// Redis's clock, its persistence) that no check or scrape waits on.
type periodic struct {
	every time.Duration
	run   func(context.Context)
	stop  context.CancelFunc
	done  chan struct{}
}

func (p *periodic) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	p.stop, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(p.every)
		defer t.Stop()
		for {
			p.run(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

func (p *periodic) Stop(ctx context.Context) error {
	p.stop()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *clockWatch) check(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d, err := w.measure(ctx)
	if err != nil {
		return // Redis's failures are counted and logged where they happen
	}
	w.offset.Store(&d)
	switch apart := d > clockSkewWarn || d < -clockSkewWarn; {
	case apart && !w.apart:
		w.log.Warn(clockApartMsg, "offset", d.String(), "threshold", clockSkewWarn.String())
	case !apart && w.apart:
		w.log.Info(clockBackMsg, "offset", d.String())
	default:
		return
	}
	w.apart = !w.apart
}
