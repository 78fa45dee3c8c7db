package delegation_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// The consent lookup is the second line: even with the session cached as
// live (its own eviction lost), a withdrawn consent, or one narrowed to
// end before the session does, denies the next request. A session never
// outlives the consent it started under, so narrowed is how a consent
// ends first.
func TestSessionResolverChecksConsent(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock(storetest.Epoch)
	cases := []struct {
		name    string
		consent func(now time.Time) *sidecar.Consent // written straight to the store
		advance time.Duration
		reason  string
	}{
		{"withdrawn", func(now time.Time) *sidecar.Consent { return &sidecar.Consent{Allowed: false} }, 0, "session_consent_withdrawn"},
		{"narrowed", func(now time.Time) *sidecar.Consent {
			return &sidecar.Consent{Allowed: true, ExpiresAt: now.Add(4 * time.Second)}
		}, 0, "session_consent_withdrawn"},
		{"still_granted", func(now time.Time) *sidecar.Consent { return &sidecar.Consent{Allowed: true} }, time.Second, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store := memory.New(memory.WithClock(clock.Now))
			cookie := strings.Repeat("c", 43)
			s := &sidecar.Session{ID: "imp_1", Actor: "alice", Customer: "c42", StartedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour), Host: "shop.example.com"}
			if err := storetest.StartRedeemed(ctx, store, s, delegation.HashSecret(cookie)); err != nil {
				t.Fatal(err)
			}
			r := resolve.NewSessionResolver(storetest.LostSessionEvictions{Store: store}, delegation.ImpersonationConfig{CacheTTL: time.Hour},
				resolve.WithSessionClock(clock.Now))
			defer r.Close()
			req := &sidecar.Request{Host: "shop.example.com", Headers: map[string]string{"cookie": "deputy_session=" + cookie}}
			if d, err := r.Resolve(ctx, req, nil); err != nil || d == nil {
				t.Fatalf("before: %v, %v", d, err)
			}
			c := tc.consent(clock.Now())
			c.Customer, c.SetBy, c.SetAt = "c42", "c42", clock.Now()
			if _, err := store.SetConsent(ctx, c); err != nil {
				t.Fatal(err)
			}
			if tc.advance > 0 { // a consent that covers the session still holds
				if d, err := r.Resolve(ctx, req, nil); err != nil || d == nil {
					t.Fatalf("before the lapse: %v, %v", d, err)
				}
				clock.Advance(tc.advance)
			}
			d, err := r.Resolve(ctx, req, nil)
			if tc.reason == "" {
				if err != nil || d == nil {
					t.Fatalf("after: %v, %v", d, err)
				}
				return
			}
			if d != nil || sidecar.ErrorReason(err) != tc.reason {
				t.Fatalf("after: %+v, %v; want %s", d, err, tc.reason)
			}
		})
	}
}

// A customer narrows or withdraws consent through one replica; the staff
// member's next request on another replica, whose caches hold the session
// and the consent for an hour, is denied.
func TestConsentChangeReachesEveryReplica(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	clock := storetest.NewClock(storetest.Epoch)
	cases := []struct {
		name   string
		change delegation.ConsentChange
		reason string
	}{
		{"withdrawn", delegation.ConsentChange{Customer: "c42"}, "session_consent_withdrawn"},
		{"narrowed", delegation.ConsentChange{Customer: "c42", Allowed: true, ExpiresAt: new(clock.Now().Add(4 * time.Second))}, "session_consent_withdrawn"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prefix := fmt.Sprintf("consent%d", i)
			a, b := redisReplica(t, srv, prefix, clock), redisReplica(t, srv, prefix, clock)
			lc := delegation.NewImpersonation(a, shippedData(t), delegation.WithImpersonationClock(clock.Now))
			st, resolvers, req := liveOnTwoReplicas(t, lc, a, b, clock)
			customer := &sidecar.Identity{Subject: "c42"}
			if _, _, err := lc.SetConsent(ctx, customer, tc.change, allowAll); err != nil {
				t.Fatal(err)
			}
			partnerEventually(t, "replica b denies the session", func() bool {
				_, err := resolvers["b"].Resolve(ctx, req, nil)
				return sidecar.ErrorReason(err) == tc.reason
			})
			s, err := b.GetSession(ctx, st.Session.ID)
			if err != nil {
				t.Fatal(err)
			}
			if s.EndReason != sidecar.EndConsentWithdrawn {
				t.Fatalf("session ended as %q", s.EndReason)
			}
		})
	}
}

// With storefront hosts configured, a session is honoured on each of them
// (not only where it was redeemed) and nowhere else.
func TestSessionResolverConfiguredHosts(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock(storetest.Epoch)
	store := memory.New(memory.WithClock(clock.Now))
	cookie := strings.Repeat("h", 43)
	s := &sidecar.Session{ID: "imp_1", Actor: "alice", Customer: "c42", StartedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour), Host: "shop.example.com"}
	if err := storetest.StartRedeemed(ctx, store, s, delegation.HashSecret(cookie)); err != nil {
		t.Fatal(err)
	}
	r := resolve.NewSessionResolver(store, delegation.ImpersonationConfig{StorefrontHosts: []string{"shop.example.com", "WWW.shop.example.com"}},
		resolve.WithSessionClock(clock.Now))
	defer r.Close()
	for host, want := range map[string]string{
		"shop.example.com": "", "www.shop.example.com:8443": "", "shop.example.com.": "",
		"admin.example.com": "session_wrong_host", "": "session_wrong_host", "shop.example.com.evil.net": "session_wrong_host",
	} {
		d, err := r.Resolve(ctx, &sidecar.Request{Host: host, Headers: map[string]string{"cookie": "deputy_session=" + cookie}}, nil)
		if want == "" && (err != nil || d == nil) || want != "" && (d != nil || sidecar.ErrorReason(err) != want) {
			t.Errorf("host %q: %+v, %v; want %q", host, d, err, want)
		}
	}
}
