package main

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthServices are the services gRPC health reports on: the server as
// a whole ("") and the ext_authz service.
var healthServices = []string{"", "envoy.service.auth.v3.Authorization"}

// healthRefresh is how often gRPC health re-evaluates readiness for its
// watchers; a policy activation re-evaluates it at once.
const healthRefresh = 5 * time.Second

// checkFreshness is how old an evaluation /readyz and a gRPC health
// Check may answer from; an older one is redone first. It bounds the
// readiness work (a Redis PING each) that clients of the metrics and gRPC
// ports can cause to about one per checkFreshness, however many ask.
const checkFreshness = time.Second

// readyTimeout bounds one evaluation of the readiness conditions: a store
// that stops answering reads as failing within it. It is below the 1 s a
// Kubernetes probe waits by default, so the probe reads 503 and the
// failing condition rather than its own timeout.
const readyTimeout = 800 * time.Millisecond

// readinessChecks are the conditions /readyz and gRPC health both answer
// from. Why one fails is logged when it changes, not served.
//
// An evaluation is shared by every caller: concurrent ones wait for the
// same, and later ones reuse it while it is young enough. So it runs on
// no caller's context: a probe that gives up (or a client's deadline)
// must never fail a condition that others then see.
type readinessChecks struct {
	conds []readiness
	log   *slog.Logger

	flight singleflight.Group

	mu     sync.Mutex
	last   map[string]string // each failing condition's last error
	latest *readinessResult  // the evaluation begun last of those done
}

// readinessResult is one evaluation: ok when every condition holds, and
// each one's state by name ("ok" or "failing").
type readinessResult struct {
	ok     bool
	states map[string]string
	begun  time.Time
}

func newReadinessChecks(conds []readiness, log *slog.Logger) *readinessChecks {
	return &readinessChecks{conds: conds, log: log, last: map[string]string{}}
}

// check answers from an evaluation begun less than maxAge ago, joining
// the one in progress or beginning one when there is none; with maxAge 0
// the evaluation begins after the call (after a policy activation, one
// begun before would not see it). A caller whose ctx ends first stops
// waiting and reads not ready; the evaluation goes on, within
// readyTimeout, for the others.
func (r *readinessChecks) check(ctx context.Context, maxAge time.Duration) (ok bool, states map[string]string) {
	if maxAge > 0 {
		r.mu.Lock()
		l := r.latest
		r.mu.Unlock()
		if l != nil && time.Since(l.begun) < maxAge {
			return l.ok, l.states
		}
	} else {
		r.flight.Forget("")
	}
	done := r.flight.DoChan("", func() (any, error) {
		return r.evaluate(context.WithoutCancel(ctx)), nil
	})
	select {
	case res := <-done:
		l := res.Val.(*readinessResult)
		return l.ok, l.states
	case <-ctx.Done():
		return false, nil
	}
}

// evaluate checks every condition, within readyTimeout, and keeps the
// result unless one begun later is kept already.
func (r *readinessChecks) evaluate(ctx context.Context) *readinessResult {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	res := &readinessResult{ok: true, states: make(map[string]string, len(r.conds)), begun: time.Now()}
	for _, c := range r.conds {
		err := c.check(ctx)
		r.report(c.name, err)
		res.states[c.name] = "ok"
		if err != nil {
			res.states[c.name], res.ok = "failing", false
		}
	}
	r.mu.Lock()
	if r.latest == nil || r.latest.begun.Before(res.begun) {
		r.latest = res
	}
	r.mu.Unlock()
	return res
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

	mu sync.Mutex // results published in the order they are read
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

// refreshOlder publishes readiness from an evaluation younger than age
// (0: one begun now).
func (h *readyHealth) refreshOlder(age time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ok, _ := h.ready.check(h.ctx, age)
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
