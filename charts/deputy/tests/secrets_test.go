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
	const base = "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\n"
	cases := []struct{ name, values, want string }{
		{"redis password in config", "deputy: {config: {redis: {password: hunter2}}}", "redis.existingSecret"},
		{"bundle token in config", "deputy: {config: {policy: {bearer_token: t0ken}}}", "policies.bundle.tokenSecret"},
		{"redis password flag", "deputy: {extraArgs: [--redis-password=hunter2]}", "redis.existingSecret"},
		{"redis password flag, value apart", "deputy: {extraArgs: [--redis-password, hunter2]}", "redis.existingSecret"},
		{"bundle token flag", "deputy: {extraArgs: [--policy-bearer-token=t0ken]}", "policies.bundle.tokenSecret"},
		{"redis password env value", "deputy: {extraEnv: [{name: DEPUTY_REDIS_PASSWORD, value: hunter2}]}", "redis.existingSecret"},
		{"bundle token env value", "deputy: {extraEnv: [{name: DEPUTY_POLICY_BEARER_TOKEN, value: t0ken}]}", "policies.bundle.tokenSecret"},
		{"bundle url userinfo", "policies: {source: bundle, bundle: {url: 'https://user:hunter2@bundles.example.com/b.tar.gz', publicKey: k}}", "policies.bundle.tokenSecret"},
		{"bundle url query", "policies: {source: bundle, bundle: {url: 'https://bundles.example.com/b.tar.gz?access_token=t0ken', publicKey: k}}", "policies.bundle.tokenSecret"},
		{"bundle url in config, query", "deputy: {config: {policy: {bundle_url: 'https://bundles.example.com/b.tar.gz?token=t0ken'}}}", "policies.bundle.tokenSecret"},
		{"bundle url in config, userinfo", "deputy: {config: {policy: {bundle_url: 'https://u:hunter2@bundles.example.com/b.tar.gz'}}}", "policies.bundle.tokenSecret"},
		// Signed bundles may come over plain http; their server's password
		// may not (Deputy refuses it at start too).
		{"bundle url userinfo over plain http", "policies: {source: bundle, bundle: {url: 'http://deputy:hunter2@bundles.internal/b.tar.gz', publicKey: k}}", "policies.bundle.tokenSecret"},
		{"bundle url in config, userinfo over plain http", "deputy: {config: {policy: {bundle_url: 'http://deputy:hunter2@bundles.internal/b.tar.gz', public_key: /k}}}", "policies.bundle.tokenSecret"},
		{"bundle url flag", "deputy: {extraArgs: ['--policy-bundle-url=https://u:hunter2@bundles.example.com/b.tar.gz']}", "policies.bundle.tokenSecret"},
		{"bundle url flag, value apart", "deputy: {extraArgs: [--policy-bundle-url, 'https://bundles.example.com/b?token=t0ken']}", "policies.bundle.tokenSecret"},
		{"bundle url env value", "deputy: {extraEnv: [{name: DEPUTY_POLICY_BUNDLE_URL, value: 'https://u:hunter2@bundles.example.com/b.tar.gz'}]}", "policies.bundle.tokenSecret"},
		{"issuer url userinfo", "identity: {issuerURLs: ['https://u:hunter2@idp.example.com'], anyAudience: true}", "identity.issuerURLs"},
		{"issuer url in config", "deputy: {config: {identity: {issuer_urls: ['https://idp.example.com', 'https://u:hunter2@idp2.example.com'], any_audience: true}}}", "deputy.config.identity.issuer_urls"},
		{"issuer url in config, query", "deputy: {config: {identity: {issuer_urls: ['https://idp.example.com?key=t0ken'], any_audience: true}}}", "deputy.config.identity.issuer_urls"},
		{"issuer's jwks url", "deputy: {config: {identity: {issuers: [{issuer: 'https://idp.example.com', jwks_url: 'https://idp.example.com/jwks?key=t0ken'}]}}}", "deputy.config.identity.issuers"},
		{"issuer's own url", "deputy: {config: {identity: {issuers: [{issuer: 'https://u:hunter2@idp.example.com'}]}}}", "deputy.config.identity.issuers"},
		{"issuer urls flag", "deputy: {extraArgs: ['--identity-issuer-urls=https://idp.example.com,https://u:hunter2@idp2.example.com']}", "--identity-issuer-urls"},
		{"issuer urls env value", "deputy: {extraEnv: [{name: DEPUTY_IDENTITY_ISSUER_URLS, value: 'https://idp.example.com?key=t0ken'}]}", "DEPUTY_IDENTITY_ISSUER_URLS"},
		// A Redis address is host:port: as a URL its password would sit in
		// the ConfigMap, and in every dial error Deputy logs.
		{"redis address in config", "deputy: {config: {redis: {addrs: ['redis://:hunter2@r:6379']}}}", "deputy.config.redis.addrs[0]"},
		{"redis user@host in config", "deputy: {config: {redis: {addrs: ['r:6379', 'deputy:hunter2@r2:6379'], cluster: true}}}", "deputy.config.redis.addrs[1]"},
		{"redis addrs flag", "deputy: {extraArgs: ['--redis-addrs=redis://:hunter2@r:6379']}", "--redis-addrs"},
		{"redis addrs flag, value apart", "deputy: {extraArgs: [--redis-addrs, 'u:hunter2@r:6379']}", "--redis-addrs"},
		{"redis addrs env value", "deputy: {extraEnv: [{name: DEPUTY_REDIS_ADDRS, value: 'redis://:hunter2@r:6379'}]}", "DEPUTY_REDIS_ADDRS"},
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
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "t0ken") {
				t.Errorf("the error repeats the secret: %v", err)
			}
			for name, m := range out {
				if strings.Contains(m, "hunter2") || strings.Contains(m, "t0ken") {
					t.Errorf("%s holds the secret", name)
				}
			}
		})
	}
	// The schema refuses such a redis.addrs too (repeating it); the
	// render refuses it without, should the schema be skipped.
	t.Run("redis address as a URL, schema skipped", func(t *testing.T) {
		c := loadChart(t)
		c.Schema = nil
		_, err := renderYAML(t, c, base+"redis: {enabled: true, addrs: ['redis://:hunter2@r:6379']}")
		if err == nil || !strings.Contains(err.Error(), "redis.addrs[0] is a URL") || strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("render: %v, want redis.addrs[0] refused without its password", err)
		}
	})
	t.Run("from a Secret", func(t *testing.T) {
		renderInline(t, base+"deputy: {extraEnv: [{name: DEPUTY_REDIS_PASSWORD, valueFrom: {secretKeyRef: {name: r, key: p}}}], extraArgs: [--redis-tls]}")
	})
	t.Run("URLs without credentials", func(t *testing.T) {
		renderInline(t, base+`policies: {source: bundle, bundle: {url: 'https://bundles.example.com/b.tar.gz', publicKey: k, tokenSecret: bundle-token}}
identity: {issuerURLs: ['https://idp.example.com/realms/shop'], anyAudience: true}
deputy: {extraArgs: [--identity-issuer-urls, 'https://a.example.com,https://b.example.com'], extraEnv: [{name: DEPUTY_POLICY_BUNDLE_URL, value: 'https://bundles.example.com/c.tar.gz'}],
  config: {identity: {issuers: [{issuer: 'https://idp2.example.com', jwks_url: 'https://idp2.example.com/jwks', namespace: p}]}}}`)
	})
}

// A value refused where it may hold a secret (a Redis address, a signing
// key, a URL) is refused without being repeated: the schema's pattern
// errors quote the value, so those checks are the render's, whose errors
// name the setting alone.
func TestRefusedValuesAreNotRepeated(t *testing.T) {
	const base = "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\n"
	cases := []struct{ name, values, want string }{
		{"redis address as a URL", "redis: {enabled: true, addrs: ['redis://:hunter2@r:6379']}", "redis.addrs[0]"},
		{"redis address with user@", "redis: {enabled: true, addrs: ['deputy:hunter2@r:6379']}", "redis.addrs[0]"},
		{"redis address with the password after it", "redis: {enabled: true, addrs: ['r:6379 hunter2']}", "redis.addrs[0]"},
		{"redis password in the address", "redis: {enabled: true, cluster: true, addrs: ['r:6379', 'hunter2']}", "redis.addrs[1]"},
		{"signing key without its PEM header", "signingKeys: {keys: [{name: k1, pem: 'MHcCAQEEIhunter2'}]}", "signingKeys.keys[0].pem"},
		{"issuer URL over http with userinfo", "identity: {issuerURLs: ['http://u:hunter2@idp.example.com'], anyAudience: true}", "identity.issuerURLs"},
		{"bundle URL of another scheme", "policies: {source: bundle, bundle: {url: 's3://key:hunter2@bundles/b.tar.gz', publicKey: k}}", "policies.bundle.url"},
		{"bundle URL over http with a token", "policies: {source: bundle, bundle: {url: 'http://u:hunter2@bundles.example.com/b.tar.gz', publicKey: k, tokenSecret: t}}", "policies.bundle.url"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderYAML(t, loadChart(t), base+tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("render: %v, want an error naming %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error repeats the value: %v", err)
			}
		})
	}
}
