// Package actortoken owns the signed delegated-identity JWT Deputy injects
// upstream (x-deputy-token): RFC 8693 `act` claims, short lifetimes, key
// rotation (one key signs, every key is published) and the JWKS and
// discovery documents upstreams verify it with.
package actortoken

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/deputyhq/deputy/sidecar"
)

// Defaults and bounds.
const (
	DefaultIssuer      = "deputy"
	DefaultAudience    = "upstream"
	DefaultTTL         = 30 * time.Second
	MaxTTL             = 60 * time.Second
	DefaultCacheMaxAge = 5 * time.Minute

	JWKSPath      = "/.well-known/jwks.json"
	DiscoveryPath = "/.well-known/openid-configuration"
)

// Config is the `actor_token` section.
type Config struct {
	Issuer   string        `yaml:"issuer" usage:"iss of the actor tokens Deputy signs"`
	Audience string        `yaml:"audience" usage:"aud of the actor tokens: the upstream they are meant for"`
	TTL      time.Duration `yaml:"ttl" usage:"actor token lifetime (1s to 60s)"`
	// KeyFiles are all published; the first signs unless SignKeyFile
	// names another, so tokens signed before a rotation keep verifying.
	KeyFiles []string `yaml:"key_files" usage:"PEM or JWK private keys, all published in the JWKS; the first signs unless sign_key_file names another (required outside dev mode)"`
	// SignKeyFile lets a key be published before it signs: upstreams keep
	// the JWKS up to CacheMaxAge, and refuse a token whose kid their copy
	// lacks. Rotation is then two steps (docs/deploy.md): publish, and
	// sign with the new key once CacheMaxAge has passed.
	SignKeyFile string        `yaml:"sign_key_file" usage:"the one of key_files that signs (empty: the first); the others are only published, so a new key can be published for cache_max_age before it signs"`
	JWKSURI     string        `yaml:"jwks_uri" usage:"jwks_uri advertised in the discovery document (empty: derived from an issuer URL; with neither, the document has none)"`
	CacheMaxAge time.Duration `yaml:"cache_max_age" usage:"how long upstreams may cache the JWKS"`
	// MintPerRequest: by default a token is reused for the same delegation
	// during the first half of its lifetime: signing dominates the cost of
	// a delegated check, and an upstream still always receives a token with
	// at least TTL/2 to live, or until the delegation ends if that is sooner
	// (a token never outlives its session or grant).
	MintPerRequest bool `yaml:"mint_per_request" usage:"sign a fresh token for every request instead of reusing one for half its lifetime"`
}

// reuseCacheSize bounds the reused-token cache (one entry per live delegation).
const reuseCacheSize = 8192

// Defaults returns the configuration with every default filled in.
func Defaults() Config {
	var c Config
	c.SetDefaults()
	return c
}

// SetDefaults fills every unset field with its default.
func (c *Config) SetDefaults() {
	if c.Issuer == "" {
		c.Issuer = DefaultIssuer
	}
	if c.Audience == "" {
		c.Audience = DefaultAudience
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.CacheMaxAge == 0 {
		c.CacheMaxAge = DefaultCacheMaxAge
	}
}

// Validate reports the first invalid field of a defaulted config.
func (c *Config) Validate() error {
	if c.TTL < time.Second || c.TTL > MaxTTL {
		return sidecar.Invalid("actor_token.ttl", "must be between 1s and %s", MaxTTL)
	}
	if strings.ContainsAny(c.Audience, " \t\n") {
		return sidecar.Invalid("actor_token.audience", "must not contain spaces")
	}
	if c.JWKSURI != "" {
		u, err := url.Parse(c.JWKSURI)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return sidecar.Invalid("actor_token.jwks_uri", "not an http(s) URL: %q", c.JWKSURI)
		}
	}
	if c.CacheMaxAge < 0 {
		return sidecar.Invalid("actor_token.cache_max_age", "must not be negative")
	}
	for i, f := range c.KeyFiles {
		if strings.TrimSpace(f) == "" {
			return sidecar.Invalid("actor_token.key_files["+strconv.Itoa(i)+"]", "empty path")
		}
	}
	if c.SignKeyFile != "" && c.signIndex() < 0 {
		return sidecar.Invalid("actor_token.sign_key_file", "%q is not one of actor_token.key_files: a key signs only while it is published", c.SignKeyFile)
	}
	return nil
}

// signIndex is the place in KeyFiles of the signing key: 0 without
// SignKeyFile, -1 when it names none of them.
func (c *Config) signIndex() int {
	if c.SignKeyFile == "" {
		return 0
	}
	return slices.IndexFunc(c.KeyFiles, func(f string) bool { return filepath.Clean(f) == filepath.Clean(c.SignKeyFile) })
}

// Signer implements sidecar.ActorTokenSigner.
type Signer struct {
	cfg    Config
	keys   []Key
	signer jose.Signer
	clock  sidecar.Clock

	jwks      []byte
	jwksETag  string
	discovery discoveryDoc

	mu     sync.RWMutex // simplelru is not safe for concurrent use; Peek only reads
	minted *simplelru.LRU[mintKey, minted]
}

// mintKey is everything of a delegation that reaches the token.
type mintKey struct {
	mode, id, actor, subject, level, reason, ticket, storeView, domain string
	end                                                                int64 // the delegation's end, unix seconds; 0 when unknown
}

type minted struct {
	token    string
	reuseTil int64 // unix seconds
}

var _ sidecar.ActorTokenSigner = (*Signer)(nil)

// Option configures a Signer.
type Option func(*Signer)

// WithClock injects the clock used for iat/nbf/exp.
func WithClock(c sidecar.Clock) Option { return func(s *Signer) { s.clock = c } }

// WithKeys uses keys (the first signs) instead of Config.KeyFiles; dev mode
// passes a GenerateKey() result.
func WithKeys(keys ...Key) Option { return func(s *Signer) { s.keys = keys } }

// New validates cfg, loads the keys and prepares the published documents.
func New(cfg Config, opts ...Option) (*Signer, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Signer{cfg: cfg, clock: time.Now}
	// reuseCacheSize is positive, the only way NewLRU fails.
	s.minted, _ = simplelru.NewLRU[mintKey, minted](reuseCacheSize, nil)
	for _, o := range opts {
		o(s)
	}
	if s.keys == nil {
		for i, f := range cfg.KeyFiles {
			k, err := LoadKeyFile(f)
			if err != nil {
				return nil, sidecar.Invalid("actor_token.key_files["+strconv.Itoa(i)+"]", "%v", err)
			}
			s.keys = append(s.keys, k)
		}
		// The signing key first: the rest are only published.
		if i := cfg.signIndex(); i > 0 {
			s.keys = slices.Concat(s.keys[i:i+1], s.keys[:i], s.keys[i+1:])
		}
	} else if cfg.SignKeyFile != "" {
		return nil, sidecar.Invalid("actor_token.sign_key_file", "names a file, but the keys were not read from actor_token.key_files")
	}
	if len(s.keys) == 0 {
		return nil, sidecar.Invalid("actor_token.key_files", "at least one signing key is required outside dev mode")
	}
	seen := map[string]bool{}
	for _, k := range s.keys {
		if seen[k.ID] {
			return nil, sidecar.Invalid("actor_token.key_files", "two keys share kid %q", k.ID)
		}
		seen[k.ID] = true
	}
	first := s.keys[0]
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: first.Algorithm, Key: first.private},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), first.ID))
	if err != nil {
		return nil, sidecar.Invalid("actor_token.key_files", "signing key: %v", err)
	}
	s.signer = signer
	if err := s.prepareDocuments(); err != nil {
		return nil, err
	}
	return s, nil
}

// Keys returns the keys, the signing key first.
func (s *Signer) Keys() []Key { return append([]Key(nil), s.keys...) }

// Claims is the payload of an actor token.
type Claims struct {
	Issuer    string       `json:"iss"`
	Subject   string       `json:"sub"`
	Audience  string       `json:"aud"`
	IssuedAt  int64        `json:"iat"`
	NotBefore int64        `json:"nbf"`
	Expiry    int64        `json:"exp"`
	ID        string       `json:"jti"`
	Actor     Actor        `json:"act"`
	Deputy    DeputyClaims `json:"deputy"`
}

// Actor is the RFC 8693 `act` claim: who is really acting.
type Actor struct {
	Subject string `json:"sub"`
}

// DeputyClaims describe the delegation the token was minted for.
type DeputyClaims struct {
	Mode      string `json:"mode"`
	Level     string `json:"level,omitempty"`
	SessionID string `json:"sid,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Ticket    string `json:"ticket,omitempty"`
	StoreView string `json:"store_view,omitempty"`
	Domain    string `json:"domain,omitempty"`
}

// Sign returns the actor token for a delegation, minting one unless a
// token for the same delegation is still in its reuse window.
func (s *Signer) Sign(d *sidecar.Delegation) (string, error) {
	if d == nil || d.Subject == "" || d.Actor == "" {
		return "", sidecar.Errorf(sidecar.EINTERNAL, "actor token needs a delegation with subject and actor")
	}
	now := s.clock().Unix()
	exp := now + int64(s.cfg.TTL/time.Second)
	// The token never outlives the session or grant it speaks for: an
	// upstream honours it until exp, whatever happened to the delegation.
	var end int64
	if !d.ExpiresAt.IsZero() {
		end = d.ExpiresAt.Unix()
		exp = min(exp, end)
	}
	if s.cfg.MintPerRequest {
		return s.mint(d, now, exp)
	}
	key := mintKey{d.Mode, d.ID, d.Actor, d.Subject, d.Level, d.Reason, d.Ticket, d.StoreView, d.Domain, end}
	s.mu.RLock()
	m, ok := s.minted.Peek(key)
	s.mu.RUnlock()
	if ok && now < m.reuseTil {
		return m.token, nil
	}
	tok, err := s.mint(d, now, exp)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	// Reused for half its lifetime, and never at or past its own exp.
	s.minted.Add(key, minted{token: tok, reuseTil: min(now+int64(s.cfg.TTL/time.Second)/2, exp)}) // drops the oldest when full
	s.mu.Unlock()
	return tok, nil
}

func (s *Signer) mint(d *sidecar.Delegation, now, exp int64) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", &sidecar.Error{Code: sidecar.EINTERNAL, Message: "actor token id", Err: err}
	}
	payload, err := json.Marshal(&Claims{
		Issuer:    s.cfg.Issuer,
		Subject:   d.Subject,
		Audience:  s.cfg.Audience,
		IssuedAt:  now,
		NotBefore: now,
		Expiry:    exp,
		ID:        base64.RawURLEncoding.EncodeToString(jti[:]),
		Actor:     Actor{Subject: d.Actor},
		Deputy: DeputyClaims{Mode: d.Mode, Level: d.Level, SessionID: d.ID, Reason: d.Reason,
			Ticket: d.Ticket, StoreView: d.StoreView, Domain: d.Domain},
	})
	if err != nil {
		return "", &sidecar.Error{Code: sidecar.EINTERNAL, Message: "actor token claims", Err: err}
	}
	obj, err := s.signer.Sign(payload)
	if err != nil {
		return "", &sidecar.Error{Code: sidecar.EINTERNAL, Message: "actor token signature", Err: err}
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		return "", &sidecar.Error{Code: sidecar.EINTERNAL, Message: "actor token serialization", Err: err}
	}
	return tok, nil
}
