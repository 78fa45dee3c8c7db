package authz_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/actortoken"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// storefrontRequest is what Envoy sends for a browser page view: 15 headers.
const storefrontRequest = authz.StorefrontRequest

func shippedPipeline(b testing.TB, opts ...authz.Option) *authz.Pipeline {
	b.Helper()
	set, err := policy.LoadPaths([]string{"../../policies"})
	if err != nil {
		b.Fatal(err)
	}
	e := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err := e.Activate(context.Background(), set); err != nil {
		b.Fatal(err)
	}
	return authz.New(e, opts...)
}

// shippedData is the shipped policy data, where the reseller rules live.
func shippedData(b testing.TB) func() map[string]any {
	b.Helper()
	set, err := policy.LoadPaths([]string{"../../policies"})
	if err != nil {
		b.Fatal(err)
	}
	return func() map[string]any { return set.Data }
}

func benchCheck(b *testing.B, p *authz.Pipeline, req *authv3.CheckRequest, wantAllowed bool) {
	ctx := context.Background()
	if resp := p.Check(ctx, req); resp.Allowed != wantAllowed {
		b.Fatalf("allowed = %v, want %v (reason %s)", resp.Allowed, wantAllowed, resp.Reason)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	for b.Loop() {
		p.Check(ctx, req)
	}
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
}

// memoEntries is how many results of a memoized policy function an
// activation keeps (sidecar/policy): cycling through three times as many
// distinct requests makes every check a miss.
const memoEntries = 4096

// benchChecks is benchCheck over reqs in turn.
func benchChecks(b *testing.B, p *authz.Pipeline, reqs []*authv3.CheckRequest, wantAllowed bool) {
	ctx := context.Background()
	for _, req := range reqs[:3] {
		if resp := p.Check(ctx, req); resp.Allowed != wantAllowed {
			b.Fatalf("allowed = %v, want %v (reason %s)", resp.Allowed, wantAllowed, resp.Reason)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	i := 0
	for b.Loop() {
		p.Check(ctx, reqs[i%len(reqs)])
		i++
	}
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
}

// processCPU is the CPU time the process has used (user and system, every
// thread, the garbage collector's included), in nanoseconds. On a shared
// machine a check's CPU time varies far less than its wall time, which
// also counts the time other processes held the cores.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkCheck is one in-process check with the shipped policies: a
// catalog page (the goal's figure), and the home page, a public path the
// shipped decision reaches in another branch.
func BenchmarkCheck(b *testing.B) {
	b.Run("public", func(b *testing.B) {
		benchCheck(b, shippedPipeline(b), checkRequest(b, storefrontRequest), true)
	})
	b.Run("home", func(b *testing.B) {
		benchCheck(b, shippedPipeline(b), withHeaders(b, "/", nil), true)
	})
}

// BenchmarkCheckSignedIn is a page open to any signed-in customer, with a
// verified token and without one: the branches of the shipped decision
// after every public one. Its own benchmark, so that the verifier it
// needs runs during no other.
func BenchmarkCheckSignedIn(b *testing.B) {
	dev, verifier := devVerifier(b)
	tok, err := dev.Mint(identity.DevClaims{Subject: "alice", TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	p := shippedPipeline(b, authz.WithVerifier(verifier))
	b.Run("token", func(b *testing.B) {
		benchCheck(b, p, withHeaders(b, "/customer/account", map[string]string{"authorization": "Bearer " + tok}), true)
	})
	b.Run("no_token", func(b *testing.B) {
		benchCheck(b, p, withHeaders(b, "/customer/account", nil), false)
	})
}

// BenchmarkCheckFloor is the cost of the pipeline around the smallest
// possible policy: what OPA and the pipeline cost before any rule runs.
func BenchmarkCheckFloor(b *testing.B) {
	p := authz.New(engineFor(b, "data.t.decision", "package t\n\ndecision := true\n", nil), authz.WithQuery("data.t.decision"))
	benchCheck(b, p, checkRequest(b, storefrontRequest), true)
}

// delegatedPipeline wires the real resolvers over the embedded store, a
// real token verifier (dev issuer) and a real actor-token signer, as serve
// does, each resolver passed through wrap when given. Returns the pipeline
// and a token minter.
func delegatedPipeline(b testing.TB, store sidecar.Store, wrap ...func(sidecar.DelegationResolver) sidecar.DelegationResolver) (*authz.Pipeline, func(identity.DevClaims) string) {
	b.Helper()
	return delegatedPipelineWith(b, store, nil, wrap...)
}

// delegatedPipelineWith is delegatedPipeline with further options.
func delegatedPipelineWith(b testing.TB, store sidecar.Store, opts []authz.Option, wrap ...func(sidecar.DelegationResolver) sidecar.DelegationResolver) (*authz.Pipeline, func(identity.DevClaims) string) {
	b.Helper()
	dev, verifier := devVerifier(b)
	key, err := actortoken.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	signer, err := actortoken.New(actortoken.Defaults(), actortoken.WithKeys(key))
	if err != nil {
		b.Fatal(err)
	}
	sessions := resolve.NewSessionResolver(store, delegation.ImpersonationDefaults())
	b.Cleanup(func() { sessions.Close() })
	cached := resolve.NewCachedState(store, resolve.CacheConfig{}.Defaults(), time.Now, nil)
	b.Cleanup(func() { cached.Close() })
	onBehalf, err := resolve.NewOnBehalfResolver(cached, cached, shippedData(b), delegation.PartnerDefaults())
	if err != nil {
		b.Fatal(err)
	}
	resolvers := []sidecar.DelegationResolver{sessions, onBehalf}
	for _, w := range wrap {
		for i, r := range resolvers {
			resolvers[i] = w(r)
		}
	}
	p := shippedPipeline(b, append([]authz.Option{authz.WithVerifier(verifier), authz.WithResolvers(resolvers...), authz.WithActorTokenSigner(signer)}, opts...)...)
	mint := func(c identity.DevClaims) string {
		tok, err := dev.Mint(c)
		if err != nil {
			b.Fatal(err)
		}
		return tok
	}
	return p, mint
}

// devVerifier is a real token verifier that trusts a fresh dev issuer,
// returned with it to mint tokens.
func devVerifier(t testing.TB) (*identity.DevIssuer, *identity.Verifier) {
	t.Helper()
	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	cfg := identity.Defaults()
	cfg.Dev.Enabled = true
	verifier, err := identity.New(cfg, identity.WithDevIssuer(dev), identity.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return dev, verifier
}

func withHeaders(b testing.TB, path string, extra map[string]string) *authv3.CheckRequest {
	req := checkRequest(b, storefrontRequest)
	h := req.Attributes.Request.Http
	h.Path = path
	h.Headers[":path"] = path
	for k, v := range extra {
		h.Headers[k] = v
	}
	return req
}

// impersonationPipeline is the delegated pipeline over a store holding a
// live, redeemed impersonation session; it returns the session's token.
func impersonationPipeline(b testing.TB, now time.Time) (*authz.Pipeline, string) {
	ctx := context.Background()
	store := memory.New()
	token := "benchmark-session-token-0123456789abcdef"
	if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: "cust-9", Name: "Zoë Customer", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		b.Fatal(err)
	}
	// A session records its staff member's roles at start, and policy
	// judges them against the live role permissions on every request.
	if err := storetest.StartRedeemed(ctx, store, &sidecar.Session{ID: "imp_1", Actor: "staff-1", ActorRoles: []string{"support_agent"},
		Customer: "cust-9", CustomerName: "Zoë Customer", StoreView: "en", StartedAt: now, ExpiresAt: now.Add(time.Hour), Host: "shop.example.com"},
		delegation.HashSecret(token)); err != nil {
		b.Fatal(err)
	}
	p, _ := delegatedPipeline(b, store)
	return p, token
}

// BenchmarkCheckDelegated covers the three ways of acting on behalf, with
// the session, grant or assignment in the local cache (steady state).
func BenchmarkCheckDelegated(b *testing.B) {
	ctx := context.Background()
	now := time.Now()

	b.Run("impersonation", func(b *testing.B) {
		p, token := impersonationPipeline(b, now)
		req := withHeaders(b, "/customer/account", map[string]string{"cookie": "cart=abc123; deputy_session=" + token})
		benchCheck(b, p, req, true)
	})

	b.Run("partner", func(b *testing.B) {
		store := memory.New()
		if err := store.PutGrant(ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "helpco", Level: sidecar.Level("update"), ExpiresAt: now.Add(24 * time.Hour)}); err != nil {
			b.Fatal(err)
		}
		p, mint := delegatedPipeline(b, store)
		tok := mint(identity.DevClaims{Subject: "pat", Org: "helpco", Roles: []string{"partner"}, TTL: time.Hour})
		req := withHeaders(b, "/customers/acme/service-requests/42", map[string]string{"authorization": "Bearer " + tok, "x-on-behalf-of": "acme"})
		benchCheck(b, p, req, true)
	})

	b.Run("reseller", func(b *testing.B) {
		store := memory.New()
		if err := store.PutAssignment(ctx, &sidecar.Assignment{Customer: "acme", Reseller: "resellco", Domain: "eu.resellco.example"}); err != nil {
			b.Fatal(err)
		}
		p, mint := delegatedPipeline(b, store)
		tok := mint(identity.DevClaims{Subject: "rita", Domain: "eu.resellco.example", Roles: []string{"reseller_admin"}, TTL: time.Hour})
		req := withHeaders(b, "/support/cases", map[string]string{"authorization": "Bearer " + tok, "x-on-behalf-of": "acme"})
		benchCheck(b, p, req, true)
	})
}

// BenchmarkCheckGraphQL is a cart mutation to the GraphQL endpoint in an
// impersonation session, its JSON body sent along (Envoy's
// with_request_body): the check reads every object key of the body, and
// the policy every string.
func BenchmarkCheckGraphQL(b *testing.B) {
	p, token := impersonationPipeline(b, time.Now())
	const body = `{"operationName":"AddToCart","query":"mutation AddToCart($cartId: String!, $items: [CartItemInput!]!) { addProductsToCart(cartId: $cartId, cartItems: $items) { cart { id total_quantity items { uid quantity product { sku name } } } user_errors { code message } } }",` +
		`"variables":{"cartId":"x2Q9kLm4Tz8Vb1Nc","items":[{"sku":"SHOE-42-RED","quantity":1,"selected_options":["Y29uZmlndXJhYmxlLzkzLzUz"]},{"sku":"SOCK-M","quantity":3,"entered_options":[{"uid":"Y3VzdG9tLW9wdGlvbi8x","value":"Gift"}]}]},` +
		`"extensions":{"clientLibrary":{"name":"@apollo/client","version":"3.11.8"}}}`
	req := withHeaders(b, "/graphql", map[string]string{"cookie": "cart=abc123; deputy_session=" + token,
		"content-type": "application/json", "content-length": strconv.Itoa(len(body))})
	h := req.Attributes.Request.Http
	h.Method, h.Headers[":method"], h.Body = "POST", "POST", body
	benchCheck(b, p, req, true)
}

// BenchmarkCheckUnseenRoute is BenchmarkCheckDelegated/impersonation with
// every check on a route the policy has not matched since its activation:
// what a storefront's first visit to a page costs, and what a client
// sending a new path on every request makes each of its checks cost (the
// shipped policy memoizes its route matching; see sidecar/policy).
func BenchmarkCheckUnseenRoute(b *testing.B) {
	b.Run("impersonation", func(b *testing.B) { benchUnseenRoutes(b, "/customer/account/%d") })
	// A page with a format: route_dirs also holds the last segment's
	// other forms ("42.html"), and the policy matches them too.
	b.Run("impersonation_format", func(b *testing.B) { benchUnseenRoutes(b, "/customer/account/%d.html") })
}

// benchUnseenRoutes checks, in an impersonation session, as many
// distinct paths spelled by format (with one %d) as make every check a
// miss of the policy's memo.
func benchUnseenRoutes(b *testing.B, format string) {
	p, token := impersonationPipeline(b, time.Now())
	reqs := make([]*authv3.CheckRequest, 3*memoEntries)
	for i := range reqs {
		reqs[i] = withHeaders(b, fmt.Sprintf(format, i), map[string]string{"cookie": "cart=abc123; deputy_session=" + token})
	}
	benchChecks(b, p, reqs, true)
}

// BenchmarkCheckLogged is BenchmarkCheck/public with every decision logged
// to a Redis stream by the real decision logger: the cost logging adds to
// a check is the enqueue, never the write. The spool cases measure what an
// on-disk spool costs a check: configured with Redis up (unused), and
// taking every record while Redis is down.
func BenchmarkCheckLogged(b *testing.B) {
	b.Run("redis", func(b *testing.B) { benchLogged(b, false, false) })
	b.Run("redis_spool", func(b *testing.B) { benchLogged(b, true, false) })
	b.Run("redis_down_spool", func(b *testing.B) { benchLogged(b, true, true) })
}

func benchLogged(b *testing.B, spool, down bool) {
	srv := redistest.Start(b)
	cfg := decisionlog.Defaults()
	cfg.Sink = "redis"
	if spool {
		cfg.SpoolDir = b.TempDir()
		cfg.SpoolMaxBytes = 4 << 30 // never the bound: measure the writes
	}
	// Deputy's own client settings: timeouts and retries shape an outage.
	client, err := redis.NewClient(redis.Config{Addrs: []string{srv.Addr}})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	sink, err := decisionlog.NewSink(cfg, client, nil)
	if err != nil {
		b.Fatal(err)
	}
	l, err := decisionlog.New(cfg, sink, decisionlog.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	if down {
		srv.Stop()
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.Stop(ctx)
	}()
	benchCheck(b, shippedPipeline(b, authz.WithDecisionLogger(l)), checkRequest(b, storefrontRequest), true)
	b.StopTimer()
	if l.Dropped() > 0 {
		b.ReportMetric(float64(l.Dropped())/float64(b.N), "dropped/op")
	}
	if down {
		b.ReportMetric(float64(l.SpoolBytes())/float64(b.N), "spooled-B/op")
	}
}
