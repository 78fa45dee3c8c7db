package metrics_test

import (
	"context"
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
