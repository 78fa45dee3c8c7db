package policy_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/policy"
)

const good = "testdata/lifecycle/good"

// keyPair writes a PEM key pair for alg into dir and returns the paths.
func keyPair(t *testing.T, alg string) (private, public string) {
	t.Helper()
	var priv any
	var err error
	switch alg {
	case policy.AlgRS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	private, public = filepath.Join(dir, "private.pem"), filepath.Join(dir, "public.pem")
	if err := os.WriteFile(private, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(public, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return private, public
}

// build returns the tarball of the good fixture with the given revision and
// label (the value the test decision reports as its reason).
func build(t *testing.T, rev, label string, sign *policy.SignOptions) []byte {
	t.Helper()
	b, err := policy.BuildBundle([]string{good}, policy.BuildOptions{Revision: rev})
	if err != nil {
		t.Fatal(err)
	}
	b.Data = map[string]any{"deputy": map[string]any{"authz": map[string]any{"label": label}}}
	if sign != nil {
		if err := policy.SignBundle(b, *sign); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := policy.WriteBundle(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawBundle writes a bundle with one module given verbatim, bypassing the
// checks of BuildBundle, to produce what a careless pipeline could ship.
func rawBundle(t *testing.T, roots []string, src string, sign ...policy.SignOptions) []byte {
	t.Helper()
	b := bundle.Bundle{Data: map[string]any{}}
	b.Manifest.Revision = "raw"
	b.Manifest.Roots = &roots
	b.Manifest.Init()
	b.Modules = []bundle.ModuleFile{{URL: "/deputy/authz/authz.rego", Path: "/deputy/authz/authz.rego", Raw: []byte(src)}}
	for _, o := range sign {
		if err := policy.SignBundle(&b, o); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := policy.WriteBundle(&buf, &b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// regoV0Bundle is a bundle of one module in Rego v0 syntax, its manifest
// as declare sets it.
func regoV0Bundle(t *testing.T, declare func(*bundle.Manifest)) []byte {
	t.Helper()
	b := bundle.Bundle{Data: map[string]any{}}
	b.Manifest.Revision = "v0"
	b.Manifest.Roots = &[]string{"deputy"}
	declare(&b.Manifest)
	b.Manifest.Init()
	src := "package deputy.authz\n\ndecision = {\"allowed\": true} { true }\n"
	b.Modules = []bundle.ModuleFile{{URL: "/deputy/authz/authz.rego", Path: "/deputy/authz/authz.rego", Raw: []byte(src)}}
	var buf bytes.Buffer
	if err := policy.WriteBundle(&buf, &b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBuildBundle(t *testing.T) {
	cases := []struct {
		name      string
		paths     []string
		opts      policy.BuildOptions
		wantErr   string
		wantTests bool
	}{
		{name: "manifest carries revision and default roots", paths: []string{good}, opts: policy.BuildOptions{Revision: "abc123"}},
		{name: "tests kept on request", paths: []string{good}, opts: policy.BuildOptions{Revision: "r", IncludeTests: true}, wantTests: true},
		{name: "package outside the roots is refused", paths: []string{"testdata/lifecycle/wrongroot"}, wantErr: "roots"},
		{name: "strict compile errors are refused", paths: []string{"testdata/lifecycle/strict"}, wantErr: "import data.deputy.unused unused"},
		{name: "missing directory", paths: []string{"testdata/lifecycle/nope"}, wantErr: "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := policy.BuildBundle(tc.paths, tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := policy.WriteBundle(&buf, b); err != nil {
				t.Fatal(err)
			}
			got, err := policy.ReadBundle(&buf, policy.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Manifest.Revision != tc.opts.Revision {
				t.Errorf("revision = %q, want %q", got.Manifest.Revision, tc.opts.Revision)
			}
			if roots := *got.Manifest.Roots; strings.Join(roots, ",") != "deputy,system" {
				t.Errorf("roots = %v, want [deputy system]", roots)
			}
			hasTests := false
			for _, m := range got.Modules {
				if strings.HasSuffix(m.Path, "_test.rego") {
					hasTests = true
				}
				if !strings.HasPrefix(m.Path, "/deputy/") {
					t.Errorf("module path %q is not relative to the policy directory", m.Path)
				}
			}
			if hasTests != tc.wantTests {
				t.Errorf("bundle has tests = %v, want %v", hasTests, tc.wantTests)
			}
			label := got.Data["deputy"].(map[string]any)["authz"].(map[string]any)["label"]
			if label != "v1" {
				t.Errorf("data label = %v, want v1 from data.json beside the rules", label)
			}
		})
	}
}

func TestSignAndVerify(t *testing.T) {
	esPriv, esPub := keyPair(t, policy.AlgES256)
	rsPriv, rsPub := keyPair(t, policy.AlgRS256)
	_, otherPub := keyPair(t, policy.AlgES256)
	cases := []struct {
		name    string
		sign    *policy.SignOptions
		read    policy.ReadOptions
		tamper  bool
		wantErr string
	}{
		{name: "ES256 signature verifies", sign: &policy.SignOptions{Key: esPriv}, read: policy.ReadOptions{PublicKey: esPub}},
		{name: "RS256 signature verifies", sign: &policy.SignOptions{Key: rsPriv, Algorithm: policy.AlgRS256}, read: policy.ReadOptions{PublicKey: rsPub, Algorithm: policy.AlgRS256}},
		{name: "scope matches", sign: &policy.SignOptions{Key: esPriv, Scope: "prod"}, read: policy.ReadOptions{PublicKey: esPub, Scope: "prod"}},
		{name: "scope differs", sign: &policy.SignOptions{Key: esPriv, Scope: "staging"}, read: policy.ReadOptions{PublicKey: esPub, Scope: "prod"}, wantErr: "scope"},
		{name: "signed by another key", sign: &policy.SignOptions{Key: esPriv}, read: policy.ReadOptions{PublicKey: otherPub}, wantErr: "verif"},
		{name: "unsigned bundle", read: policy.ReadOptions{PublicKey: esPub}, wantErr: "missing .signatures.json"},
		{name: "file changed after signing", sign: &policy.SignOptions{Key: esPriv}, read: policy.ReadOptions{PublicKey: esPub}, tamper: true, wantErr: "digest mismatch"},
		{name: "no key configured accepts signed bundle", sign: &policy.SignOptions{Key: esPriv}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := policy.BuildBundle([]string{good}, policy.BuildOptions{Revision: "r1"})
			if err != nil {
				t.Fatal(err)
			}
			if tc.sign != nil {
				if err := policy.SignBundle(b, *tc.sign); err != nil {
					t.Fatal(err)
				}
			}
			if tc.tamper {
				b.Data = map[string]any{"deputy": map[string]any{"authz": map[string]any{"label": "forged"}}}
			}
			var buf bytes.Buffer
			if err := policy.WriteBundle(&buf, b); err != nil {
				t.Fatal(err)
			}
			_, err = policy.ReadBundle(&buf, tc.read)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
			}
			if sidecar.ErrorCode(err) != sidecar.EINVALID {
				t.Errorf("code = %s, want %s", sidecar.ErrorCode(err), sidecar.EINVALID)
			}
		})
	}
}

// With an HMAC algorithm the verification key is the signing secret: a
// public key configured to verify bundles, which anyone may hold, would
// sign them. A bundle signed so is refused however the reader is told to
// check it, and HMAC is refused before any bundle is read.
func TestPublicKeyIsNoHMACSecret(t *testing.T) {
	_, pub := keyPair(t, policy.AlgES256)
	pubPEM, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	b, err := policy.BuildBundle([]string{good}, policy.BuildOptions{Revision: "forged"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.GenerateSignature(bundle.NewSigningConfig(string(pubPEM), "HS256", ""), policy.DefaultKeyID, false); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := policy.WriteBundle(&buf, b); err != nil {
		t.Fatal(err)
	}
	for _, alg := range []string{"HS256", "HS384", "HS512", "", policy.AlgRS256} {
		t.Run("key_algorithm "+alg, func(t *testing.T) {
			got, err := policy.ReadBundle(bytes.NewReader(buf.Bytes()), policy.ReadOptions{PublicKey: pub, Algorithm: alg})
			if err == nil {
				t.Fatalf("a bundle signed with the public key as HMAC secret verified (revision %q)", got.Manifest.Revision)
			}
			if strings.HasPrefix(alg, "HS") && !strings.Contains(err.Error(), "key_algorithm") {
				t.Errorf("err = %v, want the algorithm refused, naming key_algorithm", err)
			}
		})
	}
}

func TestSignBundleRejectsBadKeys(t *testing.T) {
	cases := []struct {
		name string
		opts policy.SignOptions
	}{
		{name: "no key", opts: policy.SignOptions{}},
		{name: "missing key file", opts: policy.SignOptions{Key: "testdata/lifecycle/nope.pem"}},
		{name: "unknown algorithm", opts: policy.SignOptions{Key: "x", Algorithm: "XX999"}},
		{name: "HMAC", opts: policy.SignOptions{Key: "a shared secret", Algorithm: "HS256"}},
		{name: "garbage PEM", opts: policy.SignOptions{Key: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := policy.BuildBundle([]string{good}, policy.BuildOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := policy.SignBundle(b, tc.opts); err == nil {
				t.Fatal("signing succeeded, want an error")
			}
		})
	}
}

func TestReadBundleRefusesBadBundles(t *testing.T) {
	goodTar := build(t, "r1", "v1", nil)
	cases := []struct {
		name    string
		tar     []byte
		wantErr string
	}{
		{name: "truncated tarball", tar: goodTar[:len(goodTar)/2], wantErr: "bundle"},
		{name: "not gzip", tar: []byte("<html>oops</html>"), wantErr: "bundle"},
		{name: "syntax error", tar: rawBundle(t, []string{"deputy"}, "package deputy.authz\n\ndecision := {"), wantErr: "parse"},
		{name: "claims the whole data tree", tar: rawBundle(t, []string{""}, "package deputy.authz\n\ndecision := true\n"), wantErr: "outside"},
		{name: "package outside its own roots", tar: rawBundle(t, []string{"deputy"}, "package acme\n\ndecision := true\n"), wantErr: "roots"},
		{name: "roots outside deputy and system", tar: rawBundle(t, []string{"acme"}, "package acme\n\ndecision := true\n"), wantErr: "outside"},
		// Deputy's policies are Rego v1, and policy check, bundle build and
		// a directory read them as v1 only: a bundle is served as v1 or not.
		{name: "Rego v0 bundle", tar: regoV0Bundle(t, func(m *bundle.Manifest) { m.SetRegoVersion(ast.RegoV0) }), wantErr: "rego_version 0"},
		{name: "Rego v0 file", tar: regoV0Bundle(t, func(m *bundle.Manifest) {
			m.FileRegoVersions = map[string]int{"/deputy/authz/authz.rego": 0}
		}), wantErr: "rego_version 0 for /deputy/authz/authz.rego"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := policy.ReadBundle(bytes.NewReader(tc.tar), policy.ReadOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestBundleFileRoundTrip(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	path := filepath.Join(t.TempDir(), "out", "deputy.tar.gz")
	b, err := policy.BuildBundle([]string{good}, policy.BuildOptions{Revision: "c0ffee"})
	if err != nil {
		t.Fatal(err)
	}
	if err := policy.SignBundle(b, policy.SignOptions{Key: priv}); err != nil {
		t.Fatal(err)
	}
	if err := policy.WriteBundleFile(path, b); err != nil {
		t.Fatal(err)
	}
	got, err := policy.VerifyBundleFile(path, policy.ReadOptions{PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	e := policy.New(policy.WithLogger(quiet()))
	if err := e.Activate(context.Background(), policy.SetFromBundle(got, path)); err != nil {
		t.Fatal(err)
	}
	res, err := e.Eval(context.Background(), policy.DefaultDecisionQuery, input("GET"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision != "c0ffee" || !allowed(res) {
		t.Fatalf("result = %v rev %s, want allowed by revision c0ffee", res.Value, res.Revision)
	}
}

func input(method string) ast.Value {
	return ast.MustParseTerm(`{"attributes": {"request": {"http": {"method": "` + method + `"}}}}`).Value
}

func allowed(res policy.Result) bool {
	if res.Value == nil {
		return false
	}
	obj, ok := res.Value.Value.(ast.Object)
	if !ok {
		return false
	}
	v := obj.Get(ast.StringTerm("allowed"))
	return v != nil && v.Equal(ast.BooleanTerm(true))
}

func label(res policy.Result) string {
	if res.Value == nil {
		return ""
	}
	obj, _ := res.Value.Value.(ast.Object)
	if obj == nil {
		return ""
	}
	v := obj.Get(ast.StringTerm("reason"))
	if s, ok := v.Value.(ast.String); ok {
		return string(s)
	}
	return ""
}

// A policy directory serves what a bundle built from it serves: its rules,
// never its test modules, which would otherwise be compiled into every
// activation and held in memory beside the rules.
func TestDirectoryServesWhatItsBundleServes(t *testing.T) {
	set, err := policy.LoadPaths([]string{good})
	if err != nil {
		t.Fatal(err)
	}
	b, err := policy.BuildBundle([]string{good}, policy.BuildOptions{Revision: "r"})
	if err != nil {
		t.Fatal(err)
	}
	fromBundle := policy.SetFromBundle(b, "bundle")
	packages := func(s *policy.Set) []string {
		var out []string
		for _, m := range s.Modules {
			out = append(out, m.Package.Path.String())
		}
		slices.Sort(out)
		return out
	}
	dir, bun := packages(set), packages(fromBundle)
	if len(dir) == 0 || !slices.Equal(dir, bun) {
		t.Fatalf("directory serves packages %v, its bundle %v", dir, bun)
	}
	for name, m := range set.Modules {
		if strings.HasSuffix(name, "_test.rego") || strings.HasSuffix(m.Package.Path.String(), "_test") {
			t.Errorf("directory set holds test module %s (package %s)", name, m.Package.Path)
		}
	}
}
