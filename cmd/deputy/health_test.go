package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

func healthClient(t *testing.T, addr string) healthpb.HealthClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// healthIs fails the test unless every health service answers want.
func healthIs(t *testing.T, hc healthpb.HealthClient, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	if err := healthAnswers(hc, want); err != nil {
		t.Error(err)
	}
}

// healthBecomes waits for every health service to answer want: a Check
// answers from an evaluation up to checkFreshness old.
func healthBecomes(t *testing.T, hc healthpb.HealthClient, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	eventually(t, "gRPC health "+want.String(), func() bool { return healthAnswers(hc, want) == nil })
}

func healthAnswers(hc healthpb.HealthClient, want healthpb.HealthCheckResponse_ServingStatus) error {
	for _, svc := range healthServices {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		cancel()
		if err != nil || r.GetStatus() != want {
			return fmt.Errorf("health %q = %v %v, want %v", svc, r.GetStatus(), err, want)
		}
	}
	return nil
}

func readyzStatus(t *testing.T, metricsAddr string) int {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A pod whose policy has not loaded must not be marked ready by the
// chart's gRPC readiness probe: gRPC health answers as /readyz does, and
// a watcher learns of the first activation without asking again.
func TestGRPCHealthFollowsPolicyReadiness(t *testing.T) {
	b, err := policy.BuildBundle([]string{"../../policies"}, policy.BuildOptions{Revision: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	var tarball bytes.Buffer
	if err := policy.WriteBundle(&tarball, b); err != nil {
		t.Fatal(err)
	}
	var serving atomic.Bool
	bundles := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !serving.Load() {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(tarball.Bytes())
	}))
	defer bundles.Close()
	cfg := testConfig(t, "", func(c *Config) {
		c.Policy.Paths = nil
		c.Policy.BundleURL = bundles.URL + "/bundle.tar.gz"
		c.Policy.PollInterval = 50 * time.Millisecond
		c.DecisionLog.Sink = "none"
	})
	runServer(t, &cfg)
	hc := healthClient(t, cfg.GRPC.Addr)

	if got := readyzStatus(t, cfg.Metrics.Addr); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz without policy = %d, want 503", got)
	}
	healthIs(t, hc, healthpb.HealthCheckResponse_NOT_SERVING)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: healthServices[1]})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil || first.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch before policy = %v %v, want NOT_SERVING", first.GetStatus(), err)
	}
	serving.Store(true)
	next, err := watch.Recv()
	if err != nil || next.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch after activation = %v %v, want SERVING", next.GetStatus(), err)
	}
	healthIs(t, hc, healthpb.HealthCheckResponse_SERVING)
	if got := readyzStatus(t, cfg.Metrics.Addr); got != http.StatusOK {
		t.Fatalf("/readyz with policy = %d, want 200", got)
	}
}

// Losing the store loses readiness on both health endpoints alike.
func TestGRPCHealthFollowsRedisReadiness(t *testing.T) {
	rs := redistest.Start(t)
	cfg := startServer(t, func(c *Config) { c.Redis.Addrs = []string{rs.Addr} })
	hc := healthClient(t, cfg.GRPC.Addr)
	healthIs(t, hc, healthpb.HealthCheckResponse_SERVING)

	rs.Stop()
	if got := readyzStatus(t, cfg.Metrics.Addr); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with Redis down = %d, want 503", got)
	}
	healthBecomes(t, hc, healthpb.HealthCheckResponse_NOT_SERVING)

	rs.Restart()
	eventually(t, "readiness back with Redis", func() bool { return readyzStatus(t, cfg.Metrics.Addr) == http.StatusOK })
	healthBecomes(t, hc, healthpb.HealthCheckResponse_SERVING)
}

// The health status is shared: a client whose Checks expire before
// readiness is evaluated must not show NOT_SERVING to the others, and
// Checks cost Redis at most one PING per checkFreshness, however many.
func TestGRPCHealthIsNotClientControlled(t *testing.T) {
	rs := redistest.Start(t)
	proxy := redistest.StartProxy(t, rs.Addr)
	cfg := startServer(t, func(c *Config) { c.Redis.Addrs = []string{proxy.Addr} })
	hc := healthClient(t, cfg.GRPC.Addr)
	healthIs(t, hc, healthpb.HealthCheckResponse_SERVING)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: healthServices[1]})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch = %v %v, want SERVING", r.GetStatus(), err)
	}
	seen := make(chan healthpb.HealthCheckResponse_ServingStatus, 16)
	go func() {
		defer close(seen)
		for {
			r, err := watch.Recv()
			if err != nil {
				return
			}
			seen <- r.GetStatus()
		}
	}()

	for range 300 {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Microsecond)
		_, _ = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: healthServices[1]})
		cancel()
	}
	proxy.Reset()
	start := time.Now()
	for range 100 {
		healthIs(t, hc, healthpb.HealthCheckResponse_SERVING)
	}
	elapsed, pings := time.Since(start), proxy.Commands()

	cancel()
	for st := range seen {
		t.Errorf("a watcher saw a change to %v while Redis and the policy were fine", st)
	}
	// One evaluation per checkFreshness from Checks, one from the ticker
	// and one in progress when counting began.
	if max := int(elapsed/checkFreshness) + int(elapsed/healthRefresh) + 3; pings > max {
		t.Errorf("200 health Checks in %s sent Redis %d commands, want at most %d", elapsed, pings, max)
	}
}
