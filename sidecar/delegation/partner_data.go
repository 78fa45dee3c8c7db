package delegation

import (
	"encoding/json"

	"github.com/deputyhq/deputy/sidecar"
)

// partnerLimits are the bounds security teams set in policy data
// (data.deputy.partner): pending expiry, grant length and the level a
// subscription needs. Values missing from data, or malformed, fall back
// to the partner config section, so a bad bundle never widens access by
// accident: a malformed level keeps the configured one.
type partnerLimits struct {
	pendingDays int
	minDays     int
	maxDays     int
	subMin      sidecar.Level
}

// WithPartnerPolicyData reads limits from the active policy data, so the
// policy and the lifecycle agree on them.
func WithPartnerPolicyData(d PolicyData) PartnerOption { return func(p *Partners) { p.data = d } }

func (p *Partners) limits() partnerLimits {
	l := partnerLimits{
		pendingDays: p.cfg.PendingExpiryDays,
		minDays:     p.cfg.MinGrantDays,
		maxDays:     p.cfg.MaxGrantDays,
		subMin:      p.cfg.SubscriptionMinLevel,
	}
	if p.data == nil {
		return l
	}
	root := p.data()
	deputy, _ := root["deputy"].(map[string]any)
	m, _ := deputy["partner"].(map[string]any)
	if m == nil {
		return l
	}
	if n, ok := dataInt(m["pending_expiry_days"]); ok && n > 0 {
		l.pendingDays = n
	}
	min, max := l.minDays, l.maxDays
	if n, ok := dataInt(m["min_grant_days"]); ok && n > 0 {
		min = n
	}
	if n, ok := dataInt(m["max_grant_days"]); ok && n > 0 {
		max = n
	}
	if min <= max {
		l.minDays, l.maxDays = min, max
	}
	if s, ok := m["subscription_min_level"].(string); ok && sidecar.Level(s).Valid() {
		l.subMin = sidecar.Level(s)
	}
	return l
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
