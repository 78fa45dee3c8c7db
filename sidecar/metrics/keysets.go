package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// KeySet is one trusted issuer's key set as the identity verifier reports
// it at scrape time.
type KeySet struct {
	Issuer string
	// Age is how long ago the key set was last fetched without error.
	Age           time.Duration
	FetchFailures uint64
}

// RegisterKeySets exports, read from fn at scrape time, how long ago each
// trusted issuer's key set was last fetched and how many of its fetches
// failed. While fetches fail the previous keys keep verifying, a key the
// issuer removed (revoked) among them, and readiness stays: these are what
// shows it. The issuers are the configured few, so the label stays bounded.
func (m *Metrics) RegisterKeySets(fn func() []KeySet) error {
	return m.register(&keySetCollector{fn: fn,
		age: prometheus.NewDesc(Namespace+"_identity_key_set_age_seconds",
			"Seconds since the issuer's key set was last fetched (or read) without error, changed or not; since start while it never was. The previous keys keep verifying meanwhile.",
			[]string{"issuer"}, nil),
		failures: prometheus.NewDesc(Namespace+"_identity_key_set_fetch_failures_total",
			"Fetches (or reads) of the issuer's key set that failed; the previous keys were kept.",
			[]string{"issuer"}, nil),
	})
}

type keySetCollector struct {
	fn            func() []KeySet
	age, failures *prometheus.Desc
}

func (c *keySetCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.age; ch <- c.failures }

func (c *keySetCollector) Collect(ch chan<- prometheus.Metric) {
	for _, ks := range c.fn() {
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, ks.Age.Seconds(), ks.Issuer)
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(ks.FetchFailures), ks.Issuer)
	}
}
