package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// BenchmarkTouchSession is the last-seen write a check makes for a
// session in use (at most once per third of its idle timeout), against a
// real redis-server on loopback: its cost is round trips.
func BenchmarkTouchSession(b *testing.B) {
	ctx := context.Background()
	srv := redistest.Start(b)
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	if _, err := s.PutCustomer(ctx, &sidecar.Customer{ID: "acme"}, sidecar.Protection{}); err != nil {
		b.Fatal(err)
	}
	if _, err := s.SetConsent(ctx, &sidecar.Consent{Customer: "acme", Allowed: true, SetBy: "acme", SetAt: time.Now()}); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	ss := &sidecar.Session{ID: "s1", Actor: "alice", Customer: "acme", StartedAt: now, ExpiresAt: now.Add(time.Hour), IdleTimeout: time.Hour}
	if _, err := s.StartSession(ctx, sidecar.SessionStart{Session: ss, CodeHash: "code-s1", CodeExpiresAt: now.Add(time.Minute)}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.TouchSession(ctx, "s1", time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	got, err := s.GetSession(ctx, "s1")
	if err != nil {
		b.Fatal(err)
	}
	if !got.LastSeen.After(now) {
		b.Fatalf("last seen %v after touches from %v: not moved", got.LastSeen, now)
	}
}
