package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// TestDeleteIsIdempotent: deleting a grant, share, subscription or
// assignment that is already gone answers 204, as the first DELETE did,
// and leaves one audit entry and one event for what happened, not one per
// call. A grant that never existed answers 404 to everyone, as does a
// grant to a caller who is no party to it (TestNonPartyReadsAsUnknown).
func TestDeleteIsIdempotent(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			seedDomains(t, p)
			look := p.grant(accessBody("look", 30, "individual", "pat"))
			p.must(p.call("PUT", "partner/shares/acme/pat/sr-1", p.cora(), map[string]any{"partner_org": "partnerco"}), 200)
			p.must(p.call("PUT", "partner/subscriptions/acme/notifications", p.pat(), nil), 200)
			sam := p.tok(samClaims)

			for _, st := range []struct {
				name, path string
				caller     []string // each DELETEs in turn
			}{
				{"share", "partner/shares/acme/pat/sr-1", []string{p.cora(), p.cora()}},
				{"subscription", "partner/subscriptions/acme/notifications", []string{p.pat(), p.pat()}},
				{"assignment", "reseller/assignments/acme", []string{sam, sam}},
				{"grant, from either side", "partner/grants/acme/" + look, []string{p.pat(), p.pat(), p.cora()}},
			} {
				for i, tok := range st.caller {
					if r := p.call("DELETE", st.path, tok, nil); r.status != 204 {
						t.Fatalf("%s: DELETE %d answered %d %s, want 204", st.name, i+1, r.status, r.raw)
					}
				}
			}
			r := p.call("DELETE", "partner/grants/acme/"+look, p.tok(identity.DevClaims{Subject: "nobody"}), nil)
			if r.status != 404 {
				t.Fatalf("a caller without an organisation: %d %s, want 404", r.status, r.raw)
			}

			audit, _, err := p.store.ReadAudit(context.Background(), sidecar.StreamFilter{Page: sidecar.Page{Limit: 100}})
			if err != nil {
				t.Fatal(err)
			}
			count := map[string]int{}
			for _, a := range audit {
				count[a.Action]++
			}
			for _, action := range []string{"share.delete", "reseller.assignment.delete", "partner.revoke"} {
				if count[action] != 1 {
					t.Errorf("%d %s audit entries, want 1 (%v)", count[action], action, count)
				}
			}
			if got := strings.Count(strings.Join(p.eventTypes(), ","), sidecar.EventGrantRevoked); got != 1 {
				t.Errorf("%d %s events, want 1", got, sidecar.EventGrantRevoked)
			}
		})
	}
}
