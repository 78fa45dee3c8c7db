package delegation_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// A partner organisation may have only as many access requests waiting as
// policy data allows, in all and at one customer: past that, each request
// would still mail a contact manager and push real entries out of the
// events and audit streams. Decided and expired requests stop counting.
func TestPendingRequestCaps(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			data := withPartnerData(t, map[string]any{
				"max_pending_requests_per_org":      json.Number("3"),
				"max_pending_requests_per_customer": json.Number("2"),
			})
			p := delegation.NewPartners(env.store, func() map[string]any { return data }, delegation.PartnerConfig{},
				delegation.WithPartnerClock(env.clock.Now))
			ask := func(customer string) (*sidecar.AccessRequest, error) {
				in := orgRequest(sidecar.LevelLook, 30)
				in.Customer, in.ContactEmail = customer, "cm@"+customer+".example"
				return p.Request(ctx, patUser, in, allowAll)
			}
			refused := func(err error, where string) {
				t.Helper()
				wantCode(t, err, sidecar.ECONFLICT, "")
				if msg := sidecar.ErrorMessage(err); !strings.HasPrefix(msg, "too_many_pending_requests: ") || !strings.Contains(msg, where) {
					t.Fatalf("message = %q", msg)
				}
			}
			first, err := ask("acme")
			must(t, err)
			_, err = ask("acme")
			must(t, err)
			before := len(events(t, env.store, sidecar.EventGrantRequested))
			_, err = ask("acme")
			refused(err, "waiting at acme")
			if n := len(events(t, env.store, sidecar.EventGrantRequested)); n != before {
				t.Fatalf("a refused request wrote %d events", n-before)
			}
			_, err = ask("globex")
			must(t, err)
			_, err = ask("initech")
			refused(err, "partnerco has 3 access requests waiting,")
			// Another partner organisation has its own budget.
			in := orgRequest(sidecar.LevelLook, 30)
			in.Customer = "initech"
			if _, err := p.Request(ctx, otherOrgBob, in, allowAll); err != nil {
				t.Fatalf("another organisation refused: %v", err)
			}
			// A decision frees a place, at the customer and in all.
			if _, err := p.Reject(ctx, cora, first.ID, allowAll); err != nil {
				t.Fatal(err)
			}
			_, err = ask("acme")
			must(t, err)
			// Expired requests stop counting.
			env.clock.Advance(31 * day)
			for _, c := range []string{"acme", "acme", "initech"} {
				if _, err := ask(c); err != nil {
					t.Fatalf("after the pending expiry, %s: %v", c, err)
				}
			}
		})
	}
}
