package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// A session is never honoured for a verified identity other than its
// staff member's, and neither is its redeem link: opened with someone
// else's bearer token it is refused, sets no cookie, and is used up (it
// has been in someone else's hands), and the audit trail names who opened
// it. Opened anonymously, or with the staff member's own token, it
// redeems.
func TestRedeemByAnotherIdentity(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		t.Run("someone else's token", func(t *testing.T) {
			e := newEnv(t, mk)
			e.seed()
			started := e.must(e.start(e.agent(), nil), 201)
			link, id := started.str("redeem_url"), started.str("session", "id")
			mallory := e.as("mallory", "customer")
			r := e.do("GET", link, mallory, nil)
			if cookie := cookieOf(r); r.Status != http.StatusForbidden || cookie != "" {
				t.Fatalf("redeem with another's token: %d %s cookie=%q, want 403 and no cookie", r.Status, r.Raw, cookie)
			}
			if r.errCode() != sidecar.EFORBIDDEN || !strings.Contains(r.errMsg(), sidecar.ReasonRedeemActorMismatch) {
				t.Fatalf("refusal %s does not say why", r.Raw)
			}
			// Used up: the staff member's own browser cannot redeem it
			// either, and must start a new session.
			if r, cookie := e.redeem(link); r.Status != http.StatusUnauthorized || cookie != "" {
				t.Fatalf("link after a refused redeem: %d %s cookie=%q, want 401", r.Status, r.Raw, cookie)
			}
			got, err := e.store.GetSession(context.Background(), id)
			if err != nil || got.TokenHash != "" || !got.EndedAt.IsZero() {
				t.Fatalf("session after the refused redeem = %+v, %v: want it unredeemed and not ended", got, err)
			}
			audit, _, err := e.store.ReadAudit(context.Background(), sidecar.StreamFilter{Page: sidecar.Page{Limit: 100}})
			if err != nil {
				t.Fatal(err)
			}
			var redeems []sidecar.AuditEntry
			for _, a := range audit {
				if a.Action == "impersonation.redeem" {
					redeems = append(redeems, a)
				}
			}
			if len(redeems) != 1 {
				t.Fatalf("redeem audit entries = %+v, want one", redeems)
			}
			a := redeems[0]
			if a.Actor != "mallory" || a.Outcome != sidecar.EFORBIDDEN || a.Target != id || a.Customer != "c42" ||
				a.Data["session_actor"] != "alice" || a.Data["reason"] != sidecar.ReasonRedeemActorMismatch {
				t.Fatalf("audit entry = %+v, want mallory refused on alice's session %s", a, id)
			}
		})
		for _, tc := range []struct{ name, token string }{{"anonymous", ""}, {"the staff member's own token", "agent"}} {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, mk)
				e.seed()
				link := e.must(e.start(e.agent(), nil), 201).str("redeem_url")
				tok := ""
				if tc.token == "agent" {
					tok = e.agent()
				}
				r := e.do("GET", link, tok, nil)
				if cookie := cookieOf(r); r.Status != http.StatusFound || cookie == "" {
					t.Fatalf("redeem: %d %s cookie=%q, want 302 with the cookie", r.Status, r.Raw, cookie)
				}
				audit, _, err := e.store.ReadAudit(context.Background(), sidecar.StreamFilter{Page: sidecar.Page{Limit: 100}})
				if err != nil {
					t.Fatal(err)
				}
				var found bool
				for _, a := range audit {
					if a.Action == "impersonation.redeem" {
						found = a.Actor == "alice" && a.Outcome == "ok"
					}
				}
				if !found {
					t.Fatalf("no redeem by alice in the audit trail: %+v", audit)
				}
			})
		}
	})
}

// A redeem link opened with a credential Deputy refuses (a lapsed token
// the storefront browser still attaches, another issuer's, a malformed
// one) is refused 401 with the reason, as every other endpoint refuses
// it: read as no credential, it redeemed as anonymous, past the check
// that the opener is the staff member, and the audit named no one. The
// code is not spent: the staff member signs in again and opens it, or
// opens it without the token. A link that must be used up (its "?" sent
// encoded) is, whatever credential comes with it.
func TestRedeemWithRefusedCredential(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		for _, tc := range []struct{ name, reason string }{
			{"the staff member's expired token", identity.ReasonExpired},
			{"someone else's expired token", identity.ReasonExpired},
			{"a malformed token", identity.ReasonMalformed},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, mk)
				e.seed()
				link := e.must(e.start(e.agent(), nil), 201).str("redeem_url")
				tok := "not-a-token"
				if tc.reason == identity.ReasonExpired {
					sub := "alice"
					if strings.HasPrefix(tc.name, "someone") {
						sub = "bert"
					}
					var err error
					tok, err = e.dev.Mint(identity.DevClaims{Subject: sub, Roles: []string{"support_agent"}, TTL: time.Hour, IssuedAt: e.clock.Now().Add(-3 * time.Hour)})
					if err != nil {
						t.Fatal(err)
					}
				}
				r := e.do("GET", link, tok, nil)
				if cookie := cookieOf(r); r.Status != http.StatusUnauthorized || cookie != "" {
					t.Fatalf("redeem: %d %s cookie=%q, want 401 and no cookie", r.Status, r.Raw, cookie)
				}
				if r.errCode() != sidecar.EUNAUTHORIZED || !strings.Contains(r.errMsg(), tc.reason) {
					t.Fatalf("refusal %s does not say %s", r.Raw, tc.reason)
				}
				if r, cookie := e.redeem(link); r.Status != http.StatusFound || cookie == "" {
					t.Fatalf("the link opened again without the token: %d %s cookie=%q, want 302 with the cookie", r.Status, r.Raw, cookie)
				}
			})
		}
		t.Run("an encoded link", func(t *testing.T) {
			e := newEnv(t, mk)
			e.seed()
			link := e.must(e.start(e.agent(), nil), 201).str("redeem_url")
			if r := e.do("GET", strings.Replace(link, "?", "%3F", 1), "not-a-token", nil); r.Status != http.StatusBadRequest || r.errField() != "code" {
				t.Fatalf("encoded link with a malformed token: %d %s, want 400 on the code", r.Status, r.Raw)
			}
			if r, cookie := e.redeem(link); r.Status != http.StatusUnauthorized || cookie != "" {
				t.Fatalf("plain link after the encoded one: %d %s cookie=%q: the logged code is still valid", r.Status, r.Raw, cookie)
			}
		})
	})
}
