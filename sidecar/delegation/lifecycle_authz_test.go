package delegation_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// callerless are the exported lifecycle methods that act for no caller,
// and so take no Authorize: configuration, and work Deputy does on its own.
// Anything else a lifecycle exports serves a caller and must ask policy.
var callerless = map[string]string{
	"Resellers.Config":         "configuration",
	"Partners.Config":          "configuration",
	"Partners.SweepExpiring":   "Deputy's own sweep for expiring grants",
	"Partners.RunSweeper":      "Deputy's own sweep for expiring grants",
	"Partners.Effective":       "a fact lookup (grant precedence) that answers no caller",
	"Impersonation.Config":     "configuration",
	"Impersonation.Switches":   "policy data's switches, the same for every caller",
	"Impersonation.Sweep":      "Deputy's own sweep for lapsed sessions and consents",
	"Impersonation.RunSweeper": "Deputy's own sweep for lapsed sessions and consents",
	"Impersonation.Close":      "lifecycle: stops listening for the store's invalidations",
	"Impersonation.RecordStaff": "Deputy's own record of a subject that acted with a staff permission, " +
		"taken after policy allowed that action; it only ever narrows access",
	"Impersonation.BurnExposed": "uses up redeem codes a link exposed to proxy logs, whoever sent it: " +
		"it only ever takes access away, and must not depend on a policy that could leave the code valid",
	"Partners.RecordAgain": "Deputy's own sweep recording again requests, decisions, revocations and shares, " +
		"made and authorized already, whose records are missing",
	"Resellers.RecordAgain": "Deputy's own sweep recording again assignment writes, made and authorized already, " +
		"whose records are missing",
	"Resellers.RunSweeper": "Deputy's own sweep recording again assignment writes",
}

// authorizedMethods returns "Type.Method" of every exported method of the
// lifecycles that takes an Authorize, and fails the test for any other
// method that is not listed as callerless: a method taking the caller's
// identity without an Authorize is a way round policy.
func authorizedMethods(t *testing.T, lifecycles ...any) []string {
	t.Helper()
	idType := reflect.TypeFor[*sidecar.Identity]()
	authType := reflect.TypeFor[delegation.Authorize]()
	var out []string
	for _, lc := range lifecycles {
		typ := reflect.TypeOf(lc)
		for i := range typ.NumMethod() {
			m := typ.Method(i)
			var id, auth bool
			for j := 1; j < m.Type.NumIn(); j++ {
				id = id || m.Type.In(j) == idType
				auth = auth || m.Type.In(j) == authType
			}
			name := typ.Elem().Name() + "." + m.Name
			switch {
			case auth:
				out = append(out, name)
			case id:
				t.Errorf("%s takes the caller's identity but no Authorize: it acts for a caller without asking policy", name)
			case callerless[name] == "":
				t.Errorf("%s takes no Authorize: give it one, or list it in callerless with why it acts for nobody", name)
			}
		}
	}
	return out
}

// authzWorld is the state every lifecycle call below starts from: a memory
// store holding something of every kind, and the lifecycles on it.
type authzWorld struct {
	ctx       context.Context
	store     sidecar.Store
	resellers *delegation.Resellers
	partners  *delegation.Partners
	imp       *delegation.Impersonation
}

var samAdmin = &sidecar.Identity{Subject: "sam", Org: "resellerco", Domain: "shop-a.example", Roles: []string{"reseller_super_admin"}}

func newAuthzWorld(t *testing.T, data delegation.PolicyData) *authzWorld {
	t.Helper()
	clock := storetest.NewClock(storetest.Epoch)
	store := memory.New(memory.WithClock(clock.Now))
	t.Cleanup(func() { _ = store.Close() })
	w := &authzWorld{ctx: context.Background(), store: store,
		resellers: delegation.NewResellers(store, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now)),
		partners:  delegation.NewPartners(store, data, delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now)),
		imp:       delegation.NewImpersonation(store, data, delegation.WithImpersonationClock(clock.Now)),
	}
	now := clock.Now()
	seed := []error{
		store.CreateRequest(w.ctx, &sidecar.AccessRequest{ID: "req-1", PartnerOrg: "partnerco", RequestedBy: "pat", Customer: "acme",
			ContactEmail: "cora@acme.example", Level: sidecar.LevelUpdate, ExpiryDays: 30, Scope: sidecar.ScopeOrganisation,
			Status: sidecar.RequestPending, CreatedAt: now, PendingExpiresAt: now.Add(30 * day)}),
		store.PutGrant(w.ctx, &sidecar.Grant{ID: "g-1", Customer: "acme", PartnerOrg: "partnerco", Level: sidecar.LevelLook,
			ExpiresAt: now.Add(30 * day), ApprovedBy: "cora", ApprovedAt: now}),
		storetest.ErrOf(store.PutShare(w.ctx, &sidecar.Share{Customer: "acme", Resource: "sr-1", User: "pat", PartnerOrg: "partnerco", SharedBy: "cora", SharedAt: now})),
		store.PutSubscription(w.ctx, &sidecar.Subscription{User: "partnerco/pat", Customer: "acme", Kind: delegation.SubscriptionNotifications, CreatedAt: now}),
	}
	_, err := store.PutCustomer(w.ctx, &sidecar.Customer{ID: "c1", Name: "Cleo", DefaultStoreView: "en"}, sidecar.Protection{})
	seed = append(seed, err)
	_, err = store.SetConsent(w.ctx, &sidecar.Consent{Customer: "c1", Allowed: true, SetBy: "c1", SetAt: now})
	seed = append(seed, err)
	_, err = store.StartSession(w.ctx, sidecar.SessionStart{
		Session:  &sidecar.Session{ID: "imp_1", Actor: "alice", Customer: "c1", StartedAt: now, ExpiresAt: now.Add(time.Hour)},
		CodeHash: delegation.HashSecret("code-1"), CodeExpiresAt: now.Add(time.Minute), ReplaceLive: true,
	})
	seed = append(seed, err)
	if err := errors.Join(seed...); err != nil {
		t.Fatal(err)
	}
	for c, d := range map[string]string{"acme": "shop-a.example", "globex": "shop-b.example"} {
		if err := store.PutAssignment(w.ctx, &sidecar.Assignment{Customer: c, Reseller: "resellerco", Domain: d}); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// snapshot is everything the store shows through its reads, so a refused
// call can be shown to have written nothing.
func (w *authzWorld) snapshot(t *testing.T) string {
	t.Helper()
	state := map[string]any{}
	read := func(name string, v any, err error) {
		if err != nil {
			v = "error " + sidecar.ErrorCode(err)
		}
		state[name] = v
	}
	all := sidecar.Page{Limit: sidecar.MaxPageLimit}
	events, _, err := w.store.ReadEvents(w.ctx, sidecar.StreamFilter{Page: all})
	read("events", events, err)
	audit, _, err := w.store.ReadAudit(w.ctx, sidecar.StreamFilter{Page: all})
	read("audit", audit, err)
	for _, c := range []string{"acme", "globex", "initech"} {
		a, err := w.store.GetAssignment(w.ctx, c)
		read("assignment "+c, a, err)
	}
	for _, d := range []string{"shop-a.example", "shop-b.example"} {
		as, _, err := w.store.AssignmentsByDomain(w.ctx, d, all)
		read("domain "+d, as, err)
	}
	rs, _, err := w.store.ListRequests(w.ctx, sidecar.RequestFilter{Customer: "acme", Page: all})
	read("requests", rs, err)
	gs, err := w.store.GrantsByCustomer(w.ctx, "acme")
	read("grants", gs, err)
	ss, err := w.store.ListShares(w.ctx, "acme")
	read("shares", ss, err)
	subs, err := w.store.SubscriptionsByCustomer(w.ctx, "acme")
	read("subscriptions", subs, err)
	for _, c := range []string{"c1", "c2"} {
		cust, err := w.store.GetCustomer(w.ctx, c)
		read("customer "+c, cust, err)
	}
	con, err := w.store.GetConsent(w.ctx, "c1")
	read("consent", con, err)
	hist, _, err := w.store.ConsentHistory(w.ctx, "c1", all)
	read("consent history", hist, err)
	sessions, _, err := w.store.ListSessions(w.ctx, sidecar.SessionFilter{Page: all})
	read("sessions", sessions, err)
	b, err := json.MarshalIndent(state, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lifecycleCall is one lifecycle method called for a caller who, were
// policy to allow it, could do what it asks.
type lifecycleCall struct {
	method string         // Type.Method
	action string         // what policy is asked
	target map[string]any // facts policy must be shown, as stored
	call   func(w *authzWorld, authorize delegation.Authorize) error
}

// askedNext are what policy is asked once it allowed a call's action, in
// order: reading a consent also asks whether the caller may see who set
// it (consent.history); ending a session, whether the caller may read it
// (impersonation.list).
var askedNext = map[string][]string{
	"Impersonation.GetConsent": {"consent.history"},
	"Impersonation.End":        {"impersonation.list"},
}

func lifecycleCalls() []lifecycleCall {
	acmeRequest := map[string]any{"customer": "acme", "partner_org": "partnerco", "request_id": "req-1"}
	c1 := &sidecar.Identity{Subject: "c1"}
	session := map[string]any{"id": "imp_1", "actor": "alice", "subject": "c1"}
	return []lifecycleCall{
		{"Impersonation.PutCustomer", "customer.put", map[string]any{"customer_id": "c2"},
			func(w *authzWorld, az delegation.Authorize) error {
				return w.imp.PutCustomer(w.ctx, &sidecar.Identity{Subject: "storefront"}, &sidecar.Customer{ID: "c2", DefaultStoreView: "en"}, az)
			}},
		{"Impersonation.DeleteCustomer", "customer.delete", map[string]any{"customer_id": "c1"},
			func(w *authzWorld, az delegation.Authorize) error {
				return w.imp.DeleteCustomer(w.ctx, &sidecar.Identity{Subject: "storefront"}, "c1", az)
			}},
		{"Impersonation.SetConsent", "consent.set_self", map[string]any{"customer_id": "c1"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, _, err := w.imp.SetConsent(w.ctx, c1, delegation.ConsentChange{Customer: "c1"}, az)
				return err
			}},
		{"Impersonation.SetConsent", "consent.set_for_customer", map[string]any{"customer_id": "c1"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, _, err := w.imp.SetConsent(w.ctx, bob, delegation.ConsentChange{Customer: "c1"}, az)
				return err
			}},
		{"Impersonation.GetConsent", "consent.get", map[string]any{"customer_id": "c1"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.imp.GetConsent(w.ctx, alice, "c1", az)
				return err
			}},
		{"Impersonation.ConsentHistory", "consent.history", map[string]any{"customer_id": "c1"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, _, err := w.imp.ConsentHistory(w.ctx, alice, "c1", sidecar.Page{}, az)
				return err
			}},
		{"Impersonation.Start", "impersonation.start", map[string]any{"customer_id": "c1", "consent": map[string]any{"live": true}},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.imp.Start(w.ctx, bob, delegation.StartRequest{Customer: "c1", Reason: "ticket 7"}, az)
				return err
			}},
		{"Impersonation.Redeem", "impersonation.redeem", nil,
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.imp.Redeem(w.ctx, nil, "code-1", "", "shop.example.com", az)
				return err
			}},
		{"Impersonation.End", "impersonation.end", map[string]any{"session": session},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.imp.End(w.ctx, c1, "imp_1", az)
				return err
			}},
		{"Impersonation.GetSession", "impersonation.list", map[string]any{"actor": "alice", "session": session},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.imp.GetSession(w.ctx, alice, "imp_1", az)
				return err
			}},
		{"Impersonation.List", "impersonation.list", map[string]any{"actor": "alice"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, _, err := w.imp.List(w.ctx, alice, sidecar.SessionFilter{Actor: "alice", LiveOnly: true}, az)
				return err
			}},
		{"Impersonation.Log", "impersonation.log", map[string]any{"actor": "", "customer_id": "c1"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, _, err := w.imp.Log(w.ctx, alice, sidecar.SessionFilter{Customer: "c1"}, az)
				return err
			}},
		{"Partners.Request", "partner.request",
			map[string]any{"customer": "acme", "partner_org": "partnerco", "level": "update", "scope": "organisation"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.partners.Request(w.ctx, patUser, orgRequest(sidecar.LevelUpdate, 30), az)
				return err
			}},
		{"Partners.GetRequest", "partner.list_requests", acmeRequest,
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.partners.GetRequest(w.ctx, cora, "req-1", az)
				return err
			}},
		{"Partners.ListRequests", "partner.list_requests", map[string]any{"customer": "acme"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, _, err := w.partners.ListRequests(w.ctx, cora, sidecar.RequestFilter{Customer: "acme"}, az)
				return err
			}},
		{"Partners.Approve", "partner.approve", acmeRequest,
			func(w *authzWorld, az delegation.Authorize) error {
				_, _, err := w.partners.Approve(w.ctx, cora, "req-1", az)
				return err
			}},
		{"Partners.Reject", "partner.reject", acmeRequest,
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.partners.Reject(w.ctx, cora, "req-1", az)
				return err
			}},
		{"Partners.Revoke", "partner.revoke",
			map[string]any{"customer": "acme", "partner_org": "partnerco", "user": "", "grant_id": "g-1"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.partners.Revoke(w.ctx, patUser, "acme", "g-1", az)
				return err
			}},
		{"Partners.MyCustomers", "partner.list_customers", map[string]any{"partner_org": "partnerco"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.partners.MyCustomers(w.ctx, patUser, az)
				return err
			}},
		{"Partners.MyPartners", "partner.list_partners", map[string]any{"customer": "acme"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.partners.MyPartners(w.ctx, cora, "acme", az)
				return err
			}},
		{"Partners.Share", "share.put",
			map[string]any{"customer": "acme", "user": "pat", "resource": "sr-2", "partner_org": "partnerco"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.partners.Share(w.ctx, cora, "acme", delegation.ShareInput{Resource: "sr-2", User: "pat", PartnerOrg: "partnerco"}, az)
				return err
			}},
		{"Partners.Unshare", "share.delete", map[string]any{"customer": "acme", "user": "pat", "resource": "sr-1", "partner_org": "partnerco"},
			func(w *authzWorld, az delegation.Authorize) error {
				return w.partners.Unshare(w.ctx, cora, "acme", delegation.ShareInput{Resource: "sr-1", User: "pat", PartnerOrg: "partnerco"}, az)
			}},
		{"Partners.Shares", "share.list", map[string]any{"customer": "acme"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.partners.Shares(w.ctx, cora, "acme", az)
				return err
			}},
		{"Partners.Subscribe", "subscription.put",
			map[string]any{"customer": "acme", "kind": "dashboard", "partner_org": "partnerco", "grant": map[string]any{
				"id": "g-1", "partner_org": "partnerco", "user": "", "level": "look", "scope": "organisation",
				"expires_at": storetest.Epoch.Add(30 * day).Format(time.RFC3339Nano),
			}},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.partners.Subscribe(w.ctx, patUser, "acme", delegation.SubscriptionDashboard, az)
				return err
			}},
		{"Partners.Unsubscribe", "subscription.delete", map[string]any{"customer": "acme", "kind": "notifications", "partner_org": "partnerco"},
			func(w *authzWorld, az delegation.Authorize) error {
				return w.partners.Unsubscribe(w.ctx, patUser, "acme", delegation.SubscriptionNotifications, az)
			}},
		{"Partners.MySubscriptions", "subscription.list", map[string]any{"partner_org": "partnerco"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.partners.MySubscriptions(w.ctx, patUser, az)
				return err
			}},
		{"Partners.Subscribers", "partner.list_subscribers", map[string]any{"customer": "acme"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.partners.Subscribers(w.ctx, cora, "acme", "", az)
				return err
			}},
		{"Resellers.Get", "reseller.assignment.get",
			map[string]any{"customer": "globex", "current_domain": "shop-b.example", "domain": "shop-a.example"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.resellers.Get(w.ctx, samAdmin, "globex", az)
				return err
			}},
		{"Resellers.Put", "reseller.assignment.put",
			map[string]any{"customer": "globex", "current_domain": "shop-b.example", "domain": "shop-a.example"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, err := w.resellers.Put(w.ctx, samAdmin, "globex", "shop-a.example", az)
				return err
			}},
		{"Resellers.Delete", "reseller.assignment.delete",
			map[string]any{"customer": "globex", "current_domain": "shop-b.example", "domain": "shop-a.example"},
			func(w *authzWorld, az delegation.Authorize) error {
				return w.resellers.Delete(w.ctx, samAdmin, "globex", az)
			}},
		{"Resellers.List", "reseller.assignment.list",
			map[string]any{"domain": "shop-a.example"},
			func(w *authzWorld, az delegation.Authorize) error {
				_, _, err := w.resellers.List(w.ctx, samAdmin, sidecar.Page{}, az)
				return err
			}},
		{"Resellers.MayImport", "reseller.assignment.import",
			map[string]any{"domain": "shop-a.example", "domains": []any{"shop-a.example"}},
			func(w *authzWorld, az delegation.Authorize) error {
				return w.resellers.MayImport(samAdmin, az)
			}},
		{"Resellers.Import", "reseller.assignment.import",
			map[string]any{"domain": "shop-a.example", "domains": []any{"shop-a.example", "shop-b.example"}, "rows": 2},
			func(w *authzWorld, az delegation.Authorize) error {
				rows := []delegation.ImportRow{{Line: 1, Customer: "globex", Domain: "shop-a.example"}, {Line: 2, Customer: "initech", Domain: "shop-a.example"}}
				_, err := w.resellers.Import(w.ctx, samAdmin, rows, az)
				return err
			}},
	}
}

// errRefused is a policy's no; a lifecycle hands it back as it is.
var errRefused = &sidecar.Error{Code: sidecar.EFORBIDDEN, Message: "refused_by_policy"}

type asked struct {
	action string
	target map[string]any
}

// TestLifecyclesAskPolicy holds the one shape of the three lifecycles:
// authorization lives in the lifecycle, not in whoever calls it. Every
// exported method that acts for a caller takes an Authorize and asks it,
// with the facts as stored, before it writes anything; a refusal is
// returned as it is and leaves the store as it was.
func TestLifecyclesAskPolicy(t *testing.T) {
	calls := lifecycleCalls()
	data := shippedData(t)
	w := newAuthzWorld(t, data)
	methods := authorizedMethods(t, w.resellers, w.partners, w.imp)
	for _, m := range methods {
		if !slices.ContainsFunc(calls, func(c lifecycleCall) bool { return c.method == m }) {
			t.Errorf("%s takes an Authorize but lifecycleCalls has no case calling it", m)
		}
	}
	for _, c := range calls {
		t.Run(c.method, func(t *testing.T) {
			if !slices.Contains(methods, c.method) {
				t.Fatalf("%s is no lifecycle method taking an Authorize", c.method)
			}
			w := newAuthzWorld(t, data)
			before := w.snapshot(t)
			var got []asked
			err := c.call(w, func(action string, target map[string]any) error {
				got = append(got, asked{action, target})
				return errRefused
			})
			if !errors.Is(err, errRefused) {
				t.Fatalf("refused by policy, the call answered %v", err)
			}
			if len(got) != 1 || got[0].action != c.action {
				t.Fatalf("policy was asked %+v, want once about %s", got, c.action)
			}
			for k, want := range c.target {
				if v := got[0].target[k]; !reflect.DeepEqual(v, want) {
					t.Errorf("policy saw target.%s = %#v, want %#v (the stored fact)", k, v, want)
				}
			}
			if after := w.snapshot(t); after != before {
				t.Fatalf("a refused call changed the store:\nbefore %s\nafter %s", before, after)
			}

			// Allowed, the same call does its work: the refusal above is
			// what stopped it, not the call being wrong.
			w = newAuthzWorld(t, data)
			var allowed []string
			if err := c.call(w, func(action string, _ map[string]any) error {
				allowed = append(allowed, action)
				return nil
			}); err != nil {
				t.Fatalf("allowed by policy, the call failed: %v", err)
			}
			if want := append([]string{c.action}, askedNext[c.method]...); !slices.Equal(allowed, want) {
				t.Fatalf("allowed, policy was asked about %v, want %v", allowed, want)
			}
		})
	}
}
