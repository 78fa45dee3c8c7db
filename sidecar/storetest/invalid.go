package storetest

import (
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// testInvalidRecords: every store refuses the same malformed records with
// the same field named, and keeps nothing of them. The rules live on the
// domain types; this pins that both stores call them.
func testInvalidRecords(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	req := func(edit func(*sidecar.AccessRequest)) *sidecar.AccessRequest {
		r := newRequest(e, "r-bad", "p1", "acme")
		edit(r)
		return r
	}
	cases := []struct {
		name  string
		field string
		put   func() error
		kept  func() bool // whether anything of the record was stored
	}{
		{name: "customer_without_id", field: "id",
			put: func() error {
				return ignore(e.s.PutCustomer(e.ctx, &sidecar.Customer{Name: "Nobody"}, sidecar.Protection{}))
			}},
		{name: "consent_without_customer", field: "customer",
			put: func() error { _, err := e.s.SetConsent(e.ctx, &sidecar.Consent{Allowed: true}); return err }},
		{name: "request_without_id", field: "id",
			put: func() error { return e.s.CreateRequest(e.ctx, req(func(r *sidecar.AccessRequest) { r.ID = "" })) }},
		{name: "request_without_customer", field: "customer",
			put:  func() error { return e.s.CreateRequest(e.ctx, req(func(r *sidecar.AccessRequest) { r.Customer = "" })) },
			kept: func() bool { _, err := e.s.GetRequest(e.ctx, "r-bad"); return err == nil }},
		{name: "request_without_partner_org", field: "partner_org",
			put: func() error {
				return e.s.CreateRequest(e.ctx, req(func(r *sidecar.AccessRequest) { r.PartnerOrg = "" }))
			},
			kept: func() bool { _, err := e.s.GetRequest(e.ctx, "r-bad"); return err == nil }},
		{name: "request_with_unknown_level", field: "level",
			put: func() error {
				return e.s.CreateRequest(e.ctx, req(func(r *sidecar.AccessRequest) { r.Level = "root" }))
			},
			kept: func() bool { _, err := e.s.GetRequest(e.ctx, "r-bad"); return err == nil }},
		{name: "grant_with_unknown_level", field: "level",
			put: func() error { return e.s.PutGrant(e.ctx, grant(e, "g-bad", "acme", "p1", "", "root", time.Hour)) },
			kept: func() bool {
				eg, err := e.s.EffectiveGrants(e.ctx, "acme", "p1", "")
				return err == nil && eg.Organisation != nil
			}},
		{name: "share_without_resource", field: "resource",
			put: func() error {
				return ignore(e.s.PutShare(e.ctx, &sidecar.Share{Customer: "acme", User: "pat", PartnerOrg: "p1"}))
			},
			kept: func() bool {
				ss, err := e.s.ListShares(e.ctx, "acme")
				return err == nil && len(ss) > 0
			}},
		{name: "share_without_user", field: "user",
			put: func() error {
				return ignore(e.s.PutShare(e.ctx, &sidecar.Share{Customer: "acme", Resource: "SR-1", PartnerOrg: "p1"}))
			},
			kept: func() bool {
				ss, err := e.s.ListShares(e.ctx, "acme")
				return err == nil && len(ss) > 0
			}},
		{name: "share_without_partner_org", field: "partner_org",
			put: func() error {
				return ignore(e.s.PutShare(e.ctx, &sidecar.Share{Customer: "acme", Resource: "SR-1", User: "pat"}))
			},
			kept: func() bool {
				ss, err := e.s.ListShares(e.ctx, "acme")
				return err == nil && len(ss) > 0
			}},
		{name: "subscription_without_kind", field: "kind",
			put: func() error {
				return e.s.PutSubscription(e.ctx, &sidecar.Subscription{User: "p1/pat", Customer: "acme"})
			},
			kept: func() bool {
				ss, err := e.s.SubscriptionsByCustomer(e.ctx, "acme")
				return err == nil && len(ss) > 0
			}},
		{name: "assignment_without_domain", field: "domain",
			put:  func() error { return e.s.PutAssignment(e.ctx, &sidecar.Assignment{Customer: "acme", Reseller: "r1"}) },
			kept: func() bool { _, err := e.s.GetAssignment(e.ctx, "acme"); return err == nil }},
		{name: "assignment_without_reseller", field: "reseller",
			put:  func() error { return e.s.PutAssignment(e.ctx, &sidecar.Assignment{Customer: "acme", Domain: "shop-a"}) },
			kept: func() bool { _, err := e.s.GetAssignment(e.ctx, "acme"); return err == nil }},
		{name: "bulk_assignment_with_a_bad_row", field: "domain",
			put: func() error {
				_, err := e.s.PutAssignments(e.ctx, []sidecar.Assignment{
					{Customer: "globex", Domain: "shop-a", Reseller: "r1"},
					{Customer: "initech", Reseller: "r1"},
				})
				return err
			},
			kept: func() bool { _, err := e.s.GetAssignment(e.ctx, "initech"); return err == nil }},
		{name: "event_without_type", field: "type",
			put: func() error { return e.s.AppendEvent(e.ctx, &sidecar.Event{Customer: "acme"}) },
			kept: func() bool {
				es, _, err := e.s.ReadEvents(e.ctx, sidecar.StreamFilter{Customer: "acme"})
				return err == nil && len(es) > 0
			}},
		{name: "audit_without_action", field: "action",
			put: func() error { return e.s.AppendAudit(e.ctx, &sidecar.AuditEntry{Customer: "acme", Actor: "cora"}) },
			kept: func() bool {
				as, _, err := e.s.ReadAudit(e.ctx, sidecar.StreamFilter{Customer: "acme"})
				return err == nil && len(as) > 0
			}},
		{name: "request_list_without_owner", field: "customer",
			put: func() error {
				_, _, err := e.s.ListRequests(e.ctx, sidecar.RequestFilter{Status: sidecar.RequestPending})
				return err
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.put()
			wantCode(t, err, sidecar.EINVALID)
			if got := sidecar.ErrorField(err); got != tc.field {
				t.Fatalf("field = %q, want %q (%v)", got, tc.field, err)
			}
			if tc.kept != nil && tc.kept() {
				t.Fatal("the refused record was stored")
			}
		})
	}
}
