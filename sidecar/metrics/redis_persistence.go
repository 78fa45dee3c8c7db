package metrics

import "github.com/prometheus/client_golang/prometheus"

// RegisterRedisPersistence exports, from fn at scrape time, whether every
// Redis master holding Deputy's state appends its writes to an AOF, as
// last read (INFO persistence). fn must not wait on Redis; while it
// reports false (no reading, or the last one failed) the gauge is absent:
// a 0 would claim AOF off, a 1 on, and neither is known. readErrors
// counts the failed readings, exported always, so that a reading refused
// for good (an ACL user without INFO, a managed Redis that hides it)
// shows there, not only as the gauge gone.
func (m *Metrics) RegisterRedisPersistence(fn func() (aof, ok bool), readErrors func() uint64) error {
	return m.register(&persistenceCollector{fn: fn, readErrors: readErrors,
		aof: prometheus.NewDesc(Namespace+"_redis_aof_enabled",
			"1 when every Redis master holding Deputy's state reports aof_enabled (appendonly yes), 0 when one does not, as last read: "+
				"with RDB snapshots only, a Redis restart reloads the last snapshot and undoes every answered write since "+
				"(revocations, consent withdrawals, assignments removed, their audit entries and events). Absent while unread.", nil, nil),
		readErrorsDesc: prometheus.NewDesc(Namespace+"_redis_persistence_read_errors_total",
			"Failed readings of Redis's persistence (INFO persistence on every master): Redis down, an ACL user without INFO, "+
				"a managed Redis that refuses it; while they fail deputy_redis_aof_enabled is absent.", nil, nil),
	})
}

type persistenceCollector struct {
	fn                  func() (bool, bool)
	readErrors          func() uint64
	aof, readErrorsDesc *prometheus.Desc
}

func (c *persistenceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.aof
	ch <- c.readErrorsDesc
}

func (c *persistenceCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.readErrorsDesc, prometheus.CounterValue, float64(c.readErrors()))
	aof, ok := c.fn()
	if !ok {
		return
	}
	v := 0.0
	if aof {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(c.aof, prometheus.GaugeValue, v)
}
