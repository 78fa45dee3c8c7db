package metrics_test

import (
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// BenchmarkObserveDecision is what the check path pays per check.
func BenchmarkObserveDecision(b *testing.B) {
	m, _ := newMetrics(b)
	d := &sidecar.Decision{Allowed: true, Reason: "impersonation_session", Latency: 40 * time.Microsecond,
		Delegation: &sidecar.Delegation{Mode: sidecar.ModeImpersonation},
		Stages:     sidecar.Stages{Identity: 5 * time.Microsecond, State: 10 * time.Microsecond, Policy: 20 * time.Microsecond}}
	m.ObserveDecision(d)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		m.ObserveDecision(d)
	}
}
