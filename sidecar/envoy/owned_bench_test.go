package envoy_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/deputyhq/deputy/sidecar/envoy"
)

// BenchmarkCheckOwnedHeaders is an allowed check over gRPC, in process,
// whose client sent n headers under the owned prefix, in "-" and "_" and
// in either letter case: each is listed for removal once. The work per
// header must not grow with n: compare ns/op at n=1000 and n=10000 (and
// the allocations of the common, short case at n=10).
func BenchmarkCheckOwnedHeaders(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			headers := map[string]string{}
			for i := range n {
				switch i % 3 {
				case 0:
					headers[fmt.Sprintf("x-deputy-a%d", i)] = "v"
				case 1:
					headers[fmt.Sprintf("x_deputy_a%d", i-1)] = "v"
				default:
					headers[fmt.Sprintf("X-Deputy-B%d", i)] = "v"
				}
			}
			srv, req, ctx := envoy.NewGRPCServer(pipeline(b)), check("/ok", headers), context.Background()
			out, err := srv.Check(ctx, req)
			if err != nil || out.GetOkResponse() == nil {
				b.Fatalf("not an ok response: %v %v", out, err)
			}
			if got := len(out.GetOkResponse().GetHeadersToRemove()); got < n {
				b.Fatalf("%d headers to remove, want at least %d", got, n)
			}
			b.ReportAllocs()
			for b.Loop() {
				_, _ = srv.Check(ctx, req)
			}
		})
	}
}
