package tests

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/deputyhq/deputy/examples/envoycheck"
)

// check.owned_prefix, check.actor_token_header,
// partner.on_behalf_of_header and identity.header are settings the chart passes to Deputy
// (deputy.config). Its http_service Envoy config follows them: Envoy sends
// Deputy a client's header under each name, in every spelling, so that
// Deputy decides on it or lists it for removal, and copies Deputy's
// answer under each name upstream. Deputy is told what Envoy copies
// (http.envoy_upstream_headers). Left at the default names, a client's
// X-Auth-Subject would reach the application as sent, and its X-Customer
// would be decided as the partner acting as itself and then reach the
// application naming a customer, and with identity.header x-auth-token
// every request would be decided without identity while the application
// signs the token's person in. Deputy holds the names with "-" for "_",
// as CGI, PHP and WSGI upstreams read them, and so does Envoy's config.
func TestHTTPServiceFollowsHeaderSettings(t *testing.T) {
	for _, tc := range []struct {
		name     string
		config   string
		sent     []string // sent to Deputy in every spelling
		copied   []string // copied upstream from Deputy's answer
		notSent  []string
		upstream []string       // http.envoy_upstream_headers
		passed   map[string]any // Deputy's config keeps the values as set
	}{
		// x-auth-token goes as a default credential carrier
		// (identity.credential_carriers), not as the identity header.
		{name: "defaults", config: "{}",
			sent:   []string{"x-deputy-subject", "x-deputy-token", "x-on-behalf-of", "x-auth-token"},
			copied: []string{"x-deputy-subject", "x-deputy-token", "x-on-behalf-of", "cache-control"}, notSent: []string{"x-auth-subject", "x-customer", "x-auth-tokens"},
			upstream: []string{"x-deputy-*", "x-deputy-token", "x-on-behalf-of", "cache-control"}},
		{name: "owned prefix", config: "{check: {owned_prefix: X-Auth-}}",
			sent:   []string{"x-auth-subject", "x-auth-actor", "x-auth-token", "x-auth-role"},
			copied: []string{"x-auth-subject", "x-auth-actor", "x-auth-token", "x-on-behalf-of"}, notSent: []string{"x-authz", "x-deputy-subject"},
			upstream: []string{"x-auth-*", "x-auth-token", "x-on-behalf-of", "cache-control"}, passed: map[string]any{"check.owned_prefix": "X-Auth-"}},
		{name: "owned prefix spelled with _", config: "{check: {owned_prefix: X_Auth_}}",
			sent:   []string{"x-auth-subject", "x-auth-token"},
			copied: []string{"x-auth-subject", "x-auth-token"}, notSent: []string{"x-deputy-subject"},
			upstream: []string{"x-auth-*", "x-auth-token", "x-on-behalf-of", "cache-control"}, passed: map[string]any{"check.owned_prefix": "X_Auth_"}},
		{name: "identity header", config: "{identity: {header: X-Auth-Token}}",
			sent:   []string{"x-auth-token", "authorization", "x-deputy-subject"},
			copied: []string{"x-deputy-subject"}, notSent: []string{"x-auth-tokens", "x-auth-token2"},
			upstream: []string{"x-deputy-*", "x-deputy-token", "x-on-behalf-of", "cache-control"}},
		{name: "identity header spelled with _", config: "{identity: {header: x_auth_token}}",
			sent:   []string{"x-auth-token"},
			copied: []string{"x-deputy-subject"}, notSent: []string{"x-auth-tokens"},
			upstream: []string{"x-deputy-*", "x-deputy-token", "x-on-behalf-of", "cache-control"}},
		{name: "on-behalf-of header", config: "{partner: {on_behalf_of_header: x-customer}}",
			sent:   []string{"x-customer", "x-deputy-subject"},
			copied: []string{"x-customer", "x-deputy-subject"}, notSent: []string{"x-on-behalf-of", "x-customers"},
			upstream: []string{"x-deputy-*", "x-deputy-token", "x-customer", "cache-control"}, passed: map[string]any{"partner.on_behalf_of_header": "x-customer"}},
		{name: "actor token header outside the prefix", config: "{check: {actor_token_header: X-Actor_Token}}",
			sent:   []string{"x-actor-token", "x-deputy-subject"},
			copied: []string{"x-actor-token", "x-deputy-subject"}, notSent: []string{"x-actorxtoken"},
			upstream: []string{"x-deputy-*", "x-actor-token", "x-on-behalf-of", "cache-control"}, passed: map[string]any{"check.actor_token_header": "X-Actor_Token"}},
		// Names with "_" in the list settings render, the method
		// override sent to Deputy in every spelling.
		{name: "list entries spelled with _", config: "{check: {method_overrides: ['header:X_Verb', 'query:_method']}, " +
			"decision_log: {mask_headers: [x_card_number], actor_token_header: x_deputy_token}}",
			sent:   []string{"x-verb", "x-deputy-subject"},
			copied: []string{"x-deputy-subject"}, notSent: []string{"x-verbs", "x-http-method-override"},
			upstream: []string{"x-deputy-*", "x-deputy-token", "x-on-behalf-of", "cache-control"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := renderInline(t, "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\nenvoy: {extAuthz: {transport: http}}\ndeputy: {config: "+tc.config+"}\n")
			authz := httpServiceAuthz(t, m)
			for _, name := range envoycheck.Spellings(tc.sent...) {
				if ok, err := envoycheck.Matches(authz.GetAllowedHeaders(), name); err != nil || !ok {
					t.Errorf("a client's %s is not sent to Deputy (%v)", name, err)
				}
			}
			for _, name := range tc.notSent {
				if ok, err := envoycheck.Matches(authz.GetAllowedHeaders(), name); err != nil || ok {
					t.Errorf("a client's %s is sent to Deputy, not a configured name (%v)", name, err)
				}
			}
			copied := authz.GetHttpService().GetAuthorizationResponse().GetAllowedUpstreamHeaders()
			for _, name := range tc.copied {
				if ok, err := envoycheck.Matches(copied, name); err != nil || !ok {
					t.Errorf("Deputy's %s does not reach the application (%v)", name, err)
				}
			}
			raw := m.get(t, "ConfigMap", "shop-deputy-config").(*corev1.ConfigMap).Data["config.yaml"]
			var cfg map[string]any
			if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
				t.Fatal(err)
			}
			for path, want := range tc.passed {
				if got, _ := lookup(cfg, path); got != want {
					t.Errorf("%s = %#v in Deputy's config, want %#v", path, got, want)
				}
			}
			got, _ := lookup(cfg, "http.envoy_upstream_headers")
			list, _ := got.([]any)
			if len(list) != len(tc.upstream) {
				t.Fatalf("http.envoy_upstream_headers = %#v, want %q", got, tc.upstream)
			}
			for i, want := range tc.upstream {
				if list[i] != want {
					t.Errorf("http.envoy_upstream_headers = %#v, want %q", got, tc.upstream)
					break
				}
			}
		})
	}
}

// PHP, CGI and WSGI read "." and other bytes as they read "-": with
// check.owned_prefix x.acme., Deputy's own x.acme.subject and a client's
// x-acme-subject reach the application under one name, and Deputy owns
// only the first. Deputy refuses such names at start; the render says so
// first, naming the setting.
func TestHeaderNamesWithOtherBytesFailTheRender(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct{ setting, config string }{
		{"check.owned_prefix", "{check: {owned_prefix: X.Acme.}}"},
		{"check.actor_token_header", "{check: {actor_token_header: X-Actor.Token}}"},
		{"partner.on_behalf_of_header", "{partner: {on_behalf_of_header: 'x-on behalf-of'}}"},
		{"identity.header", "{identity: {header: X-Auth:Token}}"},
		// The list settings name the entry. A method override header
		// x.method is HTTP_X_METHOD to the application, as a client's
		// x-method is, which Deputy would not read: the application would
		// run a method Deputy did not decide.
		{"check.method_overrides[1]", "{check: {method_overrides: ['query:_method', 'header:X.Method']}}"},
		{"identity.credential_carriers[1]", "{identity: {credential_carriers: ['cookie:jwt', 'header:X.Token']}}"},
		{"decision_log.mask_headers[0]", "{decision_log: {mask_headers: [x-card.number]}}"},
		{"decision_log.actor_token_header", "{decision_log: {actor_token_header: x-deputy.token}}"},
		{"http.envoy_upstream_headers[2]", "{http: {envoy_upstream_headers: [x-deputy-*, x-on-behalf-of, 'x.acme.*']}}"},
		{"http.envoy_upstream_headers[0]", "{http: {envoy_upstream_headers: ['x-acme:role']}}"},
	} {
		t.Run(tc.setting, func(t *testing.T) {
			values := "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, envoy: {extAuthz: {transport: http}}, deputy: {config: " + tc.config + "}}"
			if _, err := renderYAML(t, c, values); err == nil || !strings.Contains(err.Error(), "deputy.config."+tc.setting+": ") {
				t.Fatalf("err = %v, want the render refused naming deputy.config.%s", err, tc.setting)
			}
		})
	}
}

// Envoy's config follows the header names, the method overrides and the
// upstream headers set in deputy.config. Set by a flag or variable among
// the extras instead, Deputy would read identity.header x-auth-token while
// Envoy never sends it (every request decided without identity) and passes
// it on to the application, which signs the token's person in: the render
// refuses them, saying where they go.
func TestHeaderSettingsAmongExtrasFailTheRender(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct{ name, deputy, setting string }{
		{"identity header variable", "{extraEnv: [{name: DEPUTY_IDENTITY_HEADER, value: x-auth-token}]}", "identity.header"},
		{"identity header flag", "{extraArgs: [--identity-header=x-auth-token]}", "identity.header"},
		{"identity header flag, value apart", "{extraArgs: [--identity-header, x-auth-token]}", "identity.header"},
		{"owned prefix flag", "{extraArgs: [--check-owned-prefix=x-auth-]}", "check.owned_prefix"},
		{"owned prefix variable", "{extraEnv: [{name: DEPUTY_CHECK_OWNED_PREFIX, value: x-auth-}]}", "check.owned_prefix"},
		{"actor token header flag", "{extraArgs: [--check-actor-token-header=x-actor-token]}", "check.actor_token_header"},
		{"on-behalf-of header variable", "{extraEnv: [{name: DEPUTY_PARTNER_ON_BEHALF_OF_HEADER, value: x-customer}]}", "partner.on_behalf_of_header"},
		{"method overrides flag", "{extraArgs: ['--check-method-overrides=header:x-verb']}", "check.method_overrides"},
		{"credential carriers variable", "{extraEnv: [{name: DEPUTY_IDENTITY_CREDENTIAL_CARRIERS, value: 'header:x-shop-jwt'}]}", "identity.credential_carriers"},
		{"upstream headers variable", "{extraEnv: [{name: DEPUTY_HTTP_ENVOY_UPSTREAM_HEADERS, value: 'x-*'}]}", "http.envoy_upstream_headers"},
		// Another config file replaces the chart's, whose names Envoy's
		// config follows.
		{"config file flag", "{extraArgs: ['--config=/etc/mine/deputy.yaml']}", "every setting"},
		{"config file flag, value apart", "{extraArgs: [--config, /etc/mine/deputy.yaml]}", "every setting"},
		{"config file shorthand", "{extraArgs: [-c, /etc/mine/deputy.yaml]}", "every setting"},
		{"config file shorthand, value joined", "{extraArgs: [-c/etc/mine/deputy.yaml]}", "every setting"},
		{"config file shorthand after another", "{extraArgs: [-hc=/etc/mine/deputy.yaml]}", "every setting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			values := "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, envoy: {extAuthz: {transport: http}}, deputy: " + tc.deputy + "}"
			if _, err := renderYAML(t, c, values); err == nil || !strings.Contains(err.Error(), "set "+tc.setting+" in deputy.config") {
				t.Fatalf("err = %v, want the render refused, pointing at %s in deputy.config", err, tc.setting)
			}
		})
	}
}

// The chart's Envoy http_service sets no path_prefix: Deputy told of one
// refuses every check path without it (400), so the render refuses
// http.path_prefix wherever it is set.
func TestPathPrefixFailsTheRender(t *testing.T) {
	c := loadChart(t)
	for _, deputy := range []string{"{config: {http: {path_prefix: /authz}}}", "{extraArgs: [--http-path-prefix=/authz]}",
		"{extraArgs: [--http-path-prefix, /authz]}", "{extraEnv: [{name: DEPUTY_HTTP_PATH_PREFIX, value: /authz}]}"} {
		values := "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, envoy: {extAuthz: {transport: http}}, deputy: " + deputy + "}"
		if _, err := renderYAML(t, c, values); err == nil || !strings.Contains(err.Error(), "path_prefix") {
			t.Errorf("%s: err = %v, want the render refused naming path_prefix", deputy, err)
		}
	}
}
