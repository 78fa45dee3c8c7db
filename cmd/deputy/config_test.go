package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/deputyhq/deputy/sidecar"
)

func loadWith(t *testing.T, args []string, env map[string]string, file string) (*Config, error) {
	t.Helper()
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
		{name: "env not a duration", env: map[string]string{"DEPUTY_SHUTDOWN_TIMEOUT": "soon"}, field: "shutdown_timeout"},
		{name: "check path", args: []string{"--http-check-path", "authz"}, field: "http.check_path"},
		{name: "unknown key in file", file: "grpc:\n  adress: x\n", field: "config"},
		{name: "wrong type in file", file: "grpc:\n  max_recv_msg_bytes: lots\n", field: "config"},
		{name: "actor token too long", args: []string{"--actor-token-ttl", "10m"}, field: "actor_token.ttl"},
		{name: "partner grant days", args: []string{"--partner-max-grant-days", "-1"}, field: "partner."},
		{name: "missing config file", args: []string{"--config", "/nonexistent/deputy.yaml"}, field: "config"},
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
