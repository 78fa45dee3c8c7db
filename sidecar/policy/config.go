package policy

import (
	"net/url"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// Defaults of the policy section.
const (
	DefaultPolicyPath    = "policies"
	DefaultPollInterval  = 30 * time.Second // bundle server polling
	DefaultWatchInterval = 2 * time.Second  // local file watching
	MinPollInterval      = 10 * time.Millisecond
	// DefaultMaxBundleBytes bounds a bundle tarball and its files' total
	// size inflated: well above a policy set, well below what a
	// sidecar's memory limit allows.
	DefaultMaxBundleBytes = 64 << 20
	// DefaultMaxBundleValues bounds the values (object keys included)
	// that a bundle's data files and manifest parse into, in total (see
	// valueBudget). Measured with OPA v1.22 on the costliest shapes
	// ([{},...] and [[0],...]: 300 bytes allocated and 220 held per
	// value, read and compiled; [0,...] and {"a":0,...} cost less), a
	// bundle at the bound takes about 60 MB to read and refuse and 125 MB
	// to read and activate: well within the chart's 512 MiB limit beside
	// the set serving. The shipped policies' data holds a few hundred.
	DefaultMaxBundleValues = 500_000
)

// Config is the `policy` section: where policies come from and how they
// are checked before they serve. Exactly one of Paths, BundleFile and
// BundleURL names the source.
type Config struct {
	Paths           []string      `yaml:"paths" usage:"Rego and data files or directories (default when no bundle is set); test modules (*_test.rego) are not served"`
	BundleFile      string        `yaml:"bundle_file" usage:"a bundle .tar.gz or bundle directory"`
	BundleURL       string        `yaml:"bundle_url" usage:"a bundle server URL, polled with ETag; shown without its userinfo and query values; plain http to a host that is not loopback needs public_key (outside dev mode) and carries no user:password@"`
	PollInterval    time.Duration `yaml:"poll_interval" usage:"how often bundle_url is polled, or paths and bundle_file are checked with watch" default:"30s with bundle_url, else 2s"`
	BearerToken     string        `yaml:"bearer_token" usage:"bearer token sent to the bundle server; bundle_url must then be https"`
	PublicKey       string        `yaml:"public_key" usage:"PEM public key (or its file): bundles must be signed by it, and serve under their manifest revision; without it a bundle serves as <manifest revision>+<12 hex of its content digest> (bundle-<digest> without a manifest revision)"`
	KeyAlgorithm    string        `yaml:"key_algorithm" usage:"algorithm of public_key: ES256, ES384, ES512, PS256, PS384, PS512, RS256, RS384 or RS512; HMAC (HS*) is refused, it would make the public key a signing secret"`
	Scope           string        `yaml:"scope" usage:"signature scope a bundle must carry (needs public_key)"`
	MinSignedAt     string        `yaml:"min_signed_at" usage:"RFC 3339 time: a bundle signed before it, or whose signature carries no time, is refused (needs public_key); move it forward when a new bundle withdraws access"`
	Roots           []string      `yaml:"roots" usage:"data roots a bundle may claim"`
	MaxBundleBytes  int64         `yaml:"max_bundle_bytes" usage:"largest bundle read, in bytes: the tarball, and its entries inflated (contents, names, PAX records and 512 bytes each); a larger one is refused, as is one of more than 10000 entries or with a name over 4 KiB; also the files read from paths (Rego, data, tarballs; not hidden files or tests) or a bundle directory in total, which a watch reads on every poll"`
	MaxBundleValues int64         `yaml:"max_bundle_values" usage:"most values (JSON values and object keys, YAML values with aliases repeated) the data files and manifest of a bundle, or the JSON and YAML files of paths, may parse into, in total; more is refused before they are parsed, signed or not (parsing costs about 100 to 300 bytes a value); a manifest or .signatures.json over 1 MiB, and a file parsed as YAML over 256 KiB, are refused too"`
	Watch           bool          `yaml:"watch" usage:"reload paths or bundle_file when their content changes (every poll reads the files: a same-size edit under an unchanged modification time is seen)"`
	DecisionQuery   string        `yaml:"decision_query" usage:"the check's decision: data.a.b.c, or OPA-Envoy's a/b/c"`
	AllowBuiltins   []string      `yaml:"allow_builtins" usage:"OPA built-ins refused by default that policies may call anyway: http.send, net.lookup_ip_addr, opa.runtime, json.match_schema, json.verify_schema; each reaches the network or the host (a schema's file:// $ref) on every check, and again on every deputy eval replay, and http.send or net.lookup_ip_addr lets the schema built-ins fetch remote $refs too; give deputy policy check, policy test and bundle build the same list with --allow-builtins"`
	DryRun          bool          `yaml:"dry_run" usage:"evaluate and log every decision, but let through what policy denies (requests refused as malformed stay refused)"`
}

// SetDefaults fills the unset fields.
func (c *Config) SetDefaults() {
	if len(c.Paths) == 0 && c.BundleFile == "" && c.BundleURL == "" {
		c.Paths = []string{DefaultPolicyPath}
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
		if c.BundleURL == "" {
			c.PollInterval = DefaultWatchInterval
		}
	}
	if c.KeyAlgorithm == "" {
		c.KeyAlgorithm = AlgES256
	}
	if c.MaxBundleBytes == 0 {
		c.MaxBundleBytes = DefaultMaxBundleBytes
	}
	if c.MaxBundleValues == 0 {
		c.MaxBundleValues = DefaultMaxBundleValues
	}
	if len(c.Roots) == 0 {
		c.Roots = append([]string(nil), DefaultRoots...)
	}
	if c.DecisionQuery == "" {
		c.DecisionQuery = DefaultDecisionQuery
	}
	if ref, err := DecisionRef(c.DecisionQuery); err == nil {
		c.DecisionQuery = ref // OPA-Envoy's a/b/c form, as data.a.b.c
	}
}

// Validate checks a defaulted config, naming the offending field.
func (c *Config) Validate() error {
	n := 0
	for _, set := range []bool{len(c.Paths) > 0, c.BundleFile != "", c.BundleURL != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return sidecar.Invalid("policy.paths", "set exactly one of paths, bundle_file and bundle_url")
	}
	if c.BundleURL != "" {
		u, err := url.Parse(c.BundleURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return sidecar.Invalid("policy.bundle_url", "want an http(s) URL, got %q", sidecar.RedactURL(c.BundleURL))
		}
		if c.Watch {
			return sidecar.Invalid("policy.watch", "watch applies to paths and bundle_file; a bundle_url is polled")
		}
		// Over plain http the token is readable on the path, and whoever
		// reads it can fetch the bundles, or answer in the server's place.
		if c.BearerToken != "" && u.Scheme != "https" {
			return sidecar.Invalid("policy.bearer_token", "is sent only over https; bundle_url %s is %s", sidecar.RedactURL(c.BundleURL), u.Scheme)
		}
		// A user or password in the URL goes as Basic authorization on
		// every poll, signed bundles or not: over plain http to another
		// host it is as readable as the token would be.
		if u.User != nil && sidecar.PlainRemote(u) {
			return sidecar.Invalid("policy.bundle_url", "%s carries a user and password (user:password@), sent in clear over %s: "+
				"use https, or keep the bundle server on loopback", sidecar.RedactURL(c.BundleURL), u.Scheme)
		}
	}
	if c.BearerToken != "" && c.BundleURL == "" {
		return sidecar.Invalid("policy.bearer_token", "only used with bundle_url")
	}
	if c.PublicKey != "" && len(c.Paths) > 0 {
		return sidecar.Invalid("policy.public_key", "signatures are checked on bundles (bundle_file or bundle_url), not on paths")
	}
	if c.Scope != "" && c.PublicKey == "" {
		return sidecar.Invalid("policy.scope", "requires public_key")
	}
	if c.MinSignedAt != "" {
		if c.PublicKey == "" {
			return sidecar.Invalid("policy.min_signed_at", "requires public_key: only a verified signature's time can be trusted")
		}
		if _, err := c.minSignedAt(); err != nil {
			return err
		}
	}
	if c.PollInterval < MinPollInterval {
		return sidecar.Invalid("policy.poll_interval", "must be at least %s", MinPollInterval)
	}
	if err := CheckAllowedBuiltins("policy.allow_builtins", c.AllowBuiltins); err != nil {
		return err
	}
	if c.MaxBundleBytes <= 0 {
		return sidecar.Invalid("policy.max_bundle_bytes", "must be positive, got %d", c.MaxBundleBytes)
	}
	if c.MaxBundleValues <= 0 {
		return sidecar.Invalid("policy.max_bundle_values", "must be positive, got %d", c.MaxBundleValues)
	}
	if err := checkAlgorithm("policy.key_algorithm", c.KeyAlgorithm); err != nil {
		return err
	}
	for _, r := range c.Roots {
		if r == "" {
			return sidecar.Invalid("policy.roots", "a root may not be empty (that would be the whole data tree)")
		}
	}
	if ref, err := DecisionRef(c.DecisionQuery); err != nil {
		return err
	} else if ref != c.DecisionQuery {
		return sidecar.Invalid("policy.decision_query", "%q is not in its data.a.b.c form: SetDefaults was not called", c.DecisionQuery)
	}
	return nil
}

// minSignedAt parses MinSignedAt; the zero time when unset.
func (c *Config) minSignedAt() (time.Time, error) {
	if c.MinSignedAt == "" {
		return time.Time{}, nil
	}
	t, ok := sidecar.ParseTime(c.MinSignedAt)
	if !ok {
		return time.Time{}, sidecar.Invalid("policy.min_signed_at", "want an RFC 3339 time like 2026-01-02T15:04:05Z, got %q", c.MinSignedAt)
	}
	return t, nil
}
