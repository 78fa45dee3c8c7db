package resolve_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/logtest"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// wantSessionOver fails unless err denies the session cookie for reason
// and tells the browser to drop it.
func wantSessionOver(t *testing.T, d *sidecar.Delegation, err error, reason string) {
	t.Helper()
	var clear *sidecar.ClearCookie
	if d != nil || sidecar.ErrorCode(err) != sidecar.EUNAUTHORIZED || sidecar.ErrorReason(err) != reason || !errors.As(err, &clear) {
		t.Fatalf("got %+v, %v; want %s with the cookie cleared", d, err, reason)
	}
}

// storefrontRequest is a storefront request carrying the session cookie.
func storefrontRequest(token string) *sidecar.Request {
	return &sidecar.Request{Method: "GET", Host: "shop.example.com", Path: "/", Headers: map[string]string{"cookie": "deputy_session=" + token}}
}

// The store judges idleness from the last-seen it holds, written at most
// once per touch interval. A request the store never heard of (within the
// interval after a write) keeps nothing alive here either: were it to, a
// replica would honour a session the store holds idle, that a new start of
// its staff member no longer counts as live.
func TestSessionResolverIdleIsTheStores(t *testing.T) {
	f := newResolverFixture(t)
	cookie := "deputy_session=" + f.cookie
	if _, err := f.resolve(cookie); err != nil { // writes last-seen
		t.Fatal(err)
	}
	f.advance(59 * time.Second)
	if _, err := f.resolve(cookie); err != nil { // within the touch interval: no write
		t.Fatal(err)
	}
	if n := f.state.touches.Load(); n != 1 {
		t.Fatalf("%d last-seen writes, want 1", n)
	}
	f.advance(15*time.Minute - 59*time.Second) // 15 min since the write
	s, err := f.state.GetSession(context.Background(), "imp_1")
	if err != nil {
		t.Fatal(err)
	}
	if s.EndState(f.clock()) != sidecar.EndIdle {
		t.Fatalf("the store holds the session %q, want idle", s.EndState(f.clock()))
	}
	d, err := f.resolve(cookie)
	wantSessionOver(t, d, err, "session_idle")
	if s, _ := f.state.GetSession(context.Background(), "imp_1"); !s.LastSeen.Before(f.clock().Add(-time.Minute)) {
		t.Fatalf("the denied request wrote last-seen %v", s.LastSeen)
	}
}

// A session the store no longer holds live ends here at the next touch,
// even when its eviction was lost and the cached entry says live: the
// store refuses the touch, and that refusal is the session's end.
func TestSessionResolverTouchRefusedEndsTheSession(t *testing.T) {
	f := newResolverFixture(t)
	lost := storetest.LostSessionEvictions{Store: f.state}
	r := resolve.NewSessionResolver(lost, delegation.ImpersonationConfig{CacheTTL: 10 * time.Minute}, resolve.WithSessionClock(f.clock))
	t.Cleanup(func() { _ = r.Close() })
	req := storefrontRequest(f.cookie)
	ctx := context.Background()
	if _, err := r.Resolve(ctx, req, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.state.EndSession(ctx, "imp_1", "lee", sidecar.EndRevoked, f.clock(), sidecar.SessionLimits{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(ctx, req, nil); err != nil { // cached, no touch due: the eviction was lost
		t.Fatalf("before the touch is due: %v (the test needs the eviction lost)", err)
	}
	f.advance(time.Minute)
	d, err := r.Resolve(ctx, req, nil)
	wantSessionOver(t, d, err, "session_revoked")
	d, err = r.Resolve(ctx, req, nil) // read again, not served from the dropped entry
	wantSessionOver(t, d, err, "session_revoked")
}

// A replica whose clock runs behind the store's cannot stretch the idle
// timeout: the store judges the touch by its own time.
func TestSessionResolverClockBehindTheStore(t *testing.T) {
	f := newResolverFixture(t)
	var skew atomic.Int64 // the store's clock ahead of the replica's
	store := memory.New(memory.WithClock(func() time.Time { return f.clock().Add(time.Duration(skew.Load())) }))
	t.Cleanup(func() { _ = store.Close() })
	s := &sidecar.Session{ID: "imp_2", Actor: "alice", Customer: "c42", StartedAt: f.clock(), ExpiresAt: f.clock().Add(time.Hour),
		IdleTimeout: 15 * time.Minute, Host: "shop.example.com"}
	cookie := strings.Repeat("q", 43)
	if err := storetest.StartRedeemed(context.Background(), store, s, delegation.HashSecret(cookie)); err != nil {
		t.Fatal(err)
	}
	skew.Store(int64(2 * time.Minute))
	r := resolve.NewSessionResolver(store, delegation.ImpersonationConfig{}, resolve.WithSessionClock(f.clock))
	t.Cleanup(func() { _ = r.Close() })
	req := storefrontRequest(cookie)
	f.advance(14 * time.Minute) // 14 min since the start here, 16 in the store
	d, err := r.Resolve(context.Background(), req, nil)
	wantSessionOver(t, d, err, "session_idle")
}

// A cached session that looks idle here is read again before it is
// denied: another replica may have written its last-seen since.
func TestSessionResolverIdleLooksAtOtherReplicasWrites(t *testing.T) {
	f := newResolverFixture(t)
	cfg := delegation.ImpersonationConfig{CacheTTL: 20 * time.Minute}
	a := resolve.NewSessionResolver(f.state, cfg, resolve.WithSessionClock(f.clock))
	b := resolve.NewSessionResolver(f.state, cfg, resolve.WithSessionClock(f.clock))
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	req := storefrontRequest(f.cookie)
	ctx := context.Background()
	if _, err := b.Resolve(ctx, req, nil); err != nil {
		t.Fatal(err)
	}
	f.advance(10 * time.Minute)
	if _, err := a.Resolve(ctx, req, nil); err != nil { // writes last-seen
		t.Fatal(err)
	}
	f.advance(6 * time.Minute) // b's entry: 16 min since the last-seen it read
	reads := f.state.reads.Load()
	if d, err := b.Resolve(ctx, req, nil); err != nil || d == nil || d.Subject != "c42" {
		t.Fatalf("after another replica's write: %+v, %v", d, err)
	}
	if f.state.reads.Load() != reads+1 {
		t.Fatalf("%d session reads, want the one that found the other replica's write", f.state.reads.Load()-reads)
	}
}

// failingTouches is a store whose last-seen writes fail while fail is set.
type failingTouches struct {
	*memory.Store
	fail atomic.Bool
}

func (f *failingTouches) TouchSession(ctx context.Context, id string, at time.Time) error {
	if f.fail.Load() {
		return sidecar.Unavailable("state_unavailable", errors.New("connection refused"))
	}
	return f.Store.TouchSession(ctx, id, at)
}

// A request whose last-seen write failed keeps nothing alive here: the
// store never heard of it, and holds the session idle from the last write
// it took, so this replica denies it from then on too, touch due or not.
func TestSessionResolverUnwrittenRequestKeepsNothingAlive(t *testing.T) {
	f := newResolverFixture(t)
	state := &failingTouches{Store: f.state.Store}
	var logs logtest.Lines
	r := resolve.NewSessionResolver(state, delegation.ImpersonationConfig{}, resolve.WithSessionClock(f.clock),
		resolve.WithSessionLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	t.Cleanup(func() { _ = r.Close() })
	req := storefrontRequest(f.cookie)
	ctx := context.Background()
	if _, err := r.Resolve(ctx, req, nil); err != nil { // writes last-seen
		t.Fatal(err)
	}
	f.advance(14*time.Minute + 30*time.Second)
	state.fail.Store(true)
	if _, err := r.Resolve(ctx, req, nil); err != nil { // live by the last write; this one's write fails
		t.Fatal(err)
	}
	if recs := logs.Records(t); len(recs) != 1 || recs[0]["msg"] != "session last-seen not recorded" {
		t.Fatalf("logged %v, want the failed last-seen write", recs)
	}
	state.fail.Store(false)
	f.advance(40 * time.Second) // 15m10s since the write, 40 s since the failed one: no touch due
	d, err := r.Resolve(ctx, req, nil)
	wantSessionOver(t, d, err, "session_idle")
}

// A session in use never goes idle, whatever its idle timeout against the
// touch interval: with idle_timeout 90s and the default touch interval
// (1m), a request every 45s was denied as idle at the second request,
// since last-seen was written only once a minute. Last-seen is written at
// most every third of the idle timeout, and never more than once a second.
func TestSessionResolverShortIdleTimeoutInUse(t *testing.T) {
	cases := []struct {
		name          string
		idle, gap     time.Duration
		touchesAtMost int64
	}{
		{"idle 90s, a request every 45s", 90 * time.Second, 45 * time.Second, 40},
		{"idle 60s, a request every 39s", time.Minute, 39 * time.Second, 40},
		{"idle 2s, a request every 1.2s", 2 * time.Second, 1200 * time.Millisecond, 40},
		{"idle 2s, ten requests a second", 2 * time.Second, 100 * time.Millisecond, 4}, // once a second at most
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newResolverFixture(t)
			s := &sidecar.Session{ID: "imp_2", Actor: "alice", Customer: "c42", StartedAt: f.clock(), ExpiresAt: f.clock().Add(time.Hour),
				IdleTimeout: tc.idle, Host: "shop.example.com"}
			cookie := strings.Repeat("q", 43)
			if err := storetest.StartRedeemed(context.Background(), f.state, s, delegation.HashSecret(cookie)); err != nil {
				t.Fatal(err)
			}
			req := storefrontRequest(cookie)
			for i := range 40 {
				if d, err := f.r.Resolve(context.Background(), req, nil); err != nil || d == nil {
					t.Fatalf("request %d at +%v, %v after the previous one: %+v, %v", i, time.Duration(i)*tc.gap, tc.gap, d, err)
				}
				f.advance(tc.gap)
			}
			if n := f.state.touches.Load(); n > tc.touchesAtMost {
				t.Fatalf("%d last-seen writes for 40 requests %v apart, want at most %d", n, tc.gap, tc.touchesAtMost)
			}
			f.advance(tc.idle) // and it still goes idle when no longer used
			d, err := f.r.Resolve(context.Background(), req, nil)
			wantSessionOver(t, d, err, "session_idle")
		})
	}
}
