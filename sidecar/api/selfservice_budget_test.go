package api_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// TestSelfServiceBudget: what an organisation does for itself and that
// widens access (sharing a resource, asking for access) writes the
// self-service audit stream, which trims its oldest records; every
// organisation may do so max_self_service_changes times per
// self_service_change_window (partner policy data), counted in the store,
// and is then refused 429 with Retry-After, with nothing written. What
// narrows (withdrawing a share, rejecting, revoking) is never refused.
func TestSelfServiceBudget(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			limit, window := selfServiceBudget(t, p)
			ctx := context.Background()
			selfRecords := func() int {
				t.Helper()
				audit, _, err := p.store.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				for _, a := range audit {
					if a.SelfService {
						n++
					}
				}
				return n
			}
			share := func(i int) pres {
				r := p.call("PUT", fmt.Sprintf("partner/shares/acme/pat/sr-%d", i), p.cora(), map[string]any{"partner_org": "partnerco"})
				p.advance(2 * time.Second) // within cora's own write budget
				return r
			}
			start := p.clock()
			for i := range limit {
				p.must(share(i), 200)
			}
			before := selfRecords()
			over := share(limit)
			if over.status != 429 || over.code() != "rate_limited" || over.header.Get("Retry-After") == "" {
				t.Fatalf("share %d in the window: %d %s (Retry-After %q), want 429 rate_limited with Retry-After", limit+1, over.status, over.raw, over.header.Get("Retry-After"))
			}
			if got := selfRecords(); got != before {
				t.Fatalf("the refused share wrote %d self-service records", got-before)
			}
			// The partner's organisation has its own budget.
			req := p.call("POST", "partner/requests", p.pat(), accessBody("look", 30, "organisation"))
			p.must(req, 201)
			// Narrowing is never refused.
			p.must(p.call("DELETE", "partner/shares/acme/pat/sr-0", p.cora(), nil), 204)
			p.must(p.call("POST", "partner/requests/"+req.str("id")+"/reject", p.cora(), nil), 200)

			p.advance(window - p.clock().Sub(start))
			p.must(share(limit), 200)
		})
	}
}

// TestSelfServiceBudgetHoldsRequests: a partner organisation asking for
// access again and again (each request rejected, so the pending caps never
// bind) is held to the same budget.
func TestSelfServiceBudgetHoldsRequests(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			limit, _ := selfServiceBudget(t, p)
			for i := 0; ; i++ {
				r := p.call("POST", "partner/requests", p.pat(), accessBody("look", 30, "organisation"))
				p.advance(2 * time.Second)
				if r.status == 429 {
					if i != limit {
						t.Fatalf("request %d refused, want the %d-th", i+1, limit+1)
					}
					break
				}
				if i >= limit {
					t.Fatalf("request %d in the window answered %d %s, want 429", i+1, r.status, r.raw)
				}
				p.must(r, 201)
				p.must(p.call("POST", "partner/requests/"+r.str("id")+"/reject", p.cora(), nil), 200)
				p.advance(2 * time.Second)
			}
		})
	}
}

// selfServiceBudget is the budget the shipped partner data sets.
func selfServiceBudget(t *testing.T, p *partnerAPI) (int, time.Duration) {
	t.Helper()
	partner := p.engine.Current().Data()["deputy"].(map[string]any)["partner"].(map[string]any)
	limit, _ := strconv.Atoi(fmt.Sprint(partner["max_self_service_changes"]))
	window, err := time.ParseDuration(fmt.Sprint(partner["self_service_change_window"]))
	if limit <= 0 || err != nil {
		t.Fatalf("partner data: max_self_service_changes %v, self_service_change_window %v", partner["max_self_service_changes"], partner["self_service_change_window"])
	}
	return limit, window
}
