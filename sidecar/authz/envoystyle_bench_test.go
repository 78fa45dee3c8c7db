package authz_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// envoyStyleDir holds the OPA-Envoy-style policies and requests the load
// test runs on Deputy and on OPA-Envoy.
const envoyStyleDir = "../../cmd/deputy-bench/testdata/opa-envoy"

// BenchmarkCheckOPAEnvoyStyle is one in-process check on each
// OPA-Envoy-style policy, wired as `deputy serve` wires it (token
// verifier and delegation resolvers included).
func BenchmarkCheckOPAEnvoyStyle(b *testing.B) {
	for _, tc := range []struct{ dir, query string }{
		{"paths", "data.envoy.authz.allow"},
		{"jwt", "data.envoy.authz.result"},
		{"principal", "data.envoy.authz.allow"},
	} {
		b.Run(tc.dir, func(b *testing.B) {
			set, err := policy.LoadPaths([]string{filepath.Join(envoyStyleDir, tc.dir, "policy.rego")})
			if err != nil {
				b.Fatal(err)
			}
			e := policy.New(policy.WithQueries(tc.query), policy.WithLogger(slog.New(slog.DiscardHandler)))
			if err := e.Activate(context.Background(), set); err != nil {
				b.Fatal(err)
			}
			_, verifier := devVerifier(b)
			store := memory.New()
			sessions := resolve.NewSessionResolver(store, delegation.ImpersonationDefaults())
			b.Cleanup(func() { sessions.Close() })
			cached := resolve.NewCachedState(store, resolve.CacheConfig{}.Defaults(), time.Now, nil)
			b.Cleanup(func() { cached.Close() })
			onBehalf, err := resolve.NewOnBehalfResolver(cached, cached, func() map[string]any { return e.Current().Data() }, delegation.PartnerDefaults())
			if err != nil {
				b.Fatal(err)
			}
			p := authz.New(e, authz.WithQuery(tc.query), authz.WithVerifier(verifier), authz.WithResolvers(sessions, onBehalf))
			raw, err := os.ReadFile(filepath.Join(envoyStyleDir, tc.dir, "request.json"))
			if err != nil {
				b.Fatal(err)
			}
			req := checkRequest(b, string(raw))
			if tc.dir == "jwt" {
				resp := p.Check(context.Background(), req)
				found := false
				for _, h := range resp.Headers {
					found = found || strings.EqualFold(h.Key, "x-current-user")
				}
				if !found {
					b.Fatalf("jwt policy injected no x-current-user: %+v", resp)
				}
			}
			benchCheck(b, p, req, true)
		})
	}
}
