package authz_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// A reseller token says which domain its holder signed in through, but
// the request's host says which domain's portal it acts on. With
// domain_hosts in policy data, a token of shop-a.example on
// shop-b.example's portal acts there for no one, even for a customer of
// shop-a.example, and the upstream gets no delegated identity; the host
// is compared as Deputy decides on it (lower case, no trailing dot, no
// port). Without the map (as shipped) every host is as before.
func TestResellerDomainHosts(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	for _, a := range []sidecar.Assignment{
		{Customer: "acme", Reseller: "resellerco", Domain: "shop-a.example"},
		{Customer: "globex", Reseller: "resellerco", Domain: "shop-b.example"},
		{Customer: "initech", Reseller: "resellerco", Domain: "shop-c.example"},
	} {
		must(t, store.PutAssignment(ctx, &a))
	}
	bound := map[string]any{
		"shop-a.example": []any{"portal.shop-a.example", "care.shop-a.example"},
		"shop-b.example": []any{"portal.shop-b.example"},
	}
	cases := []struct {
		name        string
		domainHosts map[string]any
		domain      string // the token's
		customer    string
		host        string
		reason      string // of the denial; "" allowed
	}{
		{name: "own domain's portal", domainHosts: bound, domain: "shop-a.example", customer: "acme", host: "portal.shop-a.example"},
		{name: "own domain's second portal", domainHosts: bound, domain: "shop-a.example", customer: "acme", host: "care.shop-a.example"},
		{name: "own domain's portal in another case, with a dot and a port", domainHosts: bound, domain: "shop-a.example", customer: "acme", host: "Portal.SHOP-A.example.:8443"},
		{name: "the other domain's portal", domainHosts: bound, domain: "shop-a.example", customer: "acme", host: "portal.shop-b.example", reason: "domain_host_mismatch"},
		{name: "the other domain's staff on their portal", domainHosts: bound, domain: "shop-b.example", customer: "globex", host: "portal.shop-b.example"},
		{name: "the other domain's staff on this portal", domainHosts: bound, domain: "shop-b.example", customer: "globex", host: "portal.shop-a.example", reason: "domain_host_mismatch"},
		{name: "a domain the map leaves out", domainHosts: bound, domain: "shop-c.example", customer: "initech", host: "portal.shop-a.example", reason: "domain_hosts_unlisted"},
		{name: "empty map: the other domain's portal", domainHosts: map[string]any{}, domain: "shop-a.example", customer: "acme", host: "portal.shop-b.example"},
		{name: "empty map: a check naming no host", domainHosts: map[string]any{}, domain: "shop-a.example", customer: "acme"},
		{name: "a check naming no host", domainHosts: bound, domain: "shop-a.example", customer: "acme", reason: "domain_host_mismatch"},
		// Data written before the key existed binds no host either.
		{name: "no map: the other domain's portal", domain: "shop-a.example", customer: "acme", host: "portal.shop-b.example"},
	}
	// One pipeline per map, its cases asked in turn and again in
	// reverse: the policy keeps answers across checks (deputy_memo), and
	// one host's answer must never be another's.
	type pipeline struct {
		p    *authz.Pipeline
		mint func(identity.DevClaims) string
	}
	pipelines := map[string]pipeline{}
	for _, tc := range cases {
		if _, ok := pipelines[mapLabel(tc.domainHosts)]; !ok {
			var pl pipeline
			pl.p, pl.mint = domainHostsPipeline(t, store, tc.domainHosts)
			pipelines[mapLabel(tc.domainHosts)] = pl
		}
	}
	order := slices.Clone(cases)
	slices.Reverse(order)
	for i, tc := range append(slices.Clone(cases), order...) {
		t.Run(fmt.Sprintf("%s#%d", tc.name, i), func(t *testing.T) {
			p, mint := pipelines[mapLabel(tc.domainHosts)].p, pipelines[mapLabel(tc.domainHosts)].mint
			tok := mint(identity.DevClaims{Subject: "rita", Org: "resellerco", Domain: tc.domain, Roles: []string{"reseller_admin"}, TTL: time.Hour})
			req := withHeaders(t, "/support/cases", map[string]string{"authorization": "Bearer " + tok, "x-on-behalf-of": tc.customer, ":authority": tc.host})
			req.Attributes.Request.Http.Host = tc.host
			if tc.host == "" {
				delete(req.Attributes.Request.Http.Headers, ":authority")
			}
			resp := p.Check(ctx, req)
			var subject []string
			for _, h := range append(slices.Clone(resp.Headers), resp.Injected...) {
				if strings.EqualFold(h.Key, "x-deputy-subject") {
					subject = append(subject, h.Value)
				}
			}
			if tc.reason != "" {
				if resp.Allowed || resp.Reason != tc.reason || resp.HTTPStatus != 403 || len(subject) > 0 {
					t.Fatalf("allowed %v status %d reason %q subject %q, want a 403 %s and no subject", resp.Allowed, resp.HTTPStatus, resp.Reason, subject, tc.reason)
				}
				return
			}
			if !resp.Allowed || !slices.Equal(subject, []string{tc.customer}) {
				t.Fatalf("allowed %v reason %q subject %q, want allowed for %s", resp.Allowed, resp.Reason, subject, tc.customer)
			}
		})
	}
}

// mapLabel tells domain_hosts maps apart, a nil one (left out) from an
// empty one.
func mapLabel(m map[string]any) string { return fmt.Sprint(m == nil, m) }

// domainHostsPipeline is delegatedPipeline over the shipped policies
// with data.deputy.reseller.domain_hosts set to hosts (left out when
// nil), activated with the data checks deputy serve runs.
func domainHostsPipeline(t *testing.T, store sidecar.Store, hosts map[string]any) (*authz.Pipeline, func(identity.DevClaims) string) {
	t.Helper()
	set, err := policy.LoadPaths([]string{"../../policies"})
	must(t, err)
	reseller := set.Data["deputy"].(map[string]any)["reseller"].(map[string]any)
	if hosts == nil {
		delete(reseller, "domain_hosts")
	} else {
		reseller["domain_hosts"] = hosts
	}
	engine := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)), policy.WithDataCheck(authz.CheckData))
	must(t, engine.Activate(context.Background(), set))
	dev, verifier := devVerifier(t)
	cached := resolve.NewCachedState(store, resolve.CacheConfig{}.Defaults(), time.Now, nil)
	t.Cleanup(func() { cached.Close() })
	onBehalf, err := resolve.NewOnBehalfResolver(cached, cached, func() map[string]any { return engine.Current().Data() }, delegation.PartnerDefaults())
	must(t, err)
	p := authz.New(engine, authz.WithVerifier(verifier), authz.WithResolvers(onBehalf))
	return p, func(c identity.DevClaims) string {
		tok, err := dev.Mint(c)
		must(t, err)
		return tok
	}
}
