package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

// A caller whose permission stops at its own domain cannot tell another
// domain's customer from an unassigned one, by any method: the answer for
// globex (held by shop-b) is the answer for initech (held by no one),
// status, code and message alike, and globex stays where it is. The only
// way to tell is to claim the customer (PUT into one's own domain), which
// assigns a free one, in the audit trail, and so cannot probe quietly.
func TestResellerAPIAnotherDomainAnswersAsUnassigned(t *testing.T) {
	calls := []struct {
		name, method, suffix string
		body                 any
	}{
		{"get", "GET", "", nil},
		{"delete", "DELETE", "", nil},
		{"put into another domain", "PUT", "", map[string]any{"domain": "shop-b.example"}},
	}
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			seedDomains(t, p)
			callers := map[string]string{"super admin": p.tok(samClaims), "reseller admin": p.tok(ritaClaims), "partner user": p.pat()}
			for who, tok := range callers {
				for _, c := range calls {
					t.Run(who+"/"+c.name, func(t *testing.T) {
						other := p.call(c.method, "reseller/assignments/globex", tok, c.body)
						free := p.call(c.method, "reseller/assignments/initech", tok, c.body)
						if other.status != free.status || other.code() != free.code() ||
							strings.ReplaceAll(other.msg(), "globex", "initech") != free.msg() {
							t.Errorf("another domain's customer: %d %s %q; unassigned: %d %s %q",
								other.status, other.code(), other.msg(), free.status, free.code(), free.msg())
						}
					})
				}
			}
			ctx := context.Background()
			if a, err := p.store.GetAssignment(ctx, "globex"); err != nil || a.Domain != "shop-b.example" {
				t.Fatalf("globex = %+v, %v; want it left in shop-b.example", a, err)
			}
			if _, err := p.store.GetAssignment(ctx, "initech"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
				t.Fatalf("initech assigned: %v", err)
			}
			audit, _, err := p.store.ReadAudit(ctx, sidecar.StreamFilter{Customer: "globex"})
			if err != nil || len(audit) != 0 {
				t.Fatalf("audit of globex: %+v, %v; want none (nothing changed)", audit, err)
			}
		})
	}
}
