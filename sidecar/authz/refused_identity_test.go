package authz_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A session is never honoured for a request whose verified identity is
// someone other than its actor. A credential Deputy refuses, or one it
// does not read while the upstream does (Rails reads "Bearer<TAB>tok",
// Django REST framework splits on any white space, Laravel takes the text
// after the last "Bearer "), verifies nobody: decided as carrying no
// identity, the request was allowed as the session's staff member acting
// for the customer while the upstream signed in the credential's holder.
// Such a request is refused before any delegation is resolved: no session,
// grant or assignment applies, and no resolver runs.
func TestRefusedIdentityResolvesNoDelegation(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	store := memory.New()
	session := "refused-identity-session-0123456789abcdef0"
	if err := storetest.StartRedeemed(ctx, store, &sidecar.Session{ID: "imp_1", Actor: "staff-1", ActorRoles: []string{"support_agent"}, Customer: "cust-9",
		StartedAt: now, ExpiresAt: now.Add(time.Hour), Host: "shop.example.com"}, delegation.HashSecret(session)); err != nil {
		t.Fatal(err)
	}
	if err := store.PutGrant(ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "helpco", Level: sidecar.Level("update"), ExpiresAt: now.Add(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := store.PutAssignment(ctx, &sidecar.Assignment{Customer: "acme", Reseller: "resellco", Domain: "eu.resellco.example"}); err != nil {
		t.Fatal(err)
	}

	var resolved atomic.Int64
	p, mint := delegatedPipeline(t, store, func(r sidecar.DelegationResolver) sidecar.DelegationResolver {
		return sidecar.DelegationResolverFunc(func(ctx context.Context, req *sidecar.Request, id *sidecar.Identity) (*sidecar.Delegation, error) {
			resolved.Add(1)
			return r.Resolve(ctx, req, id)
		})
	})
	forger, _ := devVerifier(t)
	forged, err := forger.Mint(identity.DevClaims{Subject: "mallory", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}

	mallory := mint(identity.DevClaims{Subject: "mallory", TTL: time.Hour})
	staff := mint(identity.DevClaims{Subject: "staff-1", Roles: []string{"support_agent"}, TTL: time.Hour})
	expired := mint(identity.DevClaims{Subject: "mallory", TTL: time.Hour, IssuedAt: now.Add(-3 * time.Hour)})
	pat := identity.DevClaims{Subject: "pat", Org: "helpco", Roles: []string{"partner"}, TTL: time.Hour}
	rita := identity.DevClaims{Subject: "rita", Domain: "eu.resellco.example", Roles: []string{"reseller_admin"}, TTL: time.Hour}
	expiredPat, expiredRita := pat, rita
	expiredPat.IssuedAt, expiredRita.IssuedAt = now.Add(-3*time.Hour), now.Add(-3*time.Hour)

	const account, cases, cart = "/customer/account", "/customers/acme/service-requests/42", "/checkout/cart/add"
	cookie := "deputy_session=" + session
	for _, tc := range []struct {
		name    string
		path    string
		headers map[string]string
		fields  [][2]string // header_map entries
		body    string      // a form POST's
		allowed bool
		reason  string
	}{
		// What binds, for comparison.
		{name: "session alone", path: account, headers: map[string]string{"cookie": cookie}, allowed: true},
		{name: "session with its actor's token", path: account, headers: map[string]string{"cookie": cookie, "authorization": "Bearer " + staff}, allowed: true},
		{name: "session with another's token", path: account, headers: map[string]string{"cookie": cookie, "authorization": "Bearer " + mallory}, reason: "session_actor_mismatch"},
		{name: "session with basic credentials", path: account, headers: map[string]string{"cookie": cookie, "authorization": "Basic bWFsbG9yeTpzZWNyZXQ="}, allowed: true},

		// Bearer tokens Deputy reads no identity from, and upstreams do.
		{name: "tab after the scheme", path: account, headers: map[string]string{"cookie": cookie, "authorization": "Bearer\t" + mallory}, reason: "identity_refused"},
		{name: "no-break space after the scheme", path: account, headers: map[string]string{"cookie": cookie, "authorization": "Bearer\u00a0" + mallory}, reason: "identity_refused"},
		{name: "ideographic space after the scheme", path: account, headers: map[string]string{"cookie": cookie, "authorization": "Bearer\u3000" + mallory}, reason: "identity_refused"},
		{name: "colon after the scheme", path: account, headers: map[string]string{"cookie": cookie, "authorization": "bearer:" + mallory}, reason: "identity_refused"},
		{name: "two spaces after the scheme", path: account, headers: map[string]string{"cookie": cookie, "authorization": "Bearer  " + mallory}, reason: "identity_refused"},
		{name: "scheme upper case, tab", path: account, headers: map[string]string{"cookie": cookie, "authorization": "BEARER\t" + mallory}, reason: "identity_refused"},
		{name: "comma and more after the token", path: account, headers: map[string]string{"cookie": cookie, "authorization": "Bearer " + mallory + ",x"}, reason: "identity_refused"},
		{name: "a word after the token", path: account, headers: map[string]string{"cookie": cookie, "authorization": "Bearer " + mallory + " x"}, reason: "identity_refused"},
		{name: "a bearer after another scheme", path: account, headers: map[string]string{"cookie": cookie, "authorization": "Basic bWFsbG9yeTpzZWNyZXQ=, Bearer " + mallory}, reason: "identity_refused"},
		{name: "two authorization fields", path: account, headers: map[string]string{"cookie": cookie},
			fields: [][2]string{{"authorization", "Bearer " + staff}, {"authorization", "Bearer " + mallory}}, reason: "identity_refused"},
		{name: "the actor's own token after a tab", path: account, headers: map[string]string{"cookie": cookie, "authorization": "Bearer\t" + staff}, reason: "identity_refused"},

		// A compact JWS with no "Bearer" (Go's strings.TrimPrefix(h,
		// "Bearer "), passport-jwt, simplejwt's "JWT" scheme).
		{name: "bare token", path: account, headers: map[string]string{"cookie": cookie, "authorization": mallory}, reason: "identity_refused"},
		{name: "bare expired token", path: account, headers: map[string]string{"cookie": cookie, "authorization": expired}, reason: "identity_refused"},
		{name: "JWT scheme", path: account, headers: map[string]string{"cookie": cookie, "authorization": "JWT " + mallory}, reason: "identity_refused"},
		{name: "JWT scheme, expired token", path: account, headers: map[string]string{"cookie": cookie, "authorization": "JWT " + expired}, reason: "identity_refused"},
		{name: "partner token in the JWT scheme", path: cases, headers: map[string]string{"authorization": "JWT " + mint(pat), "x-on-behalf-of": "acme"}, reason: "identity_refused"},

		// A token in the query (RFC 6750 §2.3: Doorkeeper, Spring's
		// allowUriQueryParameter, passport-http-bearer; Doorkeeper also
		// reads bearer_token), under every spelling an upstream reads.
		{name: "access_token in the query", path: account + "?access_token=" + mallory, headers: map[string]string{"cookie": cookie}, reason: "identity_refused"},
		{name: "expired access_token in the query", path: account + "?access_token=" + expired, headers: map[string]string{"cookie": cookie}, reason: "identity_refused"},
		{name: "the actor's own access_token in the query, unverified", path: account + "?access_token=" + staff, headers: map[string]string{"cookie": cookie}, reason: "identity_refused"},
		{name: "the verified token again in the query", path: account + "?access_token=" + staff, headers: map[string]string{"cookie": cookie, "authorization": "Bearer " + staff}, allowed: true},
		{name: "bearer_token in the query", path: account + "?x=1&bearer_token=" + mallory, headers: map[string]string{"cookie": cookie}, reason: "identity_refused"},
		{name: "Access_Token in the query", path: account + "?Access_Token=" + mallory, headers: map[string]string{"cookie": cookie}, reason: "identity_refused"},
		{name: "escaped name in the query", path: account + "?access%5Ftoken=" + mallory, headers: map[string]string{"cookie": cookie}, reason: "identity_refused"},
		{name: "PHP spelling in the query", path: account + "?access.token=" + mallory, headers: map[string]string{"cookie": cookie}, reason: "identity_refused"},
		{name: "array spelling in the query", path: account + "?access_token[]=" + mallory, headers: map[string]string{"cookie": cookie}, reason: "identity_refused"},
		{name: "escaped value in the query", path: account + "?access_token=%65" + mallory[1:], headers: map[string]string{"cookie": cookie}, reason: "identity_refused"},
		{name: "repeated access_token in the query", path: account + "?access_token=x&access_token=" + mallory, headers: map[string]string{"cookie": cookie}, reason: "identity_refused"},
		{name: "access_token after a semicolon", path: account + "?x=1;access_token=" + mallory, headers: map[string]string{"cookie": cookie}, reason: "identity_refused"},
		{name: "partner with access_token in the query", path: cases + "?access_token=" + mint(pat), headers: map[string]string{"authorization": "Bearer " + mint(pat), "x-on-behalf-of": "acme"}, reason: "identity_refused"},
		{name: "session posting a form", path: cart, headers: map[string]string{"cookie": cookie, "content-type": "application/x-www-form-urlencoded"}, body: "product=42&qty=1", allowed: true},
		{name: "access_token in a form body", path: cart, headers: map[string]string{"cookie": cookie, "content-type": "application/x-www-form-urlencoded"}, body: "product=42&access_token=" + mallory, reason: "identity_refused"},
		{name: "escaped access_token in a form body", path: cart, headers: map[string]string{"cookie": cookie, "content-type": "Application/X-WWW-Form-Urlencoded; charset=utf-8"}, body: "Access%5FToken=" + mallory, reason: "identity_refused"},
		{name: "session with an unrelated query", path: account + "?token_type=x&access=eyJ", headers: map[string]string{"cookie": cookie}, allowed: true},
		{name: "session with an access_token that is no JWS", path: account + "?access_token=abc123", headers: map[string]string{"cookie": cookie}, allowed: true},

		// Tokens Deputy reads and refuses.
		{name: "session with an expired token", path: account, headers: map[string]string{"cookie": cookie, "authorization": "Bearer " + expired}, reason: "identity_refused"},
		{name: "session with a token of an unknown key", path: account, headers: map[string]string{"cookie": cookie, "authorization": "Bearer " + forged}, reason: "identity_refused"},
		{name: "partner with an expired token", path: cases, headers: map[string]string{"authorization": "Bearer " + mint(expiredPat), "x-on-behalf-of": "acme"}, reason: "identity_refused"},
		{name: "partner token after a tab", path: cases, headers: map[string]string{"authorization": "Bearer\t" + mint(pat), "x-on-behalf-of": "acme"}, reason: "identity_refused"},
		{name: "reseller with an expired token", path: "/support/cases", headers: map[string]string{"authorization": "Bearer " + mint(expiredRita), "x-on-behalf-of": "acme"}, reason: "identity_refused"},
		{name: "reseller token after a tab", path: "/support/cases", headers: map[string]string{"authorization": "Bearer\t" + mint(rita), "x-on-behalf-of": "acme"}, reason: "identity_refused"},
		{name: "partner acting", path: cases, headers: map[string]string{"authorization": "Bearer " + mint(pat), "x-on-behalf-of": "acme"}, allowed: true},
		{name: "reseller acting", path: "/support/cases", headers: map[string]string{"authorization": "Bearer " + mint(rita), "x-on-behalf-of": "acme"}, allowed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{":authority": "shop.example.com"}
			for k, v := range tc.headers {
				h[k] = v
			}
			req := withHeaders(t, tc.path, h)
			req.Attributes.Request.Http.Host = "shop.example.com"
			addHeaderFields(req, tc.fields)
			if tc.body != "" {
				req.Attributes.Request.Http.Method, req.Attributes.Request.Http.Headers[":method"], req.Attributes.Request.Http.Body = "POST", "POST", tc.body
				req.Attributes.Request.Http.Headers["content-length"] = strconv.Itoa(len(tc.body))
			}
			before := resolved.Load()
			resp := p.Check(ctx, req)
			if resp.Allowed != tc.allowed || (!tc.allowed && resp.Reason != tc.reason) {
				t.Fatalf("allowed %v reason %q, want allowed %v reason %q", resp.Allowed, resp.Reason, tc.allowed, tc.reason)
			}
			if tc.reason == "identity_refused" {
				if resp.HTTPStatus != 401 {
					t.Errorf("status %d, want 401", resp.HTTPStatus)
				}
				if n := resolved.Load() - before; n != 0 {
					t.Errorf("%d delegation resolvers ran for a refused credential, want none", n)
				}
			}
		})
	}
}
