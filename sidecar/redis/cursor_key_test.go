package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// TestCursorKeyLost: the key replicas seal cursors with lives in Redis.
// When it is lost (a flush, an eviction), a cursor sealed with the old
// key is refused as malformed, and replicas that held different keys
// agree again as soon as one is handed a cursor of the other.
func TestCursorKeyLost(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	prefix := freshPrefix()
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	open := func() *redis.Store {
		s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: prefix,
			ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(func() time.Time { return now }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	a, b := open(), open()
	if _, err := a.PutCustomer(ctx, &sidecar.Customer{ID: "acme"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetConsent(ctx, &sidecar.Consent{Customer: "acme", Allowed: true, SetBy: "acme", SetAt: now}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"s1", "s2", "s3"} {
		ss := &sidecar.Session{ID: id, Actor: "alice", Customer: "acme", StoreView: "en", StartedAt: now, ExpiresAt: now.Add(time.Hour)}
		if _, err := a.StartSession(ctx, sidecar.SessionStart{Session: ss, CodeHash: "code-" + id, CodeExpiresAt: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Millisecond)
	}
	f := sidecar.SessionFilter{Actor: "alice", Page: sidecar.Page{Limit: 1}}
	page := func(s *redis.Store, cursor string) ([]sidecar.Session, string, error) {
		g := f
		g.Cursor = cursor
		return s.ListSessions(ctx, g)
	}
	_, old, err := page(a, "")
	if err != nil || old == "" {
		t.Fatalf("first page: cursor %q, %v", old, err)
	}
	if got, _, err := page(b, old); err != nil || len(got) != 1 || got[0].ID != "s2" {
		t.Fatalf("another replica resumed at %v, %v; want [s2]", got, err)
	}

	if err := srv.Client().Del(ctx, prefix+":cursor-key").Err(); err != nil {
		t.Fatal(err)
	}
	c := open() // a replica started after the loss makes a new key
	_, fresh, err := page(c, "")
	if err != nil || fresh == "" {
		t.Fatalf("first page on the new key: cursor %q, %v", fresh, err)
	}
	if _, _, err := page(c, old); sidecar.ErrorField(err) != "cursor" {
		t.Fatalf("a cursor of the lost key: %v, want EINVALID on cursor", err)
	}
	if got, _, err := page(a, fresh); err != nil || len(got) != 1 || got[0].ID != "s2" {
		t.Fatalf("a replica holding the lost key resumed at %v, %v; want [s2]", got, err)
	}
	_, again, err := page(a, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := page(c, again); err != nil || len(got) != 1 || got[0].ID != "s2" {
		t.Fatalf("after taking up the new key, its cursor resumed at %v, %v; want [s2]", got, err)
	}
}
