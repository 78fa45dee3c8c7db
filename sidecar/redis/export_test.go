package redis

import (
	"context"
	"time"
)

// EvictDespite exposes the path of a narrowing write that failed with
// err to the tests.
func (s *Store) EvictDespite(ctx context.Context, err error, keys ...string) error {
	return s.evictDespite(ctx, err, keys...)
}

// LateEvictions lets a test run the store's evictions of failed writes
// on its own clock: now is read where time.Now was, wake has the
// scheduler look at the clock again, sent is called after each publish,
// and max bounds the keys scheduled. Call it before any write fails.
func (s *Store) LateEvictions(now func() time.Time, sent func(keys []string), max int) (wake func()) {
	s.inv.late.now, s.inv.late.sent, s.inv.late.max = now, sent, max
	return func() {
		select {
		case s.inv.late.wake <- struct{}{}:
		default:
		}
	}
}

// LateEvictionsScheduled counts the keys scheduled to be evicted again.
func (s *Store) LateEvictionsScheduled() int {
	s.inv.late.mu.Lock()
	defer s.inv.late.mu.Unlock()
	return len(s.inv.late.keys)
}

// Channel is the invalidation channel.
func (s *Store) Channel() string { return s.channel() }

// KeepChangeAhead keeps member in key as a narrowing write keeps its mark.
func (s *Store) KeepChangeAhead(ctx context.Context, key, member string) {
	s.keepChangeAhead(ctx, key, member, time.Now(), "mark not kept")
}
