package metrics_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"

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

// BenchmarkObserveDecisionFoldedReason is what a check pays when its
// reason is past the label's bound: a reason that carries request data,
// new on every request.
func BenchmarkObserveDecisionFoldedReason(b *testing.B) {
	m, _ := newMetrics(b)
	reasons := make([]string, 1024)
	for i := range reasons {
		reasons[i] = fmt.Sprintf("no_route:/catalog/item-%d", i)
	}
	d := &sidecar.Decision{Latency: 40 * time.Microsecond}
	for _, r := range reasons {
		d.Reason = r
		m.ObserveDecision(d)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d.Reason = reasons[i%len(reasons)]
		m.ObserveDecision(d)
		i++
	}
}

// BenchmarkGRPCUnaryInterceptor is what the gRPC server metrics cost a
// check, beside the handler.
func BenchmarkGRPCUnaryInterceptor(b *testing.B) {
	m, _ := newMetrics(b)
	intercept := m.GRPC().UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/envoy.service.auth.v3.Authorization/Check"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := intercept(ctx, nil, info, handler); err != nil {
			b.Fatal(err)
		}
	}
}
