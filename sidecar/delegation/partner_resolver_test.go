package delegation_test

import (
	"context"
	"slices"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// resolverLookups is what the resolver reads; tests pass the store itself
// or the cache in front of it.
type resolverLookups interface {
	delegation.GrantLookup
	delegation.AssignmentLookup
}

func newTestResolver(t *testing.T, env *partnerEnv, lookups resolverLookups) *delegation.OnBehalfResolver {
	t.Helper()
	cfg := delegation.PartnerConfig{PathTemplate: "/customers/{customer}/..."}
	r, err := delegation.NewOnBehalfResolver(lookups, lookups, shippedData(t), cfg, delegation.WithResolverClock(env.clock.Now))
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
			if _, err := env.partners.Share(context.Background(), cora, "acme", delegation.ShareInput{Resource: "sr-7", User: "pat", PartnerOrg: "partnerco"}); err != nil {
				t.Fatal(err)
			}
		}, level: sidecar.LevelCC, scope: sidecar.ScopeIndividual, shared: []string{"sr-7"}},
		{name: "cc with nothing shared", caller: patUser, req: onBehalf("acme"), setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, individualRequest(sidecar.LevelCC, 30, "pat"))
		}, level: sidecar.LevelCC, scope: sidecar.ScopeIndividual, shared: []string{}},
		{name: "customer named by the path template", caller: patUser, req: &sidecar.Request{Path: "/customers/acme/service-requests/sr-1", Headers: map[string]string{}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, level: sidecar.LevelLook, scope: sidecar.ScopeOrganisation},
		{name: "percent-encoded customer in the path", caller: patUser, req: &sidecar.Request{Path: "/customers/ac%6De/service-requests", Headers: map[string]string{}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, level: sidecar.LevelLook, scope: sidecar.ScopeOrganisation},
		{name: "header wins over the path", caller: patUser, req: &sidecar.Request{Path: "/customers/globex/x", Headers: map[string]string{"x-on-behalf-of": "acme"}}, setup: func(t *testing.T, env *partnerEnv) {
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
		}, level: sidecar.LevelLook, scope: sidecar.ScopeOrganisation},
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
			if _, err := env.partners.Revoke(context.Background(), cora, "acme", g.ID); err != nil {
				t.Fatal(err)
			}
		}, reason: "no_live_grant"},
		{name: "anonymous", caller: nil, req: onBehalf("acme"), reason: "identity_required"},
		{name: "caller without an org", caller: &sidecar.Identity{Subject: "x"}, req: onBehalf("acme"), reason: "no_partner_org"},
		{name: "malformed header", caller: patUser, req: onBehalf("ac me"), reason: "invalid_on_behalf_of"},
		{name: "header with a hash tag", caller: patUser, req: onBehalf("{acme}"), reason: "invalid_on_behalf_of"},
		{name: "malformed path escape", caller: patUser, req: &sidecar.Request{Path: "/customers/%zz/x", Headers: map[string]string{}}, none: true},
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

func TestNewOnBehalfResolverRejectsBadTemplate(t *testing.T) {
	for _, tmpl := range []string{"customers/{customer}", "/customers/", "/{customer}/{customer}/", "/a//{customer}"} {
		t.Run(tmpl, func(t *testing.T) {
			_, err := delegation.NewOnBehalfResolver(nil, nil, nil, delegation.PartnerConfig{PathTemplate: tmpl})
			wantCode(t, err, sidecar.EINVALID, "")
		})
	}
}
