package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DecisionLogStream is the decision log's Redis stream as its logger last
// read it. The stream is shared: every replica writing to it reports the
// same figures, so dashboards and alerts take their max, not their sum.
type DecisionLogStream struct {
	// Length is the entries the stream holds.
	Length int64
	// Trimmed is how many entries the stream has discarded since it was
	// created (trimmed at max_len, or deleted); negative when Redis does
	// not say (before 7.0).
	Trimmed int64
	// OldestAge is the age of the oldest entry kept; 0 when none is.
	OldestAge time.Duration
	// MaxLen is decision_log.max_len, the length the stream is trimmed
	// to (0: never).
	MaxLen int64
}

// RegisterDecisionLogStream exports, from fn at scrape time, the decision
// log stream's length, the records trimming discarded and the age of the
// oldest one kept: any client's checks rotate the stream, and these show
// how far back it still reaches. fn must not wait on Redis; while it
// reports false (no recent read) the series are absent. readErrors counts
// the failed reads, exported always: an unreadable stream (an ACL user
// without XINFO, a key of another type) shows there, not only as figures
// gone.
func (m *Metrics) RegisterDecisionLogStream(fn func() (DecisionLogStream, bool), readErrors func() uint64) error {
	return m.register(&streamCollector{fn: fn, readErrors: readErrors,
		length: prometheus.NewDesc(Namespace+"_decision_log_stream_length",
			"Entries in the decision log's Redis stream, as last read; the same on every replica writing to it.", nil, nil),
		trimmed: prometheus.NewDesc(Namespace+"_decision_log_stream_trimmed_total",
			"Records the decision log's Redis stream discarded since it was created, trimmed at decision_log.max_len (or deleted): any client's checks push the oldest out. Redis 7.0 or later; the same on every replica writing to it.", nil, nil),
		oldestAge: prometheus.NewDesc(Namespace+"_decision_log_stream_oldest_age_seconds",
			"Age of the oldest record the decision log's Redis stream keeps, by its entry id (Redis's clock): how far back the log reaches; 0 while it holds none.", nil, nil),
		maxLen: prometheus.NewDesc(Namespace+"_decision_log_stream_max_len",
			"decision_log.max_len: the approximate length the decision log's Redis stream is trimmed to (0: never trimmed).", nil, nil),
		readErrorsDesc: prometheus.NewDesc(Namespace+"_decision_log_stream_read_errors_total",
			"Failed reads of the decision log's Redis stream for its figures (Redis down, an ACL user without XINFO, TIME, EXISTS or EVAL, a key of another type at the stream's name); while they fail the stream's figures are absent.", nil, nil),
	})
}

type streamCollector struct {
	fn                                 func() (DecisionLogStream, bool)
	readErrors                         func() uint64
	length, trimmed, oldestAge, maxLen *prometheus.Desc
	readErrorsDesc                     *prometheus.Desc
}

func (c *streamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.length
	ch <- c.trimmed
	ch <- c.oldestAge
	ch <- c.maxLen
	ch <- c.readErrorsDesc
}

func (c *streamCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.readErrorsDesc, prometheus.CounterValue, float64(c.readErrors()))
	s, ok := c.fn()
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.length, prometheus.GaugeValue, float64(s.Length))
	if s.Trimmed >= 0 {
		ch <- prometheus.MustNewConstMetric(c.trimmed, prometheus.CounterValue, float64(s.Trimmed))
	}
	ch <- prometheus.MustNewConstMetric(c.oldestAge, prometheus.GaugeValue, s.OldestAge.Seconds())
	ch <- prometheus.MustNewConstMetric(c.maxLen, prometheus.GaugeValue, float64(s.MaxLen))
}
