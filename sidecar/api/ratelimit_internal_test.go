package api

import (
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// Buckets are keyed by issuer and subject as verified, and only the most
// recently seen callers are remembered.
func TestWriteLimiterKeysAndBound(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := newWriteLimiter(Config{WriteRate: 1, WriteBurst: 1, WriteCallers: 2})
	take := func(iss, sub string) bool {
		_, ok := l.allow(&sidecar.Identity{Issuer: iss, Subject: sub}, now)
		return ok
	}
	t.Run("same subject, two issuers", func(t *testing.T) {
		if !take("https://a.example", "u1") || !take("https://b.example", "u1") {
			t.Fatal("one issuer's subject spent another's budget")
		}
		if take("https://a.example", "u1") {
			t.Fatal("second write within the burst of one allowed")
		}
	})
	t.Run("bounded", func(t *testing.T) {
		for _, sub := range []string{"u2", "u3", "u4"} {
			take("https://a.example", sub)
		}
		if n := l.callers.Len(); n != 2 {
			t.Fatalf("%d callers remembered, want 2", n)
		}
	})
	t.Run("wait", func(t *testing.T) {
		wait, ok := l.allow(&sidecar.Identity{Issuer: "https://a.example", Subject: "u4"}, now)
		if ok || wait != time.Second {
			t.Fatalf("got %v, %v; want a refusal for 1s", wait, ok)
		}
	})
}
