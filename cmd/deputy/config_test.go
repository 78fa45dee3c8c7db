package main

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
)

// loadWith loads a config from flags, env and a file. Outside dev mode
// Deputy needs an issuer; tests about other settings run anonymous-only
// unless their env says otherwise.
func loadWith(t *testing.T, args []string, env map[string]string, file string) (*Config, error) {
	t.Helper()
	if _, ok := env["DEPUTY_IDENTITY_ANONYMOUS_ONLY"]; !ok {
		t.Setenv("DEPUTY_IDENTITY_ANONYMOUS_ONLY", "true")
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	l := newConfigLoader(fs)
	if file != "" {
		path := filepath.Join(t.TempDir(), "deputy.yaml")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", path)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return l.load()
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := loadWith(t, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GRPC.Addr != "127.0.0.1:9191" || cfg.HTTP.Addr != ":8181" || cfg.Metrics.Addr != ":9090" {
		t.Errorf("ports = %s %s %s", cfg.GRPC.Addr, cfg.HTTP.Addr, cfg.Metrics.Addr)
	}
	if cfg.Check.OwnedPrefix != "x-deputy-" || cfg.Policy.DecisionQuery != "data.deputy.authz.decision" || cfg.Redis.Enabled() {
		t.Errorf("defaults = %+v", cfg)
	}
}

func TestConfigPrecedence(t *testing.T) {
	file := "grpc:\n  addr: 127.0.0.1:1001\nhttp:\n  addr: 127.0.0.1:2001\nmetrics:\n  addr: 127.0.0.1:3001\n"
	env := map[string]string{"DEPUTY_HTTP_ADDR": "127.0.0.1:2002", "DEPUTY_METRICS_ADDR": "127.0.0.1:3002", "DEPUTY_REDIS_ADDRS": "127.0.0.1:6379,127.0.0.1:6380", "DEPUTY_REDIS_CLUSTER": "true"}
	cfg, err := loadWith(t, []string{"--metrics-addr", "127.0.0.1:3003", "--dev"}, env, file)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GRPC.Addr != "127.0.0.1:1001" {
		t.Errorf("file value lost: %s", cfg.GRPC.Addr)
	}
	if cfg.HTTP.Addr != "127.0.0.1:2002" {
		t.Errorf("env must beat the file: %s", cfg.HTTP.Addr)
	}
	if cfg.Metrics.Addr != "127.0.0.1:3003" {
		t.Errorf("flag must beat env: %s", cfg.Metrics.Addr)
	}
	if !cfg.Dev || strings.Join(cfg.Redis.Addrs, " ") != "127.0.0.1:6379 127.0.0.1:6380" {
		t.Errorf("dev %v redis %v", cfg.Dev, cfg.Redis.Addrs)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		file  string
		field string
	}{
		{name: "bad log level", args: []string{"--log-level", "loud"}, field: "log_level"},
		{name: "bad grpc addr", args: []string{"--grpc-addr", "nowhere"}, field: "grpc.addr"},
		{name: "tiny message limit", args: []string{"--grpc-max-recv-msg-bytes", "10"}, field: "grpc.max_recv_msg_bytes"},
		{name: "tls key without cert", args: []string{"--grpc-tls-key", "k.pem"}, field: "grpc.tls_cert"},
		{name: "allow status for errors", env: map[string]string{"DEPUTY_CHECK_ERROR_STATUS": "200"}, field: "check.error_status"},
		{name: "env not a number", env: map[string]string{"DEPUTY_CHECK_ERROR_STATUS": "many"}, field: "check.error_status"},
		{name: "negative path segment bound", args: []string{"--check-max-path-segments", "-1"}, field: "check.max_path_segments"},
		{name: "negative route_dirs bound", args: []string{"--check-max-route-dirs-bytes", "-1"}, field: "check.max_route_dirs_bytes"},
		{name: "env not a duration", env: map[string]string{"DEPUTY_SHUTDOWN_TIMEOUT": "soon"}, field: "shutdown_timeout"},
		{name: "check path", args: []string{"--http-check-path", "authz"}, field: "http.check_path"},
		{name: "negative read timeout", args: []string{"--http-read-timeout", "-1s"}, field: "http.read_timeout"},
		{name: "negative idle timeout", env: map[string]string{"DEPUTY_HTTP_IDLE_TIMEOUT": "-1s"}, field: "http.idle_timeout"},
		{name: "unknown key in file", file: "grpc:\n  adress: x\n", field: "grpc.adress"},
		{name: "rule moved to policy data", env: map[string]string{"DEPUTY_PARTNER_PATH_TEMPLATE": "/customers/{customer}/"}, field: "partner.path_template"},
		{name: "wrong type in file", file: "grpc:\n  max_recv_msg_bytes: lots\n", field: "grpc.max_recv_msg_bytes"},
		{name: "negative page size", args: []string{"--api-page-size", "-5"}, field: "api.page_size"},
		{name: "actor token too long", args: []string{"--actor-token-ttl", "10m"}, field: "actor_token.ttl"},
		// A key signs only while it is published: sign_key_file names one
		// of key_files, set by flag, environment or file.
		{name: "signing key not among the key files", args: []string{"--actor-token-key-files", "keys/2026-08.pem", "--actor-token-sign-key-file", "keys/2026-11.pem"},
			field: "actor_token.sign_key_file"},
		{name: "signing key without key files", env: map[string]string{"DEPUTY_ACTOR_TOKEN_SIGN_KEY_FILE": "keys/2026-11.pem"}, field: "actor_token.sign_key_file"},
		{name: "signing key not among the key files in file", file: "actor_token:\n  key_files: [keys/2026-08.pem]\n  sign_key_file: keys/2026-11.pem\n",
			field: "actor_token.sign_key_file"},
		{name: "partner sweep interval", args: []string{"--partner-sweep-interval", "-1s"}, field: "partner.sweep_interval"},
		{name: "missing config file", args: []string{"--config", "/nonexistent/deputy.yaml"}, field: "config"},
		{name: "no identity issuer", env: map[string]string{"DEPUTY_IDENTITY_ANONYMOUS_ONLY": "false"}, field: "identity.issuer_urls"},
		{name: "issuer URL not a URL", args: []string{"--identity-issuer-urls", "id.example.com"}, field: "identity.issuer_urls[0]"},
		// A token the same IdP minted for another application (payroll,
		// with roles there) is not a Deputy identity.
		{name: "issuer URL without an audience", args: []string{"--identity-issuer-urls", "https://a.example.com"}, field: "identity.audiences"},
		{name: "issuer without an audience", file: "identity:\n  issuers:\n    - issuer: https://b.example.com\n      audiences: [shop]\n    - issuer: https://a.example.com\n      namespace: a\n",
			field: "identity.issuers[1].audiences"},
		// Two issuers' "cust1" would be one person: issuer_urls carry no
		// namespace, so only one of them can be trusted.
		{name: "two issuer URLs", args: []string{"--identity-issuer-urls", "https://a.example.com", "--identity-issuer-urls", "https://b.example.com", "--identity-audiences", "shop"},
			field: "identity.issuer_urls[1]"},
		{name: "two issuers without namespace", file: "identity:\n  audiences: [shop]\n  issuers:\n    - issuer: https://a.example.com\n    - issuer: https://b.example.com\n",
			field: "identity.issuers[1].namespace"},
		{name: "dev issuer beside an issuer without namespace", args: []string{"--dev", "--identity-issuer-urls", "https://a.example.com"},
			field: "identity.dev.namespace"},
		// Keys fetched in clear across the network are chosen by whoever
		// is on the path: so would every token be.
		{name: "issuer URL over plain http", args: []string{"--identity-issuer-urls", "http://10.1.2.3", "--identity-audiences", "shop"},
			field: "identity.issuer_urls[0]"},
		{name: "JWKS URL over plain http", file: "identity:\n  audiences: [shop]\n  issuers:\n    - issuer: https://a.example.com\n      jwks_url: http://keys.internal/jwks.json\n",
			field: "identity.issuers[0].jwks_url"},
		// go-redis would log the address whole on every failed dial.
		{name: "redis address as a URL", args: []string{"--redis-addrs", "redis://:S3CRET@127.0.0.1:16399"}, field: "redis.addrs"},
		{name: "unsigned bundle over plain http", args: []string{"--policy-bundle-url", "http://bundles.internal/deputy.tar.gz"}, field: "policy.bundle_url"},
		// The dev key mints any identity: never on production listeners.
		{name: "dev issuer outside dev mode", args: []string{"--identity-dev-enabled"}, field: "identity.dev.enabled"},
		{name: "dev issuer outside dev mode, beside an issuer", args: []string{"--identity-dev-enabled", "--identity-dev-namespace", "dev", "--identity-issuer-urls", "https://a.example.com", "--identity-audiences", "shop"},
			field: "identity.dev.enabled"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadWith(t, tc.args, tc.env, tc.file)
			if err == nil {
				t.Fatal("accepted")
			}
			if sidecar.ErrorCode(err) != sidecar.EINVALID || !strings.HasPrefix(sidecar.ErrorField(err), tc.field) {
				t.Fatalf("error %v (field %q), want field %q", err, sidecar.ErrorField(err), tc.field)
			}
		})
	}
}

func TestUnknownFlagFails(t *testing.T) {
	if _, err := loadWith(t, []string{"--grpc-adress", "x"}, nil, ""); err == nil {
		t.Fatal("unknown flag accepted")
	}
}

func TestConfigFileErrorsNameTheKeyPath(t *testing.T) {
	cases := []struct {
		name, file, field, message string
	}{
		{"unknown key", "grpc:\n  adr: 127.0.0.1:1\n", "grpc.adr", "unknown key"},
		{"unknown section", "grcp:\n  addr: x\n", "grcp", "unknown key"},
		{"not an integer", "grpc:\n  max_recv_msg_bytes: lots\n", "grpc.max_recv_msg_bytes", `not an integer: "lots"`},
		{"not a duration", "identity:\n  leeway: 30\n", "identity.leeway", "not a duration"},
		{"not a boolean", "check:\n  parse_body: maybe\n", "check.parse_body", "not a boolean"},
		{"list wanted", "redis:\n  addrs: 127.0.0.1:6379\n", "redis.addrs", "want a list"},
		{"mapping wanted", "grpc: 127.0.0.1:1\n", "grpc", "want keys and values"},
		{"key given twice", "grpc:\n  addr: 127.0.0.1:1\n  addr: 127.0.0.1:2\n", "grpc.addr", "set twice"},
		{"unknown key in a list item", "identity:\n  issuers:\n    - issuer: a\n      jwks_ur: https://a/jwks\n", "identity.issuers[0].jwks_ur", "unknown key"},
		{"unknown key in an item's claims", "identity:\n  issuers:\n    - issuer: a\n      jwks_url: https://a/jwks\n      claims: {rol: x}\n", "identity.issuers[0].claims.rol", "unknown key"},
		// Business rules are policy data, not configuration.
		{"partner limit", "partner:\n  max_grant_days: 10\n", "partner.max_grant_days", "unknown key"},
		{"reseller roles", "reseller:\n  role_privileges:\n    care: [view_customers]\n", "reseller.role_privileges", "unknown key"},
		{"partner path moved to data", "partner:\n  path_template: /customers/{customer}/\n", "partner.path_template", "moved to policy data: data.deputy.partner.customer_path_prefix"},
		{"expiring window moved to data", "partner:\n  expiring_within_days: 3\n", "partner.expiring_within_days", "moved to policy data: data.deputy.partner.expiring_within_days"},
		{"whole file not a mapping", "- a\n- b\n", "config", "want keys and values"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadWith(t, nil, nil, tc.file)
			if err == nil {
				t.Fatal("accepted")
			}
			if sidecar.ErrorField(err) != tc.field || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("error %q (field %q), want field %q and %q", err, sidecar.ErrorField(err), tc.field, tc.message)
			}
			if strings.Contains(err.Error(), "main.") || strings.Contains(err.Error(), "type ") {
				t.Fatalf("error names Go types: %q", err)
			}
			if !strings.Contains(err.Error(), "deputy.yaml:") {
				t.Fatalf("error does not name the file and line: %q", err)
			}
		})
	}
}

func TestConfigExplicitZeroValuesSurviveDefaults(t *testing.T) {
	t.Run("explicit", func(t *testing.T) {
		file := "check:\n  parse_body: false\n"
		cfg, err := loadWith(t, []string{"--grpc-stream-workers", "0"}, map[string]string{"DEPUTY_DECISION_LOG_INCLUDE_INPUT": "false"}, file)
		if err != nil {
			t.Fatal(err)
		}
		if *cfg.Check.ParseBody || *cfg.GRPC.StreamWorkers != 0 || cfg.DecisionLog.InputIncluded() {
			t.Fatalf("parse_body %v stream_workers %d include_input %v: explicit values were overwritten by defaults",
				*cfg.Check.ParseBody, *cfg.GRPC.StreamWorkers, cfg.DecisionLog.InputIncluded())
		}
	})
	d, err := loadWith(t, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if !*d.Check.ParseBody || *d.GRPC.StreamWorkers != DefaultStreamWorkers || !d.DecisionLog.InputIncluded() {
		t.Fatalf("defaults missing: %+v", d)
	}
}

func TestConfigDefaultsFollowOtherSettings(t *testing.T) {
	cfg, err := loadWith(t, []string{"--check-owned-prefix", "x-acme-"}, nil, "policy:\n  bundle_url: https://bundles.example.com/deputy.tar.gz\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Policy.Paths) != 0 || cfg.Policy.PollInterval != 30*time.Second {
		t.Errorf("bundle_url: paths %v poll %s, want none and 30s", cfg.Policy.Paths, cfg.Policy.PollInterval)
	}
	if cfg.Check.ActorTokenHeader != "x-acme-token" || cfg.DecisionLog.ActorTokenHeader != "x-acme-token" {
		t.Errorf("actor token header %q, masked in logs %q: want x-acme-token for both", cfg.Check.ActorTokenHeader, cfg.DecisionLog.ActorTokenHeader)
	}
	// The decision log masks the header bearer tokens come in, by any name.
	p, err := loadWith(t, nil, nil, "identity:\n  header: X-Principal\n")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(p.DecisionLog.MaskHeaders, "x-principal") {
		t.Errorf("identity.header X-Principal: masked headers %q, want x-principal among them", p.DecisionLog.MaskHeaders)
	}
	// Header names are held as CGI, PHP and WSGI upstreams read them, "_"
	// as "-": what Deputy reads, strips, sets and masks is the name the
	// application acts on, however the setting spelled it.
	u, err := loadWith(t, nil, nil, "identity: {header: X_Auth_Token}\ncheck: {owned_prefix: X_Acme_}\n"+
		"partner: {on_behalf_of_header: X_Customer}\ndecision_log: {mask_headers: [X_Card_Number]}\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ name, got, want string }{
		{"identity.header", u.Identity.Header, "x-auth-token"},
		{"check.owned_prefix", u.Check.OwnedPrefix, "x-acme-"},
		{"check.actor_token_header", u.Check.ActorTokenHeader, "x-acme-token"},
		{"decision_log.actor_token_header", u.DecisionLog.ActorTokenHeader, "x-acme-token"},
		{"partner.on_behalf_of_header", u.Partner.OnBehalfOfHeader, "x-customer"},
	} {
		if f.got != f.want {
			t.Errorf("%s = %q, want %q", f.name, f.got, f.want)
		}
	}
	if !slices.Contains(u.DecisionLog.MaskHeaders, "x-auth-token") || !slices.Contains(u.DecisionLog.MaskHeaders, "x-card-number") {
		t.Errorf("masked headers %q, want x-auth-token and x-card-number among them", u.DecisionLog.MaskHeaders)
	}
	d, err := loadWith(t, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(d.Policy.Paths, ",") != "policies" || d.Policy.PollInterval != 2*time.Second {
		t.Errorf("no source: paths %v poll %s, want policies and 2s", d.Policy.Paths, d.Policy.PollInterval)
	}
}

func TestRepeatedListFlagAdds(t *testing.T) {
	cfg, err := loadWith(t, []string{"--redis-addrs", "127.0.0.1:1,127.0.0.1:2", "--redis-addrs", "127.0.0.1:3", "--redis-cluster"}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Redis.Addrs, " "); got != "127.0.0.1:1 127.0.0.1:2 127.0.0.1:3" {
		t.Fatalf("addrs = %s", got)
	}
}

// Flag help is what operators read first: every flag says what it does,
// shows the default it really gets, and names its type as it is written.
func TestServeFlagsDescribedWithTrueDefaults(t *testing.T) {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	l := newConfigLoader(fs)
	// An issuer and its audience, which Deputy needs outside dev mode, from a YAML-only
	// setting so that no flag's loaded value moves.
	l.file = filepath.Join(t.TempDir(), "deputy.yaml")
	if err := os.WriteFile(l.file, []byte("identity:\n  issuers:\n    - issuer: https://id.example.com\n      audiences: [shop]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := l.load()
	if err != nil {
		t.Fatal(err)
	}
	root := reflect.ValueOf(loaded).Elem()
	n := 0
	for _, s := range l.settings {
		if s.usage == "" {
			t.Errorf("%s has no usage tag", s.path)
		}
		if s.section || s.yamlOnly {
			continue
		}
		n++
		f := fs.Lookup(flagName(s.path))
		if f == nil {
			t.Fatalf("no flag for %s", s.path)
		}
		if typ := f.Value.Type(); typ != "string" && typ != "strings" && typ != "int" && typ != "number" && typ != "bool" && typ != "duration" {
			t.Errorf("--%s has type %q", f.Name, typ)
		}
		got := formatValue(root.FieldByIndex(s.index))
		if _, computed := reflect.TypeOf(Config{}).FieldByIndex(s.index).Tag.Lookup("default"); computed {
			continue
		}
		shown := f.DefValue
		if shown == "" && (got == "" || got == "0" || got == "0s" || got == "false") {
			continue
		}
		if shown != got {
			t.Errorf("--%s shows default %q, but an empty config loads %q", f.Name, shown, got)
		}
	}
	if n < 100 {
		t.Fatalf("only %d flags: the settings walk lost some", n)
	}
}

// An issuer by URL alone, from each source; outside dev mode one is
// required unless anonymous-only serving is asked for.
func TestConfigIdentityIssuers(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		file string
		want []string
	}{
		{name: "flag", args: []string{"--identity-issuer-urls", "https://a.example.com", "--identity-audiences", "shop"},
			want: []string{"https://a.example.com"}},
		{name: "env list", env: map[string]string{"DEPUTY_IDENTITY_ISSUER_URLS": "https://a.example.com", "DEPUTY_IDENTITY_AUDIENCES": "shop"},
			want: []string{"https://a.example.com"}},
		{name: "beside a namespaced issuer", args: []string{"--identity-issuer-urls", "https://a.example.com", "--identity-audiences", "shop"},
			file: "identity:\n  issuers:\n    - issuer: https://b.example.com\n      jwks_url: https://b.example.com/keys\n      namespace: b\n",
			want: []string{"https://a.example.com"}},
		{name: "each issuer its own audience", file: "identity:\n  issuers:\n    - issuer: https://a.example.com\n      audiences: [shop]\n"},
		{name: "any audience, said explicitly", args: []string{"--identity-issuer-urls", "https://a.example.com", "--identity-any-audience"},
			want: []string{"https://a.example.com"}},
		{name: "dev mode needs no audience", args: []string{"--dev", "--identity-dev-namespace", "dev", "--identity-issuer-urls", "https://a.example.com"},
			want: []string{"https://a.example.com"}},
		// Plain http from the host itself, or anywhere in dev mode.
		{name: "loopback over plain http", args: []string{"--identity-issuer-urls", "http://127.0.0.1:18556", "--identity-audiences", "shop"},
			want: []string{"http://127.0.0.1:18556"}},
		{name: "dev mode over plain http", args: []string{"--dev", "--identity-dev-namespace", "dev", "--identity-issuer-urls", "http://10.1.2.3"},
			want: []string{"http://10.1.2.3"}},
		{name: "yaml", file: "identity:\n  issuer_urls: [https://a.example.com]\n  audiences: [shop]\n", want: []string{"https://a.example.com"}},
		{name: "anonymous only", args: []string{"--identity-anonymous-only"}, env: map[string]string{"DEPUTY_IDENTITY_ANONYMOUS_ONLY": "false"}},
		{name: "dev mode", args: []string{"--dev"}, env: map[string]string{"DEPUTY_IDENTITY_ANONYMOUS_ONLY": "false"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadWith(t, tc.args, tc.env, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(cfg.Identity.IssuerURLs, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("issuer_urls %q, want %q", cfg.Identity.IssuerURLs, tc.want)
			}
		})
	}
}

// Dev mode's keys and tokens are for the developer's machine: every
// listener is loopback unless an address is given.
func TestGRPCSocketMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		want os.FileMode
	}{
		{name: "default", want: 0o600},
		{name: "octal string", file: "grpc:\n  socket_mode: \"0660\"\n", want: 0o660},
		{name: "yaml int", file: "grpc:\n  socket_mode: 0660\n", want: 0o660},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadWith(t, nil, nil, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.GRPC.socketMode(); got != tc.want {
				t.Fatalf("socket mode %v, want %v", got, tc.want)
			}
		})
	}
	for _, bad := range []string{"abc", "0999", "01777", "-1", "0"} {
		t.Run(bad, func(t *testing.T) {
			_, err := loadWith(t, []string{"--grpc-socket-mode", bad}, nil, "")
			if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "grpc.socket_mode" {
				t.Fatalf("error %v (field %q), want field grpc.socket_mode", err, sidecar.ErrorField(err))
			}
		})
	}
}

func TestDevModeListensOnLoopback(t *testing.T) {
	cfg, err := loadWith(t, []string{"--dev"}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for name, addr := range map[string]string{"grpc": cfg.GRPC.Addr, "http": cfg.HTTP.Addr, "metrics": cfg.Metrics.Addr} {
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("dev mode %s listens on %q", name, addr)
		}
	}
	cfg, err = loadWith(t, []string{"--dev", "--metrics-addr", "[::1]:19090", "--grpc-addr", "unix:/tmp/deputy.sock"}, nil,
		"http:\n  addr: localhost:18181\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Addr != "localhost:18181" || cfg.Metrics.Addr != "[::1]:19090" {
		t.Errorf("addresses given in dev mode were replaced: http %q metrics %q", cfg.HTTP.Addr, cfg.Metrics.Addr)
	}
	// The dev signing key mints any identity: a dev listener asked to
	// face the network, from any source, does not start.
	for _, tc := range []struct {
		name, field string
		args        []string
		env         map[string]string
		file        string
	}{
		{name: "grpc flag", field: "grpc.addr", args: []string{"--grpc-addr", "0.0.0.0:19191"}},
		{name: "http env", field: "http.addr", env: map[string]string{"DEPUTY_HTTP_ADDR": "0.0.0.0:18181"}},
		{name: "metrics every interface", field: "metrics.addr", args: []string{"--metrics-addr", ":19090"}},
		{name: "http file", field: "http.addr", file: "http:\n  addr: 10.0.0.1:18181\n"},
		{name: "grpc host name", field: "grpc.addr", args: []string{"--grpc-addr", "deputy.example.com:9191"}},
		{name: "ipv6 any", field: "metrics.addr", args: []string{"--metrics-addr", "[::]:19090"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadWith(t, append([]string{"--dev"}, tc.args...), tc.env, tc.file)
			if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != tc.field {
				t.Fatalf("error %v (field %q), want field %s", err, sidecar.ErrorField(err), tc.field)
			}
		})
	}
}

// Behind Envoy's http_service (http.check_proxy envoy), Deputy's delegated
// identity reaches the application only under the names Envoy copies, and
// Deputy replaces a client's copy of such a name rather than removing it.
// A list that leaves out a name Deputy sets (its owned prefix, actor-token
// or on-behalf-of header, changed from the defaults) would let a client's
// copy through, so Deputy does not start; behind another proxy the
// Envoy endpoint refuses such an allow instead.
func TestEnvoyUpstreamHeadersCoverDeputysNames(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		ok         bool
	}{
		{name: "defaults", file: "http: {check_proxy: envoy}\n", ok: true},
		{name: "owned prefix left out", file: "http: {check_proxy: envoy}\ncheck: {owned_prefix: x-auth-}\n"},
		{name: "on-behalf-of header left out", file: "http: {check_proxy: envoy}\npartner: {on_behalf_of_header: x-customer}\n"},
		{name: "actor-token header left out", file: "http: {check_proxy: envoy}\ncheck: {actor_token_header: x-actor-token}\n"},
		{name: "a narrower prefix", file: "http: {check_proxy: envoy, envoy_upstream_headers: [x-deputy-subject*, x-deputy-token, x-on-behalf-of]}\n"},
		{name: "exact names only", file: "http: {check_proxy: envoy, envoy_upstream_headers: [x-deputy-subject, x-deputy-actor, x-deputy-token, x-on-behalf-of]}\n"},
		{name: "every name listed", ok: true, file: "http: {check_proxy: envoy, envoy_upstream_headers: [X-Auth-*, x-actor-token, x-customer]}\n" +
			"check: {owned_prefix: x-auth-, actor_token_header: X-Actor-Token}\npartner: {on_behalf_of_header: X_Customer}\n"},
		{name: "a wider prefix", ok: true, file: "http: {check_proxy: envoy, envoy_upstream_headers: [x-*]}\ncheck: {owned_prefix: x-auth-}\n"},
		{name: "another proxy", ok: true, file: "http: {check_proxy: nginx}\ncheck: {owned_prefix: x-auth-}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadWith(t, nil, nil, tc.file)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "http.envoy_upstream_headers" {
				t.Fatalf("error %v (field %q), want field http.envoy_upstream_headers", err, sidecar.ErrorField(err))
			}
		})
	}
}

// A user and password in bundle_url go as Basic authorization on every
// poll: a signed bundle may come over plain http, but not its server's
// password. Refused unless https or loopback, naming the setting and never
// echoing the password.
func TestRev5SignedBundleURLCredentialInClear(t *testing.T) {
	const key = "  public_key: |\n    -----BEGIN PUBLIC KEY-----\n    MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n    -----END PUBLIC KEY-----\n"
	for _, tc := range []struct {
		name, url string
		refused   bool
	}{
		{"password over http", "http://deputy:s3cret@bundles.internal/deputy.tar.gz", true},
		{"user alone over http", "http://deputy@bundles.internal/deputy.tar.gz", true},
		{"password over http to an address", "http://deputy:s3cret@10.1.2.3:8080/deputy.tar.gz", true},
		{"password over https", "https://deputy:s3cret@bundles.internal/deputy.tar.gz", false},
		{"password over http on loopback", "http://deputy:s3cret@127.0.0.1:8181/deputy.tar.gz", false},
		{"no password over http", "http://bundles.internal/deputy.tar.gz", false},
	} {
		for _, dev := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/dev=%v", tc.name, dev), func(t *testing.T) {
				var args []string
				if dev {
					args = []string{"--dev"}
				}
				cfg, err := loadWith(t, args, nil, "policy:\n  bundle_url: "+tc.url+"\n"+key)
				if !tc.refused {
					if err != nil {
						t.Fatal(err)
					}
					if cfg.Policy.BundleURL != tc.url {
						t.Fatalf("bundle_url %q, want %q", cfg.Policy.BundleURL, tc.url)
					}
					return
				}
				if err == nil {
					t.Fatal("accepted")
				}
				if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "policy.bundle_url" {
					t.Fatalf("error %v (field %q), want policy.bundle_url", err, sidecar.ErrorField(err))
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("error echoes the password: %v", err)
				}
			})
		}
	}
}

// PHP, CGI and WSGI read "." (and every byte but a letter, a digit, "-"
// and "_") as they read "-": Deputy's own x.acme.subject reaches the
// application as HTTP_X_ACME_SUBJECT, the name a client's plain
// x-acme-subject reaches it under, which Deputy neither owns nor reads.
// Every setting that names a header refuses such a name, naming itself.
func TestHeaderNameSettingsRefuseOtherBytes(t *testing.T) {
	for _, tc := range []struct{ field, file, entry string }{
		{"identity.header", "identity: {header: X-Auth.Token}\n", ""},
		{"check.owned_prefix", "check: {owned_prefix: X.Acme.}\n", ""},
		{"check.actor_token_header", "check: {actor_token_header: X-Actor.Token}\n", ""},
		{"check.method_overrides", "check: {method_overrides: [\"header:X.HTTP-Method-Override\"]}\n", "entry 0"},
		{"check.method_overrides", "check: {method_overrides: [\"query:_method\", \"header:X_Verb\", \"header:X-Tunnel.Method\"]}\n", "entry 2"},
		{"partner.on_behalf_of_header", "partner: {on_behalf_of_header: X.On-Behalf-Of}\n", ""},
		{"decision_log.mask_headers", "decision_log: {mask_headers: [x-card.number]}\n", "entry 0"},
		{"decision_log.mask_headers", "decision_log: {mask_headers: [x_card_number, \"x-card number\"]}\n", "entry 1"},
		{"decision_log.actor_token_header", "decision_log: {actor_token_header: x-deputy.token}\n", ""},
		{"http.envoy_upstream_headers", "http: {envoy_upstream_headers: [\"x.deputy.*\"]}\n", "entry 0"},
		{"http.envoy_upstream_headers", "http: {envoy_upstream_headers: [\"x-deputy-*\", x-on-behalf-of, \"x-user:role\"]}\n", "entry 2"},
		{"check.owned_prefix", "check: {owned_prefix: \"x-acme\u00e9-\"}\n", ""},
		{"identity.header", "identity: {header: \"x-auth token\"}\n", ""},
		{"identity.credential_carriers", "identity: {credential_carriers: [\"cookie:jwt\", \"header:X-Auth.Token\"]}\n", "entry 1"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			_, err := loadWith(t, nil, nil, tc.file)
			if sidecar.ErrorCode(err) != sidecar.EINVALID || !strings.HasPrefix(sidecar.ErrorField(err), tc.field) {
				t.Fatalf("%s: error %v (field %q), want %s refused", strings.TrimSpace(tc.file), err, sidecar.ErrorField(err), tc.field)
			}
			// A list's refusal names the entry.
			if !strings.Contains(sidecar.ErrorMessage(err), tc.entry) {
				t.Errorf("%s: error %q, want it to name %s", strings.TrimSpace(tc.file), sidecar.ErrorMessage(err), tc.entry)
			}
		})
	}
}

// Envoy's http_service prepends http.path_prefix to the request's path:
// a prefix that is not a path of its own never matches what Envoy sends,
// and every check would be refused.
func TestPathPrefixIsAPath(t *testing.T) {
	for _, file := range []string{"http: {path_prefix: authz}\n", "http: {path_prefix: \"/authz?x=\"}\n",
		"http: {path_prefix: \"/authz#\"}\n", "http: {path_prefix: \"/au thz\"}\n"} {
		if _, err := loadWith(t, nil, nil, file); sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "http.path_prefix" {
			t.Errorf("%s: error %v, want http.path_prefix refused", strings.TrimSpace(file), err)
		}
	}
	for _, file := range []string{"http: {path_prefix: /authz}\n", "http: {path_prefix: /ext_authz/}\n"} {
		if _, err := loadWith(t, nil, nil, file); err != nil {
			t.Errorf("%s: %v", strings.TrimSpace(file), err)
		}
	}
}

// http.envoy_upstream_headers is compared as Envoy's
// allowed_upstream_headers compares it: in any case, but with "_" and "-"
// apart, and Deputy sets its own names with "-". Listed as x_deputy_*,
// Envoy would copy none of them, and the client's x-on-behalf-of would
// reach the application: behind Envoy, Deputy does not start.
func TestEnvoyUpstreamHeadersKeepUnderscores(t *testing.T) {
	for _, list := range []string{"[\"x_deputy_*\", x-deputy-token, x-on-behalf-of]", "[\"x-deputy-*\", x-deputy-token, x_on_behalf_of]"} {
		_, err := loadWith(t, nil, nil, "http: {check_proxy: envoy, envoy_upstream_headers: "+list+"}\n")
		if sidecar.ErrorField(err) != "http.envoy_upstream_headers" {
			t.Errorf("%s: error %v, want http.envoy_upstream_headers refused", list, err)
		}
	}
	if _, err := loadWith(t, nil, nil, "http: {check_proxy: envoy, envoy_upstream_headers: [\"X-Deputy-*\", X-Deputy-Token, X-On-Behalf-Of, x_user_role]}\n"); err != nil {
		t.Error(err)
	}
}

// identity.credential_carriers sits in the identity section beside the
// verifier's settings, from the file, a variable or a flag: unset, the
// defaults; an empty list, none; an entry of no known kind, or a name a
// carrier's place splits on, is refused naming it.
func TestCredentialCarriersSetting(t *testing.T) {
	cfg, err := loadWith(t, nil, nil, "identity: {header: authorization, leeway: 10s}\n")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Identity.CredentialCarriers, authz.DefaultCredentialCarriers()) || *cfg.Identity.Leeway != 10*time.Second {
		t.Fatalf("unset: carriers %v, leeway %v; want the defaults and 10s", cfg.Identity.CredentialCarriers, *cfg.Identity.Leeway)
	}
	cfg, err = loadWith(t, nil, nil, "identity: {credential_carriers: [\"cookie:shop_jwt\", \"header:X-Shop-Token\"]}\n")
	if err != nil || !slices.Equal(cfg.Identity.CredentialCarriers, []string{"cookie:shop_jwt", "header:X-Shop-Token"}) {
		t.Fatalf("from the file: %v, %v", cfg, err)
	}
	cfg, err = loadWith(t, nil, nil, "identity: {credential_carriers: []}\n")
	if err != nil || cfg.Identity.CredentialCarriers == nil || len(cfg.Identity.CredentialCarriers) != 0 {
		t.Fatalf("an empty list: %v, %v", cfg, err)
	}
	for _, bad := range []string{"[jwt]", "[\"form:token\"]", "[\"cookie:a=b\"]", "[\"query:\"]"} {
		_, err := loadWith(t, nil, nil, "identity: {credential_carriers: "+bad+"}\n")
		if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "identity.credential_carriers" || !strings.Contains(sidecar.ErrorMessage(err), "entry 0") {
			t.Errorf("%s: error %v, want identity.credential_carriers entry 0 refused", bad, err)
		}
	}
	if _, err := loadWith(t, nil, nil, "identity: {credential_carrier: [\"cookie:jwt\"]}\n"); sidecar.ErrorField(err) != "identity.credential_carrier" {
		t.Errorf("a misspelt key: error %v, want it refused", err)
	}
	// A variable stays set for the rest of the test: last.
	cfg, err = loadWith(t, []string{"--identity-credential-carriers=query:t,cookie:c"}, map[string]string{"DEPUTY_IDENTITY_CREDENTIAL_CARRIERS": "header:x-a"}, "")
	if err != nil || !slices.Equal(cfg.Identity.CredentialCarriers, []string{"query:t", "cookie:c"}) {
		t.Fatalf("from a flag: %v, %v", cfg, err)
	}
	cfg, err = loadWith(t, nil, map[string]string{"DEPUTY_IDENTITY_CREDENTIAL_CARRIERS": "header:x-a"}, "")
	if err != nil || !slices.Equal(cfg.Identity.CredentialCarriers, []string{"header:x-a"}) {
		t.Fatalf("from a variable: %v, %v", cfg, err)
	}
}

// A blank variable or flag (a templated value: "", " ", ",") named no
// carrier and was read as the empty list, turning every carrier off with
// nothing said; it is refused naming the setting. Only the file's explicit
// empty list reads none, and the start logs a warning that none is checked.
func TestCredentialCarriersBlankRefused(t *testing.T) {
	// So are the other lists whose empty value turns a check off: method
	// overrides (a POST run as DELETE would be decided as a POST) and the
	// decision log's masked query parameters.
	for _, setting := range []struct{ path, env, flag string }{
		{"check.method_overrides", "DEPUTY_CHECK_METHOD_OVERRIDES", "--check-method-overrides="},
		{"decision_log.mask_query_params", "DEPUTY_DECISION_LOG_MASK_QUERY_PARAMS", "--decision-log-mask-query-params="},
	} {
		for _, blank := range []string{"", " ", ","} {
			_, err := loadWith(t, nil, map[string]string{setting.env: blank}, "")
			if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != setting.path {
				t.Errorf("variable %s=%q: error %v, want %s refused", setting.env, blank, err, setting.path)
			}
			os.Unsetenv(setting.env)
			if _, err := loadWith(t, []string{setting.flag + blank}, nil, ""); err == nil || !strings.Contains(err.Error(), setting.path) {
				t.Errorf("flag %s%q: error %v, want %s refused", setting.flag, blank, err, setting.path)
			}
		}
	}
	for _, blank := range []string{"", " ", ",", " , "} {
		_, err := loadWith(t, nil, map[string]string{"DEPUTY_IDENTITY_CREDENTIAL_CARRIERS": blank}, "")
		if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "identity.credential_carriers" {
			t.Errorf("variable %q: error %v, want identity.credential_carriers refused", blank, err)
		}
		os.Unsetenv("DEPUTY_IDENTITY_CREDENTIAL_CARRIERS")
		_, err = loadWith(t, []string{"--identity-credential-carriers=" + blank}, nil, "")
		if err == nil || !strings.Contains(err.Error(), "identity.credential_carriers") {
			t.Errorf("flag %q: error %v, want identity.credential_carriers refused", blank, err)
		}
	}
	pemKey, err := generateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "signing-key.pem")
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	key := map[string]string{"DEPUTY_ACTOR_TOKEN_KEY_FILES": keyFile}
	cfg, err := loadWith(t, nil, key, "identity: {credential_carriers: []}\n")
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	if _, err := newIdentityPart(cfg, slog.New(slog.NewTextHandler(&logged, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), "identity.credential_carriers") {
		t.Errorf("an empty list logged %q, want a warning naming identity.credential_carriers", logged.String())
	}
	logged.Reset()
	if cfg, err = loadWith(t, nil, key, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := newIdentityPart(cfg, slog.New(slog.NewTextHandler(&logged, nil))); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logged.String(), "credential_carriers") {
		t.Errorf("the defaults logged %q, want nothing about carriers", logged.String())
	}
}

// The on-behalf-of header is a name a client sets freely. One that Deputy
// or the proxy reads for something else (its owned names, the actor
// token, a credential, a method override, the original request the proxy
// reports) would mean two things at once: the partner's bearer token or
// cookie taken for a customer name, a customer name taken for a method.
// Refused at start, naming the setting.
func TestOnBehalfOfHeaderNotAnotherUse(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		ok         bool
	}{
		{name: "default", ok: true, file: "partner: {}\n"},
		{name: "a name of its own", ok: true, file: "partner: {on_behalf_of_header: X_Customer}\n"},
		{name: "owned prefix", file: "partner: {on_behalf_of_header: X_Deputy_Customer}\n"},
		{name: "owned prefix changed", file: "check: {owned_prefix: x-auth-}\npartner: {on_behalf_of_header: x-auth-customer}\n"},
		{name: "actor token header", file: "check: {actor_token_header: x-actor-token}\npartner: {on_behalf_of_header: X-Actor-Token}\n"},
		{name: "authorization", file: "partner: {on_behalf_of_header: Authorization}\n"},
		{name: "proxy authorization", file: "partner: {on_behalf_of_header: proxy-authorization}\n"},
		{name: "cookie", file: "partner: {on_behalf_of_header: cookie}\n"},
		{name: "identity header", file: "identity: {header: X-Customer-Token}\npartner: {on_behalf_of_header: x_customer_token}\n"},
		{name: "credential carrier", file: "partner: {on_behalf_of_header: X_Access_Token}\n"},
		{name: "credential carrier added", file: "identity: {credential_carriers: ['header:x-session-token']}\npartner: {on_behalf_of_header: x-session-token}\n"},
		{name: "method override", file: "partner: {on_behalf_of_header: x-http-method-override}\n"},
		{name: "original request", file: "partner: {on_behalf_of_header: X-Original-URI}\n"},
		{name: "forwarded request", file: "partner: {on_behalf_of_header: x-forwarded-host}\n"},
		{name: "forwarded", file: "partner: {on_behalf_of_header: forwarded}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadWith(t, []string{"--dev"}, nil, tc.file)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "partner.on_behalf_of_header" {
				t.Fatalf("error %v (field %q), want field partner.on_behalf_of_header", err, sidecar.ErrorField(err))
			}
		})
	}
}

// TestConfigExplicitZeroNeverReplaced walks every number, duration and
// switch the loader knows and sets it to zero through its variable: Deputy
// either keeps the zero or refuses to start naming the setting, never
// quietly takes a default in its place (identity.leeway 0 once accepted
// tokens 30 s past their exp).
func TestConfigExplicitZeroNeverReplaced(t *testing.T) {
	// The settings whose usage says 0 takes the default: the chart works
	// out the pod's grace period reading 0 as the default of these two.
	zeroMeansDefault := map[string]bool{
		"shutdown_timeout":           true,
		"decision_log.flush_timeout": true,
	}
	zeros := map[string]string{"int": "0", "number": "0", "duration": "0s", "bool": "false"}
	walked := 0
	for _, s := range settings(defaultConfig()) {
		zero, ok := zeros[typeName(s.typ)]
		if s.section || s.yamlOnly || !ok {
			continue
		}
		walked++
		t.Run(s.path, func(t *testing.T) {
			if zeroMeansDefault[s.path] {
				if !strings.Contains(s.usage, "(0: the default)") {
					t.Fatalf("allowed to take its default for 0, but its usage does not say so: %q", s.usage)
				}
				return
			}
			env := map[string]string{envName(s.path): zero}
			if s.path == "identity.anonymous_only" {
				// Then an issuer is needed.
				env["DEPUTY_IDENTITY_ISSUER_URLS"] = "https://login.example.com/"
				env["DEPUTY_IDENTITY_ANY_AUDIENCE"] = "true"
			}
			cfg, err := loadWith(t, nil, env, "")
			if err != nil {
				if sidecar.ErrorField(err) != s.path {
					t.Fatalf("%s=%s refused naming %q, not the setting: %v", envName(s.path), zero, sidecar.ErrorField(err), err)
				}
				return
			}
			v := reflect.ValueOf(cfg).Elem().FieldByIndex(s.index)
			if v.Kind() == reflect.Pointer && !v.IsNil() {
				v = v.Elem()
			}
			if !v.IsZero() {
				t.Fatalf("%s=%s loaded as %s: an explicit zero was replaced", envName(s.path), zero, formatValue(v))
			}
		})
	}
	if walked < 60 {
		t.Fatalf("walked %d settings: the loader's list was not read", walked)
	}
}

// TestIdentityLeewayZeroKept: 0 cuts tokens off at exp and nbf exactly,
// from the file, a variable or a flag; unset, the default stays.
func TestIdentityLeewayZeroKept(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		file string
	}{
		{name: "file", file: "identity:\n  leeway: 0s\n"},
		{name: "variable", env: map[string]string{"DEPUTY_IDENTITY_LEEWAY": "0s"}},
		{name: "flag", args: []string{"--identity-leeway", "0s"}},
		{name: "flag over file", args: []string{"--identity-leeway=0"}, file: "identity:\n  leeway: 20s\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadWith(t, tc.args, tc.env, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if got := formatValue(reflect.ValueOf(cfg.Identity.Leeway)); got != "0s" {
				t.Fatalf("leeway %s, want 0s", got)
			}
		})
	}
	d, err := loadWith(t, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := formatValue(reflect.ValueOf(d.Identity.Leeway)); got != "30s" {
		t.Fatalf("unset: leeway %s, want the default 30s", got)
	}
}

// TestConfigExplicitZeroRefusedEverywhere: a 0 that would be replaced by
// a default is refused from the file, a variable and a flag alike, naming
// the setting and what to set instead; left unset, the default holds.
func TestConfigExplicitZeroRefusedEverywhere(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		file string
		want string
	}{
		{name: "file", file: "state_cache:\n  ttl: 0s\n", want: "deputy.yaml:2"},
		{name: "file, a number", file: "redis:\n  max_retries: 0\n", want: "-1 for no retries"},
		{name: "variable", env: map[string]string{"DEPUTY_IDENTITY_MIN_REFRESH_INTERVAL": "0s"}, want: "DEPUTY_IDENTITY_MIN_REFRESH_INTERVAL"},
		{name: "flag", args: []string{"--state-cache-ttl=0"}, want: "--state-cache-ttl"},
		{name: "flag over file", args: []string{"--state-cache-ttl", "0s"}, file: "state_cache:\n  ttl: 5s\n", want: "--state-cache-ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadWith(t, tc.args, tc.env, tc.file)
			if err == nil || sidecar.ErrorCode(err) != sidecar.EINVALID || !strings.Contains(err.Error(), tc.want) ||
				!strings.Contains(err.Error(), "leave it unset") {
				t.Fatalf("err = %v, want an explicit 0 refused, naming %q and what to set instead", err, tc.want)
			}
		})
	}
	d, err := loadWith(t, nil, nil, "state_cache:\n  ttl:\n")
	if err != nil {
		t.Fatalf("ttl left empty: %v", err)
	}
	if d.StateCache.TTL != 10*time.Second || d.Redis.MaxRetries != 1 || d.Identity.MinRefreshInterval != 10*time.Second {
		t.Fatalf("unset: ttl %s, max_retries %d, min_refresh_interval %s: want the defaults", d.StateCache.TTL, d.Redis.MaxRetries, d.Identity.MinRefreshInterval)
	}
}

// yamlAt is a config file setting the dotted path to the YAML value.
func yamlAt(path, value string) string {
	keys := strings.Split(path, ".")
	var b strings.Builder
	for i, k := range keys {
		b.WriteString(strings.Repeat("  ", i) + k + ":")
		if i < len(keys)-1 {
			b.WriteString("\n")
		}
	}
	return b.String() + " " + value + "\n"
}

// TestConfigExplicitEmptyNeverReplaced walks every string and list the
// loader knows and gives it empty, from the file, a variable and a flag:
// Deputy either keeps it empty or refuses to start naming the setting,
// never quietly takes a default in its place (identity.algorithms: []
// once accepted the three default algorithms).
func TestConfigExplicitEmptyNeverReplaced(t *testing.T) {
	// The settings with a default whose empty value means something, and
	// the words of their usage that say what; each is kept empty.
	emptyKept := map[string]string{
		// No other place is read for a token: nothing behind Deputy
		// reads one there.
		"identity.credential_carriers": "empty: none",
		// No request names another method: the upstream honours none.
		"check.method_overrides": "empty: none",
		// Only the query carriers and the names the headers'
		// rules catch are masked.
		"decision_log.mask_query_params": "empty, with no query carrier either: no query masking at all",
		// Envoy copies no header of an allow: with check_proxy envoy,
		// Deputy refuses to start, as the usage says.
		"http.envoy_upstream_headers": "empty: none",
	}
	def := reflect.ValueOf(defaultConfig())
	walked := 0
	for _, s := range settings(defaultConfig()) {
		typ := typeName(s.typ)
		if s.section || s.yamlOnly || (typ != "string" && typ != "strings") {
			continue
		}
		walked++
		empty := `""`
		if typ == "strings" {
			empty = "[]"
		}
		forms := []struct {
			name string
			args []string
			env  map[string]string
			file string
		}{
			{name: "file", file: yamlAt(s.path, empty)},
			{name: "variable", env: map[string]string{envName(s.path): ""}},
			{name: "flag", args: []string{"--" + flagName(s.path) + "="}},
		}
		for _, form := range forms {
			t.Run(s.path+"/"+form.name, func(t *testing.T) {
				want, kept := emptyKept[s.path]
				if kept && !strings.Contains(s.usage, want) {
					t.Fatalf("kept empty, but its usage does not say what empty means (%q): %q", want, s.usage)
				}
				cfg, err := loadWith(t, form.args, form.env, form.file)
				if err != nil {
					if sidecar.ErrorField(err) != s.path {
						t.Fatalf("empty refused naming %q, not the setting: %v", sidecar.ErrorField(err), err)
					}
					if kept && form.name == "file" {
						t.Fatalf("the file's empty value is refused, yet its usage says what it means: %v", err)
					}
					if !kept && !strings.Contains(err.Error(), "leave it unset") {
						t.Fatalf("refused without saying what to write instead: %v", err)
					}
					return
				}
				v := reflect.ValueOf(cfg).Elem().FieldByIndex(s.index)
				if v.Len() != 0 {
					t.Fatalf("empty loaded as %s: an explicit empty value was replaced", formatValue(v))
				}
				if def.FieldByIndex(s.index).Len() != 0 && !kept {
					t.Fatalf("empty kept where the default is %s, and its usage is not listed as saying what empty means", s.def)
				}
			})
		}
	}
	if walked < 50 {
		t.Fatalf("walked %d settings: the loader's list was not read", walked)
	}
	// The items of lists of objects, in the file alone: an item's setting
	// whose usage, or its section's, says it defaults to another setting
	// (default identity.audiences) is refused empty; any other is kept.
	usage := map[string]string{}
	items := 0
	for _, s := range settings(defaultConfig()) {
		usage[s.path] = s.usage
		typ := typeName(s.typ)
		if s.section || !s.yamlOnly || (typ != "string" && typ != "strings") {
			continue
		}
		list, key, ok := strings.Cut(s.path, "[].")
		if !ok {
			continue
		}
		items++
		inherits := strings.Contains(s.usage, "(default identity.")
		if sec, _, nested := strings.Cut(key, "."); nested {
			inherits = inherits || strings.Contains(usage[list+"[]."+sec], "(default identity.")
		}
		empty := `""`
		if typ == "strings" {
			empty = "[]"
		}
		t.Run(s.path, func(t *testing.T) {
			item := map[string]any{"issuer": "https://login.example.com/", "jwks_url": "https://login.example.com/jwks"}
			m := item
			keys := strings.Split(key, ".")
			for _, k := range keys[:len(keys)-1] {
				m[k] = map[string]any{}
				m = m[k].(map[string]any)
			}
			m[keys[len(keys)-1]] = empty
			file := fmt.Sprintf("identity:\n  audiences: [shop]\n  issuers:\n    - %s\n", flowMap(item))
			cfg, err := loadWith(t, nil, map[string]string{"DEPUTY_IDENTITY_ANONYMOUS_ONLY": "false"}, file)
			at := strings.Replace(s.path, "[]", "[0]", 1)
			if inherits {
				if sidecar.ErrorField(err) != at || !strings.Contains(err.Error(), "leave it unset") {
					t.Fatalf("err = %v: an empty value that takes another setting's must be refused naming %s", err, at)
				}
				return
			}
			if err != nil {
				if sidecar.ErrorField(err) != at {
					t.Fatalf("empty refused naming %q, not the setting: %v", sidecar.ErrorField(err), err)
				}
				return
			}
			v := reflect.ValueOf(cfg.Identity.Issuers[0])
			for _, k := range keys {
				fields := map[string][]int{}
				yamlFields(v.Type(), nil, fields)
				v = v.FieldByIndex(fields[k])
				if v.Kind() == reflect.Pointer {
					v = v.Elem()
				}
			}
			if v.Len() != 0 {
				t.Fatalf("empty loaded as %s", formatValue(v))
			}
		})
	}
	if items < 10 {
		t.Fatalf("walked %d settings of list items", items)
	}
}

// flowMap writes m as a YAML flow mapping, its keys sorted.
func flowMap(m map[string]any) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		switch v := m[k].(type) {
		case map[string]any:
			parts = append(parts, k+": "+flowMap(v))
		default:
			parts = append(parts, fmt.Sprintf("%s: %v", k, v))
		}
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// TestConfigExplicitEmptyRefusedEverywhere: an empty string or list that
// would be replaced by a default is refused from the file, a variable and
// a flag alike, naming the setting, where it was given and what to write
// instead; a later source setting it wins over an earlier empty one, and
// an empty value no default replaces loads.
func TestConfigExplicitEmptyRefusedEverywhere(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		file  string
		field string
		want  string
	}{
		{name: "file", file: "identity:\n  algorithms: []\n", field: "identity.algorithms", want: "deputy.yaml:2"},
		{name: "file, a string", file: "check:\n  owned_prefix: \"\"\n", field: "check.owned_prefix", want: "deputy.yaml:2"},
		{name: "file, a derived default", file: "check: {owned_prefix: x-auth-, actor_token_header: ''}\n", field: "check.actor_token_header", want: "(x-auth-token)"},
		{name: "variable", env: map[string]string{"DEPUTY_IDENTITY_ALGORITHMS": ""}, field: "identity.algorithms", want: "DEPUTY_IDENTITY_ALGORITHMS"},
		{name: "blank variable", env: map[string]string{"DEPUTY_POLICY_ROOTS": " , "}, field: "policy.roots", want: "DEPUTY_POLICY_ROOTS"},
		{name: "variable, a string", env: map[string]string{"DEPUTY_DECISION_LOG_SINK": ""}, field: "decision_log.sink", want: "none for no decision log"},
		{name: "flag", args: []string{"--identity-algorithms="}, field: "identity.algorithms", want: "--identity-algorithms"},
		{name: "flag over file", args: []string{"--identity-algorithms", ""}, file: "identity:\n  algorithms: [ES256]\n", field: "identity.algorithms", want: "--identity-algorithms"},
		{name: "variable over file", env: map[string]string{"DEPUTY_POLICY_PATHS": ""}, file: "policy:\n  paths: [policies]\n", field: "policy.paths", want: "policy.bundle_url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadWith(t, tc.args, tc.env, tc.file)
			if err == nil || sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != tc.field || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %s refused, saying %q", err, tc.field, tc.want)
			}
			if !strings.Contains(err.Error(), "leave it unset") {
				t.Fatalf("err = %v, want what to write instead", err)
			}
		})
	}
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		file  string
		check func(*Config) bool
	}{
		{name: "unset", check: func(c *Config) bool { return slices.Equal(c.Identity.Algorithms, []string{"RS256", "ES256", "EdDSA"}) }},
		{name: "left empty", file: "identity:\n  algorithms:\n", check: func(c *Config) bool { return len(c.Identity.Algorithms) == 3 }},
		{name: "variable over empty file", env: map[string]string{"DEPUTY_IDENTITY_ALGORITHMS": "ES384"}, file: "identity:\n  algorithms: []\n",
			check: func(c *Config) bool { return slices.Equal(c.Identity.Algorithms, []string{"ES384"}) }},
		{name: "flag over empty variable", args: []string{"--identity-algorithms=PS256"}, env: map[string]string{"DEPUTY_IDENTITY_ALGORITHMS": ""},
			check: func(c *Config) bool { return slices.Equal(c.Identity.Algorithms, []string{"PS256"}) }},
		// With a bundle, no paths is the default: nothing replaces it.
		{name: "no paths beside a bundle", file: "policy:\n  paths: []\n  bundle_url: https://bundles.example.com/b.tar.gz\n",
			check: func(c *Config) bool { return c.Policy.Paths != nil && len(c.Policy.Paths) == 0 }},
		// identity.header is masked besides the list, as the usage says.
		{name: "no extra masked headers", file: "identity: {header: x-principal}\ndecision_log: {mask_headers: []}\n",
			check: func(c *Config) bool { return slices.Equal(c.DecisionLog.MaskHeaders, []string{"x-principal"}) }},
		{name: "an empty string without a default", env: map[string]string{"DEPUTY_REDIS_PASSWORD": ""}, file: "grpc: {tls_cert: ''}\n",
			check: func(c *Config) bool { return c.Redis.Password == "" && c.GRPC.TLSCert == "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadWith(t, tc.args, tc.env, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(cfg) {
				t.Fatalf("loaded %+v", cfg)
			}
		})
	}
}
