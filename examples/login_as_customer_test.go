package examples_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The README's Login as Customer walk-through, through each proxy: the
// customer consents, a support agent starts a session, the redeem link
// sets the session cookie, and storefront requests carrying it reach the
// application as the customer, acted on by the agent, with an actor token
// the application verifies against Deputy's published keys.
func TestLoginAsCustomerThroughProxy(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)

			session, sessionID, agent := impersonate(t, d, base)

			// The agent's browser now carries the cookie; a client also
			// tries to forge who it is.
			h := http.Header{"Cookie": {"deputy_session=" + session.Value}, "X-Deputy-Actor": {"mallory"}}
			resp, body := call(t, "GET", base+"/customer/account", h, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("storefront request in the session: %d %s", resp.StatusCode, body)
			}
			s := decodeSeen(t, resp, body)
			want := map[string]string{
				"X-Deputy-Subject":    "c42",
				"X-Deputy-Actor":      "alice",
				"X-Deputy-Mode":       "impersonation",
				"X-Deputy-Session":    sessionID,
				"X-Deputy-Store-View": "default",
			}
			for name, v := range want {
				if got := s.Headers.Values(name); len(got) != 1 || got[0] != v {
					t.Errorf("application received %s = %q, want %q", name, got, v)
				}
			}
			if got, err := url.PathUnescape(s.Headers.Get("X-Deputy-Subject-Name")); err != nil || got != "Chloé Martin" {
				t.Errorf("banner name %q (%v)", s.Headers.Get("X-Deputy-Subject-Name"), err)
			}
			verifyActorToken(t, base, s.Headers.Get("X-Deputy-Token"), "c42", "alice")
			if got := s.Headers.Values("X-Deputy-Decision-Id"); len(got) != 1 || len(got[0]) != 32 {
				t.Errorf("application received X-Deputy-Decision-Id %q, want Deputy's one id", got)
			}

			// A page rendered for the impersonated customer must not be
			// cached, neither by the application nor on the way back.
			if got := s.Headers.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("application received Cache-Control %q, want no-cache", got)
			}
			if got := resp.Header.Values("Cache-Control"); len(got) != 1 || got[0] != "private, no-store" {
				t.Errorf("client received Cache-Control %q, want private, no-store", got)
			}

			// Ending the session ends the delegation at once.
			mustStatus(t, base, "DELETE", "/deputy/v1/impersonation/sessions/"+sessionID, agent, nil, http.StatusOK)
			resp, body = call(t, "GET", base+"/customer/account", h, nil)
			if resp.StatusCode == http.StatusOK && resp.Header.Get("x-upstream") == "app" {
				if s := decodeSeen(t, resp, body); s.Headers.Get("X-Deputy-Subject") != "" {
					t.Errorf("ended session still injects %q", s.Headers.Get("X-Deputy-Subject"))
				}
			}
		})
	}
}

// impersonate runs the README's Login as Customer setup through the proxy
// at base: customer c42 consents, agent alice starts a session, and the
// redeem link sets the session cookie, returned with the session id and
// the agent's credentials.
func impersonate(t *testing.T, d *deputy, base string) (*http.Cookie, string, http.Header) {
	t.Helper()
	admin := bearer(d.token(t, "--sub", "ada", "--roles", "admin"))
	customer := bearer(d.token(t, "--sub", "c42", "--name", "Chloé Martin", "--roles", "customer"))
	agent := bearer(d.token(t, "--sub", "alice", "--name", "Alice", "--roles", "support_agent"))

	mustStatus(t, base, "PUT", "/deputy/v1/customers/c42", admin, map[string]any{
		"name": "Chloé Martin", "default_store_view": "default", "store_views": []string{"default", "fr"},
	}, http.StatusOK)
	mustStatus(t, base, "PUT", "/deputy/v1/customers/c42/consent", customer, map[string]any{"allowed": true}, http.StatusOK)

	start := mustStatus(t, base, "POST", "/deputy/v1/impersonation/sessions", agent, map[string]any{
		"customer_id": "c42", "reason": "cart issue", "ticket": "SR-7", "redirect": "/customer/account",
	}, http.StatusCreated)
	var started struct {
		RedeemURL string `json:"redeem_url"`
		Session   struct {
			ID string `json:"id"`
		} `json:"session"`
	}
	if err := json.Unmarshal(start, &started); err != nil || started.RedeemURL == "" {
		t.Fatalf("start: %v: %s", err, start)
	}
	redeem := started.RedeemURL
	if u, err := url.Parse(redeem); err == nil && u.IsAbs() {
		redeem = u.RequestURI() // the link names the storefront host; follow it through the proxy
	}

	resp, body := call(t, "GET", base+redeem, nil, nil)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/customer/account" {
		t.Fatalf("redeem: %d Location=%q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "deputy_session" {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || !session.Secure || session.SameSite != http.SameSiteLaxMode {
		t.Fatalf("redeem cookie %+v (Set-Cookie %q)", session, resp.Header.Values("Set-Cookie"))
	}
	return session, started.Session.ID, agent
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func mustStatus(t *testing.T, base, method, path string, h http.Header, body any, want int) []byte {
	t.Helper()
	resp, b := call(t, method, base+path, h, body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	return b
}

// verifyActorToken checks x-deputy-token as an upstream would: signature
// against /.well-known/jwks.json fetched through the proxy, subject, actor
// and a lifetime of at most a minute.
func verifyActorToken(t *testing.T, base, raw, subject, actor string) {
	t.Helper()
	if raw == "" {
		t.Fatal("no x-deputy-token upstream")
	}
	resp, body := call(t, "GET", base+"/.well-known/jwks.json", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("jwks: %d %s", resp.StatusCode, body)
	}
	var keys jose.JSONWebKeySet
	if err := json.Unmarshal(body, &keys); err != nil || len(keys.Keys) == 0 {
		t.Fatalf("jwks %v: %s", err, body)
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.EdDSA, jose.RS256, jose.PS256})
	if err != nil {
		t.Fatalf("actor token: %v", err)
	}
	if len(tok.Headers) == 0 || len(keys.Key(tok.Headers[0].KeyID)) == 0 {
		t.Fatalf("actor token kid %q not in the JWKS", tok.Headers[0].KeyID)
	}
	var claims jwt.Claims
	var extra struct {
		Act struct {
			Sub string `json:"sub"`
		} `json:"act"`
	}
	if err := tok.Claims(keys.Key(tok.Headers[0].KeyID)[0].Public().Key, &claims, &extra); err != nil {
		t.Fatalf("actor token signature: %v", err)
	}
	if claims.Subject != subject || extra.Act.Sub != actor {
		t.Errorf("actor token sub=%q act.sub=%q, want %q acted on by %q", claims.Subject, extra.Act.Sub, subject, actor)
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Time: time.Now()}, time.Second); err != nil {
		t.Errorf("actor token: %v", err)
	}
	if claims.Expiry == nil || claims.IssuedAt == nil || claims.Expiry.Time().Sub(claims.IssuedAt.Time()) > time.Minute {
		t.Errorf("actor token lives longer than a minute: iat %v exp %v", claims.IssuedAt, claims.Expiry)
	}
	if strings.Count(raw, ".") != 2 {
		t.Errorf("actor token is not a compact JWS")
	}
}
