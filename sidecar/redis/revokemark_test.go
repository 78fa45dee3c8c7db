package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// TestRevocationNotHeldBackByItsMark: the mark a revocation keeps for the
// records sweep lies in another slot (another node of a Cluster). With
// that node no longer answering, the revocation still goes through
// within its caller's deadline, and the grant is gone; the mark was
// tried.
func TestRevocationNotHeldBackByItsMark(t *testing.T) {
	srv := redistest.Start(t)
	px := redistest.StartProxy(t, srv.Addr)
	// A reply may take longer than the revocation's caller waits (a
	// remote Redis): the silent node's command then outlasts the caller.
	s, err := redis.New(redis.Config{Addrs: []string{px.Addr}, KeyPrefix: freshPrefix(), ReadTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, id := range []string{"g1", "g2", "g3"} {
		if err := s.PutGrant(ctx, &sidecar.Grant{ID: id, Customer: "acme", PartnerOrg: "helpco-" + id, Level: sidecar.Level("update"),
			ExpiresAt: time.Now().Add(24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	px.StallOn("partner:revoked")
	for _, id := range []string{"g1", "g2", "g3"} {
		// The deadline is many times what the revocation needs, and less
		// than the silent node's reply may take: a revocation waiting for
		// its mark misses it whatever the machine's speed.
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		g, err := s.RevokeGrant(rctx, "acme", id, "alice", "acme")
		cancel()
		if err != nil || g == nil || g.ID != id {
			t.Fatalf("revoking %s with its mark's node silent: %+v, %v", id, g, err)
		}
		if live, err := s.GetGrant(ctx, "acme", id); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
			t.Fatalf("grant %s still found after its revocation answered: %+v, %v", id, live, err)
		}
	}
	if px.Stalled() == 0 {
		t.Fatal("no mark reached the silent node: the test proved nothing")
	}
}
