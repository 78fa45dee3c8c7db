package actortoken

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	jose "github.com/go-jose/go-jose/v4"
)

// Key is one signing key: the private half signs, the public half is
// published in the JWKS.
type Key struct {
	ID        string
	Algorithm jose.SignatureAlgorithm
	private   crypto.Signer
}

// Public returns the key as published.
func (k Key) Public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.private.Public(), KeyID: k.ID, Algorithm: string(k.Algorithm), Use: "sig"}
}

// GenerateKey makes an in-memory ES256 key, for dev mode and tests.
func GenerateKey() (Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Key{}, err
	}
	return NewKey(priv, "")
}

// NewKey wraps a private key. The algorithm follows the key type (ES256 for
// P-256, RS256 for RSA, EdDSA for Ed25519); an empty kid becomes the
// RFC 7638 thumbprint so every replica names the same key the same way.
func NewKey(priv crypto.Signer, kid string) (Key, error) {
	alg, err := algorithmFor(priv)
	if err != nil {
		return Key{}, err
	}
	k := Key{ID: kid, Algorithm: alg, private: priv}
	if kid == "" {
		pub := k.Public()
		tp, err := pub.Thumbprint(crypto.SHA256)
		if err != nil {
			return Key{}, err
		}
		k.ID = base64.RawURLEncoding.EncodeToString(tp)
	}
	return k, nil
}

func algorithmFor(priv crypto.Signer) (jose.SignatureAlgorithm, error) {
	switch p := priv.(type) {
	case *ecdsa.PrivateKey:
		switch p.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
		return "", errors.New("unsupported EC curve")
	case *rsa.PrivateKey:
		if p.N.BitLen() < 2048 {
			return "", errors.New("RSA key shorter than 2048 bits")
		}
		return jose.RS256, nil
	case ed25519.PrivateKey:
		return jose.EdDSA, nil
	}
	return "", fmt.Errorf("unsupported key type %T", priv)
}

// LoadKeyFile reads a private key from a PEM file (PKCS#8, SEC 1 "EC
// PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY") or a JWK JSON file. A JWK's kid
// is kept; PEM keys are named by their thumbprint.
func LoadKeyFile(path string) (Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Key{}, err
	}
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(trimmed); err != nil {
			return Key{}, fmt.Errorf("%s: %w", path, err)
		}
		priv, ok := jwk.Key.(crypto.Signer)
		if !ok || jwk.IsPublic() {
			return Key{}, fmt.Errorf("%s: not a private signing key", path)
		}
		k, err := NewKey(priv, jwk.KeyID)
		if err != nil {
			return Key{}, fmt.Errorf("%s: %w", path, err)
		}
		return k, nil
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return Key{}, fmt.Errorf("%s: neither a PEM private key nor a JWK", path)
	}
	var priv any
	switch block.Type {
	case "PRIVATE KEY":
		priv, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		priv, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		priv, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return Key{}, fmt.Errorf("%s: PEM block %q is not a private key", path, block.Type)
	}
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", path, err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return Key{}, fmt.Errorf("%s: unsupported key type %T", path, priv)
	}
	k, err := NewKey(signer, "")
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
