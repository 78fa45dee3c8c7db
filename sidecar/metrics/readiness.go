package metrics

import "github.com/prometheus/client_golang/prometheus"

func newReadinessGauge() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "readiness",
		Help: "1 while a readiness condition holds, 0 while it fails, by check (policy, identity, identity_namespaced, redis), as last evaluated. Checks that need no delegation state are still decided while redis is 0; other issuers' tokens and anonymous requests while identity_namespaced is 0.",
	}, []string{"check"})
}

// ObserveReadiness records a readiness condition's last evaluation. The
// checks are the fixed few cmd/deputy names, so the label stays bounded.
func (m *Metrics) ObserveReadiness(check string, ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	m.readiness.WithLabelValues(check).Set(v)
}
