package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/deputyhq/deputy/sidecar"
)

// MaxJWKSSize bounds a key set read from a file or URL.
const MaxJWKSSize = 1 << 20

// MaxJWKSKeys bounds the keys of one key set, usable or not. Identity
// providers publish a handful (the largest, multi-tenant ones a few dozen);
// a set of more is refused as too large, as one of more than MaxJWKSSize
// bytes is, and the issuer's previous keys stay. Every key is parsed and
// checked on each fetch and held in memory, whatever tokens name.
const MaxJWKSKeys = 100

// ParseJWKS reads a JSON Web Key Set and keeps the public signing keys.
// Keys of an unknown type or meant for encryption are skipped, so an
// identity provider adding a new key type does not break verification;
// a set that is not JSON, has no "keys" array, more than MaxJWKSKeys keys
// or no usable key is an error.
func ParseJWKS(data []byte) ([]jose.JSONWebKey, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("malformed key set: %w", err)
	}
	if raw.Keys == nil {
		return nil, errors.New(`malformed key set: no "keys" array`)
	}
	if len(raw.Keys) > MaxJWKSKeys {
		return nil, fmt.Errorf("key set has %d keys, more than %d", len(raw.Keys), MaxJWKSKeys)
	}
	var keys []jose.JSONWebKey
	var skipped []error
	for i, r := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(r); err != nil {
			skipped = append(skipped, fmt.Errorf("key %d: %w", i, err))
			continue
		}
		if k.Use == "enc" || isSymmetric(&k) {
			skipped = append(skipped, fmt.Errorf("key %d (%s): not an asymmetric signing key", i, k.KeyID))
			continue
		}
		pub := k.Public()
		if !pub.Valid() {
			skipped = append(skipped, fmt.Errorf("key %d (%s): invalid public key", i, k.KeyID))
			continue
		}
		keys = append(keys, pub)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("key set has no usable signing key: %w", errors.Join(skipped...))
	}
	return keys, nil
}

// source is where one issuer's keys come from.
type source interface {
	// load returns the current keys; changed is false when the source
	// reports nothing new (HTTP 304, same file contents).
	load(ctx context.Context) (keys []jose.JSONWebKey, changed bool, err error)
	// remote sources are fetched by Start, local ones read by New.
	remote() bool
	String() string
}

type staticSource struct {
	keys []jose.JSONWebKey
	name string
	once sync.Once
}

func (s *staticSource) load(context.Context) ([]jose.JSONWebKey, bool, error) {
	changed := false
	s.once.Do(func() { changed = true })
	return s.keys, changed, nil
}

func (s *staticSource) String() string { return s.name }
func (s *staticSource) remote() bool   { return false }

type fileSource struct {
	path string
	last []byte
}

func (s *fileSource) load(context.Context) ([]jose.JSONWebKey, bool, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	data, err := readBounded(f, "key set")
	if err != nil {
		return nil, false, err
	}
	if s.last != nil && bytes.Equal(data, s.last) {
		return nil, false, nil
	}
	keys, err := ParseJWKS(data)
	if err != nil {
		return nil, false, err
	}
	s.last = data
	return keys, true, nil
}

func (s *fileSource) String() string { return s.path }
func (s *fileSource) remote() bool   { return false }

type urlSource struct {
	url    string
	client *http.Client
	etag   string
}

func (s *urlSource) load(ctx context.Context) ([]jose.JSONWebKey, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, false, sidecar.RedactURLError(err)
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	if s.etag != "" {
		req.Header.Set("If-None-Match", s.etag)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, false, sidecar.RedactURLError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified && s.etag != "" {
		return nil, false, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, false, fmt.Errorf("GET %s: %s", s, resp.Status)
	}
	data, err := readBounded(resp.Body, "key set")
	if err != nil {
		return nil, false, err
	}
	keys, err := ParseJWKS(data)
	if err != nil {
		return nil, false, err
	}
	s.etag = resp.Header.Get("ETag")
	return keys, true, nil
}

// String names the key set for logs and /readyz, without the URL's
// credential.
func (s *urlSource) String() string { return sidecar.RedactURL(s.url) }
func (s *urlSource) remote() bool   { return true }

// readBounded reads at most MaxJWKSSize bytes, refusing anything larger.
func readBounded(r io.Reader, what string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxJWKSSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxJWKSSize {
		return nil, fmt.Errorf("%s larger than %d bytes", what, MaxJWKSSize)
	}
	return data, nil
}

func isSymmetric(k *jose.JSONWebKey) bool {
	_, ok := k.Key.([]byte)
	return ok
}
