package identity

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// Defaults.
const (
	DefaultHeader             = "authorization"
	DefaultLeeway             = 30 * time.Second
	DefaultRefreshInterval    = 5 * time.Minute
	DefaultMinRefreshInterval = 10 * time.Second
	DefaultFetchTimeout       = 5 * time.Second
	DefaultDevKeyFile         = ".deputy/dev/signing-key.json"

	// DevIssuerName and DevAudience are what dev tokens carry and what the
	// verifier expects of them in dev mode.
	DevIssuerName = "deputy-dev"
	DevAudience   = "deputy"

	// MaxLeeway keeps a mistyped leeway from turning expiry off.
	MaxLeeway = 5 * time.Minute
)

// DefaultAlgorithms are the signature algorithms accepted when none are
// configured: asymmetric only, so a public key can never act as an HMAC secret.
var DefaultAlgorithms = []string{"RS256", "ES256", "EdDSA"}

// allowedAlgorithms are the algorithms that may be configured at all.
var allowedAlgorithms = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

// Config is the `identity` section. The usage tags are the settings'
// one-line descriptions (flag help and docs/configuration.md).
type Config struct {
	Header     string         `yaml:"header" usage:"request header carrying the bearer token, read alike on checks and management API calls, in any case with _ as -, as CGI, PHP and WSGI upstreams read it"`
	Issuers    []IssuerConfig `yaml:"issuers" usage:"trusted token issuers, each with its own key set"`
	IssuerURLs []string       `yaml:"issuer_urls" usage:"trusted issuers by URL alone: keys found by OIDC discovery (<issuer>/.well-known/openid-configuration); https, or plain http on loopback (any host in dev mode)"`
	// AnonymousOnly lets Deputy start outside dev mode with no issuer:
	// every bearer token is then refused. Without it, no issuer is a
	// start-up error.
	AnonymousOnly bool     `yaml:"anonymous_only" usage:"start with no issuer outside dev mode: every bearer token is refused"`
	Audiences     []string `yaml:"audiences" usage:"audiences accepted when an issuer names none; a token must carry one of them (required outside dev mode unless any_audience)"`
	// AnyAudience accepts an issuer's tokens whatever their aud: tokens
	// the same IdP mints for other applications then sign in too. Only
	// for an IdP that mints tokens for Deputy's application alone.
	AnyAudience bool     `yaml:"any_audience" usage:"accept tokens of an issuer with no audiences configured whatever their aud (tokens minted for other applications sign in too)"`
	Algorithms  []string `yaml:"algorithms" usage:"accepted signature algorithms: RS*, PS*, ES*, EdDSA (none and HMAC are refused)"`
	// Leeway is a pointer so that an explicit 0, a token cut off the
	// second it expires, survives SetDefaults.
	Leeway *time.Duration `yaml:"leeway" usage:"clock skew allowed on exp, nbf and iat (at most 5m; 0: none, a token is refused from the second it expires)"`
	Claims ClaimsConfig   `yaml:"claims" usage:"the claim each identity field is read from; dotted paths reach into nested objects (realm_access.roles)"`
	// RefreshInterval re-reads every key set; MinRefreshInterval bounds how
	// often an unknown kid (or no kid, and no key that verifies) may
	// trigger a fetch.
	RefreshInterval    time.Duration `yaml:"refresh_interval" usage:"how often every key set is fetched again (at most 876000h, 100 years)"`
	MinRefreshInterval time.Duration `yaml:"min_refresh_interval" usage:"least time between key set fetches triggered by a token of an unknown kid, or of no kid that no key verifies"`
	FetchTimeout       time.Duration `yaml:"fetch_timeout" usage:"time allowed for one key set fetch"`
	// MaxKeyAge bounds how long keys verify while their key set cannot be
	// fetched. Off by default: keeping the last keys through an identity
	// provider's outage keeps everyone signed in, and the key set age
	// metric and alert show the outage.
	MaxKeyAge time.Duration `yaml:"max_key_age" usage:"refuse an issuer's tokens (stale_keys) once its key set has not been fetched for this long, so a key it removed stops verifying during an outage; 0 keeps verifying with the last keys fetched; else at least twice refresh_interval and at most 876000h (100 years)"`
	Dev       DevConfig     `yaml:"dev" usage:"the dev issuer, whose tokens 'deputy dev token' mints"`
}

// IssuerConfig is one trusted issuer. Its keys come from JWKSFile, from
// JWKSURL, or, with neither, from OIDC discovery at the Issuer URL.
type IssuerConfig struct {
	Issuer    string        `yaml:"issuer" usage:"the iss claim this issuer's tokens carry"`
	JWKSFile  string        `yaml:"jwks_file" usage:"JWKS file with the issuer's public keys"`
	JWKSURL   string        `yaml:"jwks_url" usage:"JWKS URL with the issuer's public keys: https, or plain http on loopback (any host in dev mode)"`
	Audiences []string      `yaml:"audiences" usage:"audiences accepted from this issuer (default identity.audiences)"`
	Claims    *ClaimsConfig `yaml:"claims" usage:"claim names in this issuer's tokens (default identity.claims)"`
	// Namespace keeps this issuer's people apart from another issuer's
	// of the same sub, org or domain: state and policy key people by
	// those values alone.
	Namespace string `yaml:"namespace" usage:"this issuer's sub, org and domain read as <namespace>:<value>; required of every trusted issuer but one"`
	// Roles and Privileges are what an issuer with a namespace may
	// assert: keeping its people apart protects nothing if it can mint
	// any role. Empty means none; the issuer without a namespace asserts
	// every role and takes no list.
	Roles      []string `yaml:"roles" usage:"roles this issuer's tokens may assert (issuer with a namespace only; empty: none, every role it asserts is dropped)"`
	Privileges []string `yaml:"privileges" usage:"privileges this issuer's tokens may assert (issuer with a namespace only; empty: none)"`
}

// ClaimsConfig names the claim each identity field is read from; dotted
// paths reach into nested objects (realm_access.roles).
type ClaimsConfig struct {
	Sub        string `yaml:"sub" usage:"claim holding the subject"`
	Name       string `yaml:"name" usage:"claim holding the display name"`
	Email      string `yaml:"email" usage:"claim holding the email address"`
	Roles      string `yaml:"roles" usage:"claim holding the roles: an array of strings, or a string holding one role (split at white space only when the claim is named scope or scp)"`
	Privileges string `yaml:"privileges" usage:"claim holding the privileges: an array of strings, or a string holding one privilege (split at white space only when the claim is named scope or scp)"`
	Org        string `yaml:"org" usage:"claim holding the organisation"`
	Domain     string `yaml:"domain" usage:"claim holding the reseller domain signed in through"`
}

// DevConfig turns on the dev issuer: a local signing key that
// `deputy dev token` mints tokens with.
type DevConfig struct {
	Enabled   bool   `yaml:"enabled" usage:"trust tokens from 'deputy dev token' (dev mode only; --dev turns it on)"`
	KeyFile   string `yaml:"key_file" usage:"dev issuer signing key, generated when missing; refused unless Deputy's user owns it (no group or other access, no symlink) and its directory (writable by that user alone)"`
	Namespace string `yaml:"namespace" usage:"the dev issuer's sub, org and domain read as <namespace>:<value>; required beside an issuer without one"`
	// Roles and Privileges are as IssuerConfig's, for a dev issuer with
	// a namespace.
	Roles      []string `yaml:"roles" usage:"roles dev tokens may assert when the dev issuer has a namespace (empty: none)"`
	Privileges []string `yaml:"privileges" usage:"privileges dev tokens may assert when the dev issuer has a namespace (empty: none)"`
}

// DefaultClaims maps every field to the claim of the same name.
func DefaultClaims() ClaimsConfig {
	return ClaimsConfig{Sub: "sub", Name: "name", Email: "email", Roles: "roles",
		Privileges: "privileges", Org: "org", Domain: "domain"}
}

// Defaults returns the configuration with every default filled in.
func Defaults() Config {
	var c Config
	c.SetDefaults()
	return c
}

// SetDefaults fills every unset field with its default.
func (c *Config) SetDefaults() {
	if c.Header == "" {
		c.Header = DefaultHeader
	}
	// Read in the form every spelling is compared against (Verify).
	c.Header = sidecar.HeaderName(c.Header)
	if len(c.Algorithms) == 0 {
		c.Algorithms = append([]string(nil), DefaultAlgorithms...)
	}
	if c.Leeway == nil {
		c.Leeway = new(DefaultLeeway)
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	if c.MinRefreshInterval == 0 {
		c.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if c.FetchTimeout == 0 {
		c.FetchTimeout = DefaultFetchTimeout
	}
	c.Claims = c.Claims.withDefaults(DefaultClaims())
	if c.Dev.KeyFile == "" {
		c.Dev.KeyFile = DefaultDevKeyFile
	}
}

func (cc ClaimsConfig) withDefaults(d ClaimsConfig) ClaimsConfig {
	pick := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	return ClaimsConfig{
		Sub: pick(cc.Sub, d.Sub), Name: pick(cc.Name, d.Name), Email: pick(cc.Email, d.Email),
		Roles: pick(cc.Roles, d.Roles), Privileges: pick(cc.Privileges, d.Privileges),
		Org: pick(cc.Org, d.Org), Domain: pick(cc.Domain, d.Domain),
	}
}

// Validate reports the first invalid field of a defaulted config.
func (c *Config) Validate() error {
	if err := sidecar.InvalidHeaderName("identity.header", c.Header); err != nil {
		return err
	}
	for i, a := range c.Algorithms {
		if !allowedAlgorithms[a] {
			return sidecar.Invalid("identity.algorithms", "algorithm %q (entry %d) is not allowed: use asymmetric algorithms (RS*, PS*, ES*, EdDSA); none and HMAC are refused", a, i)
		}
	}
	if c.Leeway == nil || *c.Leeway < 0 || *c.Leeway > MaxLeeway {
		return sidecar.Invalid("identity.leeway", "must be between 0 and %s", MaxLeeway)
	}
	if c.RefreshInterval < time.Second || c.RefreshInterval > sidecar.MaxSpan {
		// Bounded above so that twice it, below, does not wrap.
		return sidecar.Invalid("identity.refresh_interval", "must be between 1s and %dh (100 years)", sidecar.MaxSpan/time.Hour)
	}
	// At 0 every token of an unknown kid would fetch the key set again.
	if c.MinRefreshInterval <= 0 || c.MinRefreshInterval > c.RefreshInterval {
		return sidecar.Invalid("identity.min_refresh_interval", "must be positive and at most refresh_interval")
	}
	if c.FetchTimeout <= 0 {
		return sidecar.Invalid("identity.fetch_timeout", "must be positive")
	}
	if c.MaxKeyAge > sidecar.MaxSpan {
		return sidecar.Invalid("identity.max_key_age", "must be at most %dh (100 years)", sidecar.MaxSpan/time.Hour)
	}
	if c.MaxKeyAge < 0 || (c.MaxKeyAge > 0 && c.MaxKeyAge < 2*c.RefreshInterval) {
		return sidecar.Invalid("identity.max_key_age", "must be 0 (off) or at least twice refresh_interval (%s), so that one failed refresh does not refuse every token", 2*c.RefreshInterval)
	}
	seen := map[string]bool{}
	for i, u := range c.IssuerURLs {
		field := "identity.issuer_urls[" + strconv.Itoa(i) + "]"
		if !httpURL(u) {
			return sidecar.Invalid(field, "not an http(s) issuer URL: %q", shownIssuer(u))
		}
		if err := c.keysInClear(field, u); err != nil {
			return err
		}
		if seen[u] {
			return sidecar.Invalid(field, "duplicate issuer %q", shownIssuer(u))
		}
		seen[u] = true
	}
	for i, is := range c.Issuers {
		field := "identity.issuers[" + strconv.Itoa(i) + "]"
		if is.Issuer == "" {
			return sidecar.Invalid(field+".issuer", "required")
		}
		if seen[is.Issuer] {
			return sidecar.Invalid(field+".issuer", "duplicate issuer %q", shownIssuer(is.Issuer))
		}
		seen[is.Issuer] = true
		if c.Dev.Enabled && is.Issuer == DevIssuerName {
			return sidecar.Invalid(field+".issuer", "%q is reserved for dev mode", DevIssuerName)
		}
		switch {
		case is.JWKSFile == "" && is.JWKSURL == "":
			if !httpURL(is.Issuer) {
				return sidecar.Invalid(field+".issuer", "%q is not an http(s) URL, so its keys cannot be discovered: set jwks_url or jwks_file", shownIssuer(is.Issuer))
			}
			if err := c.keysInClear(field+".issuer", is.Issuer); err != nil {
				return err
			}
		case is.JWKSFile != "" && is.JWKSURL != "":
			return sidecar.Invalid(field+".jwks_url", "set jwks_url or jwks_file, not both")
		case is.JWKSURL != "":
			if !httpURL(is.JWKSURL) {
				return sidecar.Invalid(field+".jwks_url", "not an http(s) URL: %q", sidecar.RedactURL(is.JWKSURL))
			}
			if err := c.keysInClear(field+".jwks_url", is.JWKSURL); err != nil {
				return err
			}
		}
		if is.Claims != nil {
			if err := is.Claims.validate(field + ".claims"); err != nil {
				return err
			}
		}
	}
	if err := c.Claims.validate("identity.claims"); err != nil {
		return err
	}
	if err := c.validateNamespaces(); err != nil {
		return err
	}
	if c.Dev.Enabled && c.Dev.KeyFile == "" {
		return sidecar.Invalid("identity.dev.key_file", "required in dev mode")
	}
	return nil
}

// AudienceMissing names the setting of the first issuer whose tokens no
// audience restricts ("" when every one is): without one, a token the same
// IdP minted for another application signs in.
func (c *Config) AudienceMissing() string {
	if c.AnyAudience || len(c.Audiences) > 0 {
		return ""
	}
	for i, is := range c.Issuers {
		if len(is.Audiences) == 0 {
			return "identity.issuers[" + strconv.Itoa(i) + "].audiences"
		}
	}
	if len(c.IssuerURLs) > 0 {
		return "identity.audiences"
	}
	return ""
}

// HasIssuer reports whether any issuer is trusted besides the dev issuer.
func (c *Config) HasIssuer() bool { return len(c.Issuers)+len(c.IssuerURLs) > 0 }

// allIssuers is Issuers followed by one discovered issuer per IssuerURLs.
func (c *Config) allIssuers() []IssuerConfig {
	out := append([]IssuerConfig(nil), c.Issuers...)
	for _, u := range c.IssuerURLs {
		out = append(out, IssuerConfig{Issuer: u})
	}
	return out
}

// MaxNamespaceLen bounds a namespace; it prefixes every name of its issuer.
const MaxNamespaceLen = 64

// trustedIssuer is one issuer as the namespace rule sees it, with the
// setting that would give it a namespace.
type trustedIssuer struct {
	field, name, namespace string
	// allow is the setting holding the roles and privileges it may
	// assert ("" for issuer_urls, which have none).
	allow             string
	roles, privileges []string
}

// trusted lists every trusted issuer: Issuers, IssuerURLs (which cannot
// carry a namespace), and the dev issuer when it is on.
func (c *Config) trusted() []trustedIssuer {
	var out []trustedIssuer
	for i, is := range c.Issuers {
		field := "identity.issuers[" + strconv.Itoa(i) + "]"
		out = append(out, trustedIssuer{field + ".namespace", is.Issuer, is.Namespace, field, is.Roles, is.Privileges})
	}
	for i, u := range c.IssuerURLs {
		out = append(out, trustedIssuer{field: "identity.issuer_urls[" + strconv.Itoa(i) + "]", name: u})
	}
	if c.Dev.Enabled {
		out = append(out, trustedIssuer{"identity.dev.namespace", DevIssuerName, c.Dev.Namespace, "identity.dev", c.Dev.Roles, c.Dev.Privileges})
	}
	return out
}

// validateNamespaces refuses trusting issuers whose people could be
// confused: state and policy key people by sub, org and domain alone, so
// of several trusted issuers all but one need a namespace of their own.
func (c *Config) validateNamespaces() error {
	all := c.trusted()
	for _, t := range all {
		if t.namespace != "" && !namespaceToken(t.namespace) {
			return sidecar.Invalid(t.field, "namespace %q: want at most %d letters, digits, '.', '_' or '-' (no ':')", t.namespace, MaxNamespaceLen)
		}
		if err := t.validateAllowed(); err != nil {
			return err
		}
	}
	if len(all) < 2 {
		return nil
	}
	var bare *trustedIssuer
	owner := map[string]string{}
	for i := range all {
		t := &all[i]
		if t.namespace == "" {
			if bare != nil {
				how := "set its namespace"
				if strings.HasPrefix(t.field, "identity.issuer_urls") {
					how = "issuer_urls carry no namespace: list it under identity.issuers with one"
				}
				return sidecar.Invalid(t.field, "issuers %q and %q both have no namespace: with several trusted issuers, "+
					"all but one need a namespace, or the same sub, org or domain of each would be one person; %s", bare.name, t.name, how)
			}
			bare = t
			continue
		}
		// Folded: to a case-insensitive upstream Acme:x and acme:x are one.
		if other, taken := owner[sidecar.FoldID(t.namespace)]; taken {
			return sidecar.Invalid(t.field, "namespace %q is also issuer %q's, in letter case or as spelled: each issuer needs its own", t.namespace, other)
		}
		owner[sidecar.FoldID(t.namespace)] = t.name
	}
	return nil
}

// validateAllowed checks the roles and privileges an issuer may assert:
// only an issuer with a namespace is restricted, so a list on the issuer
// without one would read as a restriction that is not there.
func (t *trustedIssuer) validateAllowed() error {
	for _, l := range [...]struct {
		name string
		list []string
	}{{"roles", t.roles}, {"privileges", t.privileges}} {
		if len(l.list) == 0 {
			continue
		}
		field := t.allow + "." + l.name
		if t.namespace == "" {
			return sidecar.Invalid(field, "only an issuer with a namespace is limited to listed %s; the issuer without one asserts every one of them: remove the list or set a namespace", l.name)
		}
		for i, v := range l.list {
			if v == "" || strings.ContainsAny(v, " \t\r\n") {
				return sidecar.Invalid(field, "entry %d: %q is not a %s name", i, v, strings.TrimSuffix(l.name, "s"))
			}
		}
	}
	return nil
}

func namespaceToken(s string) bool {
	if len(s) > MaxNamespaceLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return s != ""
}

// keysInClear refuses, outside dev mode, an http(s) URL that keys would
// be fetched from in clear across the network: whoever answers on the path
// would choose the keys, and sign any token the verifier then accepts, the
// management API's included. Plain http stays open to loopback (an IdP or
// a key proxy on the same host) and, in dev mode (the dev issuer on), to a
// development IdP on another machine.
func (c *Config) keysInClear(field, raw string) error {
	if c.Dev.Enabled {
		return nil
	}
	if u, err := url.Parse(raw); err == nil && sidecar.PlainRemote(u) {
		return sidecar.Invalid(field, "%s is plain http to a host that is not loopback: outside dev mode keys are fetched "+
			"over https (plain http only from 127.0.0.1, ::1 or localhost), or anyone on the path could sign tokens", shownIssuer(raw))
	}
	return nil
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

func (cc ClaimsConfig) validate(field string) error {
	for name, v := range map[string]string{"sub": cc.Sub, "name": cc.Name, "email": cc.Email,
		"roles": cc.Roles, "privileges": cc.Privileges, "org": cc.Org, "domain": cc.Domain} {
		if v == "" {
			continue
		}
		if strings.HasPrefix(v, ".") || strings.HasSuffix(v, ".") || strings.Contains(v, "..") {
			return sidecar.Invalid(field+"."+name, "bad claim path %q", v)
		}
	}
	return nil
}
