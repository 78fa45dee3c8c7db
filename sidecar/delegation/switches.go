package delegation

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// PolicyData returns the base data of the active policy set (nil before
// one is active): the same map for as long as one activation serves, a
// new one from the next, as the policy engine keeps it. The partner and
// impersonation calls tell by the map's identity whether a reload landed
// while the manage policy was asked (RuleBook.decided). Wire it to the policy engine:
//
//	func() map[string]any { if a := engine.Current(); a != nil { return a.Data() }; return nil }
type PolicyData func() map[string]any

// Switches are the impersonation settings security teams change in policy
// data (data.deputy.impersonation).
type Switches struct {
	Enabled            bool
	StoreViewSelection string // "default" or "manual"
	RequireReason      bool
	MaxSession         time.Duration
	IdleTimeout        time.Duration // 0: sessions never go idle
	OneSessionPerStaff bool
	DisablePageCache   bool
	ProtectedRoles     []string // accounts holding one cannot be impersonated
	ProtectedCustomers []string // accounts that cannot be impersonated
	// ImpersonatingRoles are the roles role_permissions grants
	// PermissionImpersonate: a session whose actor started it with none of
	// them is denied by policy and ended by the sweep.
	ImpersonatingRoles []string
	// MaxConsentChanges is how many changes a customer may make to their
	// own consent, that leave it given, per ConsentChangeWindow, across
	// replicas. Each writes the events stream and the audit trail.
	MaxConsentChanges   int
	ConsentChangeWindow time.Duration
}

// Limits are the switches that bound a session's life, which bound the
// sessions already started as well as new ones.
func (s Switches) Limits() sidecar.SessionLimits {
	return sidecar.SessionLimits{MaxSession: s.MaxSession, IdleTimeout: s.IdleTimeout}
}

// PermissionImpersonate is the permission in role_permissions that lets a
// staff member's role start and keep impersonation sessions.
const PermissionImpersonate = "login_as_customer"

// switchKeys are the keys data.deputy.impersonation must spell out: the
// switches Go applies, and the maps only the policies read, whose absence
// Rego would read as "no permission" or, for forbidden_routes and
// forbidden_graphql_fields, as "nothing forbidden".
var switchKeys = []string{
	"enabled", "store_view_selection", "require_reason", "max_session", "idle_timeout",
	"one_session_per_staff", "disable_page_cache", "protected_roles", "protected_customers",
	"role_permissions", "forbidden_routes", "forbidden_graphql_fields",
	"max_consent_changes", "consent_change_window",
}

// ReadSwitches reads data.deputy.impersonation. Data without the section
// turns impersonation off (the zero Switches), as the policies read it
// (`not data.deputy.impersonation.enabled`). A section that is present must
// spell out every switch: a missing or malformed one is an error naming its
// data path, never a value chosen here, so Go and the policies cannot read
// the same data differently and a bad bundle is refused rather than
// silently lengthening sessions.
func ReadSwitches(data map[string]any) (Switches, error) {
	var s Switches
	v := lookup(data, "deputy", "impersonation")
	if v == nil {
		return s, nil
	}
	imp, ok := v.(map[string]any)
	if !ok {
		return s, fmt.Errorf("data.deputy.impersonation: want an object of switches, got %s", show(v))
	}
	for _, key := range switchKeys {
		if _, ok := imp[key]; !ok {
			return s, fmt.Errorf("data.deputy.impersonation.%s: required (every switch is spelled out; leave the whole section out to turn impersonation off)", key)
		}
	}
	var err error
	fail := func(key, want string) {
		if err == nil {
			err = fmt.Errorf("data.deputy.impersonation.%s: want %s, got %s", key, want, show(imp[key]))
		}
	}
	boolean := func(key string, dst *bool) {
		b, ok := imp[key].(bool)
		if !ok {
			fail(key, "a boolean")
		}
		*dst = b
	}
	duration := func(key string, dst *time.Duration) {
		str, _ := imp[key].(string)
		d, perr := time.ParseDuration(str)
		switch {
		case perr != nil || d < 0:
			fail(key, `a duration like "1h"`)
		case d > sidecar.MaxSpan: // added to now, and to the retention after it
			fail(key, fmt.Sprintf("a duration of at most %dh (100 years)", sidecar.MaxSpan/time.Hour))
		}
		*dst = d
	}
	stringList := func(key string, dst *[]string) {
		list, ok := imp[key].([]any)
		for _, e := range list {
			str, isStr := e.(string)
			if !isStr {
				ok = false
				break
			}
			*dst = append(*dst, str)
		}
		if !ok {
			fail(key, "a list of strings")
		}
	}
	boolean("enabled", &s.Enabled)
	boolean("require_reason", &s.RequireReason)
	boolean("one_session_per_staff", &s.OneSessionPerStaff)
	boolean("disable_page_cache", &s.DisablePageCache)
	duration("max_session", &s.MaxSession)
	duration("idle_timeout", &s.IdleTimeout)
	duration("consent_change_window", &s.ConsentChangeWindow)
	if n, ok := dataInt(imp["max_consent_changes"]); ok && n > 0 {
		s.MaxConsentChanges = n
	} else {
		fail("max_consent_changes", "a positive whole number")
	}
	stringList("protected_roles", &s.ProtectedRoles)
	stringList("protected_customers", &s.ProtectedCustomers)
	switch s.StoreViewSelection, _ = imp["store_view_selection"].(string); s.StoreViewSelection {
	case "default", "manual":
	default:
		fail("store_view_selection", `"default" or "manual"`)
	}
	for _, key := range []string{"role_permissions", "forbidden_routes"} {
		if _, ok := imp[key].(map[string]any); !ok {
			fail(key, "an object")
		}
	}
	if perms, ok := imp["role_permissions"].(map[string]any); ok && err == nil {
		s.ImpersonatingRoles, err = impersonatingRoles(perms)
	}
	if routes, ok := imp["forbidden_routes"].(map[string]any); ok && err == nil {
		err = checkForbiddenRoutes(routes)
	}
	if err == nil {
		err = checkForbiddenFields(imp["forbidden_graphql_fields"])
	}
	if s.MaxSession == 0 {
		fail("max_session", "a positive duration")
	}
	if s.ConsentChangeWindow == 0 {
		fail("consent_change_window", "a positive duration")
	}
	if err != nil {
		return Switches{}, err
	}
	return s, nil
}

// impersonatingRoles returns, sorted, the roles perms grants
// PermissionImpersonate. A role whose permissions are not a list of
// strings is an error: policy would read it as granting nothing, and the
// sweep would end its sessions over a slip in data.
func impersonatingRoles(perms map[string]any) ([]string, error) {
	var roles []string
	for role, v := range perms {
		list, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("data.deputy.impersonation.role_permissions.%s: want a list of permissions, got %s", role, show(v))
		}
		for _, p := range list {
			name, ok := p.(string)
			if !ok {
				return nil, fmt.Errorf("data.deputy.impersonation.role_permissions.%s: want permission names, got %s", role, show(p))
			}
			if name == PermissionImpersonate {
				roles = append(roles, role)
			}
		}
	}
	slices.Sort(roles)
	return roles, nil
}

// checkForbiddenRoutes refuses forbidden routes the policy would read as
// forbidding nothing, so a slip in data is an error at activation rather
// than a route left open: a route without a reason (the policy collects
// reasons), a prefix that is not an absolute path ending in "/", a route
// filed under a section other than its prefix's first segment (routes are
// looked up by a segment of the request's route), and method lists that
// are empty or not in upper case (requests' methods are). That a prefix is
// in the route form the policy compares it with, as written, is checked
// by the matcher's own code (authz.CheckData). A route marked "graphql": true is a
// GraphQL endpoint, denied for the operations forbidden_graphql_fields
// name: it has neither a reason nor methods of its own.
func checkForbiddenRoutes(sections map[string]any) error {
	keys := make([]string, 0, len(sections))
	for k := range sections {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, section := range keys {
		at := "data.deputy.impersonation.forbidden_routes." + section
		if section == "" || strings.Contains(section, "/") {
			return fmt.Errorf("%s: a section is a route's first path segment", at)
		}
		routes, err := objects(sections[section], at, "route", "a route has prefix, reason and methods, or prefix and graphql",
			"prefix", "reason", "methods", "graphql")
		if err != nil {
			return err
		}
		for i, r := range routes {
			at := fmt.Sprintf("%s[%d]", at, i)
			graphql, marked := r["graphql"]
			prefix, _ := r["prefix"].(string)
			first, _, _ := strings.Cut(strings.TrimPrefix(prefix, "/"), "/")
			switch {
			case !strings.HasPrefix(prefix, "/") || !strings.HasSuffix(prefix, "/") || strings.Contains(prefix, "//"):
				return fmt.Errorf("%s.prefix: want an absolute path ending in \"/\", got %s", at, show(r["prefix"]))
			case first != section:
				return fmt.Errorf("%s.prefix: %q is not under section %q (routes are filed by their first segment)", at, prefix, section)
			}
			if marked {
				// The policy judges the request's operations, and takes the
				// reason from the forbidden field it finds.
				if graphql != true {
					return fmt.Errorf("%s.graphql: want true (leave it out for a route forbidden as such), got %s", at, show(graphql))
				}
				if _, ok := r["reason"]; ok {
					return fmt.Errorf("%s.reason: a GraphQL endpoint has none (forbidden_graphql_fields give the reasons)", at)
				}
				if _, ok := r["methods"]; ok {
					return fmt.Errorf("%s.methods: a GraphQL endpoint has none (its operations are judged whatever the method)", at)
				}
				continue
			}
			if err := needReason(at, r); err != nil {
				return err
			}
			if m, ok := r["methods"]; ok {
				list, isList := m.([]any)
				if !isList || len(list) == 0 {
					return fmt.Errorf("%s.methods: want a non-empty list of methods (leave it out to forbid every method), got %s", at, show(m))
				}
				for _, e := range list {
					if str, _ := e.(string); str == "" || str != strings.ToUpper(str) {
						return fmt.Errorf("%s.methods: want upper-case method names, got %s", at, show(e))
					}
				}
			}
		}
	}
	return nil
}

// checkForbiddenFields refuses forbidden GraphQL fields the policy would
// read as forbidding nothing, or that would not read as one name: a field
// that is not a GraphQL name (the policy matches it as a whole word, in a
// regular expression), or one without a reason.
func checkForbiddenFields(v any) error {
	const at = "data.deputy.impersonation.forbidden_graphql_fields"
	fields, err := objects(v, at, "field", "a forbidden field has field and reason", "field", "reason")
	if err != nil {
		return err
	}
	for i, f := range fields {
		at := fmt.Sprintf("%s[%d]", at, i)
		if name, _ := f["field"].(string); !graphQLName(name) {
			return fmt.Errorf("%s.field: want a GraphQL name ([_A-Za-z][_0-9A-Za-z]*), got %s", at, show(f["field"]))
		}
		if err := needReason(at, f); err != nil {
			return err
		}
	}
	return nil
}

// objects reads v as a list of objects holding no keys but those named
// (hint says which): the error names the path of what is not.
func objects(v any, at, what, hint string, keys ...string) ([]map[string]any, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s: want a list of %ss, got %s", at, what, show(v))
	}
	out := make([]map[string]any, len(list))
	for i, e := range list {
		obj, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s[%d]: want a %s object, got %s", at, i, what, show(e))
		}
		for key := range obj {
			if !slices.Contains(keys, key) {
				return nil, fmt.Errorf("%s[%d].%s: unknown key (%s)", at, i, key, hint)
			}
		}
		out[i] = obj
	}
	return out, nil
}

// needReason refuses an entry without a reason: the policy denies with it.
func needReason(at string, entry map[string]any) error {
	if reason, _ := entry["reason"].(string); reason == "" {
		return fmt.Errorf("%s.reason: want a non-empty string, got %s", at, show(entry["reason"]))
	}
	return nil
}

// graphQLName reports whether s is a GraphQL Name.
func graphQLName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return s != ""
}

func lookup(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func show(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
