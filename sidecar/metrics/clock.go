package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterRedisClockOffset exports Redis's clock minus this replica's as
// fn last measured it, read at scrape time. While fn reports no
// measurement (none succeeded yet) the family has no series: a 0 would
// read as "no skew". Scripts judge what is over at the earlier of the
// writer's clock and Redis's, reads at the replica's own, so this is what
// shows a replica deciding apart from the others.
func (m *Metrics) RegisterRedisClockOffset(fn func() (time.Duration, bool)) error {
	return m.register(&clockOffsetCollector{fn: fn, desc: prometheus.NewDesc(Namespace+"_redis_clock_offset_seconds",
		"Redis's clock (TIME) minus this replica's, in seconds, as last measured (TIME corrected by half the round trip). "+
			"Negative: this replica's clock runs ahead. Reads judge expiry at the replica's clock, so a replica lagging by d honours what has ended for up to d.",
		nil, nil)})
}

type clockOffsetCollector struct {
	fn   func() (time.Duration, bool)
	desc *prometheus.Desc
}

func (c *clockOffsetCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *clockOffsetCollector) Collect(ch chan<- prometheus.Metric) {
	if d, ok := c.fn(); ok {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, d.Seconds())
	}
}
