package redis_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// errWriteFailed is how a narrowing write fails when Redis is out of
// reach.
var errWriteFailed = sidecar.Unavailable("state store unavailable", errors.New("connection reset"))

// lateEvictorRuns says whether any store's scheduler of late evictions
// runs.
func lateEvictorRuns() bool {
	buf := make([]byte, 1<<20)
	return bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("redis.(*Store).lateEvictor("))
}

// lateBatches collects what a store's scheduler of late evictions
// publishes, on the clock of the test.
type lateBatches struct {
	clock *storetest.Clock
	start time.Time
	wake  func()
	sent  chan []string
}

func newLateBatches(s *redis.Store, max int) *lateBatches {
	b := &lateBatches{clock: storetest.NewClock(storetest.Epoch), start: storetest.Epoch, sent: make(chan []string, 64)}
	b.wake = s.LateEvictions(b.clock.Now, func(keys []string) { b.sent <- slices.Sorted(slices.Values(keys)) }, max)
	return b
}

// at moves the clock to age (since the start) and returns the keys
// published then.
func (b *lateBatches) at(t *testing.T, age time.Duration) []string {
	t.Helper()
	b.clock.Advance(b.start.Add(age).Sub(b.clock.Now()))
	b.wake()
	select {
	case keys := <-b.sent:
		return keys
	case <-time.After(10 * time.Second):
		t.Fatalf("nothing published again at %s", age)
		return nil
	}
}

// openLate opens a store on srv under a fresh prefix.
func openLate(t *testing.T, srv *redistest.Server, opts ...redis.Option) *redis.Store {
	t.Helper()
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: freshPrefix(), ReadTimeout: redistest.ReplyTimeout,
		WriteTimeout: redistest.ReplyTimeout}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// During an outage every narrowing write fails, and each schedules its
// eviction again for two minutes: the schedules share one goroutine, so
// a steady stream of failing writes does not pile up goroutines and
// timers (rate × 128 s of them before) until the sidecar runs out of
// memory.
func TestFailedWritesShareOneLateEvictor(t *testing.T) {
	s := openLate(t, redistest.Start(t))
	t.Cleanup(s.Subscribe(func(string) {}))
	ctx := context.Background()
	const writers, writes = 64, 200
	round := func(writes int) {
		var wg sync.WaitGroup
		for g := range writers {
			wg.Go(func() {
				for i := range writes {
					if err := s.EvictDespite(ctx, errWriteFailed, fmt.Sprintf("grant:c%d-%d", g, i)); err != errWriteFailed {
						t.Errorf("EvictDespite returned %v, want the write's error", err)
					}
				}
			})
		}
		wg.Wait()
	}
	// One failed write each first, so the baseline counts what any
	// failure starts (and the connections the writers open).
	round(1)
	base := runtime.NumGoroutine()
	round(writes)
	var n int
	defer func() {
		if t.Failed() {
			t.Logf("%d goroutines, %d before", n, base)
		}
	}()
	eventually(t, fmt.Sprintf("goroutines back to about %d after %d failed writes", base, writers*writes), func() bool {
		n = runtime.NumGoroutine()
		return n <= base+8
	})
}

// A key named by a second failed write is evicted again on the second
// write's schedule, which may land later than the first: 1, 2, 4 ... 128 s
// after it, and no longer on the first one's. Keys falling due together
// go out together, to every replica through Redis.
func TestKeyFailingAgainIsEvictedOnItsNewSchedule(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s := openLate(t, srv)
	b := newLateBatches(s, 100)
	// What reaches Redis's channel, as another replica hears it.
	heard := &keyLog{}
	ps := srv.Client().Subscribe(ctx, s.Channel())
	t.Cleanup(func() { _ = ps.Close() })
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		for m := range ps.Channel() {
			heard.add(m.Payload)
		}
	}()

	if err := s.EvictDespite(ctx, errWriteFailed, "again", "once"); err != errWriteFailed {
		t.Fatal(err)
	}
	if got := b.at(t, time.Second); !slices.Equal(got, []string{"again", "once"}) {
		t.Fatalf("at 1 s: published %q, want both keys together", got)
	}
	b.clock.Advance(500 * time.Millisecond)
	if err := s.EvictDespite(ctx, errWriteFailed, "again"); err != errWriteFailed {
		t.Fatal(err)
	}
	const restarted = 1500 * time.Millisecond
	want := map[time.Duration]string{}
	for age := time.Second; age <= 128*time.Second; age *= 2 {
		if age > time.Second {
			want[age] = "once"
		}
		want[restarted+age] = "again"
	}
	for _, age := range slices.Sorted(maps.Keys(want)) {
		if got := b.at(t, age); !slices.Equal(got, []string{want[age]}) {
			t.Fatalf("at %s: published %q, want %q", age, got, want[age])
		}
	}
	eventually(t, "the scheduler stops once nothing is scheduled", func() bool { return !lateEvictorRuns() })
	if len(b.sent) > 0 {
		t.Fatalf("published %q after the last age", <-b.sent)
	}
	// Each write published its keys at once, then 8 times.
	if err := srv.Client().Publish(ctx, s.Channel(), "fence").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the fence heard", func() bool { return heard.has("fence") })
	if again, once := heard.count("again"), heard.count("once"); again != 2+1+8 || once != 1+8 {
		t.Fatalf("Redis carried again %d times, once %d times; want 11 and 9", again, once)
	}
}

// However many keys failing writes name, the schedules stay bounded: past
// the bound the oldest are dropped, with one warning.
func TestLateEvictionsAreBounded(t *testing.T) {
	ctx := context.Background()
	var logged bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logged}, nil))
	s := openLate(t, redistest.Start(t), redis.WithLogger(log))
	const max = 4
	b := newLateBatches(s, max)
	var keys []string
	for i := range 3 * max {
		keys = append(keys, fmt.Sprintf("k%02d", i))
		if err := s.EvictDespite(ctx, errWriteFailed, keys[i]); err != errWriteFailed {
			t.Fatal(err)
		}
		b.clock.Advance(time.Millisecond)
	}
	if n := s.LateEvictionsScheduled(); n != max {
		t.Fatalf("%d keys scheduled, want %d", n, max)
	}
	if got, want := b.at(t, time.Second+time.Duration(len(keys))*time.Millisecond), keys[len(keys)-max:]; !slices.Equal(got, want) {
		t.Fatalf("published %q, want the latest %q", got, want)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if n := strings.Count(logged.String(), "level=WARN msg=\"failed narrowing writes: more keys"); n != 1 {
		t.Fatalf("warned %d times of dropped schedules, want once:\n%s", n, logged.String())
	}
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Nothing runs for late evictions until a write fails; Close stops what
// one started.
func TestCloseStopsLateEvictor(t *testing.T) {
	s := openLate(t, redistest.Start(t))
	newLateBatches(s, 100)
	t.Cleanup(s.Subscribe(func(string) {}))
	if lateEvictorRuns() {
		t.Fatal("late evictions scheduled before any write failed")
	}
	if err := s.EvictDespite(context.Background(), errWriteFailed, "k"); err != errWriteFailed {
		t.Fatal(err)
	}
	// A goroutine shows its function once it has started.
	eventually(t, "a scheduler for the failed write's late evictions", lateEvictorRuns)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Close waits for it, but it may still be leaving.
	eventually(t, "the scheduler of late evictions stops with Close", func() bool { return !lateEvictorRuns() })
	if err := s.EvictDespite(context.Background(), errWriteFailed, "after-close"); err != errWriteFailed {
		t.Fatal(err)
	}
	if n := s.LateEvictionsScheduled(); n != 1 {
		t.Fatalf("%d keys scheduled after a write failed after Close, want only the one before", n)
	}
}
