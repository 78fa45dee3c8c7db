package api

import (
	"math"
	"net/http"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/deputyhq/deputy/sidecar"
)

// writeLimiter gives every caller a token bucket for management writes.
// Each write appends audit entries and events to streams trimmed by
// approximate MAXLEN, so a caller writing without bound would push real
// entries out of them. Buckets are per replica and kept for the most
// recently seen callers only: a caller forgotten starts again with a full
// bucket, which costs nothing worse than one more burst. A write that
// narrows access is counted only when it narrows nothing
// (Router.HandleNarrowing).
type writeLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex // makes get-or-create one step
	callers *lru.Cache[string, *rate.Limiter]
}

func newWriteLimiter(c Config) *writeLimiter {
	callers, _ := lru.New[string, *rate.Limiter](c.WriteCallers) // size > 0: validated
	return &writeLimiter{limit: rate.Limit(c.WriteRate), burst: c.WriteBurst, callers: callers}
}

// mutating reports whether a method changes state.
func mutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// allow takes one write from the caller's bucket at now, or answers how
// long until one is there. The caller is known by issuer and subject as
// verified: two issuers' subjects never share a bucket.
func (l *writeLimiter) allow(id *sidecar.Identity, now time.Time) (time.Duration, bool) {
	key := id.Issuer + "\x00" + id.Subject
	l.mu.Lock()
	lim, ok := l.callers.Get(key)
	if !ok {
		lim = rate.NewLimiter(l.limit, l.burst)
		l.callers.Add(key, lim)
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if !r.OK() { // only with a zero burst, which Validate refuses
		return time.Second, false
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

// rateLimited is the refusal of a write over the caller's budget;
// writeError answers it with Retry-After.
func rateLimited(wait time.Duration) error {
	return sidecar.RateLimited(wait, "too many management writes by this caller; retry in %d s", retryAfterSeconds(wait))
}

// retryAfterSeconds is wait in whole seconds, rounded up, at least 1.
func retryAfterSeconds(wait time.Duration) int64 {
	return max(int64(math.Ceil(wait.Seconds())), 1)
}
