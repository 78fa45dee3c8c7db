package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/metrics"
)

// An unverified Redis certificate lets whoever is on the path read and
// rewrite all state: dev mode only.
func TestRedisCertificateVerifiedOutsideDevMode(t *testing.T) {
	args := []string{"--redis-addrs", "10.1.2.3:6379", "--redis-tls", "--redis-tls-insecure-skip-verify"}
	_, err := loadWith(t, args, nil, "")
	if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "redis.tls_insecure_skip_verify" {
		t.Fatalf("err = %v, want redis.tls_insecure_skip_verify refused", err)
	}
	if _, err := loadWith(t, append(args, "--dev"), nil, ""); err != nil {
		t.Fatalf("dev mode: %v", err)
	}
}

// Plain Redis to another host is allowed, but said at start, naming the
// setting that would protect it.
func TestPlaintextRedisToAnotherHostWarns(t *testing.T) {
	cases := []struct {
		name  string
		addrs []string
		tls   bool
		dev   bool
		warn  bool
	}{
		{name: "another host", addrs: []string{"10.1.2.3:6379"}, warn: true},
		{name: "one sentinel on another host", addrs: []string{"127.0.0.1:26379", "sentinel-1:26379"}, warn: true},
		{name: "over TLS", addrs: []string{"10.1.2.3:6379"}, tls: true},
		{name: "loopback", addrs: []string{"127.0.0.1:6379"}},
		{name: "dev mode", addrs: []string{"10.1.2.3:6379"}, dev: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "../../policies", func(c *Config) {
				c.Redis.Addrs, c.Redis.TLS = tc.addrs, tc.tls
				c.Redis.MasterName = map[bool]string{true: "deputy"}[len(tc.addrs) > 1]
			})
			cfg.Dev = tc.dev
			m, err := metrics.New(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			var logs strings.Builder
			state, err := newStatePart(&cfg, slog.New(slog.NewTextHandler(&logs, nil)), m)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = state.Stop(context.Background()) }()
			warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "setting=redis.tls")
			if warned != tc.warn {
				t.Fatalf("warned %v, want %v: %q", warned, tc.warn, logs.String())
			}
		})
	}
}
