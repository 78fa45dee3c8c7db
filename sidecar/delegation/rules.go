package delegation

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/deputyhq/deputy/sidecar"
)

// PartnerRules are the partner limits security teams set in policy data
// (data.deputy.partner): how long a request waits for a decision, the
// grant lengths a request may ask for, the level a subscription needs, how
// long before its end a grant is announced as expiring, and the path that
// names the customer acted for.
type PartnerRules struct {
	PendingExpiryDays  int
	MinGrantDays       int
	MaxGrantDays       int
	ExpiringWithinDays int
	// MaxPendingPerOrg and MaxPendingPerCustomer bound the requests a
	// partner organisation may have waiting, in all and at one customer:
	// each request mails a contact manager and writes the events and
	// audit streams, which trim their oldest entries.
	MaxPendingPerOrg      int
	MaxPendingPerCustomer int
	// MaxSelfServiceChanges per SelfServiceChangeWindow bound what an
	// organisation does for itself that widens access (access requests,
	// shares): each writes the self-service audit stream, which trims its
	// oldest records, as a customer's own consent changes do.
	MaxSelfServiceChanges   int
	SelfServiceChangeWindow time.Duration
	SubscriptionMinLevel    sidecar.Level
	// CustomerPath is /<customer_path_prefix>/{customer}/, the path the
	// partner and reseller policies read as naming the customer.
	CustomerPath *PathTemplate
}

// ResellerRules tell reseller customer-care staff apart (data.deputy.reseller):
// an admin or legacy role, or every required privilege held directly or
// through a role of RolePrivileges.
type ResellerRules struct {
	AdminRoles         []string
	LegacyRoles        []string
	RequiredPrivileges []string
	RolePrivileges     map[string][]string
	// MaxDomainAssignments bounds the customers one domain may hold, and
	// MaxAssignmentRowsPerHour the assignment rows (a PUT one, an import
	// each of its rows) a domain may write an hour: every row is a record
	// kept until removed and an event in the stream the mailer reads.
	MaxDomainAssignments     int
	MaxAssignmentRowsPerHour int
}

// Defaults of the reseller limits, when policy data does not set them:
// 50,000 customers is about 18 MB of Redis per domain (the record and its
// entry in the domain's index, ~370 bytes); 20,000 rows an hour is two
// full imports.
const (
	DefaultMaxDomainAssignments     = 50000
	DefaultMaxAssignmentRowsPerHour = 20000
)

// DefaultResellerLimits are the reseller rules' limits when no policy
// data (or no reseller section) sets them.
func DefaultResellerLimits() *ResellerRules {
	return &ResellerRules{MaxDomainAssignments: DefaultMaxDomainAssignments, MaxAssignmentRowsPerHour: DefaultMaxAssignmentRowsPerHour}
}

// MissingPrivileges returns the required privileges id lacks, sorted, or
// nil when id is reseller staff. Rules with no required privilege make
// nobody staff but the admin and legacy roles: an empty list must not open
// every domain.
func (r *ResellerRules) MissingPrivileges(id *sidecar.Identity) []string {
	if id == nil {
		return sorted(r.RequiredPrivileges)
	}
	for _, role := range id.Roles {
		if slices.Contains(r.AdminRoles, role) || slices.Contains(r.LegacyRoles, role) {
			return nil
		}
	}
	var missing []string
	for _, p := range r.RequiredPrivileges {
		if slices.Contains(id.Privileges, p) {
			continue
		}
		held := false
		for _, role := range id.Roles {
			if slices.Contains(r.RolePrivileges[role], p) {
				held = true
				break
			}
		}
		if !held {
			missing = append(missing, p)
		}
	}
	return sorted(missing)
}

func sorted(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// Rules are the rules of partner and reseller access that Go code applies
// (the lifecycles and the check-path resolver). They are read from the
// same policy data the Rego policies read, never from Deputy's own
// configuration, so a bundle update changes both at once and `deputy serve`
// and `deputy eval` cannot disagree. A section absent from data is nil.
type Rules struct {
	Partner  *PartnerRules
	Reseller *ResellerRules
}

// ReadRules reads data.deputy.partner and data.deputy.reseller. A section
// that is present must be whole and well formed: a malformed limit is an
// error naming its data path, so a bad bundle is refused rather than
// silently widening access.
func ReadRules(data map[string]any) (*Rules, error) {
	r := &Rules{}
	for _, sec := range []struct {
		name string
		read func(map[string]any) error
	}{
		{"partner", func(m map[string]any) (err error) { r.Partner, err = readPartnerRules(m); return err }},
		{"reseller", func(m map[string]any) (err error) { r.Reseller, err = readResellerRules(m); return err }},
	} {
		v := lookup(data, "deputy", sec.name)
		if v == nil {
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("data.deputy.%s: want an object of rules, got %s", sec.name, show(v))
		}
		if err := sec.read(m); err != nil {
			return nil, err
		}
	}
	// The reseller policy refuses a path naming another customer than the
	// one acted for by the partner rules' customer path: without them that
	// check would silently lapse.
	if r.Reseller != nil && r.Partner == nil {
		return nil, fmt.Errorf("data.deputy.partner.customer_path_prefix: required with reseller rules (the reseller policy reads it)")
	}
	return r, nil
}

// CheckRules refuses policy data whose impersonation switches, partner or
// reseller rules are malformed or incomplete, or whose public and
// authenticated route tables the authz policy would misread.
// authz.CheckData runs it, then checks that every route key is in the
// form requests are matched in: give that to policy.WithDataCheck.
func CheckRules(data map[string]any) error {
	if _, err := ReadSwitches(data); err != nil {
		return err
	}
	if err := checkAuthzRoutes(data); err != nil {
		return err
	}
	_, err := ReadRules(data)
	return err
}

func readPartnerRules(m map[string]any) (*PartnerRules, error) {
	p := &PartnerRules{}
	for _, f := range []struct {
		key, unit string
		dst       *int
	}{
		{"pending_expiry_days", "days", &p.PendingExpiryDays},
		{"min_grant_days", "days", &p.MinGrantDays},
		{"max_grant_days", "days", &p.MaxGrantDays},
		{"expiring_within_days", "days", &p.ExpiringWithinDays},
		{"max_pending_requests_per_org", "requests", &p.MaxPendingPerOrg},
		{"max_pending_requests_per_customer", "requests", &p.MaxPendingPerCustomer},
		{"max_self_service_changes", "changes", &p.MaxSelfServiceChanges},
	} {
		n, ok := dataInt(m[f.key])
		if !ok || n <= 0 {
			return nil, fmt.Errorf("data.deputy.partner.%s: want a positive whole number of %s, got %s", f.key, f.unit, show(m[f.key]))
		}
		// Days become a time.Duration added to now, which wraps past
		// 106751 days.
		if f.unit == "days" && n > sidecar.MaxSpanDays {
			return nil, fmt.Errorf("data.deputy.partner.%s: want at most %d days (100 years), got %d", f.key, sidecar.MaxSpanDays, n)
		}
		*f.dst = n
	}
	w, _ := m["self_service_change_window"].(string)
	if d, err := time.ParseDuration(w); err == nil && d > 0 && d <= sidecar.MaxSpan {
		p.SelfServiceChangeWindow = d
	} else {
		return nil, fmt.Errorf(`data.deputy.partner.self_service_change_window: want a positive duration like "1h", at most %dh (100 years), got %s`, sidecar.MaxSpan/time.Hour, show(m["self_service_change_window"]))
	}
	if p.MinGrantDays > p.MaxGrantDays {
		return nil, fmt.Errorf("data.deputy.partner.min_grant_days: %d exceeds max_grant_days (%d)", p.MinGrantDays, p.MaxGrantDays)
	}
	s, _ := m["subscription_min_level"].(string)
	if !sidecar.Level(s).Valid() {
		return nil, fmt.Errorf("data.deputy.partner.subscription_min_level: want a level, got %s", show(m["subscription_min_level"]))
	}
	p.SubscriptionMinLevel = sidecar.Level(s)
	// The policies compare the prefix with the first segment of the route
	// form (lower-cased, the last segment cut at its first dot), so only a
	// word that form keeps as it is can name the same path in Go and Rego.
	prefix, _ := m["customer_path_prefix"].(string)
	if !validPathWord(prefix) {
		return nil, fmt.Errorf("data.deputy.partner.customer_path_prefix: want one lower-case path segment (letters, digits, - and _), got %s", show(m["customer_path_prefix"]))
	}
	t, err := ParsePathTemplate("/" + prefix + "/{customer}/")
	if err != nil {
		return nil, fmt.Errorf("data.deputy.partner.customer_path_prefix: %s", sidecar.ErrorMessage(err))
	}
	p.CustomerPath = t
	// Read by the management policy alone, as super_admin_roles is.
	if _, err := dataStrings(m, "contact_manager_roles", false); err != nil {
		return nil, fmt.Errorf("data.deputy.partner.%w", err)
	}
	ranks, err := readLevelRanks(m["level_rank"])
	if err != nil {
		return nil, err
	}
	if err := checkPartnerRoutes(m, ranks); err != nil {
		return nil, err
	}
	return p, nil
}

// readLevelRanks reads level_rank, the ranks the partner policy compares
// with >=. It must rank exactly the levels of sidecar.Levels, each by a
// whole number, higher from each level to the next, so the policy orders
// levels as Go does (Level.AtLeast). Anything else would be read by Rego
// otherwise than meant: a level it does not rank allows nothing, and a
// rank that is not a number compares by type, every string above every
// number, so a cc rank written "0" would rank cc above full_admin.
func readLevelRanks(v any) (map[sidecar.Level]int, error) {
	const at = "data.deputy.partner.level_rank"
	table, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: want an object of level to rank, got %s", at, show(v))
	}
	for _, name := range slices.Sorted(maps.Keys(table)) {
		if !sidecar.Level(name).Valid() {
			return nil, fmt.Errorf("%s.%s: not a level (levels are %s)", at, name, levelNames())
		}
	}
	ranks := make(map[sidecar.Level]int, len(sidecar.Levels))
	for i, level := range sidecar.Levels {
		v, present := table[string(level)]
		if !present {
			return nil, fmt.Errorf("%s.%s: required (every level is ranked: %s)", at, level, levelNames())
		}
		rank, ok := dataInt(v)
		if !ok {
			return nil, fmt.Errorf("%s.%s: want a whole number, got %s", at, level, show(v))
		}
		if i > 0 {
			if below := sidecar.Levels[i-1]; rank <= ranks[below] {
				return nil, fmt.Errorf("%s.%s: want a rank above %s's %d (levels rank higher in the order %s), got %d", at, level, below, ranks[below], levelNames(), rank)
			}
		}
		ranks[level] = rank
	}
	return ranks, nil
}

// checkPartnerRoutes refuses route tables the partner policy would read
// otherwise than meant: sections that are not objects of "collection" and
// "item" tables of method to level, a method key the request's methods
// never are, a level level_rank does not rank, a route a cc grant would
// reach by rank, and cc_item_methods that is not a list of methods. cc
// reads only the items shared with the partner user (cc_item_methods); the
// policy's allows by rank leave the cc test out, so a route needing no
// more than cc would open to every cc grant.
func checkPartnerRoutes(m map[string]any, ranks map[sidecar.Level]int) error {
	sections, ok := m["sections"].(map[string]any)
	if !ok {
		return fmt.Errorf("data.deputy.partner.sections: want an object of sections, got %s", show(m["sections"]))
	}
	ccRank := ranks[sidecar.LevelCC]
	for _, name := range slices.Sorted(maps.Keys(sections)) {
		at := "data.deputy.partner.sections." + name
		sec, ok := sections[name].(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object of route tables, got %s", at, show(sections[name]))
		}
		for _, kind := range []string{"collection", "item"} {
			v, present := sec[kind]
			if !present {
				continue
			}
			table, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("%s.%s: want an object of method to level, got %s", at, kind, show(v))
			}
			for _, method := range slices.Sorted(maps.Keys(table)) {
				if !routeMethod(method) {
					return fmt.Errorf("%s.%s.%s: %s", at, kind, method, routeMethodWant)
				}
				level, _ := table[method].(string)
				rank, ranked := ranks[sidecar.Level(level)]
				switch {
				case !ranked:
					return fmt.Errorf("%s.%s.%s: want a level of level_rank, got %s", at, kind, method, show(table[method]))
				case rank <= ccRank:
					return fmt.Errorf("%s.%s.%s: %q would open the route to every cc grant (cc reads only shared items, cc_item_methods)", at, kind, method, level)
				}
			}
		}
		if v, present := sec["cc_item_methods"]; present {
			list, _ := v.([]any)
			if list == nil {
				return fmt.Errorf("%s.cc_item_methods: want a list of methods, got %s", at, show(v))
			}
			for i, e := range list {
				if method, _ := e.(string); method == "*" || !routeMethod(method) {
					return fmt.Errorf("%s.cc_item_methods[%d]: want an upper-case method name, got %s", at, i, show(e))
				}
			}
		}
	}
	return nil
}

func validPathWord(s string) bool {
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return s != ""
}

func readResellerRules(m map[string]any) (*ResellerRules, error) {
	r := &ResellerRules{RolePrivileges: map[string][]string{}}
	var err error
	if r.AdminRoles, err = dataStrings(m, "admin_roles", false); err != nil {
		return nil, fmt.Errorf("data.deputy.reseller.%w", err)
	}
	if r.LegacyRoles, err = dataStrings(m, "legacy_roles", false); err != nil {
		return nil, fmt.Errorf("data.deputy.reseller.%w", err)
	}
	if r.RequiredPrivileges, err = dataStrings(m, "required_privileges", true); err != nil {
		return nil, fmt.Errorf("data.deputy.reseller.%w", err)
	}
	// The management policy alone reads super_admin_roles, with "in",
	// which reads a string as holding nothing and an object by its values.
	if _, err = dataStrings(m, "super_admin_roles", false); err != nil {
		return nil, fmt.Errorf("data.deputy.reseller.%w", err)
	}
	for _, f := range []struct {
		key  string
		dst  *int
		dflt int
	}{
		{"max_domain_assignments", &r.MaxDomainAssignments, DefaultMaxDomainAssignments},
		{"max_assignment_rows_per_hour", &r.MaxAssignmentRowsPerHour, DefaultMaxAssignmentRowsPerHour},
	} {
		v, ok := m[f.key]
		if !ok {
			*f.dst = f.dflt
			continue
		}
		if n, ok := dataInt(v); ok && n > 0 {
			*f.dst = n
			continue
		}
		return nil, fmt.Errorf("data.deputy.reseller.%s: want a positive whole number, got %s", f.key, show(v))
	}
	// Read by the reseller policy alone, on every request.
	if v, ok := m["domain_hosts"]; ok {
		if err := checkDomainHosts(v); err != nil {
			return nil, err
		}
	}
	if v, ok := m["role_privileges"]; ok {
		roles, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("data.deputy.reseller.role_privileges: want an object of role to privileges, got %s", show(v))
		}
		for role := range roles {
			ps, err := dataStrings(roles, role, false)
			if err != nil {
				return nil, fmt.Errorf("data.deputy.reseller.role_privileges.%w", err)
			}
			r.RolePrivileges[role] = ps
		}
	}
	return r, nil
}

// checkDomainHosts refuses a domain_hosts the reseller policy would read
// otherwise than meant. The policy compares each listed host with the
// host a request is decided on (sidecar.ParseHost's Name: lower case, no
// trailing dot, no port) as equal strings, so a host in any other form
// (Portal.example, portal.example:443) would match no request and refuse
// every one of its domain's staff. An empty list, like a domain left
// out, refuses them everywhere: leave the domain out to mean that. A
// host listed for two domains would let both act through one portal,
// which is what the map is there to prevent. Empty binds no host, as
// the key left out does.
func checkDomainHosts(v any) error {
	const at = "data.deputy.reseller.domain_hosts"
	domains, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("%s: want an object of domain to the portal hosts its staff sign in through, got %s", at, show(v))
	}
	owner := map[string]string{}
	for _, domain := range slices.Sorted(maps.Keys(domains)) {
		if domain == "" {
			return fmt.Errorf(`%s: want domains (the token's domain claim) as keys, got ""`, at)
		}
		at := at + "." + domain
		hosts, ok := domains[domain].([]any)
		if !ok || len(hosts) == 0 {
			return fmt.Errorf("%s: want a non-empty list of host names (leave the domain out to refuse its staff on every host), got %s", at, show(domains[domain]))
		}
		for i, e := range hosts {
			s, _ := e.(string)
			if h, err := sidecar.ParseHost(s); err != nil || h.Port != "" || h.Name != s {
				return fmt.Errorf("%s[%d]: want a host name as requests are compared on it (lower case, no trailing dot, no port), got %s", at, i, show(e))
			}
			if d, dup := owner[s]; dup {
				return fmt.Errorf("%s[%d]: %s is listed for %s already: a portal host belongs to one domain", at, i, s, d)
			}
			owner[s] = domain
		}
	}
	return nil
}

// dataStrings reads m[key] as a list of non-empty strings.
func dataStrings(m map[string]any, key string, required bool) ([]string, error) {
	v, ok := m[key]
	if !ok && !required {
		return nil, nil
	}
	list, isList := v.([]any)
	if !isList || (required && len(list) == 0) {
		return nil, fmt.Errorf("%s: want a non-empty list of names, got %s", key, show(v))
	}
	out := make([]string, len(list))
	for i, e := range list {
		s, _ := e.(string)
		if s == "" {
			return nil, fmt.Errorf("%s[%d]: want a name, got %s", key, i, show(e))
		}
		out[i] = s
	}
	return out, nil
}

func dataInt(v any) (int, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	case float64:
		return int(n), n == float64(int(n))
	case int:
		return n, true
	case int64:
		return int(n), true
	}
	return 0, false
}

// RuleBook reads Rules from the active policy data, parsing them once per
// activation: an activation's data is immutable, so the map's identity
// tells whether the parsed rules are still current, at the cost of one
// pointer comparison on the check path.
type RuleBook struct {
	data   PolicyData
	last   atomic.Pointer[parsedRules]
	limits atomic.Pointer[parsedLimits]
}

type parsedLimits struct {
	key        unsafe.Pointer
	limits     sidecar.SessionLimits
	protection sidecar.Protection
	err        error
}

// Limits returns the session limits (impersonation.max_session and
// idle_timeout) of data, the base data of one activation (nil: the active
// one), read once per activation: the check path bounds every session by
// them, so narrowing them in policy data reaches the sessions already
// started at their next request. No policy loaded bounds nothing beyond
// what each session stores.
func (b *RuleBook) Limits(data map[string]any) (sidecar.SessionLimits, error) {
	p := b.switches(data)
	return p.limits, p.err
}

// Protection returns what data (nil: the active policy data) protects
// beyond profiles and staff marks (impersonation.protected_roles and
// protected_customers), read once per activation as Limits is: the
// on-behalf resolver refuses to act for those accounts, as impersonation
// refuses to start or go on. No policy loaded protects nothing more.
func (b *RuleBook) Protection(data map[string]any) (sidecar.Protection, error) {
	p := b.switches(data)
	return p.protection, p.err
}

// switches parses the impersonation switches of data (nil: the active
// policy data) once per activation.
func (b *RuleBook) switches(data map[string]any) *parsedLimits {
	if data == nil {
		if data = b.active(); data == nil {
			return &parsedLimits{}
		}
	}
	key := reflect.ValueOf(data).UnsafePointer()
	if p := b.limits.Load(); p != nil && p.key == key {
		return p
	}
	sw, err := switchesIn(data)
	p := &parsedLimits{key: key, limits: sw.Limits(), protection: protection(sw), err: err}
	b.limits.Store(p)
	return p
}

type parsedRules struct {
	key   unsafe.Pointer
	rules *Rules
	err   error
}

// NewRuleBook reads rules from data.
func NewRuleBook(data PolicyData) *RuleBook { return &RuleBook{data: data} }

func (b *RuleBook) rules() (*Rules, error) { return b.rulesIn(nil) }

// active returns the active policy data, nil when none is loaded.
func (b *RuleBook) active() map[string]any {
	if b.data == nil {
		return nil
	}
	return b.data()
}

// rulesIn reads the rules of data, the base data of one activation; nil
// stands for the active policy data.
func (b *RuleBook) rulesIn(data map[string]any) (*Rules, error) {
	if data == nil {
		data = b.active()
	}
	return b.parse(data)
}

// parse reads the rules of data, nil meaning no policy is loaded.
func (b *RuleBook) parse(data map[string]any) (*Rules, error) {
	if data == nil {
		return nil, sidecar.Errorf(sidecar.EUNAVAILABLE, "no policy loaded")
	}
	key := reflect.ValueOf(data).UnsafePointer()
	if p := b.last.Load(); p != nil && p.key == key {
		return p.rules, p.err
	}
	r, err := ReadRules(data)
	if err != nil {
		err = &sidecar.Error{Code: sidecar.EINTERNAL, Message: "policy data is malformed", Err: err}
	}
	b.last.Store(&parsedRules{key: key, rules: r, err: err})
	return r, err
}

// Partner returns the partner limits of the active policy data.
func (b *RuleBook) Partner() (*PartnerRules, error) { return partnerOf(b.rules()) }

func partnerOf(r *Rules, err error) (*PartnerRules, error) {
	if err != nil {
		return nil, err
	}
	if r.Partner == nil {
		return nil, &sidecar.Error{Code: sidecar.EINTERNAL, Message: "policy data has no partner rules (data.deputy.partner)"}
	}
	return r.Partner, nil
}

// decideAttempts bounds how often decided asks the manage policy again
// when a reload lands while it is asked.
const decideAttempts = 3

// decided asks the manage policy (ask) and returns the base data of the
// activation that decided, whose rules and switches the call it
// authorized is to apply (nil when no policy is loaded). The
// policy is evaluated on the activation serving when it is asked, the
// rules are read from the data active when they are read: a reload
// between the two would have one revision's manage rules authorize what
// the other's limits are then applied to (a level the new rules refuse,
// for as long as the old limits allow). So the data serving before ask
// and after its answer are compared by identity (the map before is held
// here, so no later activation can reuse its address, and no reload
// there and back goes unseen); the same map is the activation that
// decided. Otherwise the policy is asked again, on the activation then
// serving, and after decideAttempts the call is a conflict to retry. A
// refusal stands whatever was reloaded, and a reload after the answer
// leaves the call as if it had come first.
func (b *RuleBook) decided(ask func() error) (map[string]any, error) {
	for attempt := 1; ; attempt++ {
		before := b.active()
		if err := ask(); err != nil {
			return nil, err
		}
		after := b.active()
		if reflect.ValueOf(before).UnsafePointer() == reflect.ValueOf(after).UnsafePointer() {
			return before, nil
		}
		if attempt == decideAttempts {
			return nil, sidecar.Errorf(sidecar.ECONFLICT, "policy data changed while the call was authorized; try again")
		}
	}
}

// CustomerPath returns the path naming the customer in the active policy
// data, nil when its data has no partner rules: then only the on-behalf-of
// header names one, as the policies, which read the same data, expect.
// data is the base data of the activation deciding the check (nil: the
// active one), so a check that overlaps a reload reads its rules from the
// revision whose Rego decides it, never one revision's Rego with the
// next one's path.
func (b *RuleBook) CustomerPath(data map[string]any) *PathTemplate {
	if r, err := b.rulesIn(data); err == nil && r.Partner != nil {
		return r.Partner.CustomerPath
	}
	return nil
}

// Reseller returns the reseller rules of data, as CustomerPath reads it.
func (b *RuleBook) Reseller(data map[string]any) (*ResellerRules, error) {
	r, err := b.rulesIn(data)
	if err != nil {
		return nil, err
	}
	if r.Reseller == nil {
		return nil, &sidecar.Error{Code: sidecar.EINTERNAL, Message: "policy data has no reseller rules (data.deputy.reseller)"}
	}
	return r.Reseller, nil
}
