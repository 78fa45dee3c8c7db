package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/deputyhq/deputy/sidecar"
)

// DevIssuer signs tokens for local development. Its key lives in a file so
// that `deputy dev token` in another shell mints tokens the running server
// accepts. It must never be trusted outside dev mode.
type DevIssuer struct {
	key    jose.JSONWebKey
	signer jose.Signer
	clock  sidecar.Clock
}

// DevClaims are the identity fields of a dev token.
type DevClaims struct {
	Subject    string
	Name       string
	Email      string
	Roles      []string
	Privileges []string
	Org        string
	Domain     string
	TTL        time.Duration
	IssuedAt   time.Time      // zero: now; tests with a fake clock set it
	Extra      map[string]any // further claims, e.g. for policy experiments
}

// LoadDevIssuer reads the dev signing key from path, creating a fresh ES256
// key (file mode 0600, directory 0700) when the file does not exist. A key
// file or directory that another user owns or could write is refused.
func LoadDevIssuer(path string) (*DevIssuer, error) {
	uid := os.Geteuid()
	data, err := readDevKey(path, uid)
	if errors.Is(err, fs.ErrNotExist) {
		data, err = createDevKey(path, uid)
	}
	if err != nil {
		return nil, fmt.Errorf("dev signing key %s: %w", path, err)
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("dev signing key %s: %w", path, err)
	}
	if _, ok := k.Key.(*ecdsa.PrivateKey); !ok {
		return nil, fmt.Errorf("dev signing key %s: want an EC private key", path)
	}
	return NewDevIssuer(k)
}

// NewDevIssuer wraps an ES256 private JWK.
func NewDevIssuer(k jose.JSONWebKey) (*DevIssuer, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, err
	}
	return &DevIssuer{key: k, signer: signer, clock: time.Now}, nil
}

// GenerateDevIssuer makes a dev issuer with an in-memory key.
func GenerateDevIssuer() (*DevIssuer, error) {
	k, err := newDevKey()
	if err != nil {
		return nil, err
	}
	return NewDevIssuer(k)
}

func newDevKey() (jose.JSONWebKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return jose.JSONWebKey{}, err
	}
	k := jose.JSONWebKey{Key: priv, Algorithm: string(jose.ES256), Use: "sig"}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return jose.JSONWebKey{}, err
	}
	k.KeyID = "dev-" + base64.RawURLEncoding.EncodeToString(tp)[:16]
	return k, nil
}

// readDevKey reads the key file as ssh reads a private key: the key mints
// any identity, so a file someone else owns, could read, or could have
// written or swapped (a symlink, a directory open to others) is refused,
// naming the path. A missing file or directory is fs.ErrNotExist.
func readDevKey(path string, uid int) ([]byte, error) {
	dir := filepath.Dir(path)
	if err := ownedPrivately(dir, uid, 0o022); err != nil {
		return nil, err
	}
	if err := ownedPrivately(path, uid, 0o077); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}

// ownedPrivately checks that path is no symlink, is owned by uid and has
// none of the forbidden permission bits.
func ownedPrivately(path string, uid int, forbidden fs.FileMode) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%s is a symlink: not trusted, give the real path", path)
	}
	if owner, ok := fileOwner(fi); ok && owner != uid {
		return fmt.Errorf("%s is owned by uid %d, not %d: not trusted", path, owner, uid)
	}
	if perm := fi.Mode().Perm(); perm&forbidden != 0 {
		return fmt.Errorf("%s has mode %04o, open to the group or others: not trusted (chmod go-rwx)", path, perm)
	}
	return nil
}

// createDevKey writes a new key atomically: two processes starting at once
// end up sharing whichever key was linked first.
func createDevKey(path string, uid int) ([]byte, error) {
	k, err := newDevKey()
	if err != nil {
		return nil, err
	}
	data, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(dir, ".signing-key-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, err
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	return readDevKey(path, uid)
}

// PublicKey is the key the verifier trusts in dev mode.
func (d *DevIssuer) PublicKey() jose.JSONWebKey { return d.key.Public() }

// Mint signs a dev token: issuer DevIssuerName, audience DevAudience.
func (d *DevIssuer) Mint(c DevClaims) (string, error) {
	if strings.TrimSpace(c.Subject) == "" {
		return "", sidecar.Invalid("sub", "required")
	}
	if c.TTL <= 0 {
		return "", sidecar.Invalid("ttl", "must be positive")
	}
	now := c.IssuedAt
	if now.IsZero() {
		now = d.clock()
	}
	claims := map[string]any{}
	for k, v := range c.Extra {
		claims[k] = v
	}
	claims["iss"] = DevIssuerName
	claims["aud"] = DevAudience
	claims["sub"] = c.Subject
	claims["iat"] = jwt.NewNumericDate(now)
	claims["nbf"] = jwt.NewNumericDate(now)
	claims["exp"] = jwt.NewNumericDate(now.Add(c.TTL))
	set := func(k, v string) {
		if v != "" {
			claims[k] = v
		}
	}
	set("name", c.Name)
	set("email", c.Email)
	set("org", c.Org)
	set("domain", c.Domain)
	if len(c.Roles) > 0 {
		claims["roles"] = c.Roles
	}
	if len(c.Privileges) > 0 {
		claims["privileges"] = c.Privileges
	}
	return jwt.Signed(d.signer).Claims(claims).Serialize()
}
