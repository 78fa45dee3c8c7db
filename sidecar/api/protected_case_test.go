package api_test

import (
	"context"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

// An account that becomes protected under one spelling of its id is
// refused on behalf of every other spelling, at the next request: to an
// upstream that looks ids up without regard to case, "STAFF-1" is the
// protected "staff-1". The assignments are made while nothing protects
// them, so the check, not the assignment, has to refuse.
func TestOnBehalfOfAnotherSpellingOfAProtectedAccount(t *testing.T) {
	protect := map[string]func(p *partnerAPI) error{
		"STAFF-1": func(p *partnerAPI) error {
			return ignoreEnded(p.store.PutCustomer(context.Background(), &sidecar.Customer{ID: "staff-1", Protected: true}, sidecar.Protection{}))
		},
		"Ann": func(p *partnerAPI) error {
			return ignoreEnded(p.store.PutCustomer(context.Background(), &sidecar.Customer{ID: "ann", Roles: []string{"customer", "support_agent"}}, sidecar.Protection{}))
		},
		"Staff-2": func(p *partnerAPI) error { return ignoreEnded(p.store.MarkStaff(context.Background(), "staff-2")) },
	}
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			sam := p.tok(samClaims)
			for id, do := range protect {
				if r := p.call("PUT", "reseller/assignments/"+id, sam, map[string]any{}); r.status != 200 {
					t.Fatalf("assign %s: %d %s", id, r.status, r.raw)
				}
				if ok, reason := p.check(ritaClaims, "POST", "/sales/order/history", map[string]string{"x-on-behalf-of": id}); !ok {
					t.Fatalf("%s before it is protected: refused (%s)", id, reason)
				}
				if err := do(p); err != nil {
					t.Fatal(err)
				}
				if ok, reason := p.check(ritaClaims, "POST", "/sales/order/history", map[string]string{"x-on-behalf-of": id}); ok || reason != "customer_protected" {
					t.Errorf("on behalf of %s once another spelling is protected: allowed=%v reason=%s", id, ok, reason)
				}
			}
		})
	}
}

func ignoreEnded(_ []sidecar.Session, err error) error { return err }
