package resolve_test

import (
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// The path naming the customer is read from the active policy data on
// every check: parsed once per activation, it must cost no allocation.
func BenchmarkCustomerFromPath(b *testing.B) {
	set, err := policy.LoadPaths([]string{"../../policies"})
	if err != nil {
		b.Fatal(err)
	}
	store := memory.New()
	b.Cleanup(func() { _ = store.Close() })
	r, err := resolve.NewOnBehalfResolver(store, store, func() map[string]any { return set.Data }, delegation.PartnerConfig{},
		resolve.WithResolverClock(func() time.Time { return time.Unix(0, 0) }))
	if err != nil {
		b.Fatal(err)
	}
	req := &sidecar.Request{Method: "GET", Path: "/customers/acme/service-requests/42", Headers: map[string]string{}}
	if c, err := r.Customer(req); c != "acme" || err != nil {
		b.Fatalf("Customer = %q, %v", c, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if c, _ := r.Customer(req); c != "acme" {
			b.Fatal(c)
		}
	}
}
