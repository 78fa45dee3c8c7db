// Package metrics owns Deputy's Prometheus collectors. Everything is
// registered on a Registerer the caller injects; nothing is global. The
// check pipeline calls ObserveDecision once per check; other packages
// reach the rest through small interfaces they define.
//
// What a scrape shows (labels in braces, all bounded):
//
//	deputy_decisions_total{result,mode,reason}       result: allow, deny, error
//	deputy_check_duration_seconds                    histogram
//	deputy_check_stage_duration_seconds{stage}       identity, state, policy
//	deputy_check_panics_total{transport}             grpc, http: checks denied because they panicked
//	deputy_http_requests_total{server,route,method,code}
//	deputy_http_request_duration_seconds{server,route,method}
//	deputy_state_cache_requests_total{cache,result}  hit, miss
//	deputy_state_cache_evictions_total{cache,reason} expired, capacity, invalidated
//	deputy_redis_errors_total{command}
//	deputy_state_breaker_open, deputy_state_breaker_trips_total
//	deputy_state_lookup_failures_total{reason}     breaker_open, over_budget, unavailable
//	deputy_decision_log_queue_depth
//	deputy_decision_log_flushed_total, _dropped_total, _unconfirmed_total, _sink_errors_total, _mask_errors_total, _mask_work_spent_total, _oversized_total
//	deputy_decision_log_spool_errors_total           failed writes to the spool (a full or read-only disk)
//	deputy_decision_log_stream_length, _stream_trimmed_total, _stream_oldest_age_seconds, _stream_max_len  redis sink: the shared stream as last read
//	deputy_decision_log_stream_read_errors_total     redis sink: failed reads of those figures
//	deputy_live_delegations{mode}
//	deputy_events_dropped_total                      past redis.events_hard_maxlen, unread by a consumer group
//	deputy_audit_dropped_total, deputy_events_undelivered_total  records of committed changes never appended
//	deputy_redis_clock_offset_seconds                Redis's clock minus this replica's, as last measured
//	deputy_redis_aof_enabled                         1: every Redis master appends to an AOF, 0: one keeps only snapshots
//	deputy_redis_persistence_read_errors_total       failed readings of that (INFO persistence)
//	deputy_records_pending                           audit entries and events waiting for the store
//	deputy_bundle_info{revision}, deputy_bundle_last_activation_timestamp_seconds
//	deputy_bundle_activations_total, deputy_bundle_activation_failures_total  policy sets refused, each once
//	deputy_bundle_failing                            1 while the last policy attempt failed (a refusal or a failed fetch)
//	deputy_bundle_fetch_failures_total               failed fetches of the bundle server or policy files, every poll
//	deputy_identity_key_set_age_seconds{issuer}, deputy_identity_key_set_fetch_failures_total{issuer}
//	deputy_build_info{version,commit,go_version}
//	grpc_server_* (as go-grpc-middleware names them), go_*, process_*
package metrics

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/deputyhq/deputy/sidecar"
)

// Namespace prefixes every Deputy metric.
const Namespace = "deputy"

// Label values for results and for a check that acts on no one's behalf.
const (
	ResultAllow = "allow"
	ResultDeny  = "deny"
	ResultError = "error" // denied because evaluation or state failed
	ModeNone    = "none"
	Other       = "other" // any value past a label's bound
)

// Bounds on label values a policy or caller chooses.
const (
	maxReasons   = 64
	maxReasonLen = 64
	maxCommands  = 64
	maxCaches    = 16
	maxRoutes    = 64
	maxMethods   = 64 // gRPC methods, for a server that serves unknown ones
)

// LatencyBuckets suit a check that costs tens of microseconds in process
// and stays readable up to a second.
var LatencyBuckets = []float64{.000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// Metrics holds Deputy's collectors.
type Metrics struct {
	reg prometheus.Registerer

	decisions     *prometheus.CounterVec
	decisionKids  sync.Map // decisionKey, by label → prometheus.Counter
	reasons       *bounded
	checkDuration prometheus.Histogram
	stageIdentity prometheus.Observer
	stageState    prometheus.Observer
	stagePolicy   prometheus.Observer
	checkPanics   *prometheus.CounterVec

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	routes       *bounded

	cacheRequests  *prometheus.CounterVec
	cacheEvictions *prometheus.CounterVec
	caches         *bounded

	redisErrors *prometheus.CounterVec
	commands    *bounded

	bundleInfo         *prometheus.GaugeVec
	lastActivation     prometheus.Gauge
	activationFailures prometheus.Counter
	activations        prometheus.Counter
	bundleMu           sync.Mutex

	readiness *prometheus.GaugeVec

	grpc    *GRPCMetrics
	breaker *breakerMetrics
}

type decisionKey struct{ result, mode, reason string }

// Option configures New.
type Option func(*options)

type options struct{ runtime bool }

// WithoutRuntime leaves out the Go and process collectors, for a
// registry that already has them.
func WithoutRuntime() Option { return func(o *options) { o.runtime = false } }

// New creates Deputy's collectors and registers them on reg.
func New(reg prometheus.Registerer, opts ...Option) (*Metrics, error) {
	o := options{runtime: true}
	for _, f := range opts {
		f(&o)
	}
	m := &Metrics{
		reg: reg,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "decisions_total",
			Help: "Checks decided, by result (allow, deny, error), delegation mode and policy reason.",
		}, []string{"result", "mode", "reason"}),
		reasons: newBounded(maxReasons),
		checkDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "check_duration_seconds",
			Help: "Time to decide one check, from request to decision.", Buckets: LatencyBuckets,
		}),
		checkPanics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "check_panics_total",
			Help: "Checks that panicked and were denied with the error status, by transport (grpc, http).",
		}, []string{"transport"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "http_requests_total",
			Help: "HTTP requests served, by server (check, api, admin), route pattern, method and status code.",
		}, []string{"server", "route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "http_request_duration_seconds",
			Help: "Time to serve an HTTP request, by server, route pattern and method.", Buckets: LatencyBuckets,
		}, []string{"server", "route", "method"}),
		routes: newBounded(maxRoutes),
		cacheRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "state_cache_requests_total",
			Help: "Lookups in the local delegation state cache, by cache and result (hit, miss).",
		}, []string{"cache", "result"}),
		cacheEvictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "state_cache_evictions_total",
			Help: "Entries evicted from the local state cache, by cache and reason (expired, capacity, invalidated).",
		}, []string{"cache", "reason"}),
		caches: newBounded(maxCaches),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "redis_errors_total",
			Help: "Redis commands that failed (a missing key is not a failure), by command.",
		}, []string{"command"}),
		commands: newBounded(maxCommands),
		bundleInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "bundle_info",
			Help: "The policy revision serving checks (value 1).",
		}, []string{"revision"}),
		lastActivation: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "bundle_last_activation_timestamp_seconds",
			Help: "When the serving policy set was activated, in Unix seconds.",
		}),
		activationFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "bundle_activation_failures_total",
			Help: "Policy updates refused, each once however many polls bring it again: a policy set or bundle that failed to read, verify or compile, or a bundle server's 304 to a request that named no bundle. The previous set kept serving; deputy_bundle_failing says whether the refusal still holds.",
		}),
		activations: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "bundle_activations_total",
			Help: "Policy sets activated.",
		}),
		readiness: newReadinessGauge(),
		grpc:      newGRPCMetrics(),
		breaker:   newBreakerMetrics(),
	}
	stages := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "check_stage_duration_seconds",
		Help: "Time spent in each stage of a check (identity, state, policy).", Buckets: LatencyBuckets,
	}, []string{"stage"})
	m.stageIdentity = stages.WithLabelValues("identity")
	m.stageState = stages.WithLabelValues("state")
	m.stagePolicy = stages.WithLabelValues("policy")

	cs := []prometheus.Collector{
		m.decisions, m.checkDuration, stages, m.checkPanics, m.httpRequests, m.httpDuration,
		m.cacheRequests, m.cacheEvictions, m.redisErrors,
		m.bundleInfo, m.lastActivation, m.activationFailures, m.activations, m.readiness,
	}
	cs = append(cs, m.grpc.collectors()...)
	cs = append(cs, m.breaker.collectors()...)
	if o.runtime {
		cs = append(cs, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, sidecar.Errorf(sidecar.EINTERNAL, "register metrics: %v", err)
		}
	}
	m.initKnown()
	return m, nil
}

// initKnown exports the label sets known from start at zero, so that on a
// healthy instance the shipped dashboard and alert rules read 0 rather than
// "No data": a counter vector with no child is not exported at all.
func (m *Metrics) initKnown() {
	for _, result := range []string{ResultAllow, ResultDeny, ResultError} {
		// A decision without a reason is counted with reason "none".
		m.decisions.WithLabelValues(result, ModeNone, ModeNone)
	}
	for _, transport := range []string{"grpc", "http"} {
		m.checkPanics.WithLabelValues(transport)
	}
	// Scrapes reach the admin server from the first minute on.
	route := m.routes.label("/metrics")
	m.httpRequests.WithLabelValues("admin", route, "GET", "200")
	m.httpDuration.WithLabelValues("admin", route, "GET")
	m.redisErrors.WithLabelValues(m.commands.label("dial"))
}

// CheckPanicked counts a check that panicked (and was denied) on a
// transport: grpc or http.
func (m *Metrics) CheckPanicked(transport string) {
	m.checkPanics.WithLabelValues(transport).Inc()
}

// Cache eviction reasons.
var evictionReasons = [...]string{"expired", "capacity", "invalidated"}

// InitCaches exports the lookups and evictions of each cache kind at
// zero, before the first lookup.
func (m *Metrics) InitCaches(kinds ...string) {
	for _, kind := range kinds {
		l := m.caches.label(kind)
		m.cacheRequests.WithLabelValues(l, "hit")
		m.cacheRequests.WithLabelValues(l, "miss")
		for _, r := range evictionReasons {
			m.cacheEvictions.WithLabelValues(l, r)
		}
	}
}

// ObserveDecision counts one check and records its latency and stages.
// It is on the check path: label children are cached after first use.
func (m *Metrics) ObserveDecision(d *sidecar.Decision) {
	k := decisionKey{result: ResultDeny, mode: modeLabel(d), reason: d.Reason}
	switch {
	case d.Error != "":
		k.result = ResultError
	case d.Allowed:
		k.result = ResultAllow
	}
	if k.reason == "" {
		k.reason = ModeNone
	}
	// Children are kept under their label, never under the policy's
	// reason: a reason that carries request data (a path, a client id) is
	// new on every request, and keeping it would hold one entry and the
	// whole string per value for the life of the process. An admitted
	// reason is its own label, so the first lookup finds it; any other is
	// folded first and found under Other.
	c, ok := m.decisionKids.Load(k)
	if !ok {
		if reason := m.reasons.label(k.reason); reason != k.reason {
			k.reason = reason
			c, ok = m.decisionKids.Load(k)
		}
		if !ok {
			c, _ = m.decisionKids.LoadOrStore(k, m.decisions.WithLabelValues(k.result, k.mode, k.reason))
		}
	}
	c.(prometheus.Counter).Inc()
	m.checkDuration.Observe(d.Latency.Seconds())
	if d.Stages.Identity > 0 {
		m.stageIdentity.Observe(d.Stages.Identity.Seconds())
	}
	if d.Stages.State > 0 {
		m.stageState.Observe(d.Stages.State.Seconds())
	}
	if d.Stages.Policy > 0 {
		m.stagePolicy.Observe(d.Stages.Policy.Seconds())
	}
}

func modeLabel(d *sidecar.Decision) string {
	if d.Delegation == nil || d.Delegation.Mode == "" {
		return ModeNone
	}
	switch d.Delegation.Mode {
	case sidecar.ModeImpersonation, sidecar.ModePartner, sidecar.ModeReseller:
		return d.Delegation.Mode
	}
	return Other
}

// CacheHit counts a lookup the local state cache answered. cache names
// the kind of entry (session, grant, assignment, consent).
func (m *Metrics) CacheHit(cache string) {
	m.cacheRequests.WithLabelValues(m.caches.label(cache), "hit").Inc()
}

// CacheMiss counts a lookup that went to the store.
func (m *Metrics) CacheMiss(cache string) {
	m.cacheRequests.WithLabelValues(m.caches.label(cache), "miss").Inc()
}

// CacheEviction counts an entry leaving the cache; reason is expired,
// capacity or invalidated (a pub/sub narrowing message).
func (m *Metrics) CacheEviction(cache, reason string) {
	if !slices.Contains(evictionReasons[:], reason) {
		reason = Other
	}
	m.cacheEvictions.WithLabelValues(m.caches.label(cache), reason).Inc()
}

// ObserveActivation records a policy activation attempt: on success the
// revision and time now serving, on failure one more failure.
func (m *Metrics) ObserveActivation(revision string, at time.Time, err error) {
	if err != nil {
		m.activationFailures.Inc()
		return
	}
	m.bundleMu.Lock()
	defer m.bundleMu.Unlock()
	m.activations.Inc()
	m.bundleInfo.Reset()
	m.bundleInfo.WithLabelValues(revision).Set(1)
	m.lastActivation.Set(float64(at.UnixNano()) / 1e9)
}

// GRPC returns the gRPC server metrics: install its interceptors on the
// ext_authz server and call InitializeMetrics once services are registered.
func (m *Metrics) GRPC() *GRPCMetrics { return m.grpc }

// DecisionLogStats is what the decision logger reports;
// *decisionlog.Logger is one.
type DecisionLogStats interface {
	QueueDepth() int
	SpoolBytes() int64
	Flushed() uint64
	Dropped() uint64
	Unconfirmed() uint64
	SinkErrors() uint64
	MaskErrors() uint64
	MaskWorkSpent() uint64
	Oversized() uint64
	SpoolErrors() uint64
}

// RegisterDecisionLog exports the decision logger's queue depth and
// counters, read at scrape time.
func (m *Metrics) RegisterDecisionLog(s DecisionLogStats) error {
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "decision_log_queue_depth",
			Help: "Decision log records waiting for the sink."}, func() float64 { return float64(s.QueueDepth()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "decision_log_spool_bytes",
			Help: "Decision log records waiting for the sink on local disk (decision_log.spool_dir)."}, func() float64 { return float64(s.SpoolBytes()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "decision_log_flushed_total",
			Help: "Decision log records written to the sink."}, func() float64 { return float64(s.Flushed()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "decision_log_dropped_total",
			Help: "Decision log records lost past the queue bound or at shutdown."}, func() float64 { return float64(s.Dropped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "decision_log_unconfirmed_total",
			Help: "Decision log records given up at shutdown after a write whose reply was lost: the sink may hold them, or not."}, func() float64 { return float64(s.Unconfirmed()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "decision_log_sink_errors_total",
			Help: "Failed writes to the decision log sink (records stay queued)."}, func() float64 { return float64(s.SinkErrors()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "decision_log_mask_errors_total",
			Help: "Records logged without their input because the mask policy failed on it."}, func() float64 { return float64(s.MaskErrors()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "decision_log_mask_work_spent_total",
			Help: "Records whose masking read its bound of query values (1 MiB) and masked the values past it whole, unread: queries built to cost the logger work, or longer than the bound allows for."}, func() float64 { return float64(s.MaskWorkSpent()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "decision_log_oversized_total",
			Help: "Records logged without their input because they passed decision_log.max_record_bytes, or did not fit decision_log.max_queue_bytes with it."}, func() float64 { return float64(s.Oversized()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "decision_log_spool_errors_total",
			Help: "Failed writes to the decision log spool (decision_log.spool_dir), a full or read-only disk: records stay queued in memory, and past the queue bound are dropped (decision_log_dropped_total)."}, func() float64 { return float64(s.SpoolErrors()) }),
	}
	return m.register(cs...)
}

// RegisterBundleSource exports, read from the policy source at scrape
// time, whether its last attempt failed and how many of its fetches
// failed. A refusal is counted once in
// deputy_bundle_activation_failures_total however long it lasts: the
// gauge shows it for as long as it does.
func (m *Metrics) RegisterBundleSource(failing func() bool, fetchFailures func() uint64) error {
	return m.register(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "bundle_failing",
			Help: "1 while the last policy attempt failed: a policy set or bundle refused (until another one activates, or the server sends the one serving again), " +
				"or a failed fetch (until a fetch succeeds); 0 otherwise. The set serving, if any, keeps serving; with none, Deputy is unready."},
			func() float64 {
				if failing() {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "bundle_fetch_failures_total",
			Help: "Failed fetches of policies, counted at every poll: the bundle server unreachable, an error status, a transfer cut short or a corrupt tarball, " +
				"policy files that cannot be read. Not counted in deputy_bundle_activation_failures_total."},
			func() float64 { return float64(fetchFailures()) }),
	)
}

// RegisterPolicyAnswers exports, read at scrape time, how many checks of
// a decision query that keeps its answers were looked up in its memo and
// how many were answered from it without evaluating.
func (m *Metrics) RegisterPolicyAnswers(kept func() (hits, lookups uint64)) error {
	return m.register(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "policy_memo_lookups_total",
			Help: "Checks whose decision query keeps its answers (it depends on input and policy data alone) looked up in the serving policy's memo. " +
				"A policy reading the clock, randomness or token verification keeps none, and is never counted here."},
			func() float64 { _, n := kept(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "policy_memo_hits_total",
			Help: "Checks answered from the serving policy's memo, without evaluating: an earlier check had the same input, as the policy reads it, under the same policy and data."},
			func() float64 { h, _ := kept(); return float64(h) }),
	)
}

// RegisterEventsDropped exports how many events the Redis events stream
// dropped at its hard cap before a consumer group (the host's mailer)
// acknowledged them, read at scrape time.
func (m *Metrics) RegisterEventsDropped(fn func() uint64) error {
	return m.register(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "events_dropped_total",
		Help: "Events the events stream dropped at redis.events_hard_maxlen before every consumer group acknowledged them."},
		func() float64 { return float64(fn()) }))
}

// RegisterInvalidationsUnconfirmed exports how many writes that narrow
// access answered 503 because not every replica confirmed, in time, that
// it dropped what it cached, read at scrape time.
func (m *Metrics) RegisterInvalidationsUnconfirmed(fn func() uint64) error {
	return m.register(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "invalidations_unconfirmed_total",
		Help: "Writes that narrow access answered 503 (eviction_unpublished): not every replica confirmed their invalidation within redis.invalidation_ack_timeout, or this replica did not listen."},
		func() float64 { return float64(fn()) }))
}

// RegisterInvalidationLease exports fn, at scrape time, as 1 while this
// replica holds its lease on the invalidation channel, 0 otherwise.
func (m *Metrics) RegisterInvalidationLease(fn func() bool) error {
	return m.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "invalidation_lease_held",
		Help: "1 while this replica holds its lease on the Redis invalidation channel and serves cache hits without a round trip; " +
			"0 while it reads every hit again from Redis (its subscription lost, or not renewed in time)."},
		func() float64 {
			if fn() {
				return 1
			}
			return 0
		}))
}

// RegisterNarrowingUnreplicated exports fn, at scrape time, as the count
// of narrowing writes answered 503 because fewer Redis replicas than
// redis.narrowing_replicas acknowledged them.
func (m *Metrics) RegisterNarrowingUnreplicated(fn func() uint64) error {
	return m.register(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "redis_narrowing_unreplicated_total",
		Help: "Writes that narrow access answered 503 (unavailable) because fewer Redis replicas than redis.narrowing_replicas acknowledged them " +
			"within redis.narrowing_replica_timeout: a failover would undo them (a planned Sentinel failover, a replica down or lagging). Callers retry."},
		func() float64 { return float64(fn()) }))
}

// RecordsFuncs read the recorder of audit entries and events, at scrape
// time.
type RecordsFuncs struct {
	AuditDropped, EventsDropped func() uint64
	Pending                     func() int
}

// RegisterRecords exports what the recorder of committed changes' audit
// entries and events could not append, and what waits for the store.
func (m *Metrics) RegisterRecords(f RecordsFuncs) error {
	return m.register(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "audit_dropped_total",
			Help: "Audit entries (the session log) of committed changes never appended: past the retry queue, invalid, or still waiting at shutdown."},
			func() float64 { return float64(f.AuditDropped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "events_undelivered_total",
			Help: "Events of committed changes never appended to the events stream: past the retry queue, invalid, or still waiting at shutdown."},
			func() float64 { return float64(f.EventsDropped()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "records_pending",
			Help: "Audit entries and events of committed changes waiting for the store to take them."},
			func() float64 { return float64(f.Pending()) }),
	)
}

// LiveFunc counts live delegations by mode (impersonation sessions,
// partner grants, reseller assignments). It runs at scrape time.
type LiveFunc func() map[string]int

// RegisterLiveDelegations exports live sessions and grants by mode. Every
// mode is reported, zero when fn leaves it out.
func (m *Metrics) RegisterLiveDelegations(fn LiveFunc) error {
	return m.register(&liveCollector{fn: fn, desc: prometheus.NewDesc(Namespace+"_live_delegations",
		"Live impersonation sessions, partner grants and reseller assignments, by mode.", []string{"mode"}, nil)})
}

// RegisterBuildInfo exports the running build as deputy_build_info
// (value 1), so a dashboard can tell which version each replica runs.
func (m *Metrics) RegisterBuildInfo(version, commit, goVersion string) error {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "The running Deputy build (value 1).",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "go_version": goVersion},
	})
	g.Set(1)
	return m.register(g)
}

func (m *Metrics) register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return sidecar.Errorf(sidecar.EINTERNAL, "register metrics: %v", err)
		}
	}
	return nil
}

type liveCollector struct {
	fn   LiveFunc
	desc *prometheus.Desc
}

func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.fn()
	for _, mode := range []string{sidecar.ModeImpersonation, sidecar.ModePartner, sidecar.ModeReseller} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[mode]), mode)
	}
}

// bounded admits the first n distinct values of a label; later ones are
// reported as Other so a misbehaving caller cannot explode the series.
type bounded struct {
	mu   sync.RWMutex
	n    int
	seen map[string]struct{}
}

func newBounded(n int) *bounded { return &bounded{n: n, seen: make(map[string]struct{}, n)} }

func (b *bounded) admit(v string) bool {
	b.mu.RLock()
	_, ok := b.seen[v]
	full := len(b.seen) >= b.n
	b.mu.RUnlock()
	if ok || full {
		// Once full, a new value is refused without the write lock: past
		// the bound every such value comes here, on the check path.
		return ok
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.seen[v]; ok {
		return true
	}
	if len(b.seen) >= b.n {
		return false
	}
	b.seen[v] = struct{}{}
	return true
}

func (b *bounded) label(v string) string {
	if v == "" || len(v) > maxReasonLen || !b.admit(v) {
		return Other
	}
	return v
}

func lowerASCII(s string) string { return strings.ToLower(s) }
