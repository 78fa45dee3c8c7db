package metrics

import "github.com/prometheus/client_golang/prometheus"

// maxLookupReasons bounds the reason label of failed state lookups.
const maxLookupReasons = 8

// breakerMetrics show the state-lookup breaker: whether checks needing
// state are being failed at once, how often it opened, and why lookups
// failed. They are registered by New, so an instance on the embedded
// store (which has no breaker) reports them at zero too.
type breakerMetrics struct {
	open    prometheus.Gauge
	trips   prometheus.Counter
	failed  *prometheus.CounterVec
	reasons *bounded
}

func newBreakerMetrics() *breakerMetrics {
	return &breakerMetrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "state_breaker_open",
			Help: "1 while the state-lookup breaker is open: checks needing state are denied at once (503 state_unavailable) until a probe finds the store back.",
		}),
		trips: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "state_breaker_trips_total",
			Help: "Times the state-lookup breaker opened after consecutive failed lookups.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "state_lookup_failures_total",
			Help: "State lookups of checks that failed, by reason (breaker_open: refused at once; over_budget: no answer within state_lookup.budget; unavailable: the store failed).",
		}, []string{"reason"}),
		reasons: newBounded(maxLookupReasons),
	}
}

func (b *breakerMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{b.open, b.trips, b.failed}
}

// InitStateLookups exports the failed state lookups of each reason at
// zero, before the first failure.
func (m *Metrics) InitStateLookups(reasons ...string) {
	for _, r := range reasons {
		m.breaker.failed.WithLabelValues(m.breaker.reasons.label(r))
	}
}

// StateBreakerChanged records the state-lookup breaker opening (one more
// trip) or closing.
func (m *Metrics) StateBreakerChanged(open bool) {
	if open {
		m.breaker.trips.Inc()
		m.breaker.open.Set(1)
		return
	}
	m.breaker.open.Set(0)
}

// StateLookupFailed counts one failed state lookup of a check.
func (m *Metrics) StateLookupFailed(reason string) {
	m.breaker.failed.WithLabelValues(m.breaker.reasons.label(reason)).Inc()
}
