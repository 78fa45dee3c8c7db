// Package delegation owns the product rules of the delegated-access
// lifecycles: Login as Customer sessions (consent, start, redeem, end, log),
// partner access requests, grants, shares and subscriptions, and reseller
// assignments. Which actions are allowed is decided by policy; this package
// keeps state consistent and secrets unguessable. The check path's view of
// this state (resolvers and their caches) is package resolve.
//
// The three lifecycles (Impersonation, Partners, Resellers) have one shape:
// authorization lives in the lifecycle, never in its caller. Every exported
// method that acts for a caller takes the caller's identity and an
// Authorize; it loads what the action is about, asks Authorize with the
// action and the facts as stored (again on every retry, where the answer
// depends on state), and only then checks its own invariants and writes. A
// refusal comes back as it is, with nothing written. The management API
// passes the manage policy (data.deputy.manage.decision) as Authorize and
// only decodes and encodes; TestLifecyclesAskPolicy holds every exported
// method to this.
package delegation

import (
	"net/url"
	"strings"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// Defaults of the impersonation config section.
const (
	DefaultSessionCookie = "deputy_session"
	DefaultRedeemTTL     = 30 * time.Second
	DefaultTouchInterval = time.Minute
	DefaultCacheTTL      = 30 * time.Second
	DefaultCacheSize     = 100_000
	// DefaultImpersonationSweep is how often lapsed sessions and consents
	// are looked for.
	DefaultImpersonationSweep = 30 * time.Second
)

// ImpersonationConfig is the "impersonation" section of Deputy's configuration: the
// mechanics around sessions. The rules (switches, permissions, session
// lengths) are policy data in policies/deputy/impersonation/data.json.
type ImpersonationConfig struct {
	SessionCookie string        `yaml:"session_cookie" usage:"storefront cookie carrying the session token"`
	RedeemTTL     time.Duration `yaml:"redeem_ttl" usage:"how long a redeem link is valid (at most 5m)"`
	RedirectHosts []string      `yaml:"redirect_hosts" usage:"hosts a redeem link may redirect to, besides relative paths on the storefront host"`
	// StorefrontHosts are where a session is honoured; empty: only on the
	// host its redeem link was used on.
	StorefrontHosts []string `yaml:"storefront_hosts" usage:"storefront hosts on which a redeem link may be used and a session cookie is honoured (default: any host for the link; the cookie only on the host the link was used on); partner and reseller requests naming a customer are refused there"`
	// SweepInterval bounds how late an impersonation.ended event for an
	// expired or idle session, or a consent.expired event, may come.
	SweepInterval time.Duration `yaml:"sweep_interval" usage:"how often sessions that expired or went idle are ended, and lapsed consents reported, with their events"`
	// TouchInterval is shortened per session to a third of its idle
	// timeout (not below a second), so a session in use never lapses.
	TouchInterval time.Duration `yaml:"touch_interval" usage:"least time between writes of a session's last-seen time, from which the store judges idleness: a session goes idle up to this much sooner after its last request; a session whose idle timeout is under three times this is written every third of its idle timeout instead (at most once a second)"`
	// CacheTTL also bounds how long a cached entry counts as fresh while
	// the store is down.
	CacheTTL  time.Duration `yaml:"cache_ttl" usage:"how stale a cached session may be when an eviction message is lost; also how often a replica writes a staff member's staff mark again"`
	CacheSize int           `yaml:"cache_size" usage:"sessions kept in the local cache"`
}

// ImpersonationDefaults returns the section with every default set.
func ImpersonationDefaults() ImpersonationConfig {
	var c ImpersonationConfig
	c.SetDefaults()
	return c
}

// SetDefaults fills every unset field with its default.
func (c *ImpersonationConfig) SetDefaults() {
	if c.SessionCookie == "" {
		c.SessionCookie = DefaultSessionCookie
	}
	if c.RedeemTTL == 0 {
		c.RedeemTTL = DefaultRedeemTTL
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultImpersonationSweep
	}
	if c.TouchInterval == 0 {
		c.TouchInterval = DefaultTouchInterval
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
}

// Validate checks the section; errors name the field.
func (c ImpersonationConfig) Validate() error {
	if c.SessionCookie != "" && strings.ContainsAny(c.SessionCookie, " =;,\t\r\n\"") {
		return sidecar.Invalid("impersonation.session_cookie", "not a valid cookie name")
	}
	if c.RedeemTTL < 0 || c.RedeemTTL > 5*time.Minute {
		return sidecar.Invalid("impersonation.redeem_ttl", "must be between 0 and 5m")
	}
	if c.SweepInterval < 0 {
		return sidecar.Invalid("impersonation.sweep_interval", "must not be negative")
	}
	if c.TouchInterval < 0 {
		return sidecar.Invalid("impersonation.touch_interval", "must not be negative")
	}
	if c.CacheTTL < 0 {
		return sidecar.Invalid("impersonation.cache_ttl", "must not be negative")
	}
	if c.CacheSize < 0 {
		return sidecar.Invalid("impersonation.cache_size", "must not be negative")
	}
	// Read as request hosts are (sidecar.ParseHost), so an entry means
	// what the hosts it is compared with mean.
	for i, h := range c.RedirectHosts {
		if _, err := sidecar.ParseHost(h); err != nil {
			return sidecar.Invalid("impersonation.redirect_hosts", "entry %d: %q is not a host, optionally with a port: %v", i, h, err)
		}
	}
	for i, h := range c.StorefrontHosts {
		if p, err := sidecar.ParseHost(h); err != nil || p.Port != "" {
			return sidecar.Invalid("impersonation.storefront_hosts", "entry %d: %q is not a host name (a name or an address, without port)", i, h)
		}
	}
	return nil
}

// SafeRedirect returns the redirect target a redeem link may send the
// browser to: a relative path on the same host, or an https URL on one of
// hosts. Anything else (other hosts, scheme-relative "//evil", backslash
// tricks, javascript:) is refused, so a redeem link is never an open
// redirect.
func SafeRedirect(target string, hosts []string) (string, error) {
	if target == "" {
		return "/", nil
	}
	bad := sidecar.Invalid("redirect", "must be a relative path or an https URL on an allowed host")
	if len(target) > 2048 || strings.ContainsAny(target, "\\\r\n\t\x00") {
		return "", bad
	}
	if strings.HasPrefix(target, "/") {
		if strings.HasPrefix(target, "//") {
			return "", bad
		}
		u, err := url.Parse(target)
		if err != nil || u.Scheme != "" || u.Host != "" {
			return "", bad
		}
		return target, nil
	}
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "https" || u.User != nil || u.Host == "" {
		return "", bad
	}
	th, err := sidecar.ParseHost(u.Host)
	if err != nil {
		return "", bad
	}
	for _, h := range hosts {
		if p, err := sidecar.ParseHost(h); err == nil && p == th {
			return u.String(), nil
		}
	}
	return "", bad
}

// OnStorefront reports whether a session may be redeemed and honoured on
// host, a host as sidecar.ParseHost reads it: one of StorefrontHosts, or
// any host when none are configured (the session is then bound to the
// host it was redeemed on).
func (c ImpersonationConfig) OnStorefront(host string) bool {
	return len(c.StorefrontHosts) == 0 || HostIn(host, c.StorefrontHosts)
}

// HostIn reports whether host is one of hosts, both read strictly
// (sidecar.ParseHost) and compared by name: case, a trailing dot and the
// port do not count, as browsers ignore them for cookies. A host that is
// not one matches none.
func HostIn(host string, hosts []string) bool {
	name := sidecar.HostName(host)
	if name == "" {
		return false
	}
	for _, h := range hosts {
		if sidecar.HostName(h) == name {
			return true
		}
	}
	return false
}
