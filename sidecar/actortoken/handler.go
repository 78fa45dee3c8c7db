package actortoken

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// discoveryDoc is the same for every request: nothing in it comes from
// the request (its Host or X-Forwarded-* headers), so a shared cache can
// never be handed a document pointing upstreams at someone else's keys.
// Without a jwks_uri configured or an issuer URL to derive it from, it
// has no jwks_uri: an issuer that is not a URL cannot be discovered by an
// OIDC client anyway, and upstreams then fetch JWKSPath where they reach
// Deputy.
type discoveryDoc struct {
	Issuer          string   `json:"issuer"`
	JWKSURI         string   `json:"jwks_uri,omitempty"`
	SigningAlgs     []string `json:"id_token_signing_alg_values_supported"`
	ResponseTypes   []string `json:"response_types_supported"`
	SubjectTypes    []string `json:"subject_types_supported"`
	ClaimsSupported []string `json:"claims_supported"`
}

// prepareDocuments renders the JWKS once: it changes only with the keys.
func (s *Signer) prepareDocuments() error {
	var set jose.JSONWebKeySet
	algs := []string{}
	for _, k := range s.keys {
		set.Keys = append(set.Keys, k.Public())
		if !contains(algs, string(k.Algorithm)) {
			algs = append(algs, string(k.Algorithm))
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	s.jwks = b
	s.jwksETag = `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
	s.discovery = discoveryDoc{
		Issuer:          s.cfg.Issuer,
		JWKSURI:         s.cfg.JWKSURI,
		SigningAlgs:     algs,
		ResponseTypes:   []string{"id_token"},
		SubjectTypes:    []string{"public"},
		ClaimsSupported: []string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "act", "deputy"},
	}
	if s.discovery.JWKSURI == "" && isURL(s.cfg.Issuer) {
		s.discovery.JWKSURI = strings.TrimSuffix(s.cfg.Issuer, "/") + JWKSPath
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://")
}

// Handler serves JWKSPath and DiscoveryPath; mount it at "/.well-known/".
func (s *Signer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(JWKSPath, s.JWKSHandler())
	mux.Handle(DiscoveryPath, s.DiscoveryHandler())
	return mux
}

// JWKSHandler serves the public keys with caching headers and ETag.
func (s *Signer) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !readOnly(w, r) {
			return
		}
		h := w.Header()
		h.Set("Cache-Control", s.cacheControl())
		h.Set("ETag", s.jwksETag)
		if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match, s.jwksETag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.Set("Content-Type", "application/jwk-set+json")
		h.Set("Content-Length", strconv.Itoa(len(s.jwks)))
		if r.Method == http.MethodHead {
			return
		}
		w.Write(s.jwks)
	})
}

// DiscoveryHandler serves the OpenID Connect discovery document, enough
// for JOSE libraries that find keys from an issuer.
func (s *Signer) DiscoveryHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !readOnly(w, r) {
			return
		}
		b, err := json.Marshal(s.discovery)
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Cache-Control", s.cacheControl())
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(b)))
		if r.Method == http.MethodHead {
			return
		}
		w.Write(b)
	})
}

func (s *Signer) cacheControl() string {
	return "public, max-age=" + strconv.Itoa(int(s.cfg.CacheMaxAge.Seconds()))
}

func readOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func etagMatches(header, etag string) bool {
	for _, part := range strings.Split(header, ",") {
		part = strings.TrimPrefix(strings.TrimSpace(part), "W/")
		if part == etag || part == "*" {
			return true
		}
	}
	return false
}
