package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func devKeys(t *testing.T) (private, public string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	dir := t.TempDir()
	private, public = filepath.Join(dir, "private.pem"), filepath.Join(dir, "public.pem")
	_ = os.WriteFile(private, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	_ = os.WriteFile(public, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
	return private, public
}

func run(t *testing.T, cmd *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestBundleBuildSignVerify(t *testing.T) {
	priv, pub := devKeys(t)
	_, otherPub := devKeys(t)
	out := filepath.Join(t.TempDir(), "deputy.tar.gz")
	policies := "testdata/eval/policies"

	if o, err := run(t, newBundleCmd(), "build", policies, "-o", out, "--revision", "rev-1"); err != nil {
		t.Fatalf("build: %v\n%s", err, o)
	}
	if _, err := run(t, newBundleCmd(), "verify", out, "--public-key", pub); err == nil || !strings.Contains(err.Error(), "missing .signatures.json") {
		t.Fatalf("verify of an unsigned bundle = %v, want it refused as not signed", err)
	}
	// HMAC would sign with the key verifiers hold, the public one.
	if _, err := run(t, newBundleCmd(), "sign", out, "--key", pub, "--alg", "HS256"); err == nil || !strings.Contains(err.Error(), "not a public-key signing algorithm") {
		t.Fatalf("sign --alg HS256 = %v, want the algorithm refused", err)
	}
	before := time.Now().Truncate(time.Second)
	if o, err := run(t, newBundleCmd(), "sign", out, "--key", priv, "--scope", "prod"); err != nil {
		t.Fatalf("sign: %v\n%s", err, o)
	}
	after := time.Now()
	// The signature carries its signing time, by which a serving Deputy
	// orders bundles.
	o, err := run(t, newBundleCmd(), "verify", out, "--public-key", pub, "--scope", "prod")
	m := regexp.MustCompile(`signed at (\S+),`).FindStringSubmatch(o)
	if err != nil || m == nil {
		t.Fatalf("verify = %v, output %q, want the signing time", err, o)
	}
	if at, err := time.Parse(time.RFC3339, m[1]); err != nil || at.Before(before) || at.After(after) {
		t.Fatalf("signed at %s (%v), want between %s and %s", m[1], err, before, after)
	}
	cases := []struct {
		name    string
		args    []string
		wantErr string
		wantOut string
	}{
		{name: "right key and scope", args: []string{"--public-key", pub, "--scope", "prod"}, wantOut: `revision "rev-1"`},
		{name: "other key", args: []string{"--public-key", otherPub}, wantErr: "verif"},
		{name: "other scope", args: []string{"--public-key", pub, "--scope", "staging"}, wantErr: "scope"},
		{name: "no key", args: nil, wantErr: "public key is required"},
		{name: "HMAC with the public key", args: []string{"--public-key", pub, "--alg", "HS256"}, wantErr: "not a public-key signing algorithm"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := run(t, newBundleCmd(), append([]string{"verify", out}, tc.args...)...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("verify = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(o, tc.wantOut) {
				t.Fatalf("verify = %v, output %q, want %q", err, o, tc.wantOut)
			}
		})
	}
}

// A bundle whose rule data a running Deputy would refuse is refused when
// built, naming what is wrong.
func TestBundleBuildRefusesIncompleteRuleData(t *testing.T) {
	dir := t.TempDir()
	copyTree(t, "../../policies", dir)
	editData(t, dir, "deputy/partner/data.json", func(d map[string]any) { delete(d, "customer_path_prefix") })
	out := filepath.Join(t.TempDir(), "deputy.tar.gz")
	if o, err := run(t, newBundleCmd(), "build", dir, "-o", out, "--revision", "r1"); err == nil || !strings.Contains(err.Error(), "data.deputy.partner.customer_path_prefix") {
		t.Fatalf("build = %v, want a refusal naming data.deputy.partner.customer_path_prefix\n%s", err, o)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a refused bundle was written: %v", err)
	}
}

func TestPolicyCommandsExitCodes(t *testing.T) {
	// Data a running Deputy refuses to activate fails the check first.
	incomplete := t.TempDir()
	copyTree(t, "../../policies", incomplete)
	editData(t, incomplete, "deputy/impersonation/data.json", func(d map[string]any) { delete(d, "max_session") })
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "passing tests", args: []string{"test", "../../sidecar/policy/testdata/lifecycle/good"}},
		{name: "failing test fails the command", args: []string{"test", "../../sidecar/policy/testdata/lifecycle/failing"}, wantErr: "1 of 2 tests failed"},
		{name: "no tests fails the command", args: []string{"test", "testdata/eval/policies"}, wantErr: "no tests"},
		{name: "check passes clean policies", args: []string{"check", "../../sidecar/policy/testdata/lifecycle/good"}},
		{name: "check passes the shipped policies", args: []string{"check", "../../policies"}},
		{name: "check fails incomplete rule data", args: []string{"check", incomplete}, wantErr: "data.deputy.impersonation.max_session: required"},
		{name: "check fails unformatted files", args: []string{"check", "../../sidecar/policy/testdata/lifecycle/unformatted"}, wantErr: "not formatted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := run(t, newPolicyCmd(), tc.args...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("%v\n%s", err, o)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to mention %q\n%s", err, tc.wantErr, o)
			}
		})
	}
}

// A forbidden route no request's route form meets is refused by `deputy
// policy check` and `deputy bundle build` alike, with the form to write:
// served, it would leave the page it names open to impersonating staff.
func TestPolicyCheckAndBundleBuildRefuseRoutesOutOfForm(t *testing.T) {
	dir := t.TempDir()
	copyTree(t, "../../policies", dir)
	editData(t, dir, "deputy/impersonation/data.json", func(d map[string]any) {
		routes := d["forbidden_routes"].(map[string]any)["customer"].([]any)
		routes[0].(map[string]any)["prefix"] = "/customer/account/pa\u017fsword/"
	})
	const want = `data.deputy.impersonation.forbidden_routes.customer[0].prefix: "/customer/account/pa\u017fsword/" can never match a request`
	const write = `write "/customer/account/password/"`
	if o, err := run(t, newPolicyCmd(), "check", dir); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), write) {
		t.Fatalf("check = %v, want %s ... %s\n%s", err, want, write, o)
	}
	out := filepath.Join(t.TempDir(), "deputy.tar.gz")
	if o, err := run(t, newBundleCmd(), "build", dir, "-o", out, "--revision", "r1"); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), write) {
		t.Fatalf("build = %v, want %s ... %s\n%s", err, want, write, o)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a refused bundle was written: %v", err)
	}
}
