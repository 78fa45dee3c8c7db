package delegation_test

import (
	"context"
	"encoding/json"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// withPartnerData returns the shipped policy data with data.deputy.partner
// changed by edit.
func withPartnerData(t *testing.T, edit map[string]any) map[string]any {
	return withDeputyData(t, "partner", edit)
}

// withDeputyData returns the shipped policy data with data.deputy.<section>
// changed by edit.
func withDeputyData(t *testing.T, section string, edit map[string]any) map[string]any {
	t.Helper()
	shipped := shippedData(t)()
	deputy := maps.Clone(shipped["deputy"].(map[string]any))
	changed := maps.Clone(deputy[section].(map[string]any))
	maps.Copy(changed, edit)
	deputy[section] = changed
	out := maps.Clone(shipped)
	out["deputy"] = deputy
	return out
}

func TestPartnerLimitsFromPolicyData(t *testing.T) {
	cases := []struct {
		name        string
		edit        map[string]any
		expiryDays  int
		wantExpiry  bool // the expiry is accepted
		pendingDays int
		subscribe   string // "" ok, else the refusal
	}{
		{name: "shipped data", expiryDays: 365, wantExpiry: true, pendingDays: 30},
		{name: "shorter maximum", edit: map[string]any{"max_grant_days": json.Number("10")}, expiryDays: 11, pendingDays: 30},
		{name: "within the data's range", edit: map[string]any{"min_grant_days": 2.0, "max_grant_days": 10.0}, expiryDays: 10, wantExpiry: true, pendingDays: 30},
		{name: "below the data's minimum", edit: map[string]any{"min_grant_days": 2.0}, expiryDays: 1, pendingDays: 30},
		{name: "pending expiry", edit: map[string]any{"pending_expiry_days": json.Number("5")}, expiryDays: 30, wantExpiry: true, pendingDays: 5},
		{name: "higher subscription level", edit: map[string]any{"subscription_min_level": "update"}, expiryDays: 30, wantExpiry: true, pendingDays: 30, subscribe: "level_below_minimum:update"},
	}
	ps := partnerStores(t)[0]
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			data := withPartnerData(t, tc.edit)
			p := delegation.NewPartners(env.store, func() map[string]any { return data }, delegation.PartnerConfig{}, delegation.WithPartnerClock(env.clock.Now))
			r, err := p.Request(ctx, patUser, orgRequest(sidecar.LevelLook, tc.expiryDays), allowAll)
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
			if _, _, err := p.Approve(ctx, cora, r.ID, allowAll); err != nil {
				t.Fatal(err)
			}
			_, err = p.Subscribe(ctx, patUser, "acme", delegation.SubscriptionDashboard, allowAll)
			if tc.subscribe == "" && err != nil {
				t.Fatalf("subscribe: %v", err)
			}
			if tc.subscribe != "" {
				wantCode(t, err, sidecar.EFORBIDDEN, tc.subscribe)
			}
		})
	}
}

// A policy update changes the limits the lifecycle applies at once: they
// are read from the serving data, not copied at start.
func TestPartnerLimitsFollowPolicyUpdates(t *testing.T) {
	env := newPartnerEnv(t, partnerStores(t)[0])
	var cur atomic.Pointer[map[string]any]
	first := withPartnerData(t, nil)
	cur.Store(&first)
	p := delegation.NewPartners(env.store, func() map[string]any { return *cur.Load() }, delegation.PartnerConfig{}, delegation.WithPartnerClock(env.clock.Now))
	ctx := context.Background()
	if _, err := p.Request(ctx, patUser, orgRequest(sidecar.LevelLook, 60), allowAll); err != nil {
		t.Fatalf("60 days under the shipped limits: %v", err)
	}
	second := withPartnerData(t, map[string]any{"max_grant_days": 30.0})
	cur.Store(&second)
	_, err := p.Request(ctx, patUser, orgRequest(sidecar.LevelLook, 60), allowAll)
	if sidecar.ErrorField(err) != "expiry_days" || !strings.Contains(sidecar.ErrorMessage(err), "between 1 and 30") {
		t.Fatalf("60 days after the update to 30: %v", err)
	}
}

// Without partner rules in the policy data the lifecycle refuses, naming
// what is missing, rather than inventing limits of its own.
func TestPartnerLimitsMissingFromPolicyData(t *testing.T) {
	env := newPartnerEnv(t, partnerStores(t)[0])
	for name, data := range map[string]map[string]any{
		"no policy":       nil,
		"no partner data": {"deputy": map[string]any{"authz": map[string]any{}}},
	} {
		t.Run(name, func(t *testing.T) {
			p := delegation.NewPartners(env.store, func() map[string]any { return data }, delegation.PartnerConfig{})
			_, err := p.Request(context.Background(), patUser, orgRequest(sidecar.LevelLook, 30), allowAll)
			if err == nil || sidecar.ErrorCode(err) == sidecar.EINVALID {
				t.Fatalf("Request = %v, want a server-side error", err)
			}
		})
	}
}

func TestReadRulesRefusesMalformedData(t *testing.T) {
	cases := []struct {
		name    string
		section string
		edit    map[string]any
		path    string // named in the error; "" when the data is good
	}{
		{name: "shipped", section: "partner"},
		{name: "impersonation switch left out", section: "impersonation", edit: map[string]any{"enabled": nil}, path: "data.deputy.impersonation.enabled"},
		{name: "session length left out", section: "impersonation", edit: map[string]any{"max_session": nil}, path: "data.deputy.impersonation.max_session"},
		{name: "idle timeout malformed", section: "impersonation", edit: map[string]any{"idle_timeout": "soon"}, path: "data.deputy.impersonation.idle_timeout"},
		{name: "pending expiry not a number", section: "partner", edit: map[string]any{"pending_expiry_days": "soon"}, path: "data.deputy.partner.pending_expiry_days"},
		{name: "fractional days", section: "partner", edit: map[string]any{"max_grant_days": 1.5}, path: "data.deputy.partner.max_grant_days"},
		{name: "zero minimum", section: "partner", edit: map[string]any{"min_grant_days": 0.0}, path: "data.deputy.partner.min_grant_days"},
		{name: "missing maximum", section: "partner", edit: map[string]any{"max_grant_days": nil}, path: "data.deputy.partner.max_grant_days"},
		// Days become a time.Duration, which wraps past 106751 days;
		// the bound is 100 years.
		{name: "maximum at 100 years", section: "partner", edit: map[string]any{"max_grant_days": 36500.0}},
		{name: "maximum past 100 years", section: "partner", edit: map[string]any{"max_grant_days": 36501.0}, path: "data.deputy.partner.max_grant_days"},
		{name: "maximum past a Duration", section: "partner", edit: map[string]any{"max_grant_days": 106752.0}, path: "data.deputy.partner.max_grant_days"},
		{name: "pending expiry past 100 years", section: "partner", edit: map[string]any{"pending_expiry_days": 200000.0}, path: "data.deputy.partner.pending_expiry_days"},
		{name: "expiring window past 100 years", section: "partner", edit: map[string]any{"expiring_within_days": 200000.0}, path: "data.deputy.partner.expiring_within_days"},
		{name: "self-service window past 100 years", section: "partner", edit: map[string]any{"self_service_change_window": "876001h"}, path: "data.deputy.partner.self_service_change_window"},
		{name: "session past 100 years", section: "impersonation", edit: map[string]any{"max_session": "876001h"}, path: "data.deputy.impersonation.max_session"},
		{name: "idle timeout past 100 years", section: "impersonation", edit: map[string]any{"idle_timeout": "2562047h"}, path: "data.deputy.impersonation.idle_timeout"},
		{name: "consent window past 100 years", section: "impersonation", edit: map[string]any{"consent_change_window": "876001h"}, path: "data.deputy.impersonation.consent_change_window"},
		{name: "minimum above maximum", section: "partner", edit: map[string]any{"min_grant_days": 20.0, "max_grant_days": 10.0}, path: "data.deputy.partner.min_grant_days"},
		{name: "customer path left out", section: "partner", edit: map[string]any{"customer_path_prefix": nil}, path: "data.deputy.partner.customer_path_prefix"},
		{name: "customer path empty", section: "partner", edit: map[string]any{"customer_path_prefix": ""}, path: "data.deputy.partner.customer_path_prefix"},
		{name: "customer path upper-case", section: "partner", edit: map[string]any{"customer_path_prefix": "Customers"}, path: "data.deputy.partner.customer_path_prefix"},
		{name: "customer path of two segments", section: "partner", edit: map[string]any{"customer_path_prefix": "api/customers"}, path: "data.deputy.partner.customer_path_prefix"},
		{name: "customer path a template", section: "partner", edit: map[string]any{"customer_path_prefix": "{customer}"}, path: "data.deputy.partner.customer_path_prefix"},
		{name: "customer path with a dot", section: "partner", edit: map[string]any{"customer_path_prefix": "customers.json"}, path: "data.deputy.partner.customer_path_prefix"},
		{name: "expiring window left out", section: "partner", edit: map[string]any{"expiring_within_days": nil}, path: "data.deputy.partner.expiring_within_days"},
		{name: "expiring window zero", section: "partner", edit: map[string]any{"expiring_within_days": 0.0}, path: "data.deputy.partner.expiring_within_days"},
		{name: "pending cap left out", section: "partner", edit: map[string]any{"max_pending_requests_per_org": nil}, path: "data.deputy.partner.max_pending_requests_per_org"},
		{name: "pending cap per customer zero", section: "partner", edit: map[string]any{"max_pending_requests_per_customer": 0.0}, path: "data.deputy.partner.max_pending_requests_per_customer"},
		{name: "self-service budget left out", section: "partner", edit: map[string]any{"max_self_service_changes": nil}, path: "data.deputy.partner.max_self_service_changes"},
		{name: "self-service window zero", section: "partner", edit: map[string]any{"self_service_change_window": "0s"}, path: "data.deputy.partner.self_service_change_window"},
		{name: "self-service window not a duration", section: "partner", edit: map[string]any{"self_service_change_window": 3600.0}, path: "data.deputy.partner.self_service_change_window"},
		{name: "sections left out", section: "partner", edit: map[string]any{"sections": nil}, path: "data.deputy.partner.sections"},
		{name: "section not an object", section: "partner", edit: map[string]any{"sections": map[string]any{"site": "service_admin"}}, path: "data.deputy.partner.sections.site"},
		{name: "route table not an object", section: "partner", edit: map[string]any{"sections": map[string]any{"site": map[string]any{"item": "service_admin"}}},
			path: "data.deputy.partner.sections.site.item"},
		{name: "route level unknown", section: "partner", edit: map[string]any{"sections": map[string]any{"site": map[string]any{"item": map[string]any{"GET": "gold"}}}},
			path: "data.deputy.partner.sections.site.item.GET"},
		{name: "route level cc", section: "partner", edit: map[string]any{"sections": map[string]any{"site": map[string]any{"collection": map[string]any{"*": "cc"}}}},
			path: "data.deputy.partner.sections.site.collection.*"},
		{name: "route method in lower case", section: "partner", edit: map[string]any{"sections": map[string]any{"site": map[string]any{"item": map[string]any{"get": "look"}}}},
			path: "data.deputy.partner.sections.site.item.get"},
		{name: "cc item methods not a list", section: "partner", edit: map[string]any{"sections": map[string]any{"site": map[string]any{"cc_item_methods": "GET"}}},
			path: "data.deputy.partner.sections.site.cc_item_methods"},
		{name: "cc item method in lower case", section: "partner", edit: map[string]any{"sections": map[string]any{"site": map[string]any{"cc_item_methods": []any{"GET", "head"}}}},
			path: "data.deputy.partner.sections.site.cc_item_methods[1]"},
		{name: "level ranks left out", section: "partner", edit: map[string]any{"level_rank": nil}, path: "data.deputy.partner.level_rank"},
		{name: "cc rank a string", section: "partner", edit: map[string]any{"level_rank": ranks(map[string]any{"cc": "0"})}, path: "data.deputy.partner.level_rank.cc"},
		{name: "rank a string", section: "partner", edit: map[string]any{"level_rank": ranks(map[string]any{"look": "1"})}, path: "data.deputy.partner.level_rank.look"},
		{name: "rank fractional", section: "partner", edit: map[string]any{"level_rank": ranks(map[string]any{"update": 2.5})}, path: "data.deputy.partner.level_rank.update"},
		{name: "rank null", section: "partner", edit: map[string]any{"level_rank": ranks(map[string]any{"full_admin": nil})}, path: "data.deputy.partner.level_rank.full_admin"},
		{name: "level left unranked", section: "partner", edit: map[string]any{"level_rank": ranks(map[string]any{"create": deleted})}, path: "data.deputy.partner.level_rank.create"},
		{name: "unknown level ranked", section: "partner", edit: map[string]any{"level_rank": ranks(map[string]any{"gold": 9.0})}, path: "data.deputy.partner.level_rank.gold"},
		{name: "look ranked as cc", section: "partner", edit: map[string]any{"level_rank": ranks(map[string]any{"look": 0.0})}, path: "data.deputy.partner.level_rank.look"},
		{name: "ranks out of Go's order", section: "partner", edit: map[string]any{"level_rank": ranks(map[string]any{"service_admin": 6.0})}, path: "data.deputy.partner.level_rank.full_admin"},
		{name: "ranks spaced and shifted", section: "partner", edit: map[string]any{"level_rank": ranks(map[string]any{"cc": -5.0, "look": json.Number("10"), "update": 20.0, "create": 30.0, "service_admin": 40.0, "full_admin": 50.0})}},
		{name: "public routes not an object", section: "authz", edit: map[string]any{"public": []any{"/"}}, path: "data.deputy.authz.public"},
		{name: "public sections not an object", section: "authz", edit: map[string]any{"public": map[string]any{"sections": true}}, path: "data.deputy.authz.public.sections"},
		{name: "route methods not an object", section: "authz", edit: map[string]any{"public": map[string]any{"paths": map[string]any{"/": true}}}, path: "data.deputy.authz.public.paths./"},
		{name: "route method false", section: "authz", edit: map[string]any{"public": map[string]any{"sections": map[string]any{"catalog": map[string]any{"*": true, "DELETE": false}}}},
			path: "data.deputy.authz.public.sections.catalog.DELETE"},
		{name: "route method a string", section: "authz", edit: map[string]any{"authenticated": map[string]any{"paths": map[string]any{"/me": map[string]any{"POST": "true"}}}},
			path: "data.deputy.authz.authenticated.paths./me.POST"},
		{name: "route method a number", section: "authz", edit: map[string]any{"authenticated": map[string]any{"sections": map[string]any{"support": map[string]any{"GET": 1.0}}}},
			path: "data.deputy.authz.authenticated.sections.support.GET"},
		{name: "route method null", section: "authz", edit: map[string]any{"public": map[string]any{"sections": map[string]any{"catalog": map[string]any{"GET": nil}}}},
			path: "data.deputy.authz.public.sections.catalog.GET"},
		{name: "route method in lower case", section: "authz", edit: map[string]any{"public": map[string]any{"sections": map[string]any{"catalog": map[string]any{"get": true}}}},
			path: "data.deputy.authz.public.sections.catalog.get"},
		{name: "route open to every method", section: "authz", edit: map[string]any{"public": map[string]any{"sections": map[string]any{"catalog": map[string]any{"*": true}}}}},
		{name: "contact manager roles a string", section: "partner", edit: map[string]any{"contact_manager_roles": "contact_manager"}, path: "data.deputy.partner.contact_manager_roles"},
		{name: "super admin roles a string", section: "reseller", edit: map[string]any{"super_admin_roles": "reseller_super_admin"}, path: "data.deputy.reseller.super_admin_roles"},
		{name: "super admin role not a name", section: "reseller", edit: map[string]any{"super_admin_roles": []any{1.0}}, path: "data.deputy.reseller.super_admin_roles[0]"},
		{name: "unknown subscription level", section: "partner", edit: map[string]any{"subscription_min_level": "gold"}, path: "data.deputy.partner.subscription_min_level"},
		{name: "no required privilege", section: "reseller", edit: map[string]any{"required_privileges": []any{}}, path: "data.deputy.reseller.required_privileges"},
		{name: "empty privilege name", section: "reseller", edit: map[string]any{"required_privileges": []any{"a", ""}}, path: "data.deputy.reseller.required_privileges[1]"},
		{name: "admin roles not a list", section: "reseller", edit: map[string]any{"admin_roles": "reseller_admin"}, path: "data.deputy.reseller.admin_roles"},
		{name: "domain bound zero", section: "reseller", edit: map[string]any{"max_domain_assignments": 0.0}, path: "data.deputy.reseller.max_domain_assignments"},
		{name: "row budget a string", section: "reseller", edit: map[string]any{"max_assignment_rows_per_hour": "20000"}, path: "data.deputy.reseller.max_assignment_rows_per_hour"},
		{name: "role privileges not a list", section: "reseller", edit: map[string]any{"role_privileges": map[string]any{"x": "view_customers"}}, path: "data.deputy.reseller.role_privileges.x"},
		{name: "domain hosts", section: "reseller", edit: map[string]any{"domain_hosts": map[string]any{"shop-a.example": []any{"portal.shop-a.example", "10.0.0.7", "[2001:db8::1]"}, "shop-b.example": []any{"portal.shop-b.example"}}}},
		{name: "domain hosts empty", section: "reseller", edit: map[string]any{"domain_hosts": map[string]any{}}},
		{name: "domain hosts left out", section: "reseller", edit: map[string]any{"domain_hosts": nil}},
		{name: "domain hosts null", section: "reseller", edit: map[string]any{"domain_hosts": nullValue}, path: "data.deputy.reseller.domain_hosts"},
		{name: "domain hosts a list", section: "reseller", edit: map[string]any{"domain_hosts": []any{"portal.shop-a.example"}}, path: "data.deputy.reseller.domain_hosts"},
		{name: "domain hosts for an empty domain", section: "reseller", edit: map[string]any{"domain_hosts": map[string]any{"": []any{"portal.shop-a.example"}}}, path: "data.deputy.reseller.domain_hosts"},
		{name: "domain hosts a string", section: "reseller", edit: map[string]any{"domain_hosts": map[string]any{"shop-a.example": "portal.shop-a.example"}}, path: "data.deputy.reseller.domain_hosts.shop-a.example"},
		{name: "domain hosts an empty list", section: "reseller", edit: map[string]any{"domain_hosts": map[string]any{"shop-a.example": []any{}}}, path: "data.deputy.reseller.domain_hosts.shop-a.example"},
		{name: "domain host upper-case", section: "reseller", edit: map[string]any{"domain_hosts": map[string]any{"shop-a.example": []any{"Portal.shop-a.example"}}}, path: "data.deputy.reseller.domain_hosts.shop-a.example[0]"},
		{name: "domain host with a port", section: "reseller", edit: map[string]any{"domain_hosts": map[string]any{"shop-a.example": []any{"portal.shop-a.example", "portal.shop-a.example:8443"}}}, path: "data.deputy.reseller.domain_hosts.shop-a.example[1]"},
		{name: "domain host with a trailing dot", section: "reseller", edit: map[string]any{"domain_hosts": map[string]any{"shop-a.example": []any{"portal.shop-a.example."}}}, path: "data.deputy.reseller.domain_hosts.shop-a.example[0]"},
		{name: "domain host a URL", section: "reseller", edit: map[string]any{"domain_hosts": map[string]any{"shop-a.example": []any{"https://portal.shop-a.example/"}}}, path: "data.deputy.reseller.domain_hosts.shop-a.example[0]"},
		{name: "domain host IPv6 not canonical", section: "reseller", edit: map[string]any{"domain_hosts": map[string]any{"shop-a.example": []any{"[2001:DB8:0::1]"}}}, path: "data.deputy.reseller.domain_hosts.shop-a.example[0]"},
		{name: "domain host not a string", section: "reseller", edit: map[string]any{"domain_hosts": map[string]any{"shop-a.example": []any{1.0}}}, path: "data.deputy.reseller.domain_hosts.shop-a.example[0]"},
		{name: "domain host of two domains", section: "reseller", edit: map[string]any{"domain_hosts": map[string]any{"shop-a.example": []any{"portal.example"}, "shop-b.example": []any{"portal.example"}}}, path: "data.deputy.reseller.domain_hosts.shop-b.example[0]"},
		{name: "domain host twice", section: "reseller", edit: map[string]any{"domain_hosts": map[string]any{"shop-a.example": []any{"portal.example", "portal.example"}}}, path: "data.deputy.reseller.domain_hosts.shop-a.example[1]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			shipped := shippedData(t)()
			deputy := maps.Clone(shipped["deputy"].(map[string]any))
			section := maps.Clone(deputy[tc.section].(map[string]any))
			for k, v := range tc.edit {
				switch v {
				case nil:
					delete(section, k)
				case nullValue:
					section[k] = nil
				default:
					section[k] = v
				}
			}
			deputy[tc.section] = section
			err := delegation.CheckRules(map[string]any{"deputy": deputy})
			if tc.path == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.path+":") {
				t.Fatalf("CheckRules = %v, want an error naming %s", err, tc.path)
			}
		})
	}
}

// nullValue marks a key an edit sets to JSON null (nil leaves it out).
const nullValue = "(null)"

// deleted marks a key ranks leaves out.
const deleted = "(deleted)"

// ranks returns the shipped level_rank with the ranks edit sets, or
// leaves out where it says deleted.
func ranks(edit map[string]any) map[string]any {
	out := map[string]any{"cc": 0.0, "look": 1.0, "update": 2.0, "create": 3.0, "service_admin": 4.0, "full_admin": 5.0}
	for k, v := range edit {
		if v == deleted {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// The reseller policy refuses a path naming another customer by the
// partner data's customer_path_prefix: reseller rules without it would let
// that check lapse, so the data is refused.
func TestResellerRulesNeedTheCustomerPath(t *testing.T) {
	shipped := shippedData(t)()
	deputy := shipped["deputy"].(map[string]any)
	err := delegation.CheckRules(map[string]any{"deputy": map[string]any{"reseller": deputy["reseller"]}})
	if err == nil || !strings.HasPrefix(err.Error(), "data.deputy.partner.customer_path_prefix:") {
		t.Fatalf("CheckRules = %v, want an error naming data.deputy.partner.customer_path_prefix", err)
	}
	if err := delegation.CheckRules(map[string]any{"deputy": map[string]any{"partner": deputy["partner"]}}); err != nil {
		t.Fatalf("partner rules alone: %v", err)
	}
	if err := delegation.CheckRules(map[string]any{"deputy": map[string]any{"partner": true}}); err == nil || !strings.HasPrefix(err.Error(), "data.deputy.partner:") {
		t.Fatalf("partner rules not an object: %v", err)
	}
}

// The resolver tells reseller staff apart by the reseller rules of the
// policy data, the same the reseller policy reads: a custom role added
// there counts on the check path too.
func TestResellerStaffFromPolicyData(t *testing.T) {
	ctx := context.Background()
	env := newPartnerEnv(t, partnerStores(t)[0])
	if err := env.store.PutAssignment(ctx, &sidecar.Assignment{Customer: "acme", Reseller: "resellerco", Domain: "shop-a.example"}); err != nil {
		t.Fatal(err)
	}
	shipped := shippedData(t)()
	deputy := maps.Clone(shipped["deputy"].(map[string]any))
	reseller := maps.Clone(deputy["reseller"].(map[string]any))
	roles := maps.Clone(reseller["role_privileges"].(map[string]any))
	roles["care_desk"] = []any{"view_customers", "access_support_cases"}
	reseller["role_privileges"] = roles
	deputy["reseller"] = reseller
	custom := map[string]any{"deputy": deputy}
	noReseller := map[string]any{"deputy": map[string]any{"partner": deputy["partner"]}}

	desk := resellerStaff("shop-a.example", []string{"care_desk"}, nil)
	for _, tc := range []struct {
		name   string
		data   map[string]any
		reason string
	}{
		{name: "shipped data", data: shipped, reason: "missing_privilege:access_support_cases,view_customers"},
		{name: "custom role in data", data: custom},
		{name: "no reseller rules", data: noReseller, reason: resolve.ReasonResellerRulesMissing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := resolve.NewOnBehalfResolver(env.store, env.store, func() map[string]any { return tc.data }, delegation.PartnerConfig{})
			if err != nil {
				t.Fatal(err)
			}
			d, err := r.Resolve(ctx, onBehalf("acme"), desk)
			checkResolved(t, d, err, false, tc.reason)
		})
	}
}

// How long before its end a grant is announced as expiring is partner
// policy data, as the other partner limits are.
func TestExpiringWindowFromPolicyData(t *testing.T) {
	ctx := context.Background()
	env := newPartnerEnv(t, partnerStores(t)[0])
	data := withPartnerData(t, map[string]any{"expiring_within_days": json.Number("3")})
	p := delegation.NewPartners(env.store, func() map[string]any { return data }, delegation.PartnerConfig{}, delegation.WithPartnerClock(env.clock.Now))
	env.grant(t, patUser, orgRequest(sidecar.LevelLook, 10))
	for _, st := range []struct {
		name    string
		advance int
		want    int
	}{
		{name: "six days left: inside the shipped week, outside the data's three days", advance: 4, want: 0},
		{name: "three days left", advance: 3, want: 0},
		{name: "two days left", advance: 1, want: 1},
	} {
		env.clock.Advance(time.Duration(st.advance) * day)
		n, err := p.SweepExpiring(ctx, 100)
		if err != nil || n != st.want {
			t.Fatalf("%s: announced %d, %v; want %d", st.name, n, err, st.want)
		}
	}
}
