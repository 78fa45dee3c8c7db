package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// The shipped policies with the impersonation denylist of /vault/ moved
// from deputy/impersonation/data.json to vault.json beside it: served as
// policy.paths the rule held, served as a bundle directory (the same tree
// with a .manifest) it was dropped, and an impersonated POST
// /vault/cards/add let through. Every command that reads the directory
// refuses it instead, naming the file.
func TestDataOutsideDataFilesRefused(t *testing.T) {
	dir := t.TempDir()
	copyTree(t, "../../policies", dir)
	var vault any
	editData(t, dir, "deputy/impersonation/data.json", func(d map[string]any) {
		routes := d["forbidden_routes"].(map[string]any)
		vault = routes["vault"]
		delete(routes, "vault")
	})
	if vault == nil {
		t.Fatal("the shipped impersonation data has no forbidden_routes.vault")
	}
	raw, _ := json.Marshal(map[string]any{"forbidden_routes": map[string]any{"vault": vault}})
	writeFile(t, filepath.Join(dir, "deputy/impersonation/vault.json"), raw)
	writeFile(t, filepath.Join(dir, ".manifest"), []byte(`{"roots": ["deputy", "system"], "revision": "r1"}`))

	work := t.TempDir()
	request := filepath.Join(work, "request.json")
	writeFile(t, request, []byte(`{"method": "POST", "path": "/vault/cards/add", "host": "shop.example"}`))
	delegation := filepath.Join(work, "delegation.json")
	writeFile(t, delegation, []byte(`{"mode": "impersonation", "id": "imp_1", "actor": "sam", "subject": "cust-9", "actor_roles": ["support_agent"]}`))
	identity := filepath.Join(work, "identity.json")
	writeFile(t, identity, []byte(`{"sub": "sam", "roles": ["support_agent"]}`))

	refused := func(t *testing.T, what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "vault.json") || !strings.Contains(err.Error(), "data.json") {
			t.Fatalf("%s: err = %v, want vault.json refused, pointing to data.json", what, err)
		}
	}
	eval := func(f evalFlags) error {
		f.input, f.delegation, f.identity, f.asJSON = request, delegation, identity, true
		return runEval(context.Background(), f, &bytes.Buffer{})
	}
	serve := func(change func(*Config)) error {
		cfg := testConfig(t, dir, change)
		s, err := build(context.Background(), &cfg)
		if err == nil {
			s.stop(context.Background())
		}
		return err
	}
	command := func(args ...string) error {
		cmd := newRootCmd()
		cmd.SetArgs(args)
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		return cmd.Execute()
	}

	t.Run("eval, policies", func(t *testing.T) { refused(t, "eval --policies", eval(evalFlags{policies: []string{dir}})) })
	t.Run("eval, bundle directory", func(t *testing.T) { refused(t, "eval --bundle", eval(evalFlags{bundle: dir})) })
	t.Run("serve, policy.paths", func(t *testing.T) { refused(t, "serve", serve(func(*Config) {})) })
	t.Run("serve, policy.bundle_file directory", func(t *testing.T) {
		refused(t, "serve", serve(func(c *Config) { c.Policy.Paths, c.Policy.BundleFile = nil, dir }))
	})
	t.Run("policy check", func(t *testing.T) { refused(t, "policy check", command("policy", "check", dir)) })
	t.Run("policy test", func(t *testing.T) { refused(t, "policy test", command("policy", "test", dir)) })
	t.Run("bundle build", func(t *testing.T) {
		refused(t, "bundle build", command("bundle", "build", dir, "-o", filepath.Join(work, "b.tar.gz")))
	})
}
