package main

import (
	"maps"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/actortoken"
	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/envoy"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// Defaults of the core settings (DESIGN §8). The sections' defaults are
// constants of the packages that own them.
const (
	DefaultLogLevel    = "info"
	DefaultGRPCAddr    = "127.0.0.1:9191"
	DefaultHTTPAddr    = ":8181"
	DefaultMetricsAddr = ":9090"
	// Dev mode listens on loopback only: its generated keys and dev tokens
	// must not be reachable from the network by accident.
	DefaultDevHTTPAddr     = "127.0.0.1:8181"
	DefaultDevMetricsAddr  = "127.0.0.1:9090"
	DefaultLiveRefresh     = 10 * time.Second
	DefaultMaxRecvMsgBytes = 4 << 20
	DefaultMaxBodyBytes    = 8 << 10
	// A request's body comes from a proxy on the same host, or a
	// management API client: half a minute is generous for both.
	DefaultHTTPReadTimeout = 30 * time.Second
	// Longer than the idle timeouts of the proxies' connection pools
	// (Envoy's default 1 h, nginx 60 s, Caddy 2 min), so that they close
	// first: a connection closed under a check being sent fails it.
	DefaultHTTPIdleTimeout = 65 * time.Minute
	// Above what the proxies send a check (Envoy's default
	// max_request_headers_kb is 60, nginx's large_client_header_buffers
	// 4 × 8k): Go's own default, a megabyte, let one request's headers cost
	// a check that much scanning for credentials.
	DefaultHTTPMaxHeaderBytes = 64 << 10
	DefaultShutdownTimeout    = 15 * time.Second
	DefaultGCPercent          = 150
	DefaultStreamWorkers      = 16
	DefaultCheckPath          = "/deputy/authz"
	DefaultOwnedPrefix        = "x-deputy-"
	DefaultErrorStatus        = 403
	DefaultParseBody          = true
)

// Listener bounds. At a connection cap an idle connection is closed to
// make room, or newcomers wait in the kernel's backlog, instead of each
// taking memory: the proxies' pools and the management API's clients fit
// well below the HTTP cap, a few scrapers and probes below the metrics one,
// Envoy's few multiplexed connections and the gRPC probes below the gRPC one.
const (
	DefaultGRPCMaxConnections    = 1024
	DefaultHTTPMaxConnections    = 4096
	DefaultMetricsMaxConnections = 128
	// Scrapers and probes reconnect cheaply: an idle connection on the
	// metrics listener is memory held for whoever opened it.
	DefaultMetricsIdleTimeout = 2 * time.Minute
	// DefaultFinalScrapeWait is a scrape interval of most Prometheus
	// set-ups (15 s or less), short of the longer ones (30 s, 1 min): a
	// shutdown that lost records waits this long at most, and one that
	// lost none not at all.
	DefaultFinalScrapeWait = 15 * time.Second
)

// DefaultGRPCSocketMode keeps a unix: socket its owner's: whoever connects
// gets decisions and actor tokens.
const DefaultGRPCSocketMode = "0600"

// Config is the whole configuration. Every leaf is settable from the YAML
// file (its yaml path), the environment (DEPUTY_ + path in upper snake
// case) and a flag (path in kebab case), in rising precedence; lists of
// structs and maps are YAML only.
//
// Convention, for every section: the `usage` tag is the setting's one-line
// description (flag help and docs/configuration.md are generated from it);
// a `default` tag describes a default that depends on other settings.
// Zero means "unset": SetDefaults fills it, so a setting whose zero value
// means something else is a pointer. The loader refuses an explicit 0 of a
// number that is not a pointer and has a default (zeroRefused), unless its
// usage says "0: the default"; and an empty string or list that
// SetDefaults fills (emptyGiven.replaced): a list whose empty value means
// something is filled only when nil, and its usage says "empty: ...".
// Validate never changes the config.
type Config struct {
	Dev             bool          `yaml:"dev" usage:"dev mode: generated signing keys, embedded store unless redis is set, tokens from 'deputy dev token', listeners on loopback"`
	LogLevel        string        `yaml:"log_level" usage:"debug, info, warn or error"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" usage:"how long in-flight checks and API calls may take to finish on SIGTERM; then their connections are cut, and the decision log flushes within decision_log.flush_timeout (0: the default)"`
	GCPercent       int           `yaml:"gc_percent" usage:"Go GC target percentage when GOGC is unset; a sidecar's heap is small, so trading memory for less GC pays"`

	GRPC    GRPCConfig    `yaml:"grpc" usage:"the ext_authz gRPC listener"`
	HTTP    HTTPConfig    `yaml:"http" usage:"the HTTP listener: HTTP ext_authz, nginx and Caddy checks, management API, JWKS"`
	Metrics MetricsConfig `yaml:"metrics" usage:"the metrics and health listener"`
	Pprof   PprofConfig   `yaml:"pprof" usage:"the optional listener serving Go's runtime profiles, loopback only"`
	Check   CheckConfig   `yaml:"check" usage:"what every check does whatever the policy says"`

	Policy        policy.Config                  `yaml:"policy" usage:"where policies come from and how they are checked before they serve"`
	Identity      IdentityConfig                 `yaml:"identity" usage:"how callers' bearer tokens are verified and read, and where else a request may carry one"`
	ActorToken    actortoken.Config              `yaml:"actor_token" usage:"the signed delegated-identity token sent upstream"`
	Redis         redis.Config                   `yaml:"redis" usage:"Redis, the shared state store (the embedded store when addrs is empty)"`
	StateCache    resolve.CacheConfig            `yaml:"state_cache" usage:"the local cache in front of grant, share and assignment lookups"`
	StateLookup   resolve.LookupConfig           `yaml:"state_lookup" usage:"how long a check waits for state, and the breaker that fails checks fast while the store is down"`
	API           api.Config                     `yaml:"api" usage:"the management API under /deputy/v1/"`
	Impersonation delegation.ImpersonationConfig `yaml:"impersonation" usage:"mechanics of Login as Customer sessions (the rules are policy data)"`
	Partner       delegation.PartnerConfig       `yaml:"partner" usage:"bounds of partner access requests (the rules are policy data)"`
	Reseller      delegation.ResellerConfig      `yaml:"reseller" usage:"who counts as reseller staff, and bulk import bounds"`
	DecisionLog   decisionlog.Config             `yaml:"decision_log" usage:"the asynchronous, masked decision log"`
}

// IdentityConfig is the identity section: how the bearer token in the
// identity header is verified (identity.Config), and the other places an
// upstream may read a token from, which Deputy refuses to see one in.
type IdentityConfig struct {
	identity.Config `yaml:",inline"`
	// CredentialCarriers: nil takes the defaults, an empty list reads none.
	CredentialCarriers []string `yaml:"credential_carriers" usage:"other places an upstream reads a bearer token from (query:<param>, body:<param> for form fields, JSON top-level keys and multipart parts, cookie:<name>, header:<name>), each read under every spelling upstreams read as its name (query, body and cookie names in any case, escaped, with PHP's _ for . and space; header names in any case with _ as -); a JWT in one that is not the token verified from the identity header is refused as malformed (401 identity_refused) and no session or on-behalf-of delegation is resolved, since the upstream may sign the request in as its holder. The decision log masks every carrier (header and query values; cookies and bodies are erased whole). The defaults cover Doorkeeper, passport-http-bearer, Spring Security, hapi-auth-jwt2, tymon/jwt-auth, Laravel's TokenGuard, go-chi/jwtauth, Flask-JWT-Extended and LexikJWTAuthenticationBundle; add your upstream's, and drop a default only when nothing behind Deputy reads it (empty: none, given as [] in the configuration file)"`
}

// SetDefaults fills the section's unset settings.
func (c *IdentityConfig) SetDefaults() {
	c.Config.SetDefaults()
	if c.CredentialCarriers == nil {
		c.CredentialCarriers = authz.DefaultCredentialCarriers()
	}
}

// Validate checks the section.
func (c *IdentityConfig) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	_, err := authz.ParseCredentialCarriers(c.CredentialCarriers)
	return err
}

// GRPCConfig is the ext_authz gRPC listener.
type GRPCConfig struct {
	Addr            string `yaml:"addr" usage:"gRPC ext_authz address: host:port or unix:/path"`
	SocketMode      string `yaml:"socket_mode" usage:"permission bits of a unix: socket, octal: 0600 keeps it the owner's; 0660 shares it with the group (a proxy in the pod sharing it through an emptyDir, with a common fsGroup)"`
	MaxRecvMsgBytes int    `yaml:"max_recv_msg_bytes" usage:"largest CheckRequest accepted, in bytes"`
	MaxConnections  int    `yaml:"max_connections" usage:"connections the gRPC listener holds open at once; past it the connection without an RPC that has sent nothing for longest (250ms or more) is closed to make room, else newcomers wait; one that has run an RPC keeps its place, and one idle 5m gets a GOAWAY"`
	StreamWorkers   *int   `yaml:"stream_workers" usage:"goroutines kept to serve checks (their grown stacks are reused); 0 starts one per check"`
	Reflection      bool   `yaml:"reflection" usage:"serve gRPC server reflection"`
	TLSCert         string `yaml:"tls_cert" usage:"PEM certificate for gRPC TLS"`
	TLSKey          string `yaml:"tls_key" usage:"PEM key for gRPC TLS"`
	ClientCA        string `yaml:"client_ca" usage:"PEM CA bundle: require and verify client certificates (mTLS)"`
}

// socketMode is the validated grpc.socket_mode.
func (c GRPCConfig) socketMode() os.FileMode {
	m, _ := strconv.ParseUint(c.SocketMode, 8, 32)
	return os.FileMode(m)
}

// HTTPConfig is the HTTP listener: HTTP ext_authz, management API, JWKS.
type HTTPConfig struct {
	Addr           string `yaml:"addr" usage:"HTTP address (HTTP ext_authz, management API, JWKS); 127.0.0.1:8181 in dev mode"`
	CheckPath      string `yaml:"check_path" usage:"path of the nginx auth_request / Caddy forward_auth endpoint"`
	CheckProxy     string `yaml:"check_proxy" usage:"proxy calling check_path, whose headers name the request to decide: nginx, caddy, traefik, or envoy (no check_path endpoint)"`
	PathPrefix     string `yaml:"path_prefix" usage:"path_prefix of Envoy's http_service, exactly as Envoy's config sets it, stripped from checked paths; a check path that is not it followed by a path starting with / is refused with 400 malformed_request"`
	MaxBodyBytes   int64  `yaml:"max_body_bytes" usage:"request body bytes read into a check"`
	MaxHeaderBytes int    `yaml:"max_header_bytes" usage:"bytes of request line and headers the HTTP listener reads; a larger request is answered 431"`
	// Without ReadTimeout a client that never finishes its body holds a
	// handler, and shutdown, as long as it likes.
	ReadTimeout    time.Duration `yaml:"read_timeout" usage:"how long a client may take to send a whole request, body included; a slower one is cut"`
	IdleTimeout    time.Duration `yaml:"idle_timeout" usage:"how long a kept-alive connection waits for its next request; keep the proxy's own pool idle timeout below it"`
	MaxConnections int           `yaml:"max_connections" usage:"connections the HTTP listener holds open at once; past it the one longest idle (or silent since it connected) is closed to make room, else newcomers wait"`
	// EnvoyUpstreamHeaders mirrors Envoy's allowed_upstream_headers.
	EnvoyUpstreamHeaders []string `yaml:"envoy_upstream_headers" usage:"headers Envoy's http_service copies upstream from an allow (its allowed_upstream_headers): exact names or prefixes ending in *, compared as Envoy compares them, in any case but with _ and - apart (Deputy sets its own names with -); an allow that sets another header is refused, and with check_proxy envoy Deputy does not start when the list leaves out its owned prefix, actor-token or on-behalf-of header (empty: none)"`
}

// MetricsConfig is the metrics and health listener.
type MetricsConfig struct {
	Addr           string        `yaml:"addr" usage:"metrics and health address (/metrics, /healthz, /readyz); 127.0.0.1:9090 in dev mode"`
	LiveRefresh    time.Duration `yaml:"live_refresh" usage:"how often live sessions and grants are recounted for /metrics (a scrape never waits on the store)"`
	IdleTimeout    time.Duration `yaml:"idle_timeout" usage:"how long a kept-alive connection to the metrics listener waits for its next request"`
	MaxConnections int           `yaml:"max_connections" usage:"connections the metrics listener holds open at once; past it the one longest idle (or silent since it connected) is closed to make room, else newcomers wait"`
	// FinalScrapeWait is a pointer so that an explicit 0 survives
	// SetDefaults; read it with finalScrapeWait.
	FinalScrapeWait *time.Duration `yaml:"final_scrape_wait" usage:"on shutdown, when the flush lost records (decision records, audit entries or events, counted): how long the metrics listener, which closes last, stays open for a scrape to read the counts; it closes once one is served (0: at once)"`
}

// finalScrapeWait is FinalScrapeWait, its default when unset.
func (c MetricsConfig) finalScrapeWait() time.Duration {
	if c.FinalScrapeWait == nil {
		return DefaultFinalScrapeWait
	}
	return *c.FinalScrapeWait
}

// CheckConfig shapes every check.
type CheckConfig struct {
	OwnedPrefix      string `yaml:"owned_prefix" usage:"request headers under this prefix are Deputy's: stripped, never trusted; read in any case with _ as -, as CGI, PHP and WSGI upstreams read it"`
	ActorTokenHeader string `yaml:"actor_token_header" usage:"header carrying the actor token (default: <owned_prefix>token); read in any case with _ as -, as CGI, PHP and WSGI upstreams read it"`
	ErrorStatus      int    `yaml:"error_status" usage:"HTTP status of denials caused by policy errors or undefined decisions"`
	ParseBody        *bool  `yaml:"parse_body" usage:"parse JSON, form and multipart bodies into input.parsed_body"`
	// AllowBareQuery: off by default, since the upstream's routing is
	// unknown to Deputy (see authz.WithBareQuery).
	AllowBareQuery   bool     `yaml:"allow_bare_query" usage:"let through a query whose first field has no '=' (?preview, ?1699999); off by default because CodeIgniter with uri_protocol QUERY_STRING runs ?customer as the customer controller: turn it on only for upstreams that never route on the query (a first field holding a path is refused either way)"`
	QueryRouteParams []string `yaml:"query_route_params" usage:"query parameters the upstream routes on instead of the path (CodeIgniter's enable_query_strings: c, m, d; Yii: r; Drupal 7: q); a request naming any of them, in any spelling PHP reads as the same name, is refused with 400, since Deputy decides on the path"`
	MaxPathSegments  int      `yaml:"max_path_segments" usage:"most segments a request path may have (repeated slashes merged); a path with more is refused with 400 malformed_request: no storefront route comes near the default, and input.deputy.request.route_dirs, the route from each segment on, makes a check's work grow with segments times the path's length"`
	// MaxRouteDirsBytes bounds what long segments weigh within
	// MaxPathSegments (see authz.WithMaxRouteDirsBytes).
	MaxRouteDirsBytes int `yaml:"max_route_dirs_bytes" usage:"most bytes a request path may hold counted from each segment on and summed (what input.deputy.request.route_dirs holds); a path past it is refused with 400 malformed_request: long segments within max_path_segments still make a check's work grow with segments times length, while the longest storefront paths hold a few KB (27 KB for a Magento URL carrying a 2,000-byte page URL as uenc)"`
	// MethodOverrides: nil takes the defaults, an empty list reads none.
	MethodOverrides []string `yaml:"method_overrides" usage:"where a request may name another method (header:<name>, query:<param>, body:<param>; a header name is read in any case with _ as -, as CGI, PHP and WSGI upstreams read it); policy sees them in input.deputy.request.methods (empty: none, given as [] in the configuration file: every request is decided on its own method)"`
}

// SetDefaults fills every unset setting, core and sections, including the
// defaults that follow from other settings.
func (c *Config) SetDefaults() {
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.GCPercent == 0 {
		c.GCPercent = DefaultGCPercent
	}
	if c.GRPC.Addr == "" {
		c.GRPC.Addr = DefaultGRPCAddr
	}
	if c.GRPC.SocketMode == "" {
		c.GRPC.SocketMode = DefaultGRPCSocketMode
	}
	if c.GRPC.MaxRecvMsgBytes == 0 {
		c.GRPC.MaxRecvMsgBytes = DefaultMaxRecvMsgBytes
	}
	if c.GRPC.MaxConnections == 0 {
		c.GRPC.MaxConnections = DefaultGRPCMaxConnections
	}
	if c.GRPC.StreamWorkers == nil {
		c.GRPC.StreamWorkers = new(DefaultStreamWorkers)
	}
	if c.HTTP.Addr == "" {
		c.HTTP.Addr = DefaultHTTPAddr
		if c.Dev {
			c.HTTP.Addr = DefaultDevHTTPAddr
		}
	}
	if c.HTTP.CheckPath == "" {
		c.HTTP.CheckPath = DefaultCheckPath
	}
	if c.HTTP.CheckProxy == "" {
		c.HTTP.CheckProxy = string(envoy.DefaultProxy)
	}
	if c.HTTP.MaxBodyBytes == 0 {
		c.HTTP.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.HTTP.ReadTimeout == 0 {
		c.HTTP.ReadTimeout = DefaultHTTPReadTimeout
	}
	if c.HTTP.MaxHeaderBytes == 0 {
		c.HTTP.MaxHeaderBytes = DefaultHTTPMaxHeaderBytes
	}
	if c.HTTP.IdleTimeout == 0 {
		c.HTTP.IdleTimeout = DefaultHTTPIdleTimeout
	}
	if c.HTTP.MaxConnections == 0 {
		c.HTTP.MaxConnections = DefaultHTTPMaxConnections
	}
	if c.HTTP.EnvoyUpstreamHeaders == nil {
		c.HTTP.EnvoyUpstreamHeaders = slices.Clone(envoy.DefaultEnvoyUpstreamHeaders)
	}
	if c.Metrics.Addr == "" {
		c.Metrics.Addr = DefaultMetricsAddr
		if c.Dev {
			c.Metrics.Addr = DefaultDevMetricsAddr
		}
	}
	if c.Metrics.LiveRefresh == 0 {
		c.Metrics.LiveRefresh = DefaultLiveRefresh
	}
	if c.Metrics.IdleTimeout == 0 {
		c.Metrics.IdleTimeout = DefaultMetricsIdleTimeout
	}
	if c.Metrics.MaxConnections == 0 {
		c.Metrics.MaxConnections = DefaultMetricsMaxConnections
	}
	if c.Metrics.FinalScrapeWait == nil {
		d := DefaultFinalScrapeWait
		c.Metrics.FinalScrapeWait = &d
	}
	if c.Check.OwnedPrefix == "" {
		c.Check.OwnedPrefix = DefaultOwnedPrefix
	}
	if c.Check.ActorTokenHeader == "" {
		c.Check.ActorTokenHeader = c.Check.OwnedPrefix + "token"
	}
	// Header names are held as upstreams read them ("_" is "-" to CGI,
	// PHP and WSGI): what Deputy strips, sets, reads and masks is then the
	// name the application acts on, however the setting spelled it.
	c.Check.OwnedPrefix = sidecar.HeaderName(c.Check.OwnedPrefix)
	c.Check.ActorTokenHeader = sidecar.HeaderName(c.Check.ActorTokenHeader)
	if c.Check.ErrorStatus == 0 {
		c.Check.ErrorStatus = DefaultErrorStatus
	}
	if c.Check.MaxPathSegments == 0 {
		c.Check.MaxPathSegments = authz.DefaultMaxPathSegments
	}
	if c.Check.MaxRouteDirsBytes == 0 {
		c.Check.MaxRouteDirsBytes = authz.DefaultMaxRouteDirsBytes
	}
	if c.Check.MethodOverrides == nil {
		c.Check.MethodOverrides = authz.DefaultMethodOverrides()
	}
	if c.Check.ParseBody == nil {
		c.Check.ParseBody = new(DefaultParseBody)
	}
	// The decision log masks the header the checks actually use.
	if c.DecisionLog.ActorTokenHeader == "" {
		c.DecisionLog.ActorTokenHeader = c.Check.ActorTokenHeader
	}
	c.DecisionLog.ActorTokenHeader = sidecar.HeaderName(c.DecisionLog.ActorTokenHeader)
	for i, h := range c.DecisionLog.MaskHeaders {
		c.DecisionLog.MaskHeaders[i] = sidecar.HeaderName(h)
	}
	// And the header bearer tokens come in, whatever identity.header
	// names it: a name without a secret word (x-principal) was logged.
	if h := sidecar.HeaderName(c.Identity.Header); h != "" && !slices.Contains(c.DecisionLog.MaskHeaders, h) {
		c.DecisionLog.MaskHeaders = append(c.DecisionLog.MaskHeaders, h)
	}
	if c.Dev {
		c.Identity.Dev.Enabled = true
	}
	// The decision stream lives under the Redis key prefix, as every key
	// Deputy writes does: deployments sharing a Redis with their own
	// prefixes keep their decisions (actors, subjects, paths) apart, and
	// neither trims the other's. The default prefix gives deputy:decisions.
	if c.DecisionLog.Stream == "" {
		prefix := c.Redis.KeyPrefix
		if prefix == "" {
			prefix = redis.DefaultKeyPrefix
		}
		c.DecisionLog.Stream = prefix + ":decisions"
	}
	c.Policy.SetDefaults()
	c.Identity.SetDefaults()
	c.ActorToken.SetDefaults()
	c.Redis.SetDefaults()
	c.StateCache.SetDefaults()
	c.StateLookup.SetDefaults()
	c.API.SetDefaults()
	c.Impersonation.SetDefaults()
	c.Partner.SetDefaults()
	c.Reseller.SetDefaults()
	c.DecisionLog.SetDefaults()
}

// defaultConfig is the configuration with nothing set.
func defaultConfig() Config {
	var c Config
	c.SetDefaults()
	return c
}

// Validate checks a defaulted config, core settings first, then every
// section, naming the field at fault. It never changes c.
func (c *Config) Validate() error {
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return sidecar.Invalid("log_level", "must be debug, info, warn or error, not %q", c.LogLevel)
	}
	if c.ShutdownTimeout <= 0 {
		return sidecar.Invalid("shutdown_timeout", "must be positive")
	}
	if err := validAddr("grpc.addr", c.GRPC.Addr, true); err != nil {
		return err
	}
	if m, err := strconv.ParseUint(c.GRPC.SocketMode, 8, 32); err != nil || m > 0o777 || m&0o600 != 0o600 {
		return sidecar.Invalid("grpc.socket_mode", "must be octal permission bits giving the owner read and write, such as 0600 or 0660, not %q", c.GRPC.SocketMode)
	}
	if c.GCPercent < -1 || c.GCPercent == 0 {
		return sidecar.Invalid("gc_percent", "must be positive, or -1 to turn the GC off")
	}
	if c.GRPC.StreamWorkers == nil || *c.GRPC.StreamWorkers < 0 {
		return sidecar.Invalid("grpc.stream_workers", "must not be negative")
	}
	if c.GRPC.MaxRecvMsgBytes < 1024 {
		return sidecar.Invalid("grpc.max_recv_msg_bytes", "must be at least 1024")
	}
	if c.GRPC.MaxConnections <= 0 {
		return sidecar.Invalid("grpc.max_connections", "must be positive")
	}
	if (c.GRPC.TLSCert == "") != (c.GRPC.TLSKey == "") {
		return sidecar.Invalid("grpc.tls_cert", "tls_cert and tls_key go together")
	}
	if c.GRPC.ClientCA != "" && c.GRPC.TLSCert == "" {
		return sidecar.Invalid("grpc.client_ca", "mTLS needs tls_cert and tls_key")
	}
	if err := validAddr("http.addr", c.HTTP.Addr, false); err != nil {
		return err
	}
	if !strings.HasPrefix(c.HTTP.CheckPath, "/") {
		return sidecar.Invalid("http.check_path", "must start with /")
	}
	if p := c.HTTP.PathPrefix; p != "" && (p[0] != '/' || strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '?' || r == '#' })) {
		return sidecar.Invalid("http.path_prefix", "must be a path starting with /, as Envoy's http_service path_prefix is, not %q", p)
	}
	if _, err := envoy.ParseProxy(c.HTTP.CheckProxy); err != nil {
		return sidecar.Invalid("http.check_proxy", "%v", err)
	}
	if c.HTTP.MaxBodyBytes < 0 {
		return sidecar.Invalid("http.max_body_bytes", "must not be negative")
	}
	if c.HTTP.ReadTimeout <= 0 {
		return sidecar.Invalid("http.read_timeout", "must be positive")
	}
	if c.HTTP.MaxHeaderBytes < 4<<10 {
		return sidecar.Invalid("http.max_header_bytes", "must be at least 4096")
	}
	if c.HTTP.IdleTimeout <= 0 {
		return sidecar.Invalid("http.idle_timeout", "must be positive")
	}
	if c.HTTP.MaxConnections <= 0 {
		return sidecar.Invalid("http.max_connections", "must be positive")
	}
	for i, p := range c.HTTP.EnvoyUpstreamHeaders {
		if !sidecar.ValidHeaderName(strings.TrimSuffix(p, "*")) {
			return sidecar.Invalid("http.envoy_upstream_headers", "entry %d: %q: want a header name, or a prefix ending in * "+
				"(letters, digits, \"-\" and \"_\" only)", i, p)
		}
	}
	if err := validAddr("metrics.addr", c.Metrics.Addr, false); err != nil {
		return err
	}
	if c.Metrics.LiveRefresh <= 0 {
		return sidecar.Invalid("metrics.live_refresh", "must be positive")
	}
	if c.Metrics.IdleTimeout <= 0 {
		return sidecar.Invalid("metrics.idle_timeout", "must be positive")
	}
	if c.Metrics.MaxConnections <= 0 {
		return sidecar.Invalid("metrics.max_connections", "must be positive")
	}
	if c.Metrics.finalScrapeWait() < 0 {
		return sidecar.Invalid("metrics.final_scrape_wait", "must not be negative (0: the listener closes at once)")
	}
	if err := sidecar.InvalidHeaderName("check.owned_prefix", c.Check.OwnedPrefix); err != nil {
		return err
	}
	if _, err := authz.ParseMethodOverrides(c.Check.MethodOverrides); err != nil {
		return err
	}
	if c.Check.MaxPathSegments < 1 {
		return sidecar.Invalid("check.max_path_segments", "must be positive, not %d", c.Check.MaxPathSegments)
	}
	if c.Check.MaxRouteDirsBytes < 1 {
		return sidecar.Invalid("check.max_route_dirs_bytes", "must be positive, not %d", c.Check.MaxRouteDirsBytes)
	}
	if c.Check.ErrorStatus < 400 || c.Check.ErrorStatus > 599 {
		return sidecar.Invalid("check.error_status", "must be a 4xx or 5xx status, not %d", c.Check.ErrorStatus)
	}
	if err := sidecar.InvalidHeaderName("check.actor_token_header", c.Check.ActorTokenHeader); err != nil {
		return err
	}
	// The dev issuer's key sits on disk for anyone with a shell to mint
	// any identity with: trusted only in dev mode, whose listeners stay on
	// loopback.
	if c.Identity.Dev.Enabled && !c.Dev {
		return sidecar.Invalid("identity.dev.enabled", "the dev issuer is trusted in dev mode only: "+
			"use --dev (DEPUTY_DEV, dev) on a development machine, never beside production issuers")
	}
	if c.Dev {
		if err := devLoopback(map[string]string{"grpc.addr": c.GRPC.Addr, "http.addr": c.HTTP.Addr, "metrics.addr": c.Metrics.Addr}); err != nil {
			return err
		}
	}
	if err := validateSections(reflect.ValueOf(c).Elem()); err != nil {
		return err
	}
	if err := onBehalfOfOwnUse(c); err != nil {
		return err
	}
	// Behind Envoy's http_service, Deputy replaces a client's copy of a
	// name it sets upstream rather than removing it: a name Envoy does not
	// copy would reach the application as the client sent it.
	if c.HTTP.CheckProxy == string(envoy.ProxyEnvoy) {
		if name := envoy.UncoveredUpstream(c.HTTP.EnvoyUpstreamHeaders, c.Check.OwnedPrefix, c.Check.ActorTokenHeader, c.Partner.OnBehalfOfHeader); name != "" {
			return sidecar.Invalid("http.envoy_upstream_headers", "leaves out %s, which Deputy sets upstream on a delegated allow "+
				"(check.owned_prefix, check.actor_token_header, partner.on_behalf_of_header): with http.check_proxy envoy, "+
				"list it here and in Envoy's allowed_upstream_headers", name)
		}
	}
	// Without an issuer every bearer token is refused: a production
	// install that forgot one would look healthy and sign nobody in.
	if !c.Dev && !c.Identity.AnonymousOnly && !c.Identity.HasIssuer() {
		return sidecar.Invalid("identity.issuer_urls", "no identity issuer configured: set identity.issuer_urls "+
			"(--identity-issuer-urls, DEPUTY_IDENTITY_ISSUER_URLS) or identity.issuers; "+
			"or identity.anonymous_only to serve anonymous requests only")
	}
	// Unverified, a Redis certificate proves nothing: whoever is on the
	// path reads and rewrites every session, grant and consent, and
	// receives the password.
	if c.Redis.TLSInsecureSkipVerify && !c.Dev {
		return sidecar.Invalid("redis.tls_insecure_skip_verify", "dev mode only: set redis.tls_ca_file to the CA that signed "+
			"the Redis certificate (and redis.tls_server_name when the address is not a name in it)")
	}
	// An unsigned bundle is only as trusted as the path it came over: in
	// clear across the network, the policy would be whoever answers. A
	// signed bundle proves itself (its signature is checked before it
	// serves; an older one replayed is refused once a newer one serves,
	// and before that by policy.min_signed_at), so it may come over
	// plain http.
	if !c.Dev && c.Policy.BundleURL != "" && c.Policy.PublicKey == "" {
		if u, err := url.Parse(c.Policy.BundleURL); err == nil && sidecar.PlainRemote(u) {
			return sidecar.Invalid("policy.bundle_url", "%s is plain http to a host that is not loopback and bundles are not signed: "+
				"use https, or set policy.public_key so that only signed bundles serve", sidecar.RedactURL(c.Policy.BundleURL))
		}
	}
	// Without an audience, a token the same IdP minted for another
	// application (and the roles it carries there) signs in. Only dev mode
	// (loopback listeners) waives it.
	if field := c.Identity.AudienceMissing(); field != "" && !c.Dev {
		return sidecar.Invalid(field, "required: an issuer with no audience accepts tokens minted for any application; "+
			"set identity.audiences (--identity-audiences, DEPUTY_IDENTITY_AUDIENCES) or the issuer's audiences, "+
			"or identity.any_audience to accept every audience")
	}
	return nil
}

// validateSections calls Validate on every nested section that has one.
func validateSections(v reflect.Value) error {
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if f.Kind() != reflect.Struct || !f.CanAddr() {
			continue
		}
		if val, ok := f.Addr().Interface().(interface{ Validate() error }); ok {
			if err := val.Validate(); err != nil {
				return err
			}
		}
	}
	return nil
}

// devLoopback refuses a dev-mode listener reachable from the network:
// anyone reaching it could use the dev issuer's tokens, minted with a key
// kept on disk. A Unix socket stays on the host.
func devLoopback(addrs map[string]string) error {
	for _, field := range slices.Sorted(maps.Keys(addrs)) {
		addr := addrs[field]
		if strings.HasPrefix(addr, "unix:") {
			continue
		}
		if host, _, err := net.SplitHostPort(addr); err != nil || !sidecar.LoopbackHost(host) {
			return sidecar.Invalid(field, "dev mode listens on loopback only (127.0.0.1, ::1, localhost or a unix: socket), not %q", addr)
		}
	}
	return nil
}

func validAddr(field, addr string, unixOK bool) error {
	if unixOK && strings.HasPrefix(addr, "unix:") {
		if len(addr) == len("unix:") {
			return sidecar.Invalid(field, "unix socket path is empty")
		}
		return nil
	}
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return sidecar.Invalid(field, "must be host:port, not %q", addr)
	}
	port, err := strconv.Atoi(addr[i+1:])
	if err != nil || port < 0 || port > 65535 {
		return sidecar.Invalid(field, "bad port in %q", addr)
	}
	return nil
}

// onBehalfOfOwnUse refuses an on-behalf-of header that Deputy or the
// proxy reads for something else. A client sets it freely, and it would
// mean two things at once: the partner's own bearer token or cookie read
// as a customer's name (or a customer's name as a credential), a name
// Deputy owns and strips, a method override, the original request a proxy
// reports.
func onBehalfOfOwnUse(c *Config) error {
	name := c.Partner.OnBehalfOfHeader
	refuse := func(what string) error {
		return sidecar.Invalid("partner.on_behalf_of_header", "%q is %s: name a header of its own (default %s)",
			name, what, delegation.DefaultOnBehalfOfHeader)
	}
	switch {
	case strings.HasPrefix(name, c.Check.OwnedPrefix):
		return refuse("under check.owned_prefix, whose headers Deputy removes and sets")
	case name == c.Check.ActorTokenHeader:
		return refuse("check.actor_token_header")
	case name == sidecar.HeaderName(c.Identity.Header):
		return refuse("identity.header, which carries the bearer token")
	case name == "authorization", name == "proxy-authorization", name == "cookie":
		return refuse("a credential")
	case name == "forwarded", strings.HasPrefix(name, "x-forwarded-"), strings.HasPrefix(name, "x-original-"):
		return refuse("one a proxy sets to report the original request")
	}
	for _, e := range c.Identity.CredentialCarriers {
		if kind, n, _ := strings.Cut(e, ":"); kind == "header" && sidecar.HeaderName(n) == name {
			return refuse("an identity.credential_carriers header")
		}
	}
	for _, e := range c.Check.MethodOverrides {
		if kind, n, _ := strings.Cut(e, ":"); kind == "header" && sidecar.HeaderName(n) == name {
			return refuse("a check.method_overrides header")
		}
	}
	return nil
}
