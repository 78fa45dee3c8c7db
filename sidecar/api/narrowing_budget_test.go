package api_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/api"
)

// spendWriteBudget uses up the caller's management write budget with
// writes that widen (or would: their bodies do not parse, refused after
// the budget is taken) until one is refused for it. The caller may have
// spent part of it already; a burst and one more must see the refusal.
func spendWriteBudget(t *testing.T, write func() (int, string)) {
	t.Helper()
	for range api.DefaultWriteBurst + 1 {
		if status, _ := write(); status == 429 {
			return
		}
	}
	t.Fatalf("%d writes, none refused for the budget", api.DefaultWriteBurst+1)
}

// A write that narrows access takes effect at once, whatever the caller
// wrote before: a session ended, consent withdrawn or a customer deleted
// past the caller's write budget goes through, and the session is refused
// at its next request. What widens is still refused past the budget, and
// so is a narrowing that finds nothing left to narrow (it publishes an
// eviction to every replica and records again, and could be repeated
// without end). The test clock stands still: nothing refills the bucket.
func TestNarrowingWritesPastTheWriteBudget(t *testing.T) {
	cases := []struct {
		name   string
		caller func(e *env) string
		narrow func(e *env, token, session string) response
		status int
		reason string // the session's refusal at its next request
		widen  func(e *env, token string) response
	}{
		{
			name:   "the agent ends the session",
			caller: (*env).agent,
			narrow: func(e *env, tok, id string) response {
				return e.do("DELETE", "/deputy/v1/impersonation/sessions/"+id, tok, nil)
			},
			status: 200, reason: "session_ended",
			widen: func(e *env, tok string) response { return e.start(tok, nil) },
		},
		{
			name:   "an admin revokes the session",
			caller: (*env).admin,
			narrow: func(e *env, tok, id string) response {
				return e.do("DELETE", "/deputy/v1/impersonation/sessions/"+id, tok, nil)
			},
			status: 200, reason: "session_revoked",
			widen: func(e *env, tok string) response { return e.start(tok, nil) },
		},
		{
			name:   "the customer ends the session",
			caller: (*env).customer,
			narrow: func(e *env, tok, id string) response {
				return e.do("DELETE", "/deputy/v1/impersonation/sessions/"+id, tok, nil)
			},
			status: 204, reason: "session_revoked",
			widen: func(e *env, tok string) response { // a consent given for longer
				return e.do("PUT", "/deputy/v1/customers/c42/consent", tok, map[string]any{"allowed": true, "expires_at": e.clock.Now().Add(48 * time.Hour).Format(time.RFC3339)})
			},
		},
		{
			name:   "the customer withdraws consent",
			caller: (*env).customer,
			narrow: func(e *env, tok, _ string) response {
				return e.do("PUT", "/deputy/v1/customers/c42/consent", tok, map[string]any{"allowed": false})
			},
			status: 200, reason: "session_consent_withdrawn",
			widen: func(e *env, tok string) response {
				return e.do("PUT", "/deputy/v1/customers/c42/consent", tok, map[string]any{"allowed": true})
			},
		},
		{
			name:   "the sync job deletes the customer",
			caller: (*env).admin,
			narrow: func(e *env, tok, _ string) response {
				return e.do("DELETE", "/deputy/v1/customers/c42", tok, nil)
			},
			status: 204, reason: "session_customer_deleted",
			widen: func(e *env, tok string) response {
				return e.do("PUT", "/deputy/v1/customers/c43", tok, map[string]any{"name": "New"})
			},
		},
	}
	eachStore(t, func(t *testing.T, mk storeFactory) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, mk)
				e.seed()
				id, cookie := e.live(e.agent())
				if _, err := e.check(cookie); err != nil { // now cached
					t.Fatal(err)
				}
				tok := tc.caller(e)
				spendWriteBudget(t, func() (int, string) {
					r := e.do("POST", "/deputy/v1/impersonation/sessions", tok, `{"customer_id":`)
					return r.Status, r.Raw
				})
				e.must(tc.narrow(e, tok, id), tc.status)
				e.denied(cookie, tc.reason)
				if r := tc.widen(e, tok); r.Status != 429 || r.errCode() != "rate_limited" {
					t.Fatalf("widening write past the budget: %d %s, want 429", r.Status, r.Raw)
				}
				if r := tc.narrow(e, tok, id); r.Status != 429 {
					t.Fatalf("narrowing again, with nothing left to narrow: %d %s, want 429", r.Status, r.Raw)
				}
			})
		}
	})
}

// The same for partner and reseller access: past the contact manager's
// write budget, revoking a grant, rejecting a request and withdrawing a
// share go through, and the partner is refused at its next request; an
// approval is refused, and so is revoking the grant again.
func TestPartnerNarrowingWritesPastTheWriteBudget(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			grantID := p.grant(accessBody("update", 30, "organisation"))
			pending := p.request(accessBody("look", 30, "organisation"))
			other := p.request(accessBody("create", 30, "organisation"))
			p.must(p.call("PUT", "partner/shares/acme/pat/sr-1", p.cora(), map[string]any{"partner_org": "partnerco"}), 200)
			if ok, why := p.check(paulClaims, "GET", "/service-requests/sr-1", nil); !ok {
				t.Fatalf("before: refused, %s", why)
			}
			cora := p.cora()
			spendWriteBudget(t, func() (int, string) {
				r := p.call("POST", "partner/requests", cora, `{"customer":`)
				return r.status, r.raw
			})

			p.must(p.call("DELETE", "partner/grants/acme/"+grantID, cora, nil), 204)
			if ok, why := p.check(paulClaims, "GET", "/service-requests/sr-1", nil); ok || why != "no_live_grant" {
				t.Fatalf("after revocation: allowed=%v reason=%q", ok, why)
			}
			if r := p.must(p.call("POST", "partner/requests/"+pending+"/reject", cora, nil), 200); r.str("request", "status") != "rejected" {
				t.Fatalf("rejected = %s", r.raw)
			}
			p.must(p.call("DELETE", "partner/shares/acme/pat/sr-1", cora, nil), 204)
			if l := p.must(p.call("GET", "partner/shares/acme", cora, nil), 200).items(); len(l) != 0 {
				t.Fatalf("shares after withdrawal = %v", l)
			}

			if r := p.call("POST", "partner/requests/"+other+"/approve", cora, nil); r.status != 429 || r.code() != "rate_limited" {
				t.Fatalf("approval past the budget: %d %s, want 429", r.status, r.raw)
			}
			if r := p.call("DELETE", "partner/grants/acme/"+grantID, cora, nil); r.status != 429 {
				t.Fatalf("revoking again past the budget: %d %s, want 429", r.status, r.raw)
			}
			if r := p.call("DELETE", "partner/shares/acme/pat/sr-1", cora, nil); r.status != 429 {
				t.Fatalf("withdrawing the share again past the budget: %d %s, want 429", r.status, r.raw)
			}
		})
	}
}

// A reseller super admin past the write budget still removes a customer
// from its domain, and the domain's staff lose it at once; assigning one is
// refused, and so is a removal that finds nothing to remove.
func TestResellerNarrowingWritesPastTheWriteBudget(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			seedDomains(t, p)
			if ok, why := p.check(ritaClaims, "GET", "/cases", nil); !ok {
				t.Fatalf("before: refused, %s", why)
			}
			sam := p.tok(samClaims)
			spendWriteBudget(t, func() (int, string) {
				r := p.call("PUT", "reseller/assignments/initech", sam, `{"domain":`)
				return r.status, r.raw
			})
			p.must(p.call("DELETE", "reseller/assignments/acme", sam, nil), 204)
			if ok, why := p.check(ritaClaims, "GET", "/cases", nil); ok {
				t.Fatalf("after removal: allowed, %s", why)
			}
			if r := p.call("PUT", "reseller/assignments/initech", sam, map[string]any{}); r.status != 429 {
				t.Fatalf("assignment past the budget: %d %s, want 429", r.status, r.raw)
			}
			for _, c := range []string{"acme", "globex"} { // gone; another domain's
				if r := p.call("DELETE", "reseller/assignments/"+c, sam, nil); r.status != 429 {
					t.Fatalf("removing %s, nothing to remove, past the budget: %d %s, want 429", c, r.status, r.raw)
				}
			}
		})
	}
}

// A narrowing that narrows something counts nothing: a sync job deleting
// more closed accounts than its burst has its whole budget left after.
func TestNarrowingWritesCountNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		e := newEnv(t, mk)
		n := api.DefaultWriteBurst + 10
		for i := range n {
			if _, err := e.store.PutCustomer(context.Background(), &sidecar.Customer{ID: fmt.Sprintf("closed-%d", i)}, sidecar.Protection{}); err != nil {
				t.Fatal(err)
			}
		}
		admin := e.admin()
		for i := range n {
			e.must(e.do("DELETE", fmt.Sprintf("/deputy/v1/customers/closed-%d", i), admin, nil), 204)
		}
		for i := range api.DefaultWriteBurst {
			e.must(e.do("PUT", fmt.Sprintf("/deputy/v1/customers/open-%d", i), admin, map[string]any{"name": "Open"}), 200)
		}
		if r := e.do("PUT", "/deputy/v1/customers/open-x", admin, map[string]any{"name": "Open"}); r.Status != 429 {
			t.Fatalf("write past the burst: %d %s, want 429", r.Status, r.Raw)
		}
	})
}
