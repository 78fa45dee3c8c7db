package delegation_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

func TestPartnerLimitsFromPolicyData(t *testing.T) {
	cases := []struct {
		name        string
		data        map[string]any
		expiryDays  int
		wantExpiry  bool // the expiry is accepted
		pendingDays int
		subscribe   string // "" ok, else the refusal
	}{
		{name: "no data: config defaults", data: nil, expiryDays: 365, wantExpiry: true, pendingDays: 30},
		{name: "shorter maximum", data: map[string]any{"max_grant_days": json.Number("10")}, expiryDays: 365, pendingDays: 30},
		{name: "shorter maximum with minimum", data: map[string]any{"min_grant_days": json.Number("1"), "max_grant_days": json.Number("10")}, expiryDays: 11, pendingDays: 30},
		{name: "within the data's range", data: map[string]any{"min_grant_days": 2.0, "max_grant_days": 10.0}, expiryDays: 10, wantExpiry: true, pendingDays: 30},
		{name: "minimum above maximum is ignored", data: map[string]any{"min_grant_days": 20.0, "max_grant_days": 10.0}, expiryDays: 365, wantExpiry: true, pendingDays: 30},
		{name: "pending expiry", data: map[string]any{"pending_expiry_days": json.Number("5")}, expiryDays: 30, wantExpiry: true, pendingDays: 5},
		{name: "malformed pending expiry is ignored", data: map[string]any{"pending_expiry_days": "soon"}, expiryDays: 30, wantExpiry: true, pendingDays: 30},
		{name: "higher subscription level", data: map[string]any{"subscription_min_level": "update"}, expiryDays: 30, wantExpiry: true, pendingDays: 30, subscribe: "level_below_minimum:update"},
		{name: "unknown subscription level is ignored", data: map[string]any{"subscription_min_level": "gold"}, expiryDays: 30, wantExpiry: true, pendingDays: 30},
	}
	ps := partnerStores(t)[0]
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			data := func() map[string]any {
				if tc.data == nil {
					return nil
				}
				return map[string]any{"deputy": map[string]any{"partner": tc.data}}
			}
			p := delegation.NewPartners(env.store, delegation.PartnerConfig{}, delegation.WithPartnerClock(env.clock.Now), delegation.WithPartnerPolicyData(data))
			r, err := p.CheckRequest(ctx, patUser, orgRequest(sidecar.LevelLook, tc.expiryDays))
			if !tc.wantExpiry {
				wantCode(t, err, sidecar.EINVALID, "")
				if sidecar.ErrorField(err) != "expiry_days" {
					t.Fatalf("field = %q", sidecar.ErrorField(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := env.clock.Now().Add(day * time.Duration(tc.pendingDays)); !r.PendingExpiresAt.Equal(want) {
				t.Fatalf("pending until %v, want %v", r.PendingExpiresAt, want)
			}
			if err := p.Request(ctx, r); err != nil {
				t.Fatal(err)
			}
			if _, _, err := p.Approve(ctx, cora, r.ID); err != nil {
				t.Fatal(err)
			}
			_, err = p.Subscribe(ctx, patUser, "acme", delegation.SubscriptionDashboard)
			if tc.subscribe == "" && err != nil {
				t.Fatalf("subscribe: %v", err)
			}
			if tc.subscribe != "" {
				wantCode(t, err, sidecar.EFORBIDDEN, tc.subscribe)
			}
		})
	}
}
