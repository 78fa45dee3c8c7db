package authz_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A session cookie is honoured only on the host it was redeemed on and
// only for its own actor; a denied request whose cookie names nothing
// live is told to drop it.
func TestSessionCookieBinding(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	store := memory.New()
	live, ended := twoSessions(t, store, now)
	p, mint := delegatedPipeline(t, store)
	cases := []struct {
		name    string
		host    string
		cookie  string
		bearer  string // subject of a bearer token, if any
		allowed bool
		reason  string
		clears  bool
	}{
		{"on_its_host", "shop.example.com", live, "", true, "", false},
		{"its_host_with_a_port", "shop.example.com:443", live, "", true, "", false},
		{"its_host_in_capitals_with_a_trailing_dot", "SHOP.Example.com.:8443", live, "", true, "", false},
		{"its_own_actor_signed_in", "shop.example.com", live, "staff-1", true, "", false},
		{"another_host", "evil.example.net", live, "", false, "session_wrong_host", false},
		{"someone_elses_identity", "shop.example.com", live, "staff-2", false, "session_actor_mismatch", false},
		{"unknown_cookie", "shop.example.com", strings.Repeat("u", 43), "", false, "session_unknown", true},
		{"ended_session", "shop.example.com", ended, "", false, "session_ended", true},
		// Forms no browser sends, which the proxy and the application may
		// read as another host (Rails and werkzeug's ProxyFix take the last
		// comma-separated value): refused before policy, never read as the
		// session's host.
		{"comma_after_a_port", "shop.example.com:1,evil.example.net", live, "", false, "malformed_request", false},
		{"comma_after_an_empty_port", "shop.example.com:,evil.example.net", live, "", false, "malformed_request", false},
		{"comma", "shop.example.com,evil.example.net", live, "", false, "malformed_request", false},
		{"space_after_the_port", "shop.example.com:80 evil.example.net", live, "", false, "malformed_request", false},
		{"semicolon", "shop.example.com:1;evil.example.net", live, "", false, "malformed_request", false},
		{"empty_port", "shop.example.com:", live, "", false, "malformed_request", false},
		{"port_out_of_range", "shop.example.com:65536", live, "", false, "malformed_request", false},
		{"two_ports", "shop.example.com:80:81", live, "", false, "malformed_request", false},
		{"two_trailing_dots", "shop.example.com..", live, "", false, "malformed_request", false},
		// A name with "_" (Docker Compose service names hold it) is a
		// host, another one than the session's.
		{"underscore", "shop_example.com", live, "", false, "session_wrong_host", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"cookie": "cart=abc123; deputy_session=" + tc.cookie, ":authority": tc.host}
			if tc.bearer != "" {
				h["authorization"] = "Bearer " + mint(identity.DevClaims{Subject: tc.bearer, Roles: []string{"support_agent"}, TTL: time.Hour})
			}
			req := withHeaders(t, "/customer/account", h)
			req.Attributes.Request.Http.Host = tc.host
			resp := p.Check(ctx, req)
			if resp.Allowed != tc.allowed || (!tc.allowed && resp.Reason != tc.reason) {
				t.Fatalf("allowed %v reason %q, want %v %q", resp.Allowed, resp.Reason, tc.allowed, tc.reason)
			}
			if tc.reason == authz.ReasonMalformedRequest && (resp.HTTPStatus != http.StatusBadRequest || len(resp.Injected) > 0) {
				t.Fatalf("status %d, injected %v: want 400 and no delegated identity", resp.HTTPStatus, resp.Injected)
			}
			var setCookie string
			for _, hd := range resp.Headers {
				if hd.Key == "set-cookie" {
					setCookie = hd.Value
				}
			}
			switch {
			case tc.clears && !strings.HasPrefix(setCookie, "deputy_session=;") || tc.clears && !strings.Contains(setCookie, "Max-Age=0"):
				t.Fatalf("denial does not clear the cookie: %q", setCookie)
			case !tc.clears && setCookie != "":
				t.Fatalf("cookie cleared on %s: %q", tc.name, setCookie)
			}
		})
	}
}

// Envoy names the host twice, in the check's host and in its :authority
// header, both from the same header: a policy may read either, so a check
// whose two disagree, or whose :authority is not a host, is refused before
// policy rather than decided on one of them.
func TestHostNamedTwiceMustAgree(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	live, _ := twoSessions(t, store, time.Now())
	p, _ := delegatedPipeline(t, store)
	for _, tc := range []struct{ name, host, authority, reason string }{
		{"same", "shop.example.com", "shop.example.com", ""},
		{"same_up_to_case", "shop.example.com", "Shop.Example.com", ""},
		{"authority_names_another_host", "shop.example.com", "evil.example.net", "malformed_request"},
		{"authority_with_a_comma", "shop.example.com", "shop.example.com:1,evil.example.net", "malformed_request"},
		{"only_an_authority_with_a_comma", "", "shop.example.com:1,evil.example.net", "malformed_request"},
		{"only_an_authority", "", "shop.example.com", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := withHeaders(t, "/customer/account", map[string]string{"cookie": "deputy_session=" + live, ":authority": tc.authority})
			req.Attributes.Request.Http.Host = tc.host
			resp := p.Check(ctx, req)
			if tc.reason == "" {
				if !resp.Allowed {
					t.Fatalf("denied %q (%d)", resp.Reason, resp.HTTPStatus)
				}
				return
			}
			if resp.Allowed || resp.Reason != tc.reason || resp.HTTPStatus != http.StatusBadRequest {
				t.Fatalf("allowed %v reason %q status %d, want refused %q with 400", resp.Allowed, resp.Reason, resp.HTTPStatus, tc.reason)
			}
		})
	}
}

// A session cookie that is refused (dead, or not its holder's) decides the
// request: it is reported and, when dead, cleared; the request is never
// decided instead on a delegation some other carrier names.
func TestRefusedSessionIsNotMixedWithOnBehalfOf(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	store := memory.New()
	live, ended := twoSessions(t, store, now)
	if err := store.PutGrant(ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "helpco", Level: sidecar.Level("update"), ExpiresAt: now.Add(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	p, mint := delegatedPipeline(t, store)
	partner := "Bearer " + mint(identity.DevClaims{Subject: "pat", Org: "helpco", Roles: []string{"partner"}, TTL: time.Hour})
	path := "/customers/acme/service-requests/42"
	base := map[string]string{"authorization": partner, "x-on-behalf-of": "acme"}
	if resp := p.Check(ctx, withHeaders(t, path, base)); !resp.Allowed {
		t.Fatalf("the grant alone is refused: %s", resp.Reason)
	}
	for _, tc := range []struct {
		name, cookie, host, reason string
		clears                     bool
	}{
		{"ended session", ended, "shop.example.com", "session_ended", true},
		{"unknown session", strings.Repeat("u", 43), "shop.example.com", "session_unknown", true},
		{"session of another actor", live, "shop.example.com", "session_actor_mismatch", false},
		{"session on another host", live, "portal.example.com", "session_wrong_host", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"cookie": "deputy_session=" + tc.cookie, ":authority": tc.host}
			for k, v := range base {
				h[k] = v
			}
			req := withHeaders(t, path, h)
			req.Attributes.Request.Http.Host = tc.host
			resp := p.Check(ctx, req)
			if resp.Allowed || resp.Reason != tc.reason {
				t.Fatalf("allowed %v reason %q, want denied %q", resp.Allowed, resp.Reason, tc.reason)
			}
			var cleared bool
			for _, hd := range resp.Headers {
				cleared = cleared || hd.Key == "set-cookie" && strings.HasPrefix(hd.Value, "deputy_session=;")
			}
			if cleared != tc.clears {
				t.Fatalf("cookie cleared %v, want %v: %v", cleared, tc.clears, resp.Headers)
			}
		})
	}
}

// twoSessions stores two redeemed sessions of staff-1 on shop.example.com,
// one live and one ended, and returns their cookie tokens.
func twoSessions(t *testing.T, store sidecar.Store, now time.Time) (live, ended string) {
	t.Helper()
	ctx := context.Background()
	live, ended = "live-session-token-0123456789abcdef0123456", "ended-session-token-0123456789abcdef012345"
	for id, tok := range map[string]string{"imp_live": live, "imp_ended": ended} {
		s := &sidecar.Session{ID: id, Actor: "staff-1", ActorRoles: []string{"support_agent"}, Customer: "cust-" + id, StartedAt: now, ExpiresAt: now.Add(time.Hour), Host: "shop.example.com"}
		if err := storetest.StartRedeemed(ctx, store, s, delegation.HashSecret(tok)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.EndSession(ctx, "imp_ended", "staff-1", sidecar.EndEnded, now, sidecar.SessionLimits{}); err != nil {
		t.Fatal(err)
	}
	return live, ended
}
