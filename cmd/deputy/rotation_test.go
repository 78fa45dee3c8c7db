package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/deputyhq/deputy/sidecar/actortoken"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// The two steps of a key rotation, each a restart onto new settings, with
// the keys as files: first the new key is published while the old one
// still signs (sign_key_file), then it signs. The token of each step
// verifies with the JWKS an upstream fetched at the step before, which it
// may keep for cache_max_age.
func TestRotationPublishesBeforeSigning(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	kids := map[string]string{}
	for _, name := range []string{"2026-08.pem", "2026-11.pem"} {
		pemKey, err := generateSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		files[name] = filepath.Join(dir, name)
		writeFile(t, files[name], pemKey)
		k, err := actortoken.LoadKeyFile(files[name])
		if err != nil {
			t.Fatal(err)
		}
		kids[name] = k.ID
	}
	old, next := files["2026-08.pem"], files["2026-11.pem"]

	var cached jose.JSONWebKeySet // what an upstream holds from the step before
	for _, step := range []struct {
		name      string
		keys      []string
		sign      string
		wantKid   string
		published int
	}{
		{name: "before", keys: []string{old}, wantKid: kids["2026-08.pem"], published: 1},
		{name: "publish", keys: []string{next, old}, sign: old, wantKid: kids["2026-08.pem"], published: 2},
		{name: "sign", keys: []string{next, old}, sign: next, wantKid: kids["2026-11.pem"], published: 2},
	} {
		t.Run(step.name, func(t *testing.T) {
			cfg := testConfig(t, "../../policies", func(c *Config) {
				c.DecisionLog.Sink = "none"
				c.ActorToken.KeyFiles, c.ActorToken.SignKeyFile = step.keys, step.sign
			})
			runServer(t, &cfg)
			waitListening(t, cfg.GRPC.Addr)
			waitListening(t, cfg.HTTP.Addr)
			base := "http://" + cfg.HTTP.Addr
			token := devToken(t, &cfg)
			apiCall(t, base, "PUT", "/deputy/v1/customers/cust-9", token(identity.DevClaims{Subject: "shop", Roles: []string{"customer_sync"}}), `{"name": "Zoe"}`, 200)
			apiCall(t, base, "PUT", "/deputy/v1/customers/cust-9/consent", token(identity.DevClaims{Subject: "cust-9"}), `{"allowed": true}`, 200)
			started := apiCall(t, base, "POST", "/deputy/v1/impersonation/sessions", token(identity.DevClaims{Subject: "sam", Roles: []string{"support_agent"}}), `{"customer_id": "cust-9"}`, 201)
			cookie := redeemCookie(t, base, started["redeem_url"].(string))
			upstream := checkClient(t, cfg)(t, "/customer/account", map[string]string{"cookie": cookie})
			tok := upstream[cfg.Check.ActorTokenHeader]
			if tok == "" {
				t.Fatalf("no actor token upstream: %v", upstream)
			}

			resp, err := http.Get(base + actortoken.JWKSPath)
			if err != nil {
				t.Fatal(err)
			}
			var set jose.JSONWebKeySet
			err = json.NewDecoder(resp.Body).Decode(&set)
			resp.Body.Close()
			if err != nil || len(set.Keys) != step.published {
				t.Fatalf("JWKS: %v, %d keys, want %d", err, len(set.Keys), step.published)
			}
			for name, jwks := range map[string]jose.JSONWebKeySet{"served now": set, "cached at the step before": cached} {
				if name != "served now" && len(cached.Keys) == 0 {
					continue
				}
				if kid := verifyActorToken(t, jwks, tok); kid != step.wantKid {
					t.Fatalf("with the JWKS %s: token signed with kid %q, want %q", name, kid, step.wantKid)
				}
			}
			cached = set
		})
	}
}

// verifyActorToken verifies tok as an upstream does with the JWKS it
// holds, and returns the kid that signed it.
func verifyActorToken(t *testing.T, set jose.JSONWebKeySet, tok string) string {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	kid := parsed.Headers[0].KeyID
	keys := set.Key(kid)
	if len(keys) != 1 {
		t.Fatalf("kid %q is not in the JWKS the upstream holds", kid)
	}
	var c jwt.Claims
	if err := parsed.Claims(keys[0], &c); err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: actortoken.DefaultIssuer, AnyAudience: jwt.Audience{actortoken.DefaultAudience}, Time: time.Now()}, 0); err != nil || c.Subject != "cust-9" {
		t.Fatalf("claims %+v: %v", c, err)
	}
	return kid
}
