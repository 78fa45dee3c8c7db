package delegation_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// A session started under a consent given until E expires at E. When the
// customer extends the consent before E, the consent does not end the
// session: it is recorded as expired (its own lifetime, fixed at start),
// not as consent_expired, on both stores; unextended, it is recorded as
// consent_expired.
func TestExtendedConsentSessionEndsAsExpired(t *testing.T) {
	for _, ps := range partnerStores(t) {
		for _, tc := range []struct {
			name   string
			extend bool
			until  time.Duration // the extended consent's expiry, from the start (0: none)
			want   string
		}{
			{"extended_without_expiry", true, 0, sidecar.EndExpired},
			{"extended_past_the_session", true, 3 * time.Hour, sidecar.EndExpired},
			{"not_extended", false, 0, sidecar.EndConsentExpired},
		} {
			t.Run(ps.name+"/"+tc.name, func(t *testing.T) {
				clock := newPartnerClock()
				ctx := context.Background()
				store := ps.open(t, clock.Now)
				lc := delegation.NewImpersonation(store, shippedData(t), delegation.WithImpersonationClock(clock.Now))
				c1 := &sidecar.Identity{Subject: "c1"}
				if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: "c1", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
					t.Fatal(err)
				}
				until := clock.Now().Add(20 * time.Minute)
				if _, _, err := lc.SetConsent(ctx, c1, delegation.ConsentChange{Customer: "c1", Allowed: true, ExpiresAt: new(until)}, allowAll); err != nil {
					t.Fatal(err)
				}
				st, err := lc.Start(ctx, alice, delegation.StartRequest{Customer: "c1"}, allowAll)
				if err != nil {
					t.Fatal(err)
				}
				if !st.Session.ExpiresAt.Equal(until) {
					t.Fatalf("session expires at %v, want the consent's expiry %v", st.Session.ExpiresAt, until)
				}
				if tc.extend {
					ch := delegation.ConsentChange{Customer: "c1", Allowed: true}
					if tc.until != 0 {
						ch.ExpiresAt = new(st.Session.StartedAt.Add(tc.until))
					}
					clock.Advance(time.Minute)
					if _, ended, err := lc.SetConsent(ctx, c1, ch, allowAll); err != nil || len(ended) != 0 {
						t.Fatalf("extension: ended %d, %v; want none ended", len(ended), err)
					}
				}
				clock.Advance(20 * time.Minute)
				got, err := store.GetSession(ctx, st.Session.ID)
				if err != nil {
					t.Fatal(err)
				}
				if state := got.EndState(clock.Now()); state != tc.want {
					t.Errorf("past its expiry the session reads %q, want %q", state, tc.want)
				}
				if err := lc.Sweep(ctx); err != nil {
					t.Fatal(err)
				}
				if got, err = store.GetSession(ctx, st.Session.ID); err != nil || got.EndReason != tc.want {
					t.Errorf("swept session: %+v, %v; want ended as %q", got, err, tc.want)
				}
				reasons := []string{}
				for _, e := range events(t, store, sidecar.EventImpersonationEnded) {
					if e.Data["session"] == st.Session.ID {
						reasons = append(reasons, e.Data["end_reason"])
					}
				}
				if len(reasons) != 1 || reasons[0] != tc.want {
					t.Errorf("impersonation.ended events say %v, want [%s]", reasons, tc.want)
				}
			})
		}
	}
}
