package main

import (
	"context"
	"log/slog"
	"slices"
	"strings"
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

// storeCheck names the readiness condition of the Redis store. /readyz
// reports it, for ops; gRPC health and the chart's probes leave it out:
// while Redis is down Deputy still decides every check that needs no
// delegation state (and fails closed, 503, those that do), so a replica
// must stay in its Service's endpoints rather than take the storefront
// down with the store.
const storeCheck = "redis"

// namespacedIdentityCheck names the readiness condition of the issuers
// with a namespace beside the one without (partners' identity providers):
// that each has keys. /readyz reports it, for ops; gRPC health and the
// chart's probes leave it out, as the store: while a partner's provider
// does not serve its keys, Deputy still decides the other issuers' tokens
// and anonymous requests, and refuses that issuer's tokens (unknown_kid),
// so a pod started meanwhile must still join its Service. The identity
// condition answers for the issuer without a namespace.
const namespacedIdentityCheck = "identity_namespaced"

// probesLeaveOut are the conditions gRPC health leaves out, as the chart's
// HTTP probes do with ?exclude=.
var probesLeaveOut = []string{storeCheck, namespacedIdentityCheck}

// readinessChecks are the conditions /readyz and gRPC health both answer
// from. Why one fails is logged when it changes, not served; whether it
// holds is exported for alerts.
//
// An evaluation is shared by every caller asking for the same conditions:
// concurrent ones wait for the same, and later ones reuse it while it is
// young enough. So it runs on no caller's context: a probe that gives up
// (or a client's deadline) must never fail a condition that others then
// see.
type readinessChecks struct {
	conds   []readiness
	log     *slog.Logger
	observe func(check string, ok bool)

	flight singleflight.Group // keyed by the conditions left out

	mu     sync.Mutex
	last   map[string]string           // each failing condition's last error
	latest map[string]*readinessResult // by the conditions left out: the evaluation begun last of those done
}

// readinessResult is one evaluation: ok when every condition holds, and
// each one's state by name ("ok" or "failing").
type readinessResult struct {
	ok     bool
	states map[string]string
	begun  time.Time
}

func newReadinessChecks(conds []readiness, log *slog.Logger, observe func(check string, ok bool)) *readinessChecks {
	return &readinessChecks{conds: conds, log: log, observe: observe, last: map[string]string{}, latest: map[string]*readinessResult{}}
}

// check answers from an evaluation begun less than maxAge ago, joining
// the one in progress or beginning one when there is none; with maxAge 0
// the evaluation begins after the call (after a policy activation, one
// begun before would not see it). A caller whose ctx ends first stops
// waiting and reads not ready; the evaluation goes on, within
// readyTimeout, for the others.
//
// The conditions named in exclude are left out (a name no condition has
// excludes nothing, as with Kubernetes' /readyz?exclude=), and not
// evaluated at all: a store that hangs cannot hold up an answer that
// leaves it out.
func (r *readinessChecks) check(ctx context.Context, maxAge time.Duration, exclude ...string) (ok bool, states map[string]string) {
	key := r.excluded(exclude)
	if maxAge > 0 {
		r.mu.Lock()
		l := r.latest[key]
		r.mu.Unlock()
		if l != nil && time.Since(l.begun) < maxAge {
			return l.ok, l.states
		}
	} else {
		r.flight.Forget(key)
	}
	done := r.flight.DoChan(key, func() (any, error) {
		return r.evaluate(context.WithoutCancel(ctx), key), nil
	})
	select {
	case res := <-done:
		l := res.Val.(*readinessResult)
		return l.ok, l.states
	case <-ctx.Done():
		return false, nil
	}
}

// excluded names the conditions of exclude, in their order, comma
// separated: the key evaluations are shared and kept under. Only names
// of conditions count, so there are at most 2^len(conds) keys, whatever
// clients ask.
func (r *readinessChecks) excluded(exclude []string) string {
	var names []string
	for _, c := range r.conds {
		if slices.Contains(exclude, c.name) {
			names = append(names, c.name)
		}
	}
	return strings.Join(names, ",")
}

// evaluate checks every condition but those key leaves out, within
// readyTimeout, and keeps the result unless one begun later is kept
// already.
func (r *readinessChecks) evaluate(ctx context.Context, key string) *readinessResult {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	left := strings.Split(key, ",")
	res := &readinessResult{ok: true, states: make(map[string]string, len(r.conds)), begun: time.Now()}
	for _, c := range r.conds {
		if slices.Contains(left, c.name) {
			continue
		}
		err := c.check(ctx)
		r.report(c.name, err)
		res.states[c.name] = "ok"
		if err != nil {
			res.states[c.name], res.ok = "failing", false
		}
	}
	r.mu.Lock()
	if l := r.latest[key]; l == nil || l.begun.Before(res.begun) {
		r.latest[key] = res
	}
	r.mu.Unlock()
	return res
}

// report logs a condition's change: failing (or failing otherwise), or
// holding again.
func (r *readinessChecks) report(name string, err error) {
	r.observe(name, err == nil)
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

// readyHealth is the gRPC health service, answering as
// /readyz?exclude=redis&exclude=identity_namespaced does: NOT_SERVING
// until the conditions Deputy needs to decide hold (a pod with no policy
// must not be marked ready by a gRPC probe), NOT_SERVING again while one
// fails, and for good from shutdown on. The store and the namespaced
// issuers are left out (see storeCheck and namespacedIdentityCheck).
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
	ok, _ := h.ready.check(h.ctx, age, probesLeaveOut...)
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

// start keeps the status current for watchers until stop, and every
// condition's metric and log current: the store is evaluated here too
// (as /readyz does, sharing its evaluation), off the probes' path, so
// that its alert fires even when nobody asks /readyz.
func (h *readyHealth) start() {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		tick := time.NewTicker(healthRefresh)
		defer tick.Stop()
		for {
			h.refreshOlder(0)
			h.ready.check(h.ctx, checkFreshness)
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
