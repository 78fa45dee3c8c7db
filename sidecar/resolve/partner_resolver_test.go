package resolve_test

import (
	"maps"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// withCustomerPrefix is data with the partner rules' customer path under
// prefix, data itself unchanged.
func withCustomerPrefix(data map[string]any, prefix string) map[string]any {
	deputy := maps.Clone(data["deputy"].(map[string]any))
	partner := maps.Clone(deputy["partner"].(map[string]any))
	partner["customer_path_prefix"] = prefix
	deputy["partner"] = partner
	out := maps.Clone(data)
	out["deputy"] = deputy
	return out
}

// The customer a path names is read with the rules of the activation
// deciding the check (Request.PolicyData), not those serving by the time
// the resolver runs: a check overlapping a reload never pairs one
// revision's Rego with the next revision's customer path.
func TestCustomerPathOfTheDecidingActivation(t *testing.T) {
	set, err := policy.LoadPaths([]string{"../../policies"})
	if err != nil {
		t.Fatal(err)
	}
	deciding := set.Data // customers/{customer}
	serving := withCustomerPrefix(deciding, "accounts")
	store := memory.New()
	t.Cleanup(func() { _ = store.Close() })
	r, err := resolve.NewOnBehalfResolver(store, store, func() map[string]any { return serving }, delegation.PartnerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		data map[string]any
		path string
		want string
	}{
		{"deciding revision's path", deciding, "/customers/acme/service-requests", "acme"},
		{"serving revision's path is not the deciding one's", deciding, "/accounts/acme/service-requests", ""},
		{"serving revision deciding", serving, "/accounts/acme/service-requests", "acme"},
		{"no activation given: the serving one", nil, "/accounts/acme/service-requests", "acme"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := &sidecar.Request{Method: "GET", Path: tc.path, Headers: map[string]string{}, PolicyData: tc.data}
			if c, err := r.Customer(req); c != tc.want || err != nil {
				t.Fatalf("Customer = %q, %v; want %q", c, err, tc.want)
			}
		})
	}
}
