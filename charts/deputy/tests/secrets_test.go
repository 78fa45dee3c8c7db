package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
)

// A password or token set where it would render into the ConfigMap or the
// pod's args or env (readable by whoever reads those, and kept in their
// history) fails the render, pointing to the Secret-backed value instead.
func TestSecretsStayOutOfConfigMapAndPodSpec(t *testing.T) {
	const base = "app: {image: {repository: x}}\n"
	cases := []struct{ name, values, want string }{
		{"redis password in config", "deputy: {config: {redis: {password: hunter2}}}", "redis.existingSecret"},
		{"bundle token in config", "deputy: {config: {policy: {bearer_token: t0ken}}}", "policies.bundle.tokenSecret"},
		{"redis password flag", "deputy: {extraArgs: [--redis-password=hunter2]}", "redis.existingSecret"},
		{"redis password flag, value apart", "deputy: {extraArgs: [--redis-password, hunter2]}", "redis.existingSecret"},
		{"bundle token flag", "deputy: {extraArgs: [--policy-bearer-token=t0ken]}", "policies.bundle.tokenSecret"},
		{"redis password env value", "deputy: {extraEnv: [{name: DEPUTY_REDIS_PASSWORD, value: hunter2}]}", "redis.existingSecret"},
		{"bundle token env value", "deputy: {extraEnv: [{name: DEPUTY_POLICY_BEARER_TOKEN, value: t0ken}]}", "policies.bundle.tokenSecret"},
		{"bundle url userinfo", "policies: {source: bundle, bundle: {url: 'https://user:pw@bundles.example.com/b.tar.gz', publicKey: k}}", "policies.bundle.tokenSecret"},
	}
	c := loadChart(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(f, []byte(base+tc.values), 0o600); err != nil {
				t.Fatal(err)
			}
			vals, err := chartutil.ReadValuesFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, err := renderValues(c, vals, false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("render: %v, want an error pointing to %s", err, tc.want)
			}
			for name, m := range out {
				if strings.Contains(m, "hunter2") || strings.Contains(m, "t0ken") {
					t.Errorf("%s holds the secret", name)
				}
			}
		})
	}
	t.Run("from a Secret", func(t *testing.T) {
		renderInline(t, base+"deputy: {extraEnv: [{name: DEPUTY_REDIS_PASSWORD, valueFrom: {secretKeyRef: {name: r, key: p}}}], extraArgs: [--redis-tls]}")
	})
}
