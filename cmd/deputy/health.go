package main

import (
	"context"
	"log/slog"
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
// watchers; a policy activation re-evaluates it at once.
const healthRefresh = 5 * time.Second

// checkFreshness is how old an evaluation a Check may answer from; an
// older one is redone first. It bounds the readiness work (a Redis PING
// each) that clients of the gRPC port can cause to one per checkFreshness.
const checkFreshness = time.Second

// readyTimeout bounds one evaluation of the readiness conditions.
const readyTimeout = 2 * time.Second

// readinessChecks are the conditions /readyz and gRPC health both answer
// from. Why one fails is logged when it changes, not served.
type readinessChecks struct {
	conds []readiness
	log   *slog.Logger

	mu   sync.Mutex
	last map[string]string // each failing condition's last error
}

func newReadinessChecks(conds []readiness, log *slog.Logger) *readinessChecks {
	return &readinessChecks{conds: conds, log: log, last: map[string]string{}}
}

// check evaluates every condition: ok when all hold, and each one's
// state by name ("ok" or "failing").
func (r *readinessChecks) check(ctx context.Context) (ok bool, states map[string]string) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	ok, states = true, make(map[string]string, len(r.conds))
	for _, c := range r.conds {
		err := c.check(ctx)
		r.report(c.name, err)
		states[c.name] = "ok"
		if err != nil {
			states[c.name], ok = "failing", false
		}
	}
	return ok, states
}

// report logs a condition's change: failing (or failing otherwise), or
// holding again.
func (r *readinessChecks) report(name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	last, failed := r.last[name]
	switch {
	case err == nil && failed:
		delete(r.last, name)
		r.log.Info("readiness condition holds again", "check", name)
	case err != nil && (!failed || last != err.Error()):
		r.last[name] = err.Error()
		r.log.Warn("readiness condition fails", "check", name, "error", err)
	}
}

// readyHealth is the gRPC health service, answering as /readyz does:
// NOT_SERVING until the readiness conditions hold (a pod with no policy
// must not be marked ready by a gRPC probe), NOT_SERVING again while one
// fails, and for good from shutdown on.
//
// The status is shared by every client, so it is evaluated only under the
// server's own context: a caller's deadline or cancellation must never
// fail a condition and publish NOT_SERVING to the others.
type readyHealth struct {
	*health.Server
	ready   *readinessChecks
	changed chan struct{}

	ctx    context.Context // cancelled by stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex // one evaluation at a time
	evaluated time.Time
}

func newReadyHealth(ready *readinessChecks) *readyHealth {
	ctx, cancel := context.WithCancel(context.Background())
	h := &readyHealth{Server: health.NewServer(), ready: ready, changed: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
	h.set(false)
	return h
}

// Check answers, for the services it reports on, from an evaluation at
// most checkFreshness old, so that a probe gets nearly the answer /readyz
// would give now.
func (h *readyHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if slices.Contains(healthServices, req.GetService()) {
		h.refreshOlder(checkFreshness)
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

// refreshOlder re-evaluates readiness unless the last evaluation is
// younger than age (0: always).
func (h *readyHealth) refreshOlder(age time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if age > 0 && time.Since(h.evaluated) < age {
		return
	}
	ok, _ := h.ready.check(h.ctx)
	h.evaluated = time.Now()
	if h.ctx.Err() == nil { // stopping: Shutdown decides
		h.set(ok)
	}
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
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		tick := time.NewTicker(healthRefresh)
		defer tick.Stop()
		for {
			h.refreshOlder(0)
			select {
			case <-h.ctx.Done():
				return
			case <-tick.C:
			case <-h.changed:
			}
		}
	}()
}

// stop answers NOT_SERVING from now on.
func (h *readyHealth) stop() {
	h.cancel()
	h.wg.Wait()
	h.Shutdown()
}
