package delegation

import (
	"encoding/json"
	"fmt"
	"time"
)

// Defaults of the switches when policy data leaves them out.
const (
	DefaultMaxSession  = time.Hour
	DefaultIdleTimeout = 15 * time.Minute
)

// PolicyData returns the base data of the active policy set (nil before
// one is active). Wire it to the policy engine:
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
	IdleTimeout        time.Duration
	OneSessionPerStaff bool
	DisablePageCache   bool
	ProtectedRoles     []string // accounts holding one cannot be impersonated
	ProtectedCustomers []string // accounts that cannot be impersonated
}

// ReadSwitches reads data.deputy.impersonation. Missing keys take the
// shipped defaults; a malformed duration is an error so a bad bundle is
// noticed rather than silently lengthening sessions.
func ReadSwitches(data map[string]any) (Switches, error) {
	s := Switches{
		Enabled:            true,
		StoreViewSelection: "default",
		MaxSession:         DefaultMaxSession,
		IdleTimeout:        DefaultIdleTimeout,
		OneSessionPerStaff: true,
		DisablePageCache:   true,
	}
	imp, _ := lookup(data, "deputy", "impersonation").(map[string]any)
	if imp == nil {
		return s, nil
	}
	var err error
	boolean := func(key string, dst *bool) {
		if v, ok := imp[key]; ok {
			b, isBool := v.(bool)
			if !isBool && err == nil {
				err = fmt.Errorf("data.deputy.impersonation.%s: want a boolean", key)
			}
			*dst = b
		}
	}
	duration := func(key string, dst *time.Duration) {
		v, ok := imp[key]
		if !ok {
			return
		}
		str, _ := v.(string)
		d, perr := time.ParseDuration(str)
		if (perr != nil || d < 0) && err == nil {
			err = fmt.Errorf("data.deputy.impersonation.%s: want a duration like \"1h\", got %s", key, show(v))
			return
		}
		*dst = d
	}
	boolean("enabled", &s.Enabled)
	boolean("require_reason", &s.RequireReason)
	boolean("one_session_per_staff", &s.OneSessionPerStaff)
	boolean("disable_page_cache", &s.DisablePageCache)
	duration("max_session", &s.MaxSession)
	duration("idle_timeout", &s.IdleTimeout)
	strings := func(key string, dst *[]string) {
		v, ok := imp[key]
		if !ok {
			return
		}
		list, isList := v.([]any)
		for _, e := range list {
			str, isStr := e.(string)
			if !isStr {
				isList = false
				break
			}
			*dst = append(*dst, str)
		}
		if !isList && err == nil {
			err = fmt.Errorf("data.deputy.impersonation.%s: want a list of strings, got %s", key, show(v))
		}
	}
	strings("protected_roles", &s.ProtectedRoles)
	strings("protected_customers", &s.ProtectedCustomers)
	if v, ok := imp["store_view_selection"].(string); ok {
		s.StoreViewSelection = v
	}
	if s.MaxSession == 0 && err == nil {
		err = fmt.Errorf("data.deputy.impersonation.max_session: must be positive")
	}
	return s, err
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
