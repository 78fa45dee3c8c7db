package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// identity.dev.enabled trusts the dev issuer beside the real ones; it
// never lifts the audience the real issuers need outside dev mode. Without
// one, a token the same IdP minted for another application, and the roles
// it carries there, would sign in, on listeners that keep their production
// addresses.
func TestDevIssuerSwitchKeepsAudienceRequired(t *testing.T) {
	dir := t.TempDir()
	file := "identity:\n  issuers:\n    - issuer: https://idp.example.com/\n      jwks_file: " + filepath.Join(dir, "jwks.json") + "\n"
	for name, env := range map[string]map[string]string{
		"production": {"DEPUTY_IDENTITY_ANONYMOUS_ONLY": "false"},
		"production with the dev issuer": {
			"DEPUTY_IDENTITY_ANONYMOUS_ONLY": "false",
			"DEPUTY_IDENTITY_DEV_ENABLED":    "true",
			"DEPUTY_IDENTITY_DEV_KEY_FILE":   filepath.Join(dir, "dev", "key.json"),
		},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := loadWith(t, nil, env, file); err == nil || !strings.Contains(err.Error(), "audiences") {
				t.Fatalf("loaded an issuer without audience: %v", err)
			}
		})
	}
}
