package tests

import (
	"fmt"
	"maps"
	"slices"
	"testing"
)

// Deputy reads a setting left null ("key:", "~", "null") as unset and
// takes its default, and Helm keeps such a null in deputy.config, which
// has no chart default under it. The chart reads every setting of
// deputy.config alike: each one it reads, and each section holding them,
// left null renders exactly as left out. Read as set, a null
// check.method_overrides was "no carriers" to Envoy's config while Deputy
// read its default carriers, so a client's X-HTTP-Method-Override reached
// the application without Deputy deciding on it.
func TestNullSettingsRenderAsUnset(t *testing.T) {
	c := loadChart(t)
	base := `app: {image: {repository: registry.example.com/storefront}}
envoy: {extAuthz: {transport: http}}
identity: {issuerURLs: ['https://login.example.com/realms/shop'], audiences: [storefront]}
signingKeys: {existingSecret: deputy-signing-keys, existingSecretKeys: [2026-11.pem], generate: false}
redis: {enabled: true, addrs: ['redis:6379']}
`
	read := map[string][]string{
		"check":        {"owned_prefix", "actor_token_header", "method_overrides"},
		"partner":      {"on_behalf_of_header"},
		"identity":     {"header", "issuer_urls", "issuers", "audiences", "any_audience", "credential_carriers"},
		"decision_log": {"actor_token_header", "mask_headers"},
		"http":         {"envoy_upstream_headers", "path_prefix"},
		"redis":        {"tls", "tls_insecure_skip_verify", "password", "addrs"},
		"policy":       {"bearer_token", "bundle_url"},
	}
	render := func(config string) (map[string]string, error) {
		return renderYAML(t, c, base+"deputy:\n  config:"+config)
	}
	for _, section := range slices.Sorted(maps.Keys(read)) {
		cases := map[string]string{section: " {}\n"}
		for _, key := range read[section] {
			cases[section+"."+key] = fmt.Sprintf("\n    %s: {}\n", section)
		}
		for name, unset := range cases {
			want, wantErr := render(unset)
			if wantErr != nil {
				t.Fatalf("%s left out: %v", name, wantErr)
			}
			for _, null := range []string{"null", "~", ""} {
				t.Run(name+": "+null, func(t *testing.T) {
					config := fmt.Sprintf("\n    %s: %s\n", section, null)
					if name != section {
						config = fmt.Sprintf("\n    %s:\n      %s: %s\n", section, name[len(section)+1:], null)
					}
					got, err := render(config)
					if err != nil {
						t.Fatalf("the render fails: %v", err)
					}
					for _, file := range slices.Sorted(maps.Keys(want)) {
						if got[file] != want[file] {
							t.Errorf("%s renders unlike the setting left out:\n%s\nwant:\n%s", file, got[file], want[file])
						}
					}
					if len(got) != len(want) {
						t.Errorf("the render has %d files, left out %d", len(got), len(want))
					}
				})
			}
		}
	}
}
