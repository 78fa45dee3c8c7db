package delegation_test

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
)

// every switch spelled out, as data.deputy.impersonation must.
func allSwitches(edit map[string]any) map[string]any {
	imp := map[string]any{"enabled": true, "store_view_selection": "default", "require_reason": false,
		"max_session": "1h", "idle_timeout": "15m", "one_session_per_staff": true, "disable_page_cache": true,
		"protected_roles": []any{"staff"}, "protected_customers": []any{}, "role_permissions": map[string]any{},
		"forbidden_routes": map[string]any{}, "forbidden_graphql_fields": []any{},
		"max_consent_changes": 10, "consent_change_window": "1h"}
	for k, v := range edit {
		if v == nil {
			delete(imp, k)
		} else {
			imp[k] = v
		}
	}
	return map[string]any{"deputy": map[string]any{"impersonation": imp}}
}

// route is one forbidden route as data spells it; no methods: the key is
// left out, an empty list is kept.
func route(prefix, reason string, methods ...string) map[string]any {
	r := map[string]any{"prefix": prefix, "reason": reason}
	if methods != nil {
		ms := []any{}
		for _, m := range methods {
			ms = append(ms, m)
		}
		r["methods"] = ms
	}
	return r
}

// The switches come from policy data only: data without an impersonation
// section turns impersonation off, and a section that leaves a switch out
// or spells it wrong is an error naming it, never a value Go picked.
func TestReadSwitches(t *testing.T) {
	cases := []struct {
		name string
		data map[string]any
		want delegation.Switches
		path string // named in the error
	}{
		{name: "no policy data: impersonation off", data: nil},
		{name: "no impersonation section: impersonation off", data: map[string]any{"deputy": map[string]any{"authz": map[string]any{}}}},
		{name: "every switch", data: allSwitches(nil), want: delegation.Switches{Enabled: true, StoreViewSelection: "default", MaxSession: time.Hour,
			IdleTimeout: 15 * time.Minute, OneSessionPerStaff: true, DisablePageCache: true, ProtectedRoles: []string{"staff"}, MaxConsentChanges: 10, ConsentChangeWindow: time.Hour}},
		{name: "security team's changes", data: allSwitches(map[string]any{"enabled": false, "store_view_selection": "manual", "require_reason": true,
			"max_session": "30m", "idle_timeout": "0s", "one_session_per_staff": false, "disable_page_cache": false,
			"protected_roles": []any{"staff", "vip"}, "protected_customers": []any{"c1"}}),
			want: delegation.Switches{StoreViewSelection: "manual", RequireReason: true, MaxSession: 30 * time.Minute,
				ProtectedRoles: []string{"staff", "vip"}, ProtectedCustomers: []string{"c1"}, MaxConsentChanges: 10, ConsentChangeWindow: time.Hour}},
		{name: "section not an object", data: map[string]any{"deputy": map[string]any{"impersonation": true}}, path: "data.deputy.impersonation"},
		{name: "malformed duration", data: allSwitches(map[string]any{"max_session": "an hour"}), path: "data.deputy.impersonation.max_session"},
		{name: "number for a duration", data: allSwitches(map[string]any{"idle_timeout": 900}), path: "data.deputy.impersonation.idle_timeout"},
		{name: "negative duration", data: allSwitches(map[string]any{"idle_timeout": "-1m"}), path: "data.deputy.impersonation.idle_timeout"},
		{name: "string for a boolean", data: allSwitches(map[string]any{"enabled": "yes"}), path: "data.deputy.impersonation.enabled"},
		{name: "unknown store view selection", data: allSwitches(map[string]any{"store_view_selection": "any"}), path: "data.deputy.impersonation.store_view_selection"},
		{name: "protected roles not a list", data: allSwitches(map[string]any{"protected_roles": "staff"}), path: "data.deputy.impersonation.protected_roles"},
		{name: "protected role not a string", data: allSwitches(map[string]any{"protected_roles": []any{"staff", 7}}), path: "data.deputy.impersonation.protected_roles"},
		{name: "role permissions not an object", data: allSwitches(map[string]any{"role_permissions": []any{}}), path: "data.deputy.impersonation.role_permissions"},
		{name: "roles granting login_as_customer", data: allSwitches(map[string]any{"role_permissions": map[string]any{
			"support_lead": []any{"view_login_as_customer_log", "login_as_customer"}, "auditor": []any{"view_login_as_customer_log"},
			"admin": []any{"login_as_customer"}, "mailer": []any{}}}),
			want: delegation.Switches{Enabled: true, StoreViewSelection: "default", MaxSession: time.Hour, IdleTimeout: 15 * time.Minute,
				OneSessionPerStaff: true, DisablePageCache: true, ProtectedRoles: []string{"staff"}, ImpersonatingRoles: []string{"admin", "support_lead"}, MaxConsentChanges: 10, ConsentChangeWindow: time.Hour}},
		{name: "role's permissions not a list", data: allSwitches(map[string]any{"role_permissions": map[string]any{"admin": "login_as_customer"}}),
			path: "data.deputy.impersonation.role_permissions.admin"},
		{name: "permission not a string", data: allSwitches(map[string]any{"role_permissions": map[string]any{"admin": []any{"login_as_customer", 7}}}),
			path: "data.deputy.impersonation.role_permissions.admin"},
		{name: "zero max session", data: allSwitches(map[string]any{"max_session": "0s"}), path: "data.deputy.impersonation.max_session"},
		{name: "zero consent changes", data: allSwitches(map[string]any{"max_consent_changes": 0}), path: "data.deputy.impersonation.max_consent_changes"},
		{name: "fractional consent changes", data: allSwitches(map[string]any{"max_consent_changes": 2.5}), path: "data.deputy.impersonation.max_consent_changes"},
		{name: "consent changes as a string", data: allSwitches(map[string]any{"max_consent_changes": "10"}), path: "data.deputy.impersonation.max_consent_changes"},
		{name: "zero consent change window", data: allSwitches(map[string]any{"consent_change_window": "0s"}), path: "data.deputy.impersonation.consent_change_window"},
		{name: "forbidden routes as shipped", data: allSwitches(map[string]any{"forbidden_routes": map[string]any{
			"customer": []any{route("/customer/account/password/", "password_change_forbidden"),
				route("/customer/account/edit/", "account_change_forbidden", "POST", "PUT")},
			"graphql": []any{map[string]any{"prefix": "/graphql/", "graphql": true}}},
			"forbidden_graphql_fields": []any{map[string]any{"field": "updateCustomerV2", "reason": "account_change_forbidden"},
				map[string]any{"field": "_x9", "reason": "b"}}}),
			want: delegation.Switches{Enabled: true, StoreViewSelection: "default", MaxSession: time.Hour,
				IdleTimeout: 15 * time.Minute, OneSessionPerStaff: true, DisablePageCache: true, ProtectedRoles: []string{"staff"}, MaxConsentChanges: 10, ConsentChangeWindow: time.Hour}},
	}
	// Forbidden routes the policy would read as forbidding nothing.
	for name, tc := range map[string]struct {
		routes map[string]any
		path   string
	}{
		"route without a reason": {map[string]any{"vault": []any{map[string]any{"prefix": "/vault/cards/"}}}, "forbidden_routes.vault[0].reason"},
		"empty reason":           {map[string]any{"vault": []any{route("/vault/cards/", "")}}, "forbidden_routes.vault[0].reason"},
		"route under another section": {map[string]any{"customer": []any{route("/customer/account/password/", "a"), route("/vault/cards/", "b")}},
			"forbidden_routes.customer[1].prefix"},
		"section in upper case":        {map[string]any{"Vault": []any{route("/vault/cards/", "b")}}, "forbidden_routes.Vault[0].prefix"},
		"section in another case":      {map[string]any{"vault": []any{route("/Vault/cards/", "b")}}, "forbidden_routes.vault[0].prefix"},
		"relative prefix":              {map[string]any{"vault": []any{route("vault/cards/", "b")}}, "forbidden_routes.vault[0].prefix"},
		"prefix without a closing /":   {map[string]any{"vault": []any{route("/vault/cards", "b")}}, "forbidden_routes.vault[0].prefix"},
		"prefix with an empty segment": {map[string]any{"vault": []any{route("/vault//cards/", "b")}}, "forbidden_routes.vault[0].prefix"},
		"empty method list":            {map[string]any{"vault": []any{route("/vault/cards/", "b", []string{}...)}}, "forbidden_routes.vault[0].methods"},
		"lower-case method":            {map[string]any{"vault": []any{route("/vault/cards/", "b", "post")}}, "forbidden_routes.vault[0].methods"},
		"misspelt key":                 {map[string]any{"vault": []any{map[string]any{"prefix": "/vault/cards/", "reason": "b", "method": []any{"POST"}}}}, "forbidden_routes.vault[0].method"},
		"section not a list":           {map[string]any{"vault": route("/vault/cards/", "b")}, "forbidden_routes.vault"},
		"GraphQL endpoint with a reason": {map[string]any{"graphql": []any{map[string]any{"prefix": "/graphql/", "graphql": true, "reason": "b"}}},
			"forbidden_routes.graphql[0].reason"},
		"GraphQL endpoint with methods": {map[string]any{"graphql": []any{map[string]any{"prefix": "/graphql/", "graphql": true, "methods": []any{"POST"}}}},
			"forbidden_routes.graphql[0].methods"},
		"GraphQL mark not true": {map[string]any{"graphql": []any{map[string]any{"prefix": "/graphql/", "graphql": "yes"}}},
			"forbidden_routes.graphql[0].graphql"},
		"GraphQL mark false": {map[string]any{"graphql": []any{map[string]any{"prefix": "/graphql/", "graphql": false}}},
			"forbidden_routes.graphql[0].graphql"},
		"GraphQL endpoint in upper case": {map[string]any{"graphql": []any{map[string]any{"prefix": "/GraphQL/", "graphql": true}}},
			"forbidden_routes.graphql[0].prefix"},
	} {
		cases = append(cases, struct {
			name string
			data map[string]any
			want delegation.Switches
			path string
		}{name: name, data: allSwitches(map[string]any{"forbidden_routes": tc.routes}), path: "data.deputy.impersonation." + tc.path})
	}
	// Forbidden GraphQL fields the policy would read as forbidding
	// nothing, or as a pattern rather than one name.
	for name, tc := range map[string]struct {
		fields any
		path   string
	}{
		"not a list":        {map[string]any{"field": "deleteCustomer", "reason": "b"}, "forbidden_graphql_fields"},
		"not an object":     {[]any{"deleteCustomer"}, "forbidden_graphql_fields[0]"},
		"without a reason":  {[]any{map[string]any{"field": "deleteCustomer"}}, "forbidden_graphql_fields[0].reason"},
		"empty reason":      {[]any{map[string]any{"field": "deleteCustomer", "reason": ""}}, "forbidden_graphql_fields[0].reason"},
		"without a field":   {[]any{map[string]any{"reason": "b"}}, "forbidden_graphql_fields[0].field"},
		"not a name":        {[]any{map[string]any{"field": "delete.*", "reason": "b"}}, "forbidden_graphql_fields[0].field"},
		"leading digit":     {[]any{map[string]any{"field": "2fa", "reason": "b"}}, "forbidden_graphql_fields[0].field"},
		"alias spelled out": {[]any{map[string]any{"field": "x: deleteCustomer", "reason": "b"}}, "forbidden_graphql_fields[0].field"},
		"misspelt key":      {[]any{map[string]any{"name": "deleteCustomer", "reason": "b"}}, "forbidden_graphql_fields[0].name"},
	} {
		cases = append(cases, struct {
			name string
			data map[string]any
			want delegation.Switches
			path string
		}{name: "GraphQL field " + name, data: allSwitches(map[string]any{"forbidden_graphql_fields": tc.fields}), path: "data.deputy.impersonation." + tc.path})
	}
	// A switch left out is never filled in.
	for _, key := range []string{"enabled", "store_view_selection", "require_reason", "max_session", "idle_timeout",
		"one_session_per_staff", "disable_page_cache", "protected_roles", "protected_customers", "role_permissions", "forbidden_routes",
		"forbidden_graphql_fields", "max_consent_changes", "consent_change_window"} {
		cases = append(cases, struct {
			name string
			data map[string]any
			want delegation.Switches
			path string
		}{name: "missing " + key, data: allSwitches(map[string]any{key: nil}), path: "data.deputy.impersonation." + key})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := delegation.ReadSwitches(tc.data)
			if tc.path != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.path+":") {
					t.Fatalf("ReadSwitches = %+v, %v; want an error naming %s", got, err, tc.path)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// The shipped data spells out every switch.
func TestShippedSwitches(t *testing.T) {
	sw, err := delegation.ReadSwitches(shippedData(t)())
	if err != nil {
		t.Fatal(err)
	}
	if !sw.Enabled || sw.MaxSession != time.Hour || sw.IdleTimeout != 15*time.Minute || !sw.OneSessionPerStaff {
		t.Fatalf("shipped switches: %+v", sw)
	}
}

// A session is started and redeemed only when policy data turns
// impersonation on, whatever the manage policy answered; data that leaves
// a switch out refuses the start naming the switch.
func TestStartNeedsSwitchesInPolicyData(t *testing.T) {
	ctx := context.Background()
	allow := func(string, map[string]any) error { return nil }
	for _, tc := range []struct {
		name string
		data map[string]any
		code string
		msg  string // in the error message
	}{
		{name: "every switch", data: allSwitches(nil)},
		{name: "impersonation off", data: allSwitches(map[string]any{"enabled": false}), code: sidecar.EFORBIDDEN, msg: "impersonation_disabled"},
		{name: "no impersonation section", data: map[string]any{"deputy": map[string]any{}}, code: sidecar.EFORBIDDEN, msg: "impersonation_disabled"},
		{name: "no policy data", code: sidecar.EFORBIDDEN, msg: "impersonation_disabled"},
		{name: "enabled left out", data: allSwitches(map[string]any{"enabled": nil}), code: sidecar.EINTERNAL, msg: "data.deputy.impersonation.enabled"},
		{name: "max session left out", data: allSwitches(map[string]any{"max_session": nil}), code: sidecar.EINTERNAL, msg: "data.deputy.impersonation.max_session"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := memory.New()
			t.Cleanup(func() { _ = store.Close() })
			staff := &sidecar.Identity{Subject: "sam"}
			if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: "cust-1", Name: "C"}, sidecar.Protection{}); err != nil {
				t.Fatal(err)
			}
			if _, err := store.SetConsent(ctx, &sidecar.Consent{Customer: "cust-1", Allowed: true, SetBy: "cust-1", SetAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			lc := delegation.NewImpersonation(store, func() map[string]any { return tc.data })
			st, err := lc.Start(ctx, staff, delegation.StartRequest{Customer: "cust-1"}, allow)
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := lc.Redeem(ctx, nil, st.Code, "/", "shop.example", allow); err != nil {
					t.Fatalf("redeem: %v", err)
				}
				return
			}
			if sidecar.ErrorCode(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Start = %v, want %s naming %q", err, tc.code, tc.msg)
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
		{"redirect host with a port", delegation.ImpersonationConfig{RedirectHosts: []string{"Shop.example.com:8443"}}, ""},
		{"redirect host naming two", delegation.ImpersonationConfig{RedirectHosts: []string{"shop.example.com,evil.example"}}, "impersonation.redirect_hosts"},
		{"storefront hosts", delegation.ImpersonationConfig{StorefrontHosts: []string{"Shop.example.com.", "127.0.0.1", "[::1]"}}, ""},
		{"storefront host with a port", delegation.ImpersonationConfig{StorefrontHosts: []string{"shop.example.com:443"}}, "impersonation.storefront_hosts"},
		{"storefront host naming two", delegation.ImpersonationConfig{StorefrontHosts: []string{"shop.example.com,admin.example"}}, "impersonation.storefront_hosts"},
		{"storefront host with a comma", delegation.ImpersonationConfig{StorefrontHosts: []string{"shop.example.com,"}}, "impersonation.storefront_hosts"},
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
