package api_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// A live session ends, and its next request is denied, when the account it
// impersonates becomes protected through the API: its profile synced as
// protected or with a protected role, or its own subject acting with a
// staff permission. The session log and the events stream say why, as
// for a consent withdrawal.
func TestProtectionEndsLiveSessions(t *testing.T) {
	cases := []struct {
		name    string
		protect func(e *env)
		by      string
	}{
		{"profile_protected", func(e *env) {
			e.must(e.do("PUT", "/deputy/v1/customers/c42", e.admin(), map[string]any{"default_store_view": "default", "protected": true}), 200)
		}, "ada"},
		{"profile_roles_admin", func(e *env) {
			e.must(e.do("PUT", "/deputy/v1/customers/c42", e.admin(), map[string]any{"default_store_view": "default", "roles": []string{"admin"}}), 200)
		}, "ada"},
		{"customer_acts_as_staff", func(e *env) {
			// c42's own token, with a staff role: listing its own sessions
			// is a staff action, so Deputy now knows c42 as staff.
			e.must(e.do("GET", "/deputy/v1/impersonation/sessions?actor=c42", e.as("c42", "support_agent"), nil), 200)
		}, sidecar.SweepActor},
	}
	eachStore(t, func(t *testing.T, mk storeFactory) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, mk)
				e.seed()
				id, cookie := e.live(e.agent())
				if _, err := e.check(cookie); err != nil {
					t.Fatal(err)
				}
				tc.protect(e)
				e.denied(cookie, "session_customer_protected")

				e.endedAs(id, sidecar.EndCustomerProtected, tc.by)
				// And the account stays out of reach.
				r := e.start(e.agent(), nil)
				if r.Status != 403 || r.errMsg() != "customer_protected" {
					t.Fatalf("start after: %d %s", r.Status, r.Raw)
				}
			})
		}
		// A customer acting for themselves is not staff: its session lives on.
		t.Run("customer_self_service_is_not_staff", func(t *testing.T) {
			e := newEnv(t, mk)
			e.seed()
			_, cookie := e.live(e.agent())
			e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": true}), 200)
			e.must(e.do("GET", "/deputy/v1/customers/c42/consent", e.customer(), nil), 200)
			if d, err := e.check(cookie); err != nil || d == nil || d.SubjectProtected {
				t.Fatalf("after self-service: %+v, %v", d, err)
			}
		})
	})
}

// Deleting a customer's profile through the API ends its live session
// (state customer_deleted, by the caller) and the next request with the
// cookie is denied; only a caller with manage_customers may, and a second
// DELETE of the absent profile answers as the first (idempotent).
func TestDeleteCustomerEndsLiveSessions(t *testing.T) {
	e := newEnv(t, memoryStore)
	e.seed()
	id, cookie := e.live(e.agent())
	if _, err := e.check(cookie); err != nil {
		t.Fatal(err)
	}

	// An agent may end its own session but not delete the account.
	if r := e.do("DELETE", "/deputy/v1/customers/c42", e.agent(), nil); r.Status != 403 {
		t.Fatalf("agent delete: %d %s", r.Status, r.Raw)
	}
	if d, err := e.check(cookie); err != nil || d == nil {
		t.Fatalf("after a refused delete: %+v, %v", d, err)
	}

	e.must(e.do("DELETE", "/deputy/v1/customers/c42", e.admin(), nil), 204)
	e.denied(cookie, "session_"+sidecar.EndCustomerDeleted)

	e.endedAs(id, sidecar.EndCustomerDeleted, "ada")

	// Gone, and no new session starts without a profile.
	e.must(e.do("DELETE", "/deputy/v1/customers/c42", e.admin(), nil), 204)
	if r := e.start(e.agent(), nil); r.Status != 404 || r.errMsg() != "customer_not_found" {
		t.Fatalf("start after delete: %d %s", r.Status, r.Raw)
	}
}

// endedAs checks that c42's one session, id, is in the session log as
// ended by by for reason, with one impersonation.ended event saying so.
func (e *env) endedAs(id, reason, by string) {
	e.t.Helper()
	log := e.must(e.do("GET", "/deputy/v1/impersonation/log?customer_id=c42", e.lead(), nil), 200)
	items, _ := log.Body["items"].([]any)
	if len(items) != 1 {
		e.t.Fatalf("session log: %s", log.Raw)
	}
	s := items[0].(map[string]any)
	if s["id"] != id || s["state"] != reason || s["ended_by"] != by {
		e.t.Fatalf("session log entry: %v", s)
	}
	events, _, err := e.store.ReadEvents(context.Background(), sidecar.StreamFilter{Type: sidecar.EventImpersonationEnded, Customer: "c42"})
	if err != nil {
		e.t.Fatal(err)
	}
	if len(events) != 1 || events[0].Data["session"] != id || events[0].Data["end_reason"] != reason {
		e.t.Fatalf("impersonation.ended events: %+v", events)
	}
}

// Deleting a customer withdraws its consent in the same step: a profile
// synced later under the same id (a re-registered account, a reused id, a
// stale sync re-creating the deleted one) cannot be impersonated on a
// consent nobody gave for it. The history keeps the customer's own consent
// and records the withdrawal by whoever deleted the profile.
func TestDeleteCustomerWithdrawsConsent(t *testing.T) {
	for name, mk := range map[string]func(*testing.T, sidecar.Clock) sidecar.Store{"memory": memoryStore, "redis": redisStore} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, mk)
			e.seed() // c42's profile and its own consent
			e.must(e.do("DELETE", "/deputy/v1/customers/c42", e.admin(), nil), 204)
			e.must(e.do("PUT", "/deputy/v1/customers/c42", e.admin(), map[string]any{
				"name": "Someone Else", "default_store_view": "default",
			}), 200)

			if r := e.start(e.agent(), nil); r.Status != 403 {
				t.Errorf("start on the re-created c42: %d %s, want 403 for want of consent", r.Status, r.Raw)
			}
			if r := e.must(e.do("GET", "/deputy/v1/customers/c42/consent", e.agent(), nil), 200); r.Body["allowed"] != false {
				t.Errorf("consent of the re-created c42: %s, want allowed false", r.Raw)
			}
			h := e.must(e.do("GET", "/deputy/v1/customers/c42/consent/history", e.lead(), nil), 200)
			items, _ := h.Body["items"].([]any)
			if len(items) != 2 {
				t.Fatalf("consent history: %s, want the withdrawal and the customer's consent", h.Raw)
			}
			withdrawn, given := items[0].(map[string]any), items[1].(map[string]any)
			if withdrawn["allowed"] != false || withdrawn["set_by"] != "ada" || given["allowed"] != true || given["set_by"] != "c42" {
				t.Errorf("consent history: %s, want the withdrawal by ada over c42's own consent", h.Raw)
			}
		})
	}
}

// A live session on one spelling of an id is judged protected once
// another spelling is (its profile's flag or roles, or its subject acting
// as staff): to an upstream that reads ids without regard to case they
// are one account. The session's customer cache is evicted by the folded
// id, so on Redis the change reaches this replica through pub/sub.
func TestProtectionOfAnotherSpellingReachesLiveSessions(t *testing.T) {
	cases := []struct {
		name    string
		protect func(e *env)
		roles   bool   // judged by its roles rather than the flag
		session string // the spelling the session is on; C42 unless set
	}{
		{"profile_protected", func(e *env) {
			e.must(e.do("PUT", "/deputy/v1/customers/c42", e.admin(), map[string]any{"default_store_view": "default", "protected": true}), 200)
		}, false, ""},
		{"profile_roles_admin", func(e *env) {
			e.must(e.do("PUT", "/deputy/v1/customers/c42", e.admin(), map[string]any{"default_store_view": "default", "roles": []string{"admin"}}), 200)
		}, true, ""},
		{"customer_acts_as_staff", func(e *env) {
			e.must(e.do("GET", "/deputy/v1/impersonation/sessions?actor=c42", e.as("c42", "support_agent"), nil), 200)
		}, false, ""},
		// The other way round: the capitals protected, the session on c42.
		{"capitals_profile_protected", func(e *env) {
			e.must(e.do("PUT", "/deputy/v1/customers/C42", e.admin(), map[string]any{"default_store_view": "default", "protected": true}), 200)
		}, false, "c42"},
	}
	eachStore(t, func(t *testing.T, mk storeFactory) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, mk)
				e.seed()
				on := "C42"
				if tc.session != "" {
					on = tc.session
				}
				e.must(e.do("PUT", "/deputy/v1/customers/"+on, e.admin(), map[string]any{"default_store_view": "default"}), 200)
				e.must(e.do("PUT", "/deputy/v1/customers/"+on+"/consent", e.lead(), map[string]any{"allowed": true}), 200)
				st := e.must(e.start(e.agent(), map[string]any{"customer_id": on}), 201)
				_, cookie := e.redeem(st.str("redeem_url"))
				if d, err := e.check(cookie); err != nil || d == nil || d.SubjectProtected || slices.Contains(d.SubjectRoles, "admin") {
					t.Fatalf("before: %+v, %v", d, err)
				}
				tc.protect(e)
				eventually(t, 2*time.Second, func() string {
					d, err := e.check(cookie)
					switch {
					case err != nil || d == nil:
						return fmt.Sprintf("check = %+v, %v", d, err)
					case tc.roles && !slices.Contains(d.SubjectRoles, "admin"):
						return fmt.Sprintf("roles %v, want admin among them", d.SubjectRoles)
					case !tc.roles && !d.SubjectProtected:
						return "not protected"
					}
					return ""
				})
			})
		}
	})
}
