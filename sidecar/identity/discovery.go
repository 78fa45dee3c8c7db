package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/deputyhq/deputy/sidecar"
)

// DiscoveryPath is where an OIDC provider publishes its configuration,
// relative to the issuer URL (OpenID Connect Discovery 1.0, section 4).
const DiscoveryPath = "/.well-known/openid-configuration"

// discoverySource finds an issuer's key set through OIDC discovery. The
// discovery document is read at the first load and again only when the
// key set it named cannot be fetched, so a provider that moves its keys is
// followed, and rotation within one jwks_uri costs one request.
type discoverySource struct {
	issuer string
	client *http.Client
	jwks   *urlSource // nil until discovered
	// plainRemoteOK lets the document name a jwks_uri of plain http on
	// another host: dev mode only.
	plainRemoteOK bool
}

func (s *discoverySource) load(ctx context.Context) ([]jose.JSONWebKey, bool, error) {
	if s.jwks == nil {
		u, err := s.discover(ctx)
		if err != nil {
			return nil, false, err
		}
		s.jwks = &urlSource{url: u, client: s.client}
	}
	keys, changed, err := s.jwks.load(ctx)
	if err != nil {
		err = fmt.Errorf("jwks_uri %s: %w", s.jwks, err)
		s.jwks = nil
	}
	return keys, changed, err
}

// discover reads the discovery document and returns its jwks_uri. The
// document must name the configured issuer exactly (a provider answering
// for another issuer is a mix-up, not a configuration), and an https
// issuer's keys must come over https, and outside dev mode no issuer's
// keys come over plain http from another host. Its errors reach logs and /readyz:
// every URL in them, the issuer's too, goes through sidecar.RedactURL.
func (s *discoverySource) discover(ctx context.Context) (string, error) {
	docURL := strings.TrimSuffix(s.issuer, "/") + DiscoveryPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, docURL, nil)
	if err != nil {
		return "", sidecar.RedactURLError(err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("discovery: %w", sidecar.RedactURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("discovery: GET %s: %s", s, resp.Status)
	}
	data, err := readBounded(resp.Body, "discovery document")
	if err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("discovery: %s is not a JSON object: %w", s, err)
	}
	if doc.Issuer != s.issuer {
		return "", fmt.Errorf("discovery: %s names issuer %q, want %q", s, sidecar.RedactURL(doc.Issuer), sidecar.RedactURL(s.issuer))
	}
	u, err := url.Parse(doc.JWKSURI)
	if err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fmt.Errorf("discovery: %s has no usable jwks_uri (%q)", s, sidecar.RedactURL(doc.JWKSURI))
	}
	if strings.HasPrefix(s.issuer, "https:") && u.Scheme != "https" {
		return "", fmt.Errorf("discovery: jwks_uri %s is not https while the issuer is", sidecar.RedactURL(doc.JWKSURI))
	}
	if !s.plainRemoteOK && sidecar.PlainRemote(u) {
		return "", fmt.Errorf("discovery: jwks_uri %s is plain http to a host that is not loopback: outside dev mode keys are fetched over https", sidecar.RedactURL(doc.JWKSURI))
	}
	return u.String(), nil
}

// String names the discovery document for logs and /readyz, without the
// issuer URL's credential.
func (s *discoverySource) String() string {
	return sidecar.RedactURL(strings.TrimSuffix(s.issuer, "/") + DiscoveryPath)
}
func (s *discoverySource) remote() bool { return true }
