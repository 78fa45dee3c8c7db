package delegation_test

import (
	"context"
	"log/slog"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// resolverLookups is what the resolver reads; tests pass the store itself
// or the cache in front of it.
type resolverLookups interface {
	resolve.GrantLookup
	resolve.AssignmentLookup
}

func newTestResolver(t *testing.T, env *partnerEnv, lookups resolverLookups) *resolve.OnBehalfResolver {
	t.Helper()
	r, err := resolve.NewOnBehalfResolver(lookups, lookups, shippedData(t), delegation.PartnerConfig{}, resolve.WithResolverClock(env.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func onBehalf(customer string) *sidecar.Request {
	return &sidecar.Request{Method: "GET", Path: "/service-requests", Headers: map[string]string{"x-on-behalf-of": customer}}
}

func TestResolvePartner(t *testing.T) {
	cases := []struct {
		name    string
		setup   func(t *testing.T, env *partnerEnv)
		caller  *sidecar.Identity
		req     *sidecar.Request
		none    bool   // no delegation, no error: acting as oneself
		reason  string // refusal reason
		level   sidecar.Level
		scope   string
		shared  []string
		subject string
	}{
		{name: "no customer named", caller: patUser, req: &sidecar.Request{Path: "/service-requests", Headers: map[string]string{}}, none: true},
		{name: "own organisation named", caller: cora, req: onBehalf("acme"), none: true},
		{name: "organisation grant", caller: patUser, req: onBehalf("acme"), setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelUpdate, 30))
		}, level: sidecar.LevelUpdate, scope: sidecar.ScopeOrganisation},
		{name: "colleague under the organisation grant", caller: paulUser, req: onBehalf("acme"), setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelCreate, 30))
		}, level: sidecar.LevelCreate, scope: sidecar.ScopeOrganisation},
		{name: "lower individual grant wins", caller: patUser, req: onBehalf("acme"), setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelFullAdmin, 30))
			env.grant(t, patUser, individualRequest(sidecar.LevelLook, 30, "pat"))
		}, level: sidecar.LevelLook, scope: sidecar.ScopeIndividual},
		{name: "individual grant of a colleague does not apply", caller: paulUser, req: onBehalf("acme"), setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelFullAdmin, 30))
			env.grant(t, patUser, individualRequest(sidecar.LevelLook, 30, "pat"))
		}, level: sidecar.LevelFullAdmin, scope: sidecar.ScopeOrganisation},
		{name: "expired individual grant counts as absent", caller: patUser, req: onBehalf("acme"), setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, individualRequest(sidecar.LevelCC, 1, "pat"))
			env.grant(t, patUser, orgRequest(sidecar.LevelUpdate, 30))
			env.clock.Advance(day)
		}, level: sidecar.LevelUpdate, scope: sidecar.ScopeOrganisation},
		{name: "cc carries its shared resources", caller: patUser, req: onBehalf("acme"), setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, individualRequest(sidecar.LevelCC, 30, "pat"))
			if _, err := env.partners.Share(context.Background(), cora, "acme", delegation.ShareInput{Resource: "sr-7", User: "pat", PartnerOrg: "partnerco"}, allowAll); err != nil {
				t.Fatal(err)
			}
		}, level: sidecar.LevelCC, scope: sidecar.ScopeIndividual, shared: []string{"sr-7"}},
		{name: "cc with nothing shared", caller: patUser, req: onBehalf("acme"), setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, individualRequest(sidecar.LevelCC, 30, "pat"))
		}, level: sidecar.LevelCC, scope: sidecar.ScopeIndividual, shared: []string{}},
		{name: "customer named by the path template", caller: patUser, req: &sidecar.Request{Path: "/customers/acme/service-requests/sr-1", Headers: map[string]string{}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, level: sidecar.LevelLook, scope: sidecar.ScopeOrganisation},
		{name: "path template matches case-insensitively", caller: patUser, req: &sidecar.Request{Path: "/CUSTOMERS/acme/service-requests", Headers: map[string]string{}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, level: sidecar.LevelLook, scope: sidecar.ScopeOrganisation},
		{name: "header and path name different customers", caller: patUser, req: &sidecar.Request{Path: "/customers/globex/x", Headers: map[string]string{"x-on-behalf-of": "acme"}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, reason: "on_behalf_of_ambiguous"},
		{name: "forged level header changes nothing", caller: patUser, req: &sidecar.Request{Path: "/service-requests", Headers: map[string]string{"x-on-behalf-of": "acme", "x-deputy-level": "full_admin", "x-deputy-mode": "partner"}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, level: sidecar.LevelLook, scope: sidecar.ScopeOrganisation},
		{name: "no grant", caller: patUser, req: onBehalf("acme"), reason: "no_live_grant"},
		{name: "another customer's grant", caller: patUser, req: onBehalf("globex"), setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, reason: "no_live_grant"},
		{name: "expired grant", caller: patUser, req: onBehalf("acme"), setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 2))
			env.clock.Advance(2 * day)
		}, reason: "no_live_grant"},
		{name: "revoked grant", caller: patUser, req: onBehalf("acme"), setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
			g, _ := env.partners.Effective(context.Background(), "acme", "partnerco", "pat")
			if _, err := env.partners.Revoke(context.Background(), cora, "acme", g.ID, allowAll); err != nil {
				t.Fatal(err)
			}
		}, reason: "no_live_grant"},
		{name: "anonymous", caller: nil, req: onBehalf("acme"), reason: "identity_required"},
		{name: "caller without an org", caller: &sidecar.Identity{Subject: "x"}, req: onBehalf("acme"), reason: "no_partner_org"},
		{name: "malformed header", caller: patUser, req: onBehalf("ac me"), reason: "invalid_on_behalf_of"},
		{name: "header with a hash tag", caller: patUser, req: onBehalf("{acme}"), reason: "invalid_on_behalf_of"},
		{name: "underscore spelling", caller: patUser, req: &sidecar.Request{Path: "/service-requests", Headers: map[string]string{"x_on_behalf_of": "acme"}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, level: sidecar.LevelLook, scope: sidecar.ScopeOrganisation},
		{name: "spellings that agree", caller: patUser, req: &sidecar.Request{Path: "/service-requests", Headers: map[string]string{"x-on-behalf-of": "acme", "x_on-behalf_of": "acme"}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, level: sidecar.LevelLook, scope: sidecar.ScopeOrganisation},
		{name: "header_map only", caller: patUser, req: &sidecar.Request{Path: "/service-requests", HeaderMap: []sidecar.HeaderField{{Name: "X-On-Behalf-Of", Value: "acme"}}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, level: sidecar.LevelLook, scope: sidecar.ScopeOrganisation},
		{name: "spellings that disagree", caller: patUser, req: &sidecar.Request{Path: "/service-requests", Headers: map[string]string{"x-on-behalf-of": "acme", "x_on_behalf_of": "globex"}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, reason: "on_behalf_of_ambiguous"},
		{name: "an empty spelling beside a customer", caller: patUser, req: &sidecar.Request{Path: "/service-requests", Headers: map[string]string{"x-on-behalf-of": "", "x_on_behalf_of": "globex"}}, reason: "on_behalf_of_ambiguous"},
		{name: "repeated values that disagree in header_map", caller: patUser, req: &sidecar.Request{Path: "/service-requests", HeaderMap: []sidecar.HeaderField{{Name: "x-on-behalf-of", Value: "acme"}, {Name: "X_ON_BEHALF_OF", Value: "globex"}}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, reason: "on_behalf_of_ambiguous"},
		{name: "headers and header_map that disagree", caller: patUser, req: &sidecar.Request{Path: "/service-requests", Headers: map[string]string{"x-on-behalf-of": "acme"}, HeaderMap: []sidecar.HeaderField{{Name: "x-on-behalf-of", Value: "globex"}}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, reason: "on_behalf_of_ambiguous"},
		{name: "path ending at the template's literal", caller: patUser, req: &sidecar.Request{Path: "/customers/", Headers: map[string]string{}}, none: true},
		{name: "header and path name the same customer", caller: patUser, req: &sidecar.Request{Path: "/customers/acme/service-requests", Headers: map[string]string{"x-on-behalf-of": "acme"}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, level: sidecar.LevelLook, scope: sidecar.ScopeOrganisation},
		{name: "path names the header's customer in another case", caller: patUser, req: &sidecar.Request{Path: "/Customers/ACME/service-requests", Headers: map[string]string{"x-on-behalf-of": "acme"}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, reason: "on_behalf_of_ambiguous"},
	}
	for _, ps := range partnerStores(t) {
		for _, tc := range cases {
			t.Run(ps.name+"/"+tc.name, func(t *testing.T) {
				env := newPartnerEnv(t, ps)
				if tc.setup != nil {
					tc.setup(t, env)
				}
				r := newTestResolver(t, env, env.store)
				d, err := r.Resolve(context.Background(), tc.req, tc.caller)
				checkResolved(t, d, err, tc.none, tc.reason)
				if d == nil {
					return
				}
				if d.Mode != sidecar.ModePartner || d.Level != string(tc.level) || d.Scope != tc.scope ||
					d.Subject != "acme" || d.Actor != tc.caller.Subject || d.ActorOrg != "partnerco" || d.ID == "" || d.ExpiresAt.IsZero() {
					t.Fatalf("delegation = %+v, want partner %s/%s for acme", d, tc.level, tc.scope)
				}
				if d.Attributes["precedence"] != tc.scope {
					t.Fatalf("precedence attribute = %v, want %s", d.Attributes["precedence"], tc.scope)
				}
				if tc.shared != nil {
					got, _ := d.Attributes["shared_resources"].([]any)
					var names []string
					for _, g := range got {
						names = append(names, g.(string))
					}
					if !slices.Equal(names, tc.shared) && (len(names) != 0 || len(tc.shared) != 0) {
						t.Fatalf("shared_resources = %v, want %v", got, tc.shared)
					}
				}
			})
		}
	}
}

// A resolver hands the same precedence attributes out with many
// delegations: a cc partner's shared resources, resolved in between, never
// show up in another partner's attributes.
func TestPartnerAttributesPerDelegation(t *testing.T) {
	env := newPartnerEnv(t, partnerStores(t)[0])
	env.grant(t, patUser, orgRequest(sidecar.LevelUpdate, 30))
	env.grant(t, patUser, individualRequest(sidecar.LevelCC, 30, "pat"))
	env.grant(t, patUser, individualRequest(sidecar.LevelLook, 30, "paul"))
	if _, err := env.partners.Share(context.Background(), cora, "acme", delegation.ShareInput{Resource: "sr-7", User: "pat", PartnerOrg: "partnerco"}, allowAll); err != nil {
		t.Fatal(err)
	}
	r := newTestResolver(t, env, env.store)
	pia := &sidecar.Identity{Subject: "pia", Org: "partnerco"}
	for range 2 {
		for _, tc := range []struct {
			caller *sidecar.Identity
			want   map[string]any
		}{
			{patUser, map[string]any{"precedence": sidecar.ScopeIndividual, "shared_resources": []any{"sr-7"}}},
			{paulUser, map[string]any{"precedence": sidecar.ScopeIndividual}},
			{pia, map[string]any{"precedence": sidecar.ScopeOrganisation}},
		} {
			d, err := r.Resolve(context.Background(), onBehalf("acme"), tc.caller)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d.Attributes, tc.want) {
				t.Errorf("%s: attributes %v, want %v", tc.caller.Subject, d.Attributes, tc.want)
			}
		}
	}
}

func checkResolved(t *testing.T, d *sidecar.Delegation, err error, none bool, reason string) {
	t.Helper()
	switch {
	case reason != "":
		if d != nil {
			t.Fatalf("delegation = %+v, want refusal %q", d, reason)
		}
		if err == nil || sidecar.ErrorReason(err) != reason {
			t.Fatalf("error = %v, want reason %q", err, reason)
		}
		if c := sidecar.ErrorCode(err); c != sidecar.EFORBIDDEN && c != sidecar.EINVALID {
			t.Fatalf("error code = %s, want forbidden or invalid (never unavailable)", c)
		}
	case none:
		if d != nil || err != nil {
			t.Fatalf("Resolve = %+v, %v; want no delegation", d, err)
		}
	default:
		if err != nil || d == nil {
			t.Fatalf("Resolve = %+v, %v; want a delegation", d, err)
		}
	}
}

// The path naming the customer is partner policy data
// (customer_path_prefix), the one the partner and reseller policies read:
// a changed prefix moves the resolver with it, at the next policy update.
func TestCustomerPathFromPolicyData(t *testing.T) {
	ctx := context.Background()
	env := newPartnerEnv(t, partnerStores(t)[0])
	env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
	shipped := shippedData(t)()
	accounts := withPartnerData(t, map[string]any{"customer_path_prefix": "accounts"})
	noPartner := map[string]any{"deputy": map[string]any{"reseller": shipped["deputy"].(map[string]any)["reseller"]}}
	var cur atomic.Pointer[map[string]any]
	r, err := resolve.NewOnBehalfResolver(env.store, env.store, func() map[string]any { return *cur.Load() }, delegation.PartnerConfig{},
		resolve.WithResolverClock(env.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data map[string]any
		path string
		want string // the customer acted for; "" none
	}{
		{name: "shipped prefix", data: shipped, path: "/customers/acme/service-requests", want: "acme"},
		{name: "shipped prefix, other word", data: shipped, path: "/accounts/acme/service-requests"},
		{name: "changed prefix", data: accounts, path: "/accounts/acme/service-requests", want: "acme"},
		{name: "changed prefix, old word", data: accounts, path: "/customers/acme/service-requests"},
		{name: "no partner data", data: noPartner, path: "/customers/acme/service-requests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur.Store(&tc.data)
			d, err := r.Resolve(ctx, &sidecar.Request{Method: "GET", Path: tc.path, Headers: map[string]string{}}, patUser)
			switch {
			case err != nil:
				t.Fatalf("Resolve: %v", err)
			case tc.want == "" && d != nil:
				t.Fatalf("delegation %+v, want none", d)
			case tc.want != "" && (d == nil || d.Subject != tc.want):
				t.Fatalf("delegation %+v, want one for %s", d, tc.want)
			}
		})
	}
}

type fixedIdentity struct{ id *sidecar.Identity }

func (f fixedIdentity) Verify(context.Context, *sidecar.Request) (*sidecar.Identity, error) {
	return f.id, nil
}

type lastDecision struct{ d *sidecar.Decision }

func (l *lastDecision) Log(d *sidecar.Decision) { l.d = d }

// The path template reads the path as the policies do (the canonical
// request, sections compared lower-cased): a path the partner policy reads
// as naming acme resolves acme's grant, however the client spelled it.
func TestPathTemplateReadsTheCanonicalPath(t *testing.T) {
	env := newPartnerEnv(t, partnerStore{name: "memory", open: func(t *testing.T, clock sidecar.Clock) sidecar.Store {
		s := memory.New(memory.WithClock(clock))
		t.Cleanup(func() { _ = s.Close() })
		return s
	}})
	env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
	mod := ast.MustParseModuleWithOpts("package t\n\ndecision := true\n", ast.ParserOptions{RegoVersion: ast.RegoV1})
	e := policy.New(policy.WithQueries("data.t.decision"), policy.WithLogger(slog.New(slog.DiscardHandler)))
	// The engine serves the rules the resolver reads: resolvers read the
	// data of the activation deciding the check.
	if err := e.Activate(context.Background(), &policy.Set{Modules: map[string]*ast.Module{"t.rego": mod}, Data: shippedData(t)()}); err != nil {
		t.Fatal(err)
	}
	logged := &lastDecision{}
	p := authz.New(e, authz.WithQuery("data.t.decision"), authz.WithVerifier(fixedIdentity{patUser}),
		authz.WithResolvers(newTestResolver(t, env, env.store)), authz.WithDecisionLogger(logged))

	var want string
	for _, path := range []string{
		"/customers/acme/service-requests",
		"/Customers/acme/service-requests",
		"//customers/acme/service-requests",
		"/customers//acme/service-requests",
		"/CUSTOMERS;v=1/ac%6De/service-requests",
	} {
		t.Run(path, func(t *testing.T) {
			p.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path, Host: "portal.example"},
			}}})
			d := logged.d.Delegation
			if d == nil || d.Subject != "acme" || d.Mode != sidecar.ModePartner || d.Level != string(sidecar.LevelLook) {
				t.Fatalf("delegation %+v (reason %q), want acme's look grant", d, logged.d.Reason)
			}
			if want == "" {
				want = d.ID
			} else if d.ID != want {
				t.Fatalf("grant %s, want %s as for the plain path", d.ID, want)
			}
		})
	}
}
