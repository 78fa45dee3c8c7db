package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// partnerAPI is the management API with the shipped partner, reseller and
// manage policies over a real store, plus the check-path resolver and
// policy decision, so a test walks what a user does end to end.
type partnerAPI struct {
	t         *testing.T
	mu        sync.Mutex
	now       time.Time
	store     sidecar.Store
	engine    *policy.Engine
	handler   http.Handler
	dev       *identity.DevIssuer
	resolver  *resolve.OnBehalfResolver
	resellers *delegation.Resellers
}

func (p *partnerAPI) clock() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.now
}

func (p *partnerAPI) advance(d time.Duration) {
	p.mu.Lock()
	p.now = p.now.Add(d)
	p.mu.Unlock()
}

// partnerPolicyFiles are the shipped policy files the partner and
// reseller API relies on, laid out as Deputy loads them.
var partnerPolicyFiles = []string{
	"manage/manage.rego", "manage/impersonation.rego", "manage/partner.rego", "manage/reseller.rego",
	"impersonation/impersonation.rego", "impersonation/data.json", "lib/lib.rego",
	"partner/partner.rego", "partner/data.json",
	"reseller/reseller.rego", "reseller/data.json",
}

func partnerPolicies(t *testing.T) string { return policyFiles(t, partnerPolicyFiles...) }

type partnerBackend struct {
	name string
	open func(t *testing.T, now sidecar.Clock) sidecar.Store
}

var partnerAPIPrefixes atomic.Int64

// partnerBackends are memory and a redis-server started for the calling
// test; each store gets its own key prefix.
func partnerBackends(t *testing.T) []partnerBackend {
	srv := redistest.Start(t)
	return []partnerBackend{
		{name: "memory", open: func(t *testing.T, now sidecar.Clock) sidecar.Store {
			s := memory.New(memory.WithClock(now))
			t.Cleanup(func() { _ = s.Close() })
			return s
		}},
		{name: "redis", open: func(t *testing.T, now sidecar.Clock) sidecar.Store {
			s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: fmt.Sprintf("api%d", partnerAPIPrefixes.Add(1)),
				ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(now))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}},
	}
}

func newPartnerAPI(t *testing.T, b partnerBackend) *partnerAPI {
	t.Helper()
	p := &partnerAPI{t: t, now: testStart()}
	set, err := policy.LoadPaths([]string{partnerPolicies(t)})
	if err != nil {
		t.Fatal(err)
	}
	p.engine = policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)), policy.WithQueries(
		policy.DefaultManageQuery, "data.deputy.partner.decision", "data.deputy.reseller.decision"))
	if err := p.engine.Activate(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	if p.dev, err = identity.GenerateDevIssuer(); err != nil {
		t.Fatal(err)
	}
	verifier, err := identity.New(identity.Config{Dev: identity.DevConfig{Enabled: true}}, identity.WithDevIssuer(p.dev), identity.WithClock(p.clock))
	if err != nil {
		t.Fatal(err)
	}
	p.store = b.open(t, p.clock)
	data := func() map[string]any {
		if a := p.engine.Current(); a != nil {
			return a.Data()
		}
		return nil
	}
	partners := delegation.NewPartners(p.store, data, delegation.PartnerConfig{}, delegation.WithPartnerClock(p.clock))
	p.resellers = delegation.NewResellers(p.store, delegation.ResellerConfig{MaxImportBytes: 2048}, delegation.WithResellerClock(p.clock))
	p.resolver, err = resolve.NewOnBehalfResolver(p.store, p.store, data, delegation.PartnerConfig{}, resolve.WithResolverClock(p.clock))
	if err != nil {
		t.Fatal(err)
	}
	p.handler = api.New(
		api.WithVerifier(verifier),
		api.WithEngine(p.engine),
		api.WithClock(p.clock),
		api.WithConfig(api.Config{MaxBodyBytes: 1024}),
		api.WithRoutes(api.NewPartner(partners), api.NewReseller(p.resellers)),
	)
	// paul is a known member of partnerco; mallory is not.
	for _, c := range []*sidecar.Customer{{ID: "paul", Org: "partnerco"}, {ID: "mallory", Org: "otherco"}} {
		if _, err := p.store.PutCustomer(context.Background(), c, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// Callers.
func (p *partnerAPI) pat() string { return p.tok(identity.DevClaims{Subject: "pat", Org: "partnerco"}) }
func (p *partnerAPI) paul() string {
	return p.tok(identity.DevClaims{Subject: "paul", Org: "partnerco"})
}
func (p *partnerAPI) cora() string {
	return p.tok(identity.DevClaims{Subject: "cora", Org: "acme", Email: "cora@acme.example", Roles: []string{"contact_manager"}})
}
func (p *partnerAPI) eve() string { // acme employee without the contact manager role
	return p.tok(identity.DevClaims{Subject: "eve", Org: "acme", Roles: []string{"support_agent"}})
}
func (p *partnerAPI) bob() string { return p.tok(identity.DevClaims{Subject: "bob", Org: "otherco"}) }

func (p *partnerAPI) tok(c identity.DevClaims) string {
	p.t.Helper()
	c.TTL, c.IssuedAt = 400*24*time.Hour, p.clock()
	tok, err := p.dev.Mint(c)
	if err != nil {
		p.t.Fatal(err)
	}
	return tok
}

type pres struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (r pres) code() string  { s, _ := r.get("error", "code").(string); return s }
func (r pres) msg() string   { s, _ := r.get("error", "message").(string); return s }
func (r pres) field() string { s, _ := r.get("error", "field").(string); return s }
func (r pres) items() []any  { l, _ := r.get("items").([]any); return l }
func (r pres) str(path ...string) string {
	s, _ := r.get(path...).(string)
	return s
}

func (r pres) get(path ...string) any {
	var cur any = r.body
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func (p *partnerAPI) call(method, path, token string, body any, contentType ...string) pres {
	p.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			p.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req := httptest.NewRequest(method, "/deputy/v1/"+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if len(contentType) > 0 {
		req.Header.Set("Content-Type", contentType[0])
	} else if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	p.handler.ServeHTTP(w, req)
	r := pres{status: w.Code, header: w.Header(), raw: w.Body.String()}
	if strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(w.Body.Bytes(), &r.body); err != nil {
			p.t.Fatalf("%s %s: body is not JSON: %v", method, path, err)
		}
	}
	return r
}

func (p *partnerAPI) must(r pres, status int) pres {
	p.t.Helper()
	if r.status != status {
		p.t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	return r
}

func accessBody(level string, days int, scope string, users ...string) map[string]any {
	b := map[string]any{"customer": "acme", "contact_email": "cora@acme.example", "expiry_days": days, "level": level, "scope": scope}
	if len(users) > 0 {
		b["users"] = users
	}
	return b
}

// request creates an access request as pat and returns its id.
func (p *partnerAPI) request(body map[string]any) string {
	p.t.Helper()
	r := p.must(p.call("POST", "partner/requests", p.pat(), body), 201)
	return r.str("id")
}

// grant requests and approves.
func (p *partnerAPI) grant(body map[string]any) string {
	p.t.Helper()
	id := p.request(body)
	r := p.must(p.call("POST", "partner/requests/"+id+"/approve", p.cora(), nil), 200)
	gs, _ := r.get("grants").([]any)
	if len(gs) == 0 {
		p.t.Fatalf("approval made no grant: %s", r.raw)
	}
	return gs[0].(map[string]any)["id"].(string)
}

// check resolves a request as the pipeline does and asks the policy of
// the delegation's mode; it returns whether it is allowed and the reason.
func (p *partnerAPI) check(caller identity.DevClaims, method, path string, headers map[string]string) (bool, string) {
	p.t.Helper()
	id := &sidecar.Identity{Subject: caller.Subject, Org: caller.Org, Domain: caller.Domain, Roles: caller.Roles, Privileges: caller.Privileges}
	h := map[string]string{"x-on-behalf-of": "acme"}
	for k, v := range headers {
		h[k] = v
	}
	d, err := p.resolver.Resolve(context.Background(), &sidecar.Request{Method: method, Path: path, Headers: h}, id)
	if err != nil {
		if sidecar.ErrorCode(err) == sidecar.EUNAVAILABLE {
			p.t.Fatalf("resolve: %v", err)
		}
		return false, sidecar.ErrorMessage(err)
	}
	if d == nil {
		return false, "no_delegation"
	}
	var deleg map[string]any
	b, _ := json.Marshal(d)
	_ = json.Unmarshal(b, &deleg)
	hdrs := map[string]any{}
	for k, v := range h {
		hdrs[k] = v
	}
	// The canonical request the pipeline derives, for the plain paths used
	// here: non-empty segments, and their lower-case form (which is also
	// their route form: no front controller, format or folding here, so
	// the segments are the route form as spelled).
	var segs, lower []any
	for _, s := range strings.Split(path, "/") {
		if s != "" {
			segs, lower = append(segs, s), append(lower, strings.ToLower(s))
		}
	}
	in := map[string]any{
		"attributes":  map[string]any{"request": map[string]any{"http": map[string]any{"method": method, "path": path, "headers": hdrs}}},
		"parsed_path": strings.Split(strings.TrimPrefix(path, "/"), "/"),
		"deputy": map[string]any{"request": map[string]any{
			"path": path, "lower_path": strings.ToLower(path), "segments": segs, "lower_segments": lower, "route_segments": lower,
			"spelled_route_segments": segs,
			"method":                 method, "methods": []any{method},
		}},
		"identity":   map[string]any{"sub": id.Subject, "org": id.Org, "domain": id.Domain, "roles": id.Roles, "privileges": id.Privileges},
		"delegation": deleg,
	}
	v, err := ast.InterfaceToValue(in)
	if err != nil {
		p.t.Fatal(err)
	}
	res, err := p.engine.Eval(context.Background(), "data.deputy."+d.Mode+".decision", v)
	if err != nil || res.Value == nil {
		p.t.Fatalf("eval: %v (defined %v)", err, res.Value != nil)
	}
	var out map[string]any
	if err := ast.As(res.Value.Value, &out); err != nil {
		p.t.Fatal(err)
	}
	allowed, _ := out["allowed"].(bool)
	reason, _ := out["reason"].(string)
	return allowed, reason
}

func (p *partnerAPI) eventTypes() []string {
	es, _, err := p.store.ReadEvents(context.Background(), sidecar.StreamFilter{Page: sidecar.Page{Limit: 100}})
	if err != nil {
		p.t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Type)
	}
	return out
}

var (
	patClaims  = identity.DevClaims{Subject: "pat", Org: "partnerco"}
	paulClaims = identity.DevClaims{Subject: "paul", Org: "partnerco"}
)

// TestPartnerAPIWalk is the README flow: request → approve → act for the
// customer at the granted level → revoke → denied.
func TestPartnerAPIWalk(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			created := p.must(p.call("POST", "partner/requests", p.pat(), accessBody("update", 30, "organisation")), 201)
			id := created.str("id")
			if created.str("status") != "pending" || created.header.Get("Location") != "/deputy/v1/partner/requests/"+id {
				t.Fatalf("created = %s (location %q)", created.raw, created.header.Get("Location"))
			}
			if l := p.must(p.call("GET", "partner/requests?customer=acme", p.cora(), nil), 200).items(); len(l) != 1 {
				t.Fatalf("contact manager sees %d requests, want 1", len(l))
			}
			if l := p.must(p.call("GET", "partner/requests", p.pat(), nil), 200).items(); len(l) != 1 {
				t.Fatalf("partner sees %d requests, want 1", len(l))
			}
			p.must(p.call("GET", "partner/requests/"+id, p.pat(), nil), 200)

			approved := p.must(p.call("POST", "partner/requests/"+id+"/approve", p.cora(), nil), 200)
			if approved.str("request", "status") != "approved" {
				t.Fatalf("approved = %s", approved.raw)
			}
			grantID := approved.get("grants").([]any)[0].(map[string]any)["id"].(string)

			mine := p.must(p.call("GET", "partner/customers", p.paul(), nil), 200).items()
			if len(mine) != 1 || mine[0].(map[string]any)["customer"] != "acme" || mine[0].(map[string]any)["level"] != "update" || mine[0].(map[string]any)["scope"] != "organisation" {
				t.Fatalf("My Customers = %v", mine)
			}
			theirs := p.must(p.call("GET", "partner/partners", p.cora(), nil), 200).items()
			if len(theirs) != 1 || theirs[0].(map[string]any)["partner_org"] != "partnerco" {
				t.Fatalf("My Partners = %v", theirs)
			}

			steps := []struct {
				name, method, path string
				allowed            bool
				reason             string
			}{
				{"read", "GET", "/service-requests/sr-1", true, "partner_level_sufficient"},
				{"update", "PATCH", "/service-requests/sr-1", true, "partner_level_sufficient"},
				{"create needs more", "POST", "/service-requests", false, "level_too_low:create"},
			}
			for _, st := range steps {
				if ok, why := p.check(paulClaims, st.method, st.path, nil); ok != st.allowed || why != st.reason {
					t.Fatalf("%s: allowed=%v reason=%q, want %v %q", st.name, ok, why, st.allowed, st.reason)
				}
			}

			p.must(p.call("DELETE", "partner/grants/acme/"+grantID, p.pat(), nil), 204)
			if ok, why := p.check(paulClaims, "GET", "/service-requests/sr-1", nil); ok || why != "no_live_grant" {
				t.Fatalf("after revocation: allowed=%v reason=%q", ok, why)
			}
			if l := p.must(p.call("GET", "partner/customers", p.paul(), nil), 200).items(); len(l) != 0 {
				t.Fatalf("My Customers after revocation = %v", l)
			}
			want := []string{sidecar.EventGrantRequested, sidecar.EventGrantApproved, sidecar.EventGrantRevoked}
			if got := p.eventTypes(); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("events = %v, want %v", got, want)
			}
			audit, _, err := p.store.ReadAudit(context.Background(), sidecar.StreamFilter{Page: sidecar.Page{Limit: 100}})
			if err != nil {
				t.Fatal(err)
			}
			var actions []string
			for _, a := range audit {
				actions = append(actions, a.Actor+":"+a.Action)
			}
			if got := strings.Join(actions, ","); got != "pat:partner.request,cora:partner.approve,pat:partner.revoke" {
				t.Fatalf("audit = %s", got)
			}
		})
	}
}

func TestPartnerAPIRefusals(t *testing.T) {
	type setup struct {
		p       *partnerAPI
		request string // a pending organisation request at look for 30 days
	}
	cases := []struct {
		name   string
		before func(s *setup)
		do     func(s *setup) pres
		status int
		code   string
		msg    string
		field  string
	}{
		{name: "no token", do: func(s *setup) pres { return s.p.call("GET", "partner/customers", "", nil) }, status: 401, code: "unauthorized"},
		{name: "malformed body", do: func(s *setup) pres { return s.p.call("POST", "partner/requests", s.p.pat(), `{"customer": "acme",`) }, status: 400, code: "invalid", field: "body"},
		{name: "unknown field", do: func(s *setup) pres {
			b := accessBody("look", 30, "organisation")
			b["level_override"] = "full_admin"
			return s.p.call("POST", "partner/requests", s.p.pat(), b)
		}, status: 400, code: "invalid", field: "level_override"},
		{name: "expiry as a string", do: func(s *setup) pres {
			b := accessBody("look", 30, "organisation")
			b["expiry_days"] = "30"
			return s.p.call("POST", "partner/requests", s.p.pat(), b)
		}, status: 400, code: "invalid", field: "expiry_days"},
		{name: "body too large", do: func(s *setup) pres {
			b := accessBody("look", 30, "individual", strings.Repeat("u", 2000))
			return s.p.call("POST", "partner/requests", s.p.pat(), b)
		}, status: 413, code: "too_large", field: "body"},
		{name: "expiry out of range", do: func(s *setup) pres {
			return s.p.call("POST", "partner/requests", s.p.pat(), accessBody("look", 400, "organisation"))
		}, status: 400, code: "invalid", field: "expiry_days"},
		{name: "level out of range", do: func(s *setup) pres {
			return s.p.call("POST", "partner/requests", s.p.pat(), accessBody("owner", 30, "organisation"))
		}, status: 400, code: "invalid", field: "level"},
		{name: "individual scope naming a user of another org", do: func(s *setup) pres {
			return s.p.call("POST", "partner/requests", s.p.pat(), accessBody("look", 30, "individual", "pat", "mallory"))
		}, status: 400, code: "invalid", field: "users"},
		{name: "caller without an org", do: func(s *setup) pres {
			return s.p.call("POST", "partner/requests", s.p.tok(identity.DevClaims{Subject: "x"}), accessBody("look", 30, "organisation"))
		}, status: 403, code: "forbidden"},
		{name: "partner approves its own request", do: func(s *setup) pres {
			return s.p.call("POST", "partner/requests/"+s.request+"/approve", s.p.pat(), nil)
		}, status: 403, code: "forbidden", msg: "not_permitted"},
		// Callers who are no party to the request are answered as for an
		// unknown one (TestNonPartyReadsAsUnknown).
		{name: "customer employee without the role approves", do: func(s *setup) pres {
			return s.p.call("POST", "partner/requests/"+s.request+"/approve", s.p.eve(), nil)
		}, status: 404, code: "not_found", msg: "access request not found"},
		{name: "another org's contact manager approves", do: func(s *setup) pres {
			tok := s.p.tok(identity.DevClaims{Subject: "gil", Org: "globex", Roles: []string{"contact_manager"}})
			return s.p.call("POST", "partner/requests/"+s.request+"/approve", tok, nil)
		}, status: 404, code: "not_found", msg: "access request not found"},
		{name: "approve an expired request", before: func(s *setup) { s.p.advance(30 * 24 * time.Hour) }, do: func(s *setup) pres {
			return s.p.call("POST", "partner/requests/"+s.request+"/approve", s.p.cora(), nil)
		}, status: 409, code: "conflict", msg: "request_expired"},
		{name: "approve an approved request", before: func(s *setup) {
			s.p.must(s.p.call("POST", "partner/requests/"+s.request+"/approve", s.p.cora(), nil), 200)
		}, do: func(s *setup) pres {
			return s.p.call("POST", "partner/requests/"+s.request+"/approve", s.p.cora(), nil)
		}, status: 409, code: "conflict", msg: "request_already_approved"},
		{name: "reject a request another manager rejected", before: func(s *setup) {
			s.p.must(s.p.call("POST", "partner/requests/"+s.request+"/reject", s.p.cora(), nil), 200)
		}, do: func(s *setup) pres {
			tok := s.p.tok(identity.DevClaims{Subject: "carl", Org: "acme", Roles: []string{"contact_manager"}})
			return s.p.call("POST", "partner/requests/"+s.request+"/reject", tok, nil)
		}, status: 409, code: "conflict", msg: "request_already_rejected"},
		// The manager's own rejection sent again is a retry: perhaps the
		// first lost its answer.
		{name: "reject a request again", before: func(s *setup) {
			s.p.must(s.p.call("POST", "partner/requests/"+s.request+"/reject", s.p.cora(), nil), 200)
		}, do: func(s *setup) pres {
			return s.p.call("POST", "partner/requests/"+s.request+"/reject", s.p.cora(), nil)
		}, status: 200},
		{name: "approve an unknown request", do: func(s *setup) pres {
			return s.p.call("POST", "partner/requests/nope/approve", s.p.cora(), nil)
		}, status: 404, code: "not_found"},
		{name: "another org reads the request", do: func(s *setup) pres {
			return s.p.call("GET", "partner/requests/"+s.request, s.p.bob(), nil)
		}, status: 404, code: "not_found", msg: "access request not found"},
		{name: "bad status filter", do: func(s *setup) pres {
			return s.p.call("GET", "partner/requests?status=maybe", s.p.pat(), nil)
		}, status: 400, code: "invalid", field: "status"},
		{name: "third org revokes", before: func(s *setup) {
			s.p.must(s.p.call("POST", "partner/requests/"+s.request+"/approve", s.p.cora(), nil), 200)
		}, do: func(s *setup) pres {
			g := s.p.must(s.p.call("GET", "partner/partners", s.p.cora(), nil), 200).items()[0].(map[string]any)
			return s.p.call("DELETE", "partner/grants/acme/"+g["id"].(string), s.p.bob(), nil)
		}, status: 404, code: "not_found", msg: "grant not found"},
		{name: "revoke an unknown grant", do: func(s *setup) pres {
			return s.p.call("DELETE", "partner/grants/acme/nope", s.p.cora(), nil)
		}, status: 404, code: "not_found", msg: "grant not found"},
		{name: "partner lists the customer's partners", do: func(s *setup) pres {
			return s.p.call("GET", "partner/partners?customer=acme", s.p.pat(), nil)
		}, status: 403, code: "forbidden", msg: "not_permitted"},
		{name: "partner shares a request with itself", do: func(s *setup) pres {
			return s.p.call("PUT", "partner/shares/acme/pat/sr-1", s.p.pat(), map[string]any{"partner_org": "partnerco"})
		}, status: 403, code: "forbidden", msg: "not_permitted"},
		{name: "subscribe without a grant", do: func(s *setup) pres {
			return s.p.call("PUT", "partner/subscriptions/acme/notifications", s.p.pat(), nil)
		}, status: 403, code: "forbidden", msg: "no_live_grant"},
		{name: "bad page limit", do: func(s *setup) pres {
			return s.p.call("GET", "partner/customers?limit=0", s.p.pat(), nil)
		}, status: 400, code: "invalid", field: "limit"},
	}
	for _, b := range partnerBackends(t) {
		for _, tc := range cases {
			t.Run(b.name+"/"+tc.name, func(t *testing.T) {
				s := &setup{p: newPartnerAPI(t, b)}
				s.request = s.p.request(accessBody("look", 30, "organisation"))
				if tc.before != nil {
					tc.before(s)
				}
				r := tc.do(s)
				if r.status != tc.status || r.code() != tc.code || (tc.msg != "" && r.msg() != tc.msg) || r.field() != tc.field {
					t.Fatalf("got %d %s %q field %q, want %d %s %q field %q: %s", r.status, r.code(), r.msg(), r.field(), tc.status, tc.code, tc.msg, tc.field, r.raw)
				}
			})
		}
	}
}

// TestPartnerAPICheckPath covers what acting for a customer is decided on:
// precedence, expiry, cc shares and forged level headers.
func TestPartnerAPICheckPath(t *testing.T) {
	cases := []struct {
		name    string
		before  func(p *partnerAPI)
		caller  identity.DevClaims
		method  string
		path    string
		headers map[string]string
		allowed bool
		reason  string
	}{
		{name: "lower individual grant wins", before: func(p *partnerAPI) {
			p.grant(accessBody("full_admin", 30, "organisation"))
			p.grant(accessBody("look", 30, "individual", "pat"))
		}, caller: patClaims, method: "POST", path: "/service-requests", reason: "level_too_low:create"},
		{name: "colleague keeps the organisation grant", before: func(p *partnerAPI) {
			p.grant(accessBody("full_admin", 30, "organisation"))
			p.grant(accessBody("look", 30, "individual", "pat"))
		}, caller: paulClaims, method: "POST", path: "/service-requests", allowed: true, reason: "partner_level_sufficient"},
		{name: "expired grant", before: func(p *partnerAPI) {
			p.grant(accessBody("full_admin", 1, "organisation"))
			p.advance(24 * time.Hour)
		}, caller: patClaims, method: "GET", path: "/service-requests", reason: "no_live_grant"},
		{name: "forged level header", before: func(p *partnerAPI) {
			p.grant(accessBody("look", 30, "organisation"))
		}, caller: patClaims, method: "POST", path: "/service-requests", headers: map[string]string{"x-deputy-level": "full_admin"}, reason: "level_too_low:create"},
		{name: "cc on a shared request", before: func(p *partnerAPI) {
			p.grant(accessBody("cc", 30, "individual", "pat"))
			p.must(p.call("PUT", "partner/shares/acme/pat/sr-1", p.cora(), map[string]any{"partner_org": "partnerco"}), 200)
		}, caller: patClaims, method: "GET", path: "/service-requests/sr-1", allowed: true, reason: "partner_cc_shared_resource"},
		{name: "cc on an unshared request", before: func(p *partnerAPI) {
			p.grant(accessBody("cc", 30, "individual", "pat"))
			p.must(p.call("PUT", "partner/shares/acme/pat/sr-1", p.cora(), map[string]any{"partner_org": "partnerco"}), 200)
		}, caller: patClaims, method: "GET", path: "/service-requests/sr-2", reason: "cc_resource_not_shared"},
		{name: "cc after the share is withdrawn", before: func(p *partnerAPI) {
			p.grant(accessBody("cc", 30, "individual", "pat"))
			p.must(p.call("PUT", "partner/shares/acme/pat/sr-1", p.cora(), map[string]any{"partner_org": "partnerco"}), 200)
			p.must(p.call("DELETE", "partner/shares/acme/pat/sr-1", p.cora(), nil), 204)
		}, caller: patClaims, method: "GET", path: "/service-requests/sr-1", reason: "cc_resource_not_shared"},
		{name: "cc on a request shared with the same user name of another organisation", before: func(p *partnerAPI) {
			p.grant(accessBody("cc", 30, "individual", "pat"))
			p.must(p.call("PUT", "partner/shares/acme/pat/sr-1", p.cora(), map[string]any{"partner_org": "otherco"}), 200)
		}, caller: patClaims, method: "GET", path: "/service-requests/sr-1", reason: "cc_resource_not_shared"},
		{name: "cc after the share is withdrawn from the organisation", before: func(p *partnerAPI) {
			p.grant(accessBody("cc", 30, "individual", "pat"))
			p.must(p.call("PUT", "partner/shares/acme/pat/sr-1", p.cora(), map[string]any{"partner_org": "partnerco"}), 200)
			p.must(p.call("DELETE", "partner/shares/acme/pat/sr-1?partner_org=partnerco", p.cora(), nil), 204)
		}, caller: patClaims, method: "GET", path: "/service-requests/sr-1", reason: "cc_resource_not_shared"},
		{name: "cc kept when another organisation's share is withdrawn", before: func(p *partnerAPI) {
			p.grant(accessBody("cc", 30, "individual", "pat"))
			for _, org := range []string{"partnerco", "otherco"} {
				p.must(p.call("PUT", "partner/shares/acme/pat/sr-1", p.cora(), map[string]any{"partner_org": org}), 200)
			}
			p.must(p.call("DELETE", "partner/shares/acme/pat/sr-1?partner_org=otherco", p.cora(), nil), 204)
		}, caller: patClaims, method: "GET", path: "/service-requests/sr-1", allowed: true, reason: "partner_cc_shared_resource"},
		{name: "revoked by the customer", before: func(p *partnerAPI) {
			id := p.grant(accessBody("look", 30, "organisation"))
			p.must(p.call("DELETE", "partner/grants/acme/"+id, p.cora(), nil), 204)
		}, caller: patClaims, method: "GET", path: "/service-requests", reason: "no_live_grant"},
	}
	for _, b := range partnerBackends(t) {
		for _, tc := range cases {
			t.Run(b.name+"/"+tc.name, func(t *testing.T) {
				p := newPartnerAPI(t, b)
				tc.before(p)
				ok, why := p.check(tc.caller, tc.method, tc.path, tc.headers)
				if ok != tc.allowed || why != tc.reason {
					t.Fatalf("allowed=%v reason=%q, want %v %q", ok, why, tc.allowed, tc.reason)
				}
			})
		}
	}
}

func TestPartnerAPISubscriptions(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			p.grant(accessBody("cc", 30, "individual", "pat"))
			r := p.call("PUT", "partner/subscriptions/acme/notifications", p.pat(), nil)
			if r.status != 403 || r.msg() != "level_below_minimum:look" {
				t.Fatalf("cc subscribes: %d %s", r.status, r.raw)
			}
			p.grant(accessBody("look", 30, "individual", "pat"))
			p.must(p.call("PUT", "partner/subscriptions/acme/notifications", p.pat(), nil), 200)
			p.must(p.call("PUT", "partner/subscriptions/acme/notifications", p.pat(), nil), 200) // idempotent
			if r := p.call("PUT", "partner/subscriptions/acme/sms", p.pat(), nil); r.status != 400 || r.field() != "kind" {
				t.Fatalf("unknown kind: %d %s", r.status, r.raw)
			}
			if l := p.must(p.call("GET", "partner/subscribers/acme", p.cora(), nil), 200).items(); len(l) != 1 {
				t.Fatalf("subscribers = %v, want pat", l)
			}
			// The level drops: the subscription stops counting but stays listed as inactive.
			p.grant(accessBody("cc", 30, "individual", "pat"))
			if l := p.must(p.call("GET", "partner/subscribers/acme", p.cora(), nil), 200).items(); len(l) != 0 {
				t.Fatalf("subscribers after the level dropped = %v", l)
			}
			mine := p.must(p.call("GET", "partner/subscriptions", p.pat(), nil), 200).items()
			if len(mine) != 1 || mine[0].(map[string]any)["active"] != false {
				t.Fatalf("own subscriptions = %v, want one inactive", mine)
			}
			p.must(p.call("DELETE", "partner/subscriptions/acme/notifications", p.pat(), nil), 204)
			if l := p.must(p.call("GET", "partner/subscriptions", p.pat(), nil), 200).items(); len(l) != 0 {
				t.Fatalf("after unsubscribing = %v", l)
			}
		})
	}
}

// The host's mailer (read_events) learns from the subscribers whom to
// notify of a customer's events, and nothing more of the customer's
// partners: "My Partners" stays the contact manager's.
func TestPartnerAPIMailerReadsSubscribers(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			p.grant(accessBody("look", 30, "individual", "pat"))
			p.must(p.call("PUT", "partner/subscriptions/acme/notifications", p.pat(), nil), 200)
			mailer := p.tok(identity.DevClaims{Subject: "mail", Roles: []string{"mailer"}})
			l := p.must(p.call("GET", "partner/subscribers/acme?kind=notifications", mailer, nil), 200).items()
			if len(l) != 1 || l[0].(map[string]any)["user"] != "pat" {
				t.Fatalf("the mailer's subscribers of acme = %v, want pat", l)
			}
			if r := p.call("GET", "partner/partners", mailer, nil); r.status != 403 {
				t.Fatalf("the mailer lists partners: %d %s", r.status, r.raw)
			}
			if r := p.call("GET", "partner/subscribers/acme", p.pat(), nil); r.status != 403 {
				t.Fatalf("a partner lists acme's subscribers: %d %s", r.status, r.raw)
			}
		})
	}
}

// A subscription belongs to one (organisation, user) pair. Both come from
// the token and either may hold '/': the user "b" of organisation
// "partnerco/a" is no member of partnerco and holds none of its grants,
// so it neither lists nor deletes what partnerco's user "a/b" subscribed
// to, and its own subscriptions stay its own.
func TestPartnerAPISubscriptionsOfOrgAndUserHoldingSlash(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			p.grant(accessBody("look", 30, "organisation")) // partnerco at look on acme
			member := p.tok(identity.DevClaims{Subject: "a/b", Org: "partnerco"})
			outsider := p.tok(identity.DevClaims{Subject: "b", Org: "partnerco/a"})
			p.must(p.call("PUT", "partner/subscriptions/acme/notifications", member, nil), 200)

			if r := p.call("PUT", "partner/subscriptions/acme/notifications", outsider, nil); r.status != 403 || r.msg() != "no_live_grant" {
				t.Fatalf("outsider subscribes without a grant: %d %s", r.status, r.raw)
			}
			if l := p.must(p.call("GET", "partner/subscriptions", outsider, nil), 200).items(); len(l) != 0 {
				t.Fatalf("outsider lists partnerco's a/b subscriptions: %v", l)
			}
			p.must(p.call("DELETE", "partner/subscriptions/acme/notifications", outsider, nil), 204)
			mine := p.must(p.call("GET", "partner/subscriptions", member, nil), 200).items()
			if len(mine) != 1 || mine[0].(map[string]any)["user"] != "a/b" || mine[0].(map[string]any)["partner_org"] != "partnerco" {
				t.Fatalf("after the outsider's delete, a/b's subscriptions = %v, want acme's notifications", mine)
			}

			// With a grant of its own, the organisation holding '/' subscribes
			// as itself: each side lists and deletes only its own.
			r := p.must(p.call("POST", "partner/requests", outsider, accessBody("look", 30, "organisation")), 201)
			p.must(p.call("POST", "partner/requests/"+r.str("id")+"/approve", p.cora(), nil), 200)
			p.must(p.call("PUT", "partner/subscriptions/acme/dashboard", outsider, nil), 200)
			theirs := p.must(p.call("GET", "partner/subscriptions", outsider, nil), 200).items()
			if len(theirs) != 1 || theirs[0].(map[string]any)["kind"] != "dashboard" || theirs[0].(map[string]any)["partner_org"] != "partnerco/a" || theirs[0].(map[string]any)["user"] != "b" {
				t.Fatalf("outsider's own subscriptions = %v, want acme's dashboard as partnerco/a's b", theirs)
			}
			if l := p.must(p.call("GET", "partner/subscribers/acme", p.cora(), nil), 200).items(); len(l) != 2 {
				t.Fatalf("acme's subscribers = %v, want both", l)
			}
			p.must(p.call("DELETE", "partner/subscriptions/acme/notifications", member, nil), 204)
			if l := p.must(p.call("GET", "partner/subscriptions", outsider, nil), 200).items(); len(l) != 1 {
				t.Fatalf("a/b's delete reached the outsider's subscriptions: %v", l)
			}
		})
	}
}

func TestPartnerAPIPagination(t *testing.T) {
	p := newPartnerAPI(t, partnerBackends(t)[0])
	for _, c := range []string{"c1", "c2", "c3"} {
		b := accessBody("look", 30, "organisation")
		b["customer"] = c
		id := p.request(b)
		tok := p.tok(identity.DevClaims{Subject: "cm-" + c, Org: c, Roles: []string{"contact_manager"}})
		p.must(p.call("POST", "partner/requests/"+id+"/approve", tok, nil), 200)
	}
	var seen []string
	path := "partner/customers?limit=2"
	for range 3 {
		r := p.must(p.call("GET", path, p.pat(), nil), 200)
		for _, it := range r.items() {
			seen = append(seen, it.(map[string]any)["customer"].(string))
		}
		next := r.str("next_cursor")
		if next == "" {
			break
		}
		path = "partner/customers?limit=2&cursor=" + next
	}
	if strings.Join(seen, ",") != "c1,c2,c3" {
		t.Fatalf("pages = %v, want c1,c2,c3", seen)
	}
}

// Naming users for an individual grant tells a partner nothing about who
// has a customer profile: a customer's profile, another organisation's
// member and an id nobody has get the same answer.
func TestPartnerRequestNamesNoProfile(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			if _, err := p.store.PutCustomer(context.Background(), &sidecar.Customer{ID: "cust-9", Name: "Cust"}, sidecar.Protection{}); err != nil {
				t.Fatal(err)
			}
			answer := func(user string) string {
				r := p.call("POST", "partner/requests", p.pat(), accessBody("look", 30, "individual", user))
				return fmt.Sprintf("%d %s %s %s", r.status, r.code(), r.field(), strings.ReplaceAll(r.msg(), user, "<user>"))
			}
			want := answer("nobody-here")
			if !strings.HasPrefix(want, "400 invalid users ") {
				t.Fatalf("unknown user: %s", want)
			}
			for _, user := range []string{"cust-9", "mallory"} {
				if got := answer(user); got != want {
					t.Errorf("%s: %s, unknown user: %s", user, got, want)
				}
			}
		})
	}
}

// What a customer's contact manager and a partner's users do for their
// own organisation (requests, approvals, rejections, revocations, shares)
// any ordinary account can repeat: those records are self-service, kept
// apart, so toggling a share never pushes staff records (here a reseller
// super admin's assignment) out of the staff trail. Reads merge both in id
// order.
func TestOwnSideAuditIsSelfService(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			seedDomains(t, p)
			p.must(p.call("PUT", "reseller/assignments/initech", p.tok(samClaims), map[string]any{}), 200)
			grantID := p.grant(accessBody("look", 30, "individual", "pat"))
			p.must(p.call("POST", "partner/requests/"+p.request(accessBody("cc", 30, "organisation"))+"/reject", p.cora(), nil), 200)
			const toggles = 20
			for range toggles {
				p.must(p.call("PUT", "partner/shares/acme/pat/sr-1", p.cora(), map[string]any{"partner_org": "partnerco"}), 200)
				p.must(p.call("DELETE", "partner/shares/acme/pat/sr-1", p.cora(), nil), 204)
				p.advance(2 * time.Second) // within cora's write budget
			}
			p.must(p.call("DELETE", "partner/grants/acme/"+grantID, p.cora(), nil), 204)

			audit, _, err := p.store.ReadAudit(context.Background(), sidecar.StreamFilter{Page: sidecar.Page{Limit: 500}})
			if err != nil {
				t.Fatal(err)
			}
			var staff, self []string
			for k, a := range audit {
				if k > 0 && !streamID(t, audit[k-1].ID).Less(streamID(t, a.ID)) {
					t.Fatalf("audit read out of id order: %s then %s", audit[k-1].ID, a.ID)
				}
				if a.SelfService {
					self = append(self, a.Actor+":"+a.Action)
				} else {
					staff = append(staff, a.Actor+":"+a.Action)
				}
			}
			if got := strings.Join(staff, ","); got != "sam:reseller.assignment.put" {
				t.Fatalf("staff records = %s", got)
			}
			want := []string{"pat:partner.request", "cora:partner.approve", "pat:partner.request", "cora:partner.reject"}
			for range toggles {
				want = append(want, "cora:share.put", "cora:share.delete")
			}
			want = append(want, "cora:partner.revoke")
			if got := strings.Join(self, ","); got != strings.Join(want, ",") {
				t.Fatalf("self-service records = %s\nwant %s", got, strings.Join(want, ","))
			}
		})
	}
}

func streamID(t *testing.T, s string) sidecar.StreamID {
	t.Helper()
	id, err := sidecar.ParseStreamID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestPartnerAPIRevokedIndividualGrantHoldsBack walks what the customer
// approved as "the partner organisation at update, pat individually at
// look": revoking pat's individual grant — pat, a colleague or the
// customer — leaves pat with nothing for the customer until the revoked
// grant would have expired, on the check path through its cache; an
// organisation grant the customer approves after the revocation applies
// only at or below look.
func TestPartnerAPIRevokedIndividualGrantHoldsBack(t *testing.T) {
	revokers := map[string]func(p *partnerAPI) string{
		"by pat":          (*partnerAPI).pat,
		"by a colleague":  (*partnerAPI).paul,
		"by the customer": (*partnerAPI).cora,
	}
	for _, b := range partnerBackends(t) {
		for name, revoker := range revokers {
			t.Run(b.name+"/"+name, func(t *testing.T) {
				p := newPartnerAPI(t, b)
				p.cacheChecks()
				p.grant(accessBody("update", 30, "organisation"))
				own := p.grant(accessBody("look", 10, "individual", "pat"))
				want := func(what string, caller identity.DevClaims, method string, allowed bool, reason string) {
					t.Helper()
					ok, why := p.check(caller, method, "/service-requests/1", nil)
					if ok != allowed || (reason != "" && why != reason) {
						t.Fatalf("%s: %s %s %s: allowed=%v reason=%q, want %v %q", what, caller.Subject, method, "/service-requests/1", ok, why, allowed, reason)
					}
				}
				want("before", patClaims, "GET", true, "")
				want("before", patClaims, "PUT", false, "")

				p.must(p.call("DELETE", "partner/grants/acme/"+own, revoker(p), nil), 204)
				for _, m := range []string{"GET", "PUT"} {
					want("after the revocation", patClaims, m, false, "no_live_grant")
				}
				want("after the revocation", paulClaims, "PUT", true, "partner_level_sufficient")
				if items := p.must(p.call("GET", "partner/customers", p.pat(), nil), 200).items(); len(items) != 0 {
					t.Fatalf("pat's customers after the revocation: %v, want none", items)
				}
				p.advance(10*24*time.Hour - time.Minute)
				for _, m := range []string{"GET", "PUT"} {
					want("just before the revoked grant would have expired", patClaims, m, false, "no_live_grant")
				}
				p.advance(time.Minute)
				want("once the revoked grant would have expired", patClaims, "PUT", true, "partner_level_sufficient")

				own = p.grant(accessBody("look", 10, "individual", "pat"))
				p.must(p.call("DELETE", "partner/grants/acme/"+own, revoker(p), nil), 204)
				want("after the second revocation", patClaims, "PUT", false, "no_live_grant")
				p.grant(accessBody("update", 30, "organisation"))
				want("organisation grant above the revoked level approved after the revocation", patClaims, "GET", false, "no_live_grant")
				p.grant(accessBody("look", 30, "organisation"))
				want("organisation grant at the revoked level approved after the revocation", patClaims, "GET", true, "")
				want("organisation grant at the revoked level approved after the revocation", patClaims, "PUT", false, "")
				if items := p.must(p.call("GET", "partner/customers", p.pat(), nil), 200).items(); len(items) != 1 || items[0].(map[string]any)["level"] != "look" {
					t.Fatalf("pat's customers under the organisation's look: %v, want acme at look", items)
				}
			})
		}
	}
}

// Asking again replaces pat's grant. A partner admin offboarding pat with
// the id of the grant replaced is answered 409 conflict naming the grant
// that holds pat's access, not 204 as if access were gone; revoking that
// one ends it, and revoking it again is 204 as before.
func TestPartnerAPIRevokeOfAReplacedGrantNamesTheLiveOne(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			first := p.grant(accessBody("look", 10, "individual", "pat"))
			live := p.grant(accessBody("update", 30, "individual", "pat"))
			r := p.must(p.call("DELETE", "partner/grants/acme/"+first, p.paul(), nil), 409)
			if r.code() != "conflict" || !strings.HasPrefix(r.msg(), "grant_replaced: ") || !strings.Contains(r.msg(), live) {
				t.Fatalf("revoking the replaced grant: %s, want conflict grant_replaced naming %s", r.raw, live)
			}
			if ok, why := p.check(patClaims, "PUT", "/service-requests/1", nil); !ok {
				t.Fatalf("pat after the refused revocation: denied (%s), want the live grant to hold", why)
			}
			p.must(p.call("DELETE", "partner/grants/acme/"+live, p.paul(), nil), 204)
			p.must(p.call("DELETE", "partner/grants/acme/"+live, p.paul(), nil), 204)
			if ok, why := p.check(patClaims, "GET", "/service-requests/1", nil); ok || why != "no_live_grant" {
				t.Fatalf("pat after the revocation: allowed=%v %s, want no_live_grant", ok, why)
			}
		})
	}
}

// cacheChecks makes check read grants through the check path's cache, kept
// long enough to outlive every clock move of a test: what it answers from
// a cached entry must agree with the store.
func (p *partnerAPI) cacheChecks() {
	p.t.Helper()
	cs := resolve.NewCachedState(p.store, resolve.CacheConfig{TTL: 365 * 24 * time.Hour, NegativeTTL: time.Minute, Size: 100}, p.clock, nil)
	p.t.Cleanup(func() { _ = cs.Close() })
	data := func() map[string]any {
		if a := p.engine.Current(); a != nil {
			return a.Data()
		}
		return nil
	}
	var err error
	if p.resolver, err = resolve.NewOnBehalfResolver(cs, p.store, data, delegation.PartnerConfig{}, resolve.WithResolverClock(p.clock)); err != nil {
		p.t.Fatal(err)
	}
}
