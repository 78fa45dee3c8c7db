package identity_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

func devVerifier(t *testing.T, dev *identity.DevIssuer, extra ...identity.IssuerConfig) *identity.Verifier {
	t.Helper()
	v, err := identity.New(identity.Config{Dev: identity.DevConfig{Enabled: true}, Issuers: extra,
		Audiences: []string{testAudience}}, identity.WithDevIssuer(dev))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A token minted by `deputy dev token` in one process verifies in the
// server that loaded the same key file in another.
func TestDevIssuerSharesKeyThroughFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".deputy", "dev", "signing-key.json")
	server, err := identity.LoadDevIssuer(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", info.Mode().Perm())
	}
	cli, err := identity.LoadDevIssuer(path)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cli.Mint(identity.DevClaims{Subject: "alice", Name: "Alice", Roles: []string{"support_agent"},
		Privileges: []string{"view_customers"}, Org: "acme", Domain: "eu", Email: "a@example.com", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	id, err := devVerifier(t, server).Verify(context.Background(), bearer(tok))
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "alice" || id.Name != "Alice" || id.Issuer != identity.DevIssuerName || id.Org != "acme" ||
		id.Domain != "eu" || id.Email != "a@example.com" || !slices.Equal(id.Roles, []string{"support_agent"}) ||
		!slices.Equal(id.Privileges, []string{"view_customers"}) {
		t.Fatalf("identity = %+v", *id)
	}
}

func TestDevIssuerRefusals(t *testing.T) {
	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	mint := func(d *identity.DevIssuer, c identity.DevClaims) string {
		tok, err := d.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	cases := []struct {
		name   string
		token  string
		reason string
	}{
		{"minted by another dev key", mint(stranger, identity.DevClaims{Subject: "mallory", TTL: time.Hour}), identity.ReasonUnknownKid},
		{"expired dev token", mint(dev, identity.DevClaims{Subject: "a", TTL: time.Hour, IssuedAt: time.Now().Add(-2 * time.Hour)}), identity.ReasonExpired},
		{"extra claims cannot override iss or aud", mint(dev, identity.DevClaims{Subject: "a", TTL: time.Hour, Extra: map[string]any{"aud": "x", "iss": "y"}}), ""},
	}
	v := devVerifier(t, dev)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), bearer(tc.token))
			if got := reasonOf(t, err); got != tc.reason {
				t.Fatalf("reason = %q, want %q", got, tc.reason)
			}
		})
	}
	// Without dev mode the same token is refused.
	_, ek, _, _ := keys(t)
	plain, err := identity.New(identity.Config{Issuers: []identity.IssuerConfig{{Issuer: testIssuer,
		JWKSFile: writeFile(t, "jwks.json", jwks(ek))}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = plain.Verify(context.Background(), bearer(mint(dev, identity.DevClaims{Subject: "a", TTL: time.Hour})))
	if reasonOf(t, err) != identity.ReasonIssuer {
		t.Fatalf("dev token accepted outside dev mode: %v", err)
	}
}

func TestDevMintValidates(t *testing.T) {
	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		c     identity.DevClaims
		field string
	}{
		{"no subject", identity.DevClaims{TTL: time.Hour}, "sub"},
		{"no ttl", identity.DevClaims{Subject: "a"}, "ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dev.Mint(tc.c)
			if sidecar.ErrorField(err) != tc.field {
				t.Fatalf("err = %v, want field %s", err, tc.field)
			}
		})
	}
}

func TestLoadDevIssuerRefusesBadFile(t *testing.T) {
	for _, tc := range []struct{ name, content string }{
		{"not json", "garbage"},
		{"public key only", `{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := identity.LoadDevIssuer(writeFile(t, "key.json", []byte(tc.content))); err == nil {
				t.Fatal("loaded a bad dev key file")
			}
		})
	}
}

// The dev key mints any identity: as ssh does with a private key, a key
// file or directory someone else could have written or swapped is refused,
// naming the path, and no key is created in such a directory.
func TestLoadDevIssuerRefusesUnsafeKeyFile(t *testing.T) {
	good := func(t *testing.T) string {
		path := filepath.Join(t.TempDir(), "dev", "signing-key.json")
		if _, err := identity.LoadDevIssuer(path); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) (key, named string)
	}{
		{"file readable by the group", func(t *testing.T) (string, string) {
			p := good(t)
			chmod(t, p, 0o640)
			return p, p
		}},
		{"file readable by others", func(t *testing.T) (string, string) {
			p := good(t)
			chmod(t, p, 0o604)
			return p, p
		}},
		{"directory writable by the group", func(t *testing.T) (string, string) {
			p := good(t)
			chmod(t, filepath.Dir(p), 0o770)
			return p, filepath.Dir(p)
		}},
		{"new key in a world-writable directory", func(t *testing.T) (string, string) {
			dir := t.TempDir()
			chmod(t, dir, 0o777)
			return filepath.Join(dir, "signing-key.json"), dir
		}},
		{"file is a symlink", func(t *testing.T) (string, string) {
			p := good(t)
			link := filepath.Join(filepath.Dir(p), "link.json")
			if err := os.Symlink(p, link); err != nil {
				t.Fatal(err)
			}
			return link, link
		}},
		{"directory is a symlink", func(t *testing.T) (string, string) {
			p := good(t)
			link := filepath.Join(t.TempDir(), "dev")
			if err := os.Symlink(filepath.Dir(p), link); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(link, "signing-key.json"), link
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, named := tc.setup(t)
			_, statErr := os.Lstat(key)
			_, err := identity.LoadDevIssuer(key)
			if err == nil || !strings.Contains(err.Error(), named+" ") {
				t.Fatalf("err = %v, want a refusal naming %s", err, named)
			}
			if _, after := os.Lstat(key); (statErr == nil) != (after == nil) {
				t.Fatalf("key file created or removed: before %v, after %v", statErr, after)
			}
		})
	}
	t.Run("directory of another user", func(t *testing.T) {
		p := good(t)
		if _, err := identity.ReadDevKey(p, os.Geteuid()+1); err == nil || !strings.Contains(err.Error(), filepath.Dir(p)+" ") {
			t.Fatalf("err = %v, want a refusal naming %s", err, filepath.Dir(p))
		}
	})
	// Only root can give a file away; make test runs as root in CI.
	if os.Geteuid() == 0 {
		t.Run("file of another user", func(t *testing.T) {
			p := good(t)
			if err := os.Lchown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			if _, err := identity.LoadDevIssuer(p); err == nil || !strings.Contains(err.Error(), p+" ") {
				t.Fatalf("err = %v, want a refusal naming %s", err, p)
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
