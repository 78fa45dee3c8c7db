package main

import (
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthServices are the services gRPC health reports on: the server as
// a whole ("") and the ext_authz service.
var healthServices = []string{"", "envoy.service.auth.v3.Authorization"}

// healthRefresh is how often gRPC health re-evaluates readiness for its
// watchers; a Check evaluates it there and then, and a policy activation
// at once.
const healthRefresh = 5 * time.Second

// readyHealth is the gRPC health service, answering as /readyz does:
// NOT_SERVING until the readiness conditions hold (a pod with no policy
// must not be marked ready by a gRPC probe), NOT_SERVING again while one
// fails, and for good from shutdown on.
type readyHealth struct {
	*health.Server
	ready   []readiness
	changed chan struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newReadyHealth(ready []readiness) *readyHealth {
	h := &readyHealth{Server: health.NewServer(), ready: ready, changed: make(chan struct{}, 1)}
	h.set(false)
	return h
}

// Check evaluates readiness for the services it reports on, so that a
// probe gets the answer /readyz would give now.
func (h *readyHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if slices.Contains(healthServices, req.GetService()) {
		h.refresh(ctx)
	}
	return h.Server.Check(ctx, req)
}

// readinessChanged asks for a re-evaluation now (after a policy
// activation); it never blocks.
func (h *readyHealth) readinessChanged() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

func (h *readyHealth) refresh(ctx context.Context) {
	ok, _ := checkReady(ctx, h.ready)
	h.set(ok)
}

// set is ignored after Shutdown: a server that stops stays NOT_SERVING.
func (h *readyHealth) set(ready bool) {
	status := healthpb.HealthCheckResponse_NOT_SERVING
	if ready {
		status = healthpb.HealthCheckResponse_SERVING
	}
	for _, svc := range healthServices {
		h.SetServingStatus(svc, status)
	}
}

// start keeps the status current for watchers until stop.
func (h *readyHealth) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		tick := time.NewTicker(healthRefresh)
		defer tick.Stop()
		for {
			h.refresh(ctx)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			case <-h.changed:
			}
		}
	}()
}

// stop answers NOT_SERVING from now on.
func (h *readyHealth) stop() {
	if h.cancel != nil {
		h.cancel()
		h.wg.Wait()
	}
	h.Shutdown()
}
