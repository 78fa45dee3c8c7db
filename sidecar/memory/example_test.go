package memory_test

import (
	"context"
	"fmt"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/memory"
)

// A session is stored when staff start it, gets its cookie token's hash
// when the redeem link is used, and is found by that hash on every
// storefront request.
func Example() {
	ctx := context.Background()
	now := time.Date(2030, 1, 1, 9, 0, 0, 0, time.UTC)
	s := memory.New(memory.WithClock(func() time.Time { return now }))

	_ = s.CreateSession(ctx, &sidecar.Session{ID: "s1", Actor: "alice", Customer: "c42",
		StartedAt: now, ExpiresAt: now.Add(time.Hour)})
	_ = s.PutRedeemCode(ctx, "sha256-of-code", "s1", now.Add(30*time.Second))

	id, _ := s.TakeRedeemCode(ctx, "sha256-of-code")
	_ = s.SetSessionToken(ctx, id, "sha256-of-cookie")
	_, err := s.TakeRedeemCode(ctx, "sha256-of-code")
	fmt.Println("second redeem:", sidecar.ErrorCode(err))

	ss, _ := s.SessionByToken(ctx, "sha256-of-cookie")
	fmt.Println(ss.Actor, "acts for", ss.Customer, "live:", ss.Live(now))
	// Output:
	// second redeem: not_found
	// alice acts for c42 live: true
}
