package delegation_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// offsetClock is the real clock moved by an offset that can be changed:
// a replica whose clock runs ahead, or a later instant for the one that
// does not.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) Now() time.Time      { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) Set(d time.Duration) { c.off.Store(int64(d)) }

// A session started through a replica whose clock runs 5 minutes ahead
// is honoured by the others for max_session from its start by Redis's
// clock, and its redeem link for the redeem TTL: stamped at the replica's
// clock, it outlived both by 5 minutes on every honest replica.
func TestWriterAheadStartIsHonouredNoLongerThanMaxSession(t *testing.T) {
	const skew, maxSession = 5 * time.Minute, 10 * time.Minute
	ctx := context.Background()
	srv := redistest.Start(t)
	raw, err := json.Marshal(shippedData(t)())
	if err != nil {
		t.Fatal(err)
	}
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatal(err)
	}
	sw := data["deputy"].(map[string]any)["impersonation"].(map[string]any)
	sw["max_session"], sw["idle_timeout"] = "10m", "1h"
	policyData := func() map[string]any { return data }
	var honestClock, aheadClock offsetClock
	aheadClock.Set(skew)
	open := func(clock *offsetClock) (sidecar.Store, *delegation.Impersonation) {
		s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "ahead",
			ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout},
			redis.WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		lc := delegation.NewImpersonation(s, policyData, delegation.WithImpersonationClock(clock.Now))
		t.Cleanup(func() { _ = lc.Close(); _ = s.Close() })
		return s, lc
	}
	honest, honestLC := open(&honestClock)
	_, aheadLC := open(&aheadClock)
	res := resolve.NewSessionResolver(honest, delegation.ImpersonationConfig{}, resolve.WithSessionClock(honestClock.Now),
		resolve.WithSessionPolicyData(policyData))
	t.Cleanup(func() { _ = res.Close() })
	if _, err := honest.PutCustomer(ctx, &sidecar.Customer{ID: "c42", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := honestLC.SetConsent(ctx, &sidecar.Identity{Subject: "c42"}, delegation.ConsentChange{Customer: "c42", Allowed: true}, allowAll); err != nil {
		t.Fatal(err)
	}

	st, err := aheadLC.Start(ctx, &sidecar.Identity{Subject: "alice", Roles: []string{"support_agent"}, ExpiresAt: aheadClock.Now().Add(8 * time.Hour)},
		delegation.StartRequest{Customer: "c42"}, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	if st.Session.StartedAt.After(started) || st.CodeUntil.After(started.Add(delegation.DefaultRedeemTTL)) ||
		st.Session.ExpiresAt.After(started.Add(maxSession)) {
		t.Fatalf("started through the replica ahead by %v: answered as started %v, expiring %v, link until %v, at %v by Redis's clock",
			skew, st.Session.StartedAt, st.Session.ExpiresAt, st.CodeUntil, started)
	}
	red, err := honestLC.Redeem(ctx, nil, st.Code, "", "shop.example.com", allowAll)
	if err != nil {
		t.Fatal(err)
	}
	req := &sidecar.Request{Host: "shop.example.com", Headers: map[string]string{"cookie": "deputy_session=" + red.Token}}
	if d, err := res.Resolve(ctx, req, nil); err != nil || d == nil {
		t.Fatalf("the honest replica right after the start: %+v, %v; want the session honoured", d, err)
	}
	honestClock.Set(time.Since(started) + maxSession)
	if d, err := res.Resolve(ctx, req, nil); d != nil || sidecar.ErrorReason(err) != "session_"+sidecar.EndExpired {
		t.Fatalf("the honest replica max_session (%v) after the start: %+v, %v; want denied as expired", maxSession, d, err)
	}
}
