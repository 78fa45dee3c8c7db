package authz_test

import (
	"context"
	"log/slog"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// storefrontRequest is what Envoy sends for a browser page view: 15 headers.
const storefrontRequest = `{"attributes":{
  "source":{"address":{"socketAddress":{"address":"10.0.3.17","portValue":51234}}},
  "destination":{"address":{"socketAddress":{"address":"10.0.0.5","portValue":8080}}},
  "request":{"time":"2026-11-22T10:00:00.123Z","http":{
    "id":"8f4c1e2a-6b1d-4c3e-9a57-3f0e2d1c4b5a","method":"GET","path":"/catalog/shoes?size=42&color=red",
    "host":"shop.example.com","scheme":"https","protocol":"HTTP/2",
    "headers":{
      ":authority":"shop.example.com",":method":"GET",":path":"/catalog/shoes?size=42&color=red",":scheme":"https",
      "accept":"text/html,application/xhtml+xml","accept-encoding":"gzip, deflate, br","accept-language":"en-GB,en;q=0.9",
      "cookie":"cart=abc123; theme=dark","user-agent":"Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
      "x-forwarded-for":"203.0.113.9","x-forwarded-proto":"https","x-request-id":"8f4c1e2a-6b1d-4c3e-9a57-3f0e2d1c4b5a",
      "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","sec-fetch-mode":"navigate",
      "x-envoy-expected-rq-timeout-ms":"15000"}}}}}`

func shippedPipeline(b *testing.B, opts ...authz.Option) *authz.Pipeline {
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

func benchCheck(b *testing.B, p *authz.Pipeline, req *authv3.CheckRequest, wantAllowed bool) {
	ctx := context.Background()
	if resp := p.Check(ctx, req); resp.Allowed != wantAllowed {
		b.Fatalf("allowed = %v, want %v (reason %s)", resp.Allowed, wantAllowed, resp.Reason)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p.Check(ctx, req)
	}
}

// BenchmarkCheck is one in-process check with the shipped policies.
func BenchmarkCheck(b *testing.B) {
	b.Run("public", func(b *testing.B) {
		benchCheck(b, shippedPipeline(b), checkRequest(b, storefrontRequest), true)
	})
}

// BenchmarkCheckFloor is the cost of the pipeline around the smallest
// possible policy: what OPA and the pipeline cost before any rule runs.
func BenchmarkCheckFloor(b *testing.B) {
	p := authz.New(engineFor(b, "data.t.decision", "package t\n\ndecision := true\n", nil), authz.WithQuery("data.t.decision"))
	benchCheck(b, p, checkRequest(b, storefrontRequest), true)
}
