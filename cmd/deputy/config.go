package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/actortoken"
	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/envoy"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/redis"
)

// Defaults of the core settings (DESIGN §8).
const (
	DefaultGRPCAddr        = "127.0.0.1:9191"
	DefaultHTTPAddr        = ":8181"
	DefaultMetricsAddr     = ":9090"
	DefaultMaxRecvMsgBytes = 4 << 20
	DefaultMaxBodyBytes    = 8 << 10
	DefaultShutdownTimeout = 15 * time.Second
	DefaultGCPercent       = 200
	DefaultStreamWorkers   = 16
	DefaultCheckPath       = "/deputy/authz"
)

// Config is the whole configuration. Every leaf is settable from the YAML
// file (its yaml path), the environment (DEPUTY_ + path in upper snake
// case) and a flag (path in kebab case), in rising precedence.
type Config struct {
	Dev             bool          `yaml:"dev" usage:"dev mode: generated signing keys, embedded store, tokens from 'deputy dev token'"`
	LogLevel        string        `yaml:"log_level" usage:"debug, info, warn or error"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" usage:"how long in-flight checks may take to finish on SIGTERM"`
	GCPercent       int           `yaml:"gc_percent" usage:"Go GC target percentage when GOGC is unset; a sidecar's heap is small, so trading memory for less GC pays"`

	GRPC    GRPCConfig    `yaml:"grpc"`
	HTTP    HTTPConfig    `yaml:"http"`
	Metrics MetricsConfig `yaml:"metrics"`
	Pprof   PprofConfig   `yaml:"pprof"`
	Check   CheckConfig   `yaml:"check"`

	Policy        policy.Config                  `yaml:"policy"`
	Identity      identity.Config                `yaml:"identity"`
	ActorToken    actortoken.Config              `yaml:"actor_token"`
	Redis         redis.Config                   `yaml:"redis"`
	StateCache    delegation.CacheConfig         `yaml:"state_cache"`
	API           api.Config                     `yaml:"api"`
	Impersonation delegation.ImpersonationConfig `yaml:"impersonation"`
	Partner       delegation.PartnerConfig       `yaml:"partner"`
	Reseller      delegation.ResellerConfig      `yaml:"reseller"`
	DecisionLog   decisionlog.Config             `yaml:"decision_log"`
}

// GRPCConfig is the ext_authz gRPC listener.
type GRPCConfig struct {
	Addr            string `yaml:"addr" usage:"gRPC ext_authz address: host:port or unix:/path"`
	MaxRecvMsgBytes int    `yaml:"max_recv_msg_bytes" usage:"largest CheckRequest accepted"`
	StreamWorkers   int    `yaml:"stream_workers" usage:"goroutines kept to serve checks (their grown stacks are reused); 0 starts one per check"`
	Reflection      bool   `yaml:"reflection" usage:"serve gRPC server reflection"`
	TLSCert         string `yaml:"tls_cert" usage:"PEM certificate for gRPC TLS"`
	TLSKey          string `yaml:"tls_key" usage:"PEM key for gRPC TLS"`
	ClientCA        string `yaml:"client_ca" usage:"PEM CA bundle: require and verify client certificates (mTLS)"`
}

// HTTPConfig is the HTTP listener: HTTP ext_authz, management API, JWKS.
type HTTPConfig struct {
	Addr         string `yaml:"addr" usage:"HTTP address (HTTP ext_authz, management API, JWKS)"`
	CheckPath    string `yaml:"check_path" usage:"path of the nginx auth_request / Caddy forward_auth endpoint"`
	CheckProxy   string `yaml:"check_proxy" usage:"proxy calling check_path, whose headers name the request to decide: nginx, caddy, traefik, or envoy (no check_path endpoint)"`
	PathPrefix   string `yaml:"path_prefix" usage:"path_prefix of Envoy's http_service, stripped from checked paths"`
	MaxBodyBytes int64  `yaml:"max_body_bytes" usage:"request body bytes read into a check"`
}

// MetricsConfig is the metrics and health listener.
type MetricsConfig struct {
	Addr string `yaml:"addr" usage:"metrics and health address (/metrics, /healthz, /readyz)"`
}

// CheckConfig shapes every check.
type CheckConfig struct {
	OwnedPrefix      string `yaml:"owned_prefix" usage:"request headers under this prefix are Deputy's: stripped, never trusted"`
	ActorTokenHeader string `yaml:"actor_token_header" usage:"header carrying the actor token (default <owned_prefix>token)"`
	ErrorStatus      int    `yaml:"error_status" usage:"HTTP status of denials caused by policy errors or undefined decisions"`
	ParseBody        bool   `yaml:"parse_body" usage:"parse JSON, form and multipart bodies into input.parsed_body"`
}

func defaultConfig() Config {
	return Config{
		LogLevel:        "info",
		ShutdownTimeout: DefaultShutdownTimeout,
		GCPercent:       DefaultGCPercent,
		GRPC:            GRPCConfig{Addr: DefaultGRPCAddr, MaxRecvMsgBytes: DefaultMaxRecvMsgBytes, StreamWorkers: DefaultStreamWorkers},
		HTTP:            HTTPConfig{Addr: DefaultHTTPAddr, CheckPath: DefaultCheckPath, CheckProxy: string(envoy.DefaultProxy), MaxBodyBytes: DefaultMaxBodyBytes},
		Metrics:         MetricsConfig{Addr: DefaultMetricsAddr},
		Check:           CheckConfig{OwnedPrefix: "x-deputy-", ErrorStatus: 403, ParseBody: true},
		// Policy defaults depend on which source is set: applied after loading.
		Identity:      identity.Defaults(),
		ActorToken:    actortoken.Defaults(),
		Redis:         redis.Config{}.Defaults(),
		StateCache:    delegation.CacheConfig{}.Defaults(),
		API:           api.Defaults(),
		Impersonation: delegation.ImpersonationDefaults(),
		Partner:       delegation.PartnerDefaults(),
		Reseller:      delegation.ResellerDefaults(),
		DecisionLog:   decisionlog.Defaults(),
	}
}

// validate checks the core settings, then every section that can check
// itself, naming the field at fault.
func (c *Config) validate() error {
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
	if c.GCPercent < -1 || c.GCPercent == 0 {
		return sidecar.Invalid("gc_percent", "must be positive, or -1 to turn the GC off")
	}
	if c.GRPC.StreamWorkers < 0 {
		return sidecar.Invalid("grpc.stream_workers", "must not be negative")
	}
	if c.GRPC.MaxRecvMsgBytes < 1024 {
		return sidecar.Invalid("grpc.max_recv_msg_bytes", "must be at least 1024")
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
	if _, err := envoy.ParseProxy(c.HTTP.CheckProxy); err != nil {
		return sidecar.Invalid("http.check_proxy", "%v", err)
	}
	if c.HTTP.MaxBodyBytes < 0 {
		return sidecar.Invalid("http.max_body_bytes", "must not be negative")
	}
	if err := validAddr("metrics.addr", c.Metrics.Addr, false); err != nil {
		return err
	}
	if c.Check.OwnedPrefix == "" || strings.ContainsAny(c.Check.OwnedPrefix, " :\t") {
		return sidecar.Invalid("check.owned_prefix", "must be a non-empty header name prefix")
	}
	if c.Check.ErrorStatus < 400 || c.Check.ErrorStatus > 599 {
		return sidecar.Invalid("check.error_status", "must be a 4xx or 5xx status, not %d", c.Check.ErrorStatus)
	}
	return validateSections(reflect.ValueOf(c).Elem())
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

// setting is one leaf of Config, reachable by yaml path, env and flag.
type setting struct {
	path  string // yaml path, dotted
	field reflect.Value
	usage string
}

func settings(v reflect.Value, prefix string, out *[]setting) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name := strings.Split(sf.Tag.Get("yaml"), ",")[0]
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		f := v.Field(i)
		if sf.Type.Kind() == reflect.Struct && sf.Type != reflect.TypeOf(time.Time{}) {
			settings(f, path, out)
			continue
		}
		switch f.Kind() {
		case reflect.String, reflect.Bool, reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint32, reflect.Uint64, reflect.Float64:
		case reflect.Slice:
			if sf.Type.Elem().Kind() != reflect.String {
				continue
			}
		default:
			continue // maps and the like: YAML only
		}
		*out = append(*out, setting{path: path, field: f, usage: sf.Tag.Get("usage")})
	}
}

func flagName(path string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(path)
}

func envName(path string) string {
	return "DEPUTY_" + strings.ToUpper(strings.NewReplacer(".", "_").Replace(path))
}

// configLoader binds Config to flags and resolves file, env and flags.
type configLoader struct {
	cfg      Config
	file     string
	settings []setting
	flags    *pflag.FlagSet
}

func newConfigLoader(fs *pflag.FlagSet) *configLoader {
	l := &configLoader{cfg: defaultConfig(), flags: fs}
	fs.StringVarP(&l.file, "config", "c", "", "YAML configuration file (env DEPUTY_CONFIG)")
	settings(reflect.ValueOf(&l.cfg).Elem(), "", &l.settings)
	for _, s := range l.settings {
		f := fs.VarPF(fieldValue{s.field}, flagName(s.path), "", s.usage+" (env "+envName(s.path)+")")
		if s.field.Kind() == reflect.Bool {
			f.NoOptDefVal = "true"
		}
	}
	return l
}

// fieldValue exposes a config field as a flag value of any kind.
type fieldValue struct{ v reflect.Value }

func (f fieldValue) String() string {
	if !f.v.IsValid() {
		return ""
	}
	if f.v.Kind() == reflect.Slice {
		parts := make([]string, f.v.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(f.v.Index(i).Interface())
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(f.v.Interface())
}

func (f fieldValue) Set(s string) error { return setValue(f.v, s) }

func (f fieldValue) Type() string {
	if f.v.Type() == reflect.TypeOf(time.Duration(0)) {
		return "duration"
	}
	return f.v.Kind().String()
}

// load applies, over the defaults: the YAML file, then DEPUTY_* variables,
// then the flags given on the command line; then validates.
func (l *configLoader) load() (*Config, error) {
	// Flags were parsed into cfg already; remember them to reapply last.
	given := map[string]string{}
	l.flags.Visit(func(f *pflag.Flag) { given[f.Name] = f.Value.String() })

	cfg := defaultConfig()
	file := l.file
	if file == "" {
		file = os.Getenv("DEPUTY_CONFIG")
	}
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, sidecar.Invalid("config", "read %s: %v", file, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return nil, sidecar.Invalid("config", "%s: %v", file, err)
		}
	}
	var ss []setting
	settings(reflect.ValueOf(&cfg).Elem(), "", &ss)
	for _, s := range ss {
		if v, ok := os.LookupEnv(envName(s.path)); ok {
			if err := setValue(s.field, v); err != nil {
				return nil, sidecar.Invalid(s.path, "from %s: %v", envName(s.path), err)
			}
		}
	}
	for _, s := range ss {
		if v, ok := given[flagName(s.path)]; ok {
			if err := setValue(s.field, v); err != nil {
				return nil, sidecar.Invalid(s.path, "from --%s: %v", flagName(s.path), err)
			}
		}
	}
	cfg.Policy.Defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func setValue(f reflect.Value, s string) error {
	switch {
	case f.Type() == reflect.TypeOf(time.Duration(0)):
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("not a duration: %q", s)
		}
		f.SetInt(int64(d))
	case f.Kind() == reflect.String:
		f.SetString(s)
	case f.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("not a boolean: %q", s)
		}
		f.SetBool(b)
	case f.CanInt():
		n, err := strconv.ParseInt(s, 10, f.Type().Bits())
		if err != nil {
			return fmt.Errorf("not an integer: %q", s)
		}
		f.SetInt(n)
	case f.CanUint():
		n, err := strconv.ParseUint(s, 10, f.Type().Bits())
		if err != nil {
			return fmt.Errorf("not a non-negative integer: %q", s)
		}
		f.SetUint(n)
	case f.CanFloat():
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("not a number: %q", s)
		}
		f.SetFloat(n)
	case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
		out := reflect.MakeSlice(f.Type(), 0, 4)
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = reflect.Append(out, reflect.ValueOf(part).Convert(f.Type().Elem()))
			}
		}
		f.Set(out)
	default:
		return fmt.Errorf("unsupported type %s", f.Type())
	}
	return nil
}
