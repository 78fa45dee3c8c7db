package envoy_test

import (
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/envoy"
)

// BenchmarkToCheckResponse renders an impersonated allow: a policy header
// and Deputy's identity headers.
func BenchmarkToCheckResponse(b *testing.B) {
	r := &authz.Response{Allowed: true, Reason: "impersonation_session", DecisionID: "0123456789abcdef0123456789abcdef",
		Headers: []authz.Header{{Key: "cache-control", Value: "no-cache"}},
		Injected: []authz.Header{{Key: "x-deputy-subject", Value: "cust-9"}, {Key: "x-deputy-actor", Value: "staff-1"},
			{Key: "x-deputy-mode", Value: "impersonation"}, {Key: "x-deputy-session", Value: "imp_1"},
			{Key: "x-deputy-store-view", Value: "en"}, {Key: "x-deputy-subject-name", Value: "Zo%C3%AB"},
			{Key: "x-deputy-token", Value: "eyJ.eyJ.sig"}},
		HeadersToRemove: []string{"x-deputy-subject"}}
	b.ReportAllocs()
	for b.Loop() {
		if envoy.ToCheckResponse(r).GetOkResponse() == nil {
			b.Fatal("not an ok response")
		}
	}
}
