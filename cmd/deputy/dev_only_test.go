package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

// The dev issuer's key sits on disk for anyone with a shell to mint any
// identity with. identity.dev.enabled outside dev mode would trust it on
// production listeners beside the real issuers: start-up refuses it,
// naming the setting, from every source, and writes no key.
func TestDevIssuerOnlyInDevMode(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "dev", "key.json")
	issuer := "identity:\n  audiences: [shop]\n  issuers:\n    - issuer: https://idp.example.com/\n      jwks_file: " + filepath.Join(dir, "jwks.json") + "\n"
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		file string
	}{
		{name: "flag", args: []string{"--identity-dev-enabled", "--identity-dev-key-file", keyFile}},
		{name: "env, beside a real issuer", file: issuer, env: map[string]string{
			"DEPUTY_IDENTITY_ANONYMOUS_ONLY": "false", "DEPUTY_IDENTITY_DEV_ENABLED": "true",
			"DEPUTY_IDENTITY_DEV_NAMESPACE": "dev", "DEPUTY_IDENTITY_DEV_KEY_FILE": keyFile}},
		{name: "file", file: "identity:\n  dev:\n    enabled: true\n    key_file: " + keyFile + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadWith(t, tc.args, tc.env, tc.file)
			if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "identity.dev.enabled" {
				t.Fatalf("loaded the dev issuer outside dev mode: %v", err)
			}
		})
	}
	// A config that skipped validation still fails before a key is made.
	cfg := defaultConfig()
	cfg.Identity.AnonymousOnly = true
	cfg.Identity.Dev.Enabled = true
	cfg.Identity.Dev.KeyFile = keyFile
	if _, err := newIdentityPart(&cfg, slog.New(slog.DiscardHandler)); sidecar.ErrorField(err) != "identity.dev.enabled" {
		t.Fatalf("identity built with the dev issuer outside dev mode: %v", err)
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Fatalf("dev key written outside dev mode: %v", err)
	}
	// --dev still turns the dev issuer on.
	on, err := loadWith(t, []string{"--dev", "--identity-dev-key-file", keyFile}, nil, "")
	if err != nil || !on.Identity.Dev.Enabled {
		t.Fatalf("--dev: dev issuer on %v, err %v", on != nil && on.Identity.Dev.Enabled, err)
	}
}
