package delegation_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

func TestReadSwitches(t *testing.T) {
	imp := func(m map[string]any) map[string]any {
		return map[string]any{"deputy": map[string]any{"impersonation": m}}
	}
	cases := []struct {
		name string
		data map[string]any
		want delegation.Switches
		err  bool
	}{
		{"no policy data: shipped defaults", nil, delegation.Switches{Enabled: true, StoreViewSelection: "default", MaxSession: time.Hour,
			IdleTimeout: 15 * time.Minute, OneSessionPerStaff: true, DisablePageCache: true}, false},
		{"security team's changes", imp(map[string]any{"enabled": false, "store_view_selection": "manual", "require_reason": true,
			"max_session": "30m", "idle_timeout": "0s", "one_session_per_staff": false, "disable_page_cache": false,
			"protected_roles": []any{"staff", "vip"}, "protected_customers": []any{"c1"}}),
			delegation.Switches{StoreViewSelection: "manual", RequireReason: true, MaxSession: 30 * time.Minute,
				ProtectedRoles: []string{"staff", "vip"}, ProtectedCustomers: []string{"c1"}}, false},
		{"malformed duration", imp(map[string]any{"max_session": "an hour"}), delegation.Switches{}, true},
		{"number for a duration", imp(map[string]any{"idle_timeout": 900}), delegation.Switches{}, true},
		{"string for a boolean", imp(map[string]any{"enabled": "yes"}), delegation.Switches{}, true},
		{"protected roles not a list", imp(map[string]any{"protected_roles": "staff"}), delegation.Switches{}, true},
		{"protected role not a string", imp(map[string]any{"protected_roles": []any{"staff", 7}}), delegation.Switches{}, true},
		{"zero max session", imp(map[string]any{"max_session": "0s"}), delegation.Switches{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := delegation.ReadSwitches(tc.data)
			if tc.err {
				if err == nil {
					t.Fatalf("no error for %v", tc.data)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestImpersonationConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		cfg   delegation.ImpersonationConfig
		field string
	}{
		{"defaults", delegation.ImpersonationDefaults(), ""},
		{"zero value", delegation.ImpersonationConfig{}, ""},
		{"bad cookie name", delegation.ImpersonationConfig{SessionCookie: "a=b"}, "impersonation.session_cookie"},
		{"long redeem link", delegation.ImpersonationConfig{RedeemTTL: time.Hour}, "impersonation.redeem_ttl"},
		{"redirect host with path", delegation.ImpersonationConfig{RedirectHosts: []string{"shop.example.com/x"}}, "impersonation.redirect_hosts"},
		{"negative cache ttl", delegation.ImpersonationConfig{CacheTTL: -time.Second}, "impersonation.cache_ttl"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if got := fieldOf(err); got != tc.field {
				t.Fatalf("Validate() = %v, want field %q", err, tc.field)
			}
		})
	}
}

func fieldOf(err error) string {
	if err == nil {
		return ""
	}
	return sidecar.ErrorField(err)
}
