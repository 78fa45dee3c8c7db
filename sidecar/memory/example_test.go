package memory_test

import (
	"context"
	"fmt"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/memory"
)

// A session is stored with its redeem code when staff start it (only
// while the customer consents), gets its cookie token's hash when the
// redeem link is used, and is found by that hash on every storefront
// request.
func Example() {
	ctx := context.Background()
	now := time.Date(2030, 1, 1, 9, 0, 0, 0, time.UTC)
	s := memory.New(memory.WithClock(func() time.Time { return now }))

	_, _ = s.PutCustomer(ctx, &sidecar.Customer{ID: "c42"}, sidecar.Protection{})
	_, _ = s.SetConsent(ctx, &sidecar.Consent{Customer: "c42", Allowed: true, SetBy: "c42", SetAt: now})
	_, _ = s.StartSession(ctx, sidecar.SessionStart{
		Session:  &sidecar.Session{ID: "s1", Actor: "alice", Customer: "c42", StartedAt: now, ExpiresAt: now.Add(time.Hour)},
		CodeHash: "sha256-of-code", CodeExpiresAt: now.Add(30 * time.Second),
	})

	_, _ = s.RedeemSession(ctx, "sha256-of-code", "sha256-of-cookie", "shop.example.com", "", sidecar.SessionLimits{})
	_, err := s.RedeemSession(ctx, "sha256-of-code", "sha256-of-other-cookie", "shop.example.com", "", sidecar.SessionLimits{})
	fmt.Println("second redeem:", sidecar.ErrorCode(err))

	ss, _ := s.SessionByToken(ctx, "sha256-of-cookie")
	fmt.Println(ss.Actor, "acts for", ss.Customer, "live:", ss.Live(now))
	// Output:
	// second redeem: not_found
	// alice acts for c42 live: true
}
