package api_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// refuseEverything is a manage policy that says no to every action, with a
// reason nothing else answers.
const refuseEverything = `package deputy.manage

decision := {"allowed": false, "reason": "refused_everything"}
`

// routeRequest is a request to one endpoint that would do its work were
// the caller allowed: the path names what the store holds, the body is
// well formed.
type routeRequest struct {
	path        string
	body        any
	contentType string
	public      bool // sent without a token
}

var routeRequests = map[string]routeRequest{
	"PUT customers/{id}":                                 {path: "customers/c1", body: map[string]any{"name": "Cleo"}},
	"DELETE customers/{id}":                              {path: "customers/c1"},
	"GET customers/{id}/consent":                         {path: "customers/c1/consent"},
	"PUT customers/{id}/consent":                         {path: "customers/c1/consent", body: map[string]any{"allowed": false}},
	"GET customers/{id}/consent/history":                 {path: "customers/c1/consent/history"},
	"POST impersonation/sessions":                        {path: "impersonation/sessions", body: map[string]any{"customer_id": "c1"}},
	"GET impersonation/sessions":                         {path: "impersonation/sessions"},
	"GET impersonation/sessions/{id}":                    {path: "impersonation/sessions/imp_1"},
	"DELETE impersonation/sessions/{id}":                 {path: "impersonation/sessions/imp_1"},
	"GET impersonation/log":                              {path: "impersonation/log"},
	"GET impersonation/redeem":                           {path: "impersonation/redeem?code=code-1", public: true},
	"POST partner/requests":                              {path: "partner/requests", body: map[string]any{"customer": "acme", "contact_email": "cora@acme.example", "expiry_days": 30, "level": "look", "scope": "organisation"}},
	"GET partner/requests":                               {path: "partner/requests"},
	"GET partner/requests/{id}":                          {path: "partner/requests/req-1"},
	"POST partner/requests/{id}/approve":                 {path: "partner/requests/req-1/approve"},
	"POST partner/requests/{id}/reject":                  {path: "partner/requests/req-1/reject"},
	"GET partner/customers":                              {path: "partner/customers"},
	"GET partner/partners":                               {path: "partner/partners?customer=acme"},
	"DELETE partner/grants/{customer}/{id}":              {path: "partner/grants/acme/g-1"},
	"GET partner/shares/{customer}":                      {path: "partner/shares/acme"},
	"PUT partner/shares/{customer}/{user}/{resource}":    {path: "partner/shares/acme/pat/sr-1", body: map[string]any{"partner_org": "partnerco"}},
	"DELETE partner/shares/{customer}/{user}/{resource}": {path: "partner/shares/acme/pat/sr-1"},
	"GET partner/subscriptions":                          {path: "partner/subscriptions"},
	"PUT partner/subscriptions/{customer}/{kind}":        {path: "partner/subscriptions/acme/dashboard"},
	"DELETE partner/subscriptions/{customer}/{kind}":     {path: "partner/subscriptions/acme/dashboard"},
	"GET partner/subscribers/{customer}":                 {path: "partner/subscribers/acme"},
	"GET reseller/assignments":                           {path: "reseller/assignments"},
	"POST reseller/imports":                              {path: "reseller/imports", body: "acme,shop-a.example\n", contentType: "text/csv"},
	"GET reseller/assignments/{customer}":                {path: "reseller/assignments/acme"},
	"PUT reseller/assignments/{customer}":                {path: "reseller/assignments/acme", body: map[string]any{}},
	"DELETE reseller/assignments/{customer}":             {path: "reseller/assignments/acme"},
	"GET events":                                         {path: "events"},
	"GET audit":                                          {path: "audit"},
}

// TestEveryEndpointAsksPolicy: under a manage policy that refuses
// everything, every endpoint of the management API answers with that
// refusal. A handler that skipped its lifecycle's Authorize, or handed it
// one that does not ask the policy, would answer otherwise.
func TestEveryEndpointAsksPolicy(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	ck := func() time.Time { return now }

	dir := policyFiles(t, "impersonation/data.json", "partner/data.json", "reseller/data.json")
	if err := os.MkdirAll(filepath.Join(dir, "deputy", "manage"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "deputy", "manage", "refuse.rego"), []byte(refuseEverything), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := policy.LoadPaths([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	engine := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err := engine.Activate(ctx, set); err != nil {
		t.Fatal(err)
	}
	data := func() map[string]any { return engine.Current().Data() }

	store := memory.New(memory.WithClock(ck))
	t.Cleanup(func() { _ = store.Close() })
	// What the requests above name exists, so no endpoint answers 404
	// before it gets to ask.
	_, err1 := store.PutCustomer(ctx, &sidecar.Customer{ID: "c1", DefaultStoreView: "en"}, sidecar.Protection{})
	_, err2 := store.SetConsent(ctx, &sidecar.Consent{Customer: "c1", Allowed: true, SetBy: "c1", SetAt: now})
	_, err3 := store.StartSession(ctx, sidecar.SessionStart{
		Session:  &sidecar.Session{ID: "imp_1", Actor: "alice", Customer: "c1", StartedAt: now, ExpiresAt: now.Add(time.Hour)},
		CodeHash: delegation.HashSecret("code-1"), CodeExpiresAt: now.Add(time.Minute),
	})
	for _, err := range []error{err1, err2, err3,
		store.CreateRequest(ctx, &sidecar.AccessRequest{ID: "req-1", PartnerOrg: "partnerco", RequestedBy: "pat", Customer: "acme",
			ContactEmail: "cora@acme.example", Level: sidecar.LevelUpdate, ExpiryDays: 30, Scope: sidecar.ScopeOrganisation,
			Status: sidecar.RequestPending, CreatedAt: now, PendingExpiresAt: now.Add(30 * 24 * time.Hour)}),
		store.PutGrant(ctx, &sidecar.Grant{ID: "g-1", Customer: "acme", PartnerOrg: "partnerco", Level: sidecar.LevelLook,
			ExpiresAt: now.Add(30 * 24 * time.Hour), ApprovedBy: "cora", ApprovedAt: now}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}

	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := identity.New(identity.Config{Dev: identity.DevConfig{Enabled: true}}, identity.WithDevIssuer(dev), identity.WithClock(ck))
	if err != nil {
		t.Fatal(err)
	}
	server := api.New(
		api.WithVerifier(verifier),
		api.WithEngine(engine),
		api.WithClock(ck),
		api.WithRoutes(
			api.NewImpersonation(delegation.NewImpersonation(store, data, delegation.WithImpersonationClock(ck))),
			api.NewPartner(delegation.NewPartners(store, data, delegation.PartnerConfig{}, delegation.WithPartnerClock(ck))),
			api.NewReseller(delegation.NewResellers(store, delegation.ResellerConfig{}, delegation.WithResellerClock(ck))),
			api.NewStreams(store),
		),
	)
	p := &partnerAPI{t: t, handler: server}
	token, err := dev.Mint(identity.DevClaims{Subject: "sam", Org: "partnerco", Domain: "shop-a.example", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}

	endpoints := api.Endpoints(server)
	for name := range routeRequests {
		if !slices.Contains(endpoints, name) {
			t.Errorf("routeRequests names %s, which the API does not serve", name)
		}
	}
	for _, e := range endpoints {
		t.Run(e, func(t *testing.T) {
			rq, ok := routeRequests[e]
			if !ok {
				t.Fatalf("no request for %s: add one to routeRequests", e)
			}
			tok := token
			if rq.public {
				tok = ""
			}
			var ct []string
			if rq.contentType != "" {
				ct = []string{rq.contentType}
			}
			method, _, _ := strings.Cut(e, " ")
			res := p.call(method, rq.path, tok, rq.body, ct...)
			if res.status != 403 || res.msg() != "refused_everything" {
				t.Fatalf("%s answered %d %s, want the policy's refusal (403 refused_everything)", e, res.status, res.raw)
			}
		})
	}
}
