package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/api"
)

// The events stream and the audit trail are readable, filtered and
// paginated, by the roles data grants it to, on both stores.
func TestEventsAndAudit(t *testing.T) {
	for name, mk := range stores {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, mk)
			e.handler = api.New(api.WithVerifier(e.idv), api.WithEngine(e.engine), api.WithClock(e.clock.Now),
				api.WithRoutes(api.NewImpersonation(e.svc), api.NewStreams(e.store)))
			e.must(e.do("PUT", "/deputy/v1/customers/c42", e.admin(), map[string]any{"name": "Cy"}), 200)
			e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": true}), 200)
			e.must(e.do("POST", "/deputy/v1/impersonation/sessions", e.agent(), map[string]any{"customer_id": "c42", "reason": "r"}), 201)

			mailer, auditor := e.as("mail", "mailer"), e.as("aud", "auditor")
			evs := e.must(e.do("GET", "/deputy/v1/events?customer=c42&type=impersonation.started", mailer, nil), 200)
			if items := evs.Body["items"].([]any); len(items) != 1 || items[0].(map[string]any)["actor"] != "alice" {
				t.Fatalf("events = %s", evs.Raw)
			}
			all := e.must(e.do("GET", "/deputy/v1/audit?customer=c42&limit=2", auditor, nil), 200)
			if items := all.Body["items"].([]any); len(items) != 2 || all.str("next_cursor") == "" {
				t.Fatalf("audit page = %s", all.Raw)
			}
			rest := e.must(e.do("GET", "/deputy/v1/audit?customer=c42&limit=2&cursor="+all.str("next_cursor"), auditor, nil), 200)
			if items := rest.Body["items"].([]any); len(items) != 1 {
				t.Fatalf("second audit page = %s", rest.Raw)
			}
			// The customer's own consent is a self-service record, kept
			// apart from staff actions yet paged with them in order.
			var trail []string
			for _, page := range []response{all, rest} {
				for _, it := range page.Body["items"].([]any) {
					item := it.(map[string]any)
					trail = append(trail, fmt.Sprint(item["action"], " ", item["self_service"] == true))
				}
			}
			if got := strings.Join(trail, ", "); got != "customer.put false, consent.set true, impersonation.start false" {
				t.Fatalf("audit trail = %s", got)
			}
			none := e.must(e.do("GET", "/deputy/v1/audit?customer=nobody", auditor, nil), 200)
			if items := none.Body["items"].([]any); len(items) != 0 {
				t.Fatalf("audit for nobody = %s", none.Raw)
			}

			e.must(e.do("GET", "/deputy/v1/audit", mailer, nil), 403)
			e.must(e.do("GET", "/deputy/v1/events", e.agent(), nil), 403)
			e.must(e.do("GET", "/deputy/v1/events", "", nil), 401)
			e.must(e.do("GET", "/deputy/v1/audit?from=yesterday", auditor, nil), 400)
			e.must(e.do("GET", "/deputy/v1/audit?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", auditor, nil), 400)
		})
	}
}

// A customer's own consent changes are budgeted in the store, as policy
// data sets: past max_consent_changes in consent_change_window, giving
// consent answers 429 rate_limited with Retry-After, while withdrawing it
// still works.
func TestOwnConsentBudget(t *testing.T) {
	for name, mk := range stores {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, mk)
			e.seed()
			sw, err := e.svc.Switches()
			if err != nil {
				t.Fatal(err)
			}
			put := func(allowed bool) response {
				return e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": allowed})
			}
			e.must(put(false), 200) // seed gave it once
			for i := range sw.MaxConsentChanges - 1 {
				e.must(put(true), 200)
				e.must(put(false), 200)
				if i == 0 {
					e.clock.Advance(time.Minute)
				}
			}
			r := put(true)
			if r.Status != 429 || r.errCode() != "rate_limited" {
				t.Fatalf("giving consent past the budget: %d %s", r.Status, r.Raw)
			}
			if got, want := r.Header.Get("Retry-After"), fmt.Sprint(int((sw.ConsentChangeWindow - time.Minute).Seconds())); got != want {
				t.Fatalf("Retry-After = %q, want %q", got, want)
			}
			e.must(put(false), 200)
		})
	}
}

// A withdrawal carries no expiry: one given is refused, naming the field.
// Were it taken, each new expiry would make the same withdrawal a change,
// escaping both the unchanged-write dedupe and the consent budget (which
// never refuses a withdrawal), and every call would write an event and an
// audit record.
func TestWithdrawalTakesNoExpiry(t *testing.T) {
	for name, mk := range stores {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, mk)
			e.seed()
			ctx := context.Background()
			written := func() int {
				evs, _, err := e.store.ReadEvents(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: 500}})
				if err != nil {
					t.Fatal(err)
				}
				au, _, err := e.store.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: 500}})
				if err != nil {
					t.Fatal(err)
				}
				return len(evs) + len(au)
			}
			e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": false}), 200)
			before := written()
			for i := range 5 {
				exp := e.clock.Now().Add(time.Duration(i+1) * time.Hour).UTC().Format(time.RFC3339)
				for _, who := range []string{e.customer(), e.admin()} {
					r := e.do("PUT", "/deputy/v1/customers/c42/consent", who, map[string]any{"allowed": false, "expires_at": exp})
					if r.Status != 400 || r.errField() != "expires_at" {
						t.Fatalf("withdrawal with expires_at %s: %d %s", exp, r.Status, r.Raw)
					}
				}
				e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": false}), 200)
			}
			if got := written(); got != before {
				t.Fatalf("repeated withdrawals wrote %d events and audit records", got-before)
			}
		})
	}
}
