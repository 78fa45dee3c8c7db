package api_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// TestNonPartyReadsAsUnknown: a caller who is no party to an access
// request or a grant gets, for every call naming it by id, the answer an
// unknown id gets, status and body alike: anything else tells which ids
// exist.
func TestNonPartyReadsAsUnknown(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			pending := p.request(accessBody("look", 30, "organisation"))
			grant := p.grant(accessBody("update", 30, "individual", "pat"))
			revoked := p.grant(accessBody("create", 30, "individual", "paul"))
			p.must(p.call("DELETE", "partner/grants/acme/"+revoked, p.cora(), nil), 204)
			gil := p.tok(identity.DevClaims{Subject: "gil", Org: "globex", Roles: []string{"contact_manager"}})
			noOrg := p.tok(identity.DevClaims{Subject: "nobody"})
			callers := map[string]string{"another org": p.bob(), "another org's contact manager": gil,
				"the customer's employee without the role": p.eve(), "a caller without an organisation": noOrg}
			for _, tc := range []struct{ name, method, known, unknown string }{
				{"read a request", "GET", "partner/requests/" + pending, "partner/requests/nope"},
				{"approve a request", "POST", "partner/requests/" + pending + "/approve", "partner/requests/nope/approve"},
				{"reject a request", "POST", "partner/requests/" + pending + "/reject", "partner/requests/nope/reject"},
				{"revoke a grant", "DELETE", "partner/grants/acme/" + grant, "partner/grants/acme/nope"},
				{"revoke a revoked grant", "DELETE", "partner/grants/acme/" + revoked, "partner/grants/acme/nope"},
			} {
				for who, tok := range callers {
					known, unknown := p.call(tc.method, tc.known, tok, nil), p.call(tc.method, tc.unknown, tok, nil)
					if known.status != 404 || known.status != unknown.status || known.raw != unknown.raw {
						t.Errorf("%s, by %s: %d %s for an existing id, %d %s for an unknown one; want 404 both, word for word",
							tc.name, who, known.status, known.raw, unknown.status, unknown.raw)
					}
				}
			}
			// Nothing happened to what they named.
			if r := p.must(p.call("GET", "partner/requests/"+pending, p.cora(), nil), 200); r.str("status") != sidecar.RequestPending {
				t.Fatalf("the request after the refusals: %s", r.raw)
			}
			if got := len(p.must(p.call("GET", "partner/partners", p.cora(), nil), 200).items()); got != 1 {
				t.Fatalf("acme has %d grants after the refusals, want 1", got)
			}
		})
	}
}

// TestRevokeUnknownGrantPublishesNothing: revoking a grant id that was
// never issued changes nothing, audits nothing and publishes no eviction
// to the replicas, whoever asks; retrying the revocation of a grant that
// was revoked still publishes its eviction again (its first eviction may
// have been lost).
func TestRevokeUnknownGrantPublishesNothing(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			revoked := p.grant(accessBody("look", 30, "organisation"))
			p.must(p.call("DELETE", "partner/grants/acme/"+revoked, p.cora(), nil), 204)
			ctx := context.Background()
			audit, _, err := p.store.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: 100}})
			if err != nil {
				t.Fatal(err)
			}
			events := len(p.eventTypes())

			settled := watchInvalidations(t, p.store)
			for who, tok := range map[string]string{"the partner": p.pat(), "the contact manager": p.cora()} {
				if r := p.call("DELETE", "partner/grants/acme/nope", tok, nil); r.status != 404 || r.code() != "not_found" {
					t.Errorf("%s revokes an unknown grant: %d %s, want 404", who, r.status, r.raw)
				}
				if got := settled("after " + who); len(got) != 0 {
					t.Errorf("%s revoking an unknown grant published %v, want nothing", who, got)
				}
			}
			after, _, err := p.store.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: 100}})
			if err != nil {
				t.Fatal(err)
			}
			if len(after) != len(audit) || len(p.eventTypes()) != events {
				t.Fatalf("audit %d → %d, events %d → %d: revoking unknown grants recorded something", len(audit), len(after), events, len(p.eventTypes()))
			}

			// A party's retry of a revocation: idempotent, and evicted again.
			for who, tok := range map[string]string{"the partner": p.pat(), "the contact manager": p.cora()} {
				p.must(p.call("DELETE", "partner/grants/acme/"+revoked, tok, nil), 204)
				if got := settled("retry by " + who); len(got) != 1 || got[0] != sidecar.GrantKey("acme") {
					t.Errorf("%s retrying a revocation published %v, want %s once", who, got, sidecar.GrantKey("acme"))
				}
			}
		})
	}
}

// TestNonPartySessionReadsAsUnknown: reading or ending a session someone
// else started answers, to staff who may not see it, exactly as an
// unknown session id does.
func TestNonPartySessionReadsAsUnknown(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		e := newEnv(t, mk)
		e.seed()
		id, _ := e.live(e.agent())
		for who, tok := range map[string]string{"another agent": e.as("bob", "support_agent"), "another customer": e.as("c7", "customer")} {
			for _, method := range []string{"GET", "DELETE"} {
				known := e.do(method, "/deputy/v1/impersonation/sessions/"+id, tok, nil)
				unknown := e.do(method, "/deputy/v1/impersonation/sessions/imp_nope", tok, nil)
				if known.Status != 404 || known.Raw != unknown.Raw {
					t.Errorf("%s %s: %d %s for an existing session, %d %s for an unknown one; want 404 both, word for word",
						who, method, known.Status, known.Raw, unknown.Status, unknown.Raw)
				}
			}
		}
		if r := e.must(e.do("GET", "/deputy/v1/impersonation/sessions/"+id, e.agent(), nil), 200); r.str("state") != "live" {
			t.Fatalf("the session after the refusals: %s", r.Raw)
		}
	})
}

// TestEndSessionAnswersWhatGetShows: ending a session answers the caller
// only what reading it would: the session to whoever may read it, 204 and
// no body to whoever may end it but not read it (the customer acted for,
// whom the log is not for; a role holding end_any_login_as_customer
// alone), and, once the session has ended, 404 to a caller GET answers
// 404, word for word as an unknown id. Ending again stays a retry, for
// every caller: the session stays as its first end left it, and its
// eviction is published again.
func TestEndSessionAnswersWhatGetShows(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		e := newEnv(t, mk, func(sw map[string]any, _ *delegation.ImpersonationConfig) {
			sw["role_permissions"].(map[string]any)["session_ender"] = []any{"end_any_login_as_customer"}
		})
		e.seed()
		published := watchInvalidations(t, e.store)
		cases := []struct {
			name          string
			sub           string
			caller        func(e *env) string
			first, second int // DELETE of the live session, then of the ended one
		}{
			{"staff who started it", "alice", (*env).agent, 200, 200},
			{"admin, who reads the log", "ada", (*env).admin, 200, 200},
			{"customer acted for", "c42", (*env).customer, 204, 204},
			{"end_any_login_as_customer alone", "eve", func(e *env) string { return e.as("eve", "session_ender") }, 204, 404},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				st := e.must(e.start(e.agent(), map[string]any{"customer_id": "c42", "reason": "fraud check, internal", "ticket": "SEC-99"}), 201)
				_, cookie := e.redeem(st.str("redeem_url"))
				evict := sidecar.SessionKey(delegation.HashSecret(cookie))
				path := "/deputy/v1/impersonation/sessions/" + st.str("session", "id")
				tok := tc.caller(e)
				published(tc.name) // what the start and the redeem published
				for i, want := range []int{tc.first, tc.second} {
					del := e.do("DELETE", path, tok, nil)
					if got := published(fmt.Sprintf("%s %d", tc.name, i)); !slices.Contains(got, evict) {
						t.Errorf("DELETE %d published %v, want the session's eviction", i+1, got)
					}
					get := e.do("GET", path, tok, nil)
					switch {
					case del.Status != want:
						t.Fatalf("DELETE %d: %d %s, want %d", i+1, del.Status, del.Raw, want)
					case want == 200 && (get.Status != 200 || del.Raw != get.Raw):
						t.Errorf("DELETE %d answered %s; GET answers %d %s", i+1, del.Raw, get.Status, get.Raw)
					case want == 204 && (del.Raw != "" || get.Status == 200):
						t.Errorf("DELETE %d answered 204 with %q; GET answers %d (may it read?)", i+1, del.Raw, get.Status)
					case want == 404:
						unknown := e.do("DELETE", "/deputy/v1/impersonation/sessions/imp_nope", tok, nil)
						if del.Raw != get.Raw || del.Raw != unknown.Raw {
							t.Errorf("DELETE of the ended session: %s; GET: %d %s; an unknown id: %s; want all alike", del.Raw, get.Status, get.Raw, unknown.Raw)
						}
					}
				}
				s := e.must(e.do("GET", path, e.admin(), nil), 200)
				if s.str("state") == "live" || s.str("ended_by") != tc.sub {
					t.Fatalf("the session after two DELETEs: %s", s.Raw)
				}
			})
		}
	})
}

// watchInvalidations subscribes to st's invalidations and returns what
// was published since its last call: it publishes marker and waits
// (bounded) for it, as the store's own publishes reach the subscriber
// before it.
func watchInvalidations(t *testing.T, st sidecar.Store) func(marker string) []string {
	t.Helper()
	var mu sync.Mutex
	var published []string
	cancel := st.Subscribe(func(k string) {
		if k == sidecar.InvalidateAll {
			return // the bus reconnected: no one's write
		}
		mu.Lock()
		published = append(published, k)
		mu.Unlock()
	})
	t.Cleanup(cancel)
	settled := func(marker string) []string {
		t.Helper()
		if err := st.Invalidate(context.Background(), marker); err != nil {
			t.Fatal(err)
		}
		var got []string
		eventually(t, 5*time.Second, func() string {
			mu.Lock()
			defer mu.Unlock()
			if len(published) == 0 || published[len(published)-1] != marker {
				return "marker " + marker + " never arrived"
			}
			got, published = published[:len(published)-1], nil
			return ""
		})
		return got
	}
	settled("test:watch") // the subscription delivers
	return settled
}
