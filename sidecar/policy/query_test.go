package policy_test

import (
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/policy"
)

func TestDecisionRefTakesOPAEnvoyPaths(t *testing.T) {
	cases := []struct{ query, want, field string }{
		{query: "data.deputy.authz.decision", want: "data.deputy.authz.decision"},
		{query: "envoy/authz/allow", want: "data.envoy.authz.allow"},
		{query: "/envoy/authz/allow", want: "data.envoy.authz.allow"},
		{query: "allow", want: "data.allow"},
		{query: "my-app/authz/allow", want: `data["my-app"].authz.allow`},
		{query: "envoy.authz.allow", field: "policy.decision_query"},
		{query: "envoy//allow", field: "policy.decision_query"},
		{query: "/", field: "policy.decision_query"},
		{query: "data.x[", field: "policy.decision_query"},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			got, err := policy.DecisionRef(tc.query)
			if tc.field != "" {
				if sidecar.ErrorField(err) != tc.field {
					t.Fatalf("DecisionRef(%q) = %q, %v; want an error on %s", tc.query, got, err, tc.field)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("DecisionRef(%q) = %q, %v; want %q", tc.query, got, err, tc.want)
			}
			cfg := policy.Config{DecisionQuery: tc.query}
			cfg.SetDefaults()
			if err := cfg.Validate(); err != nil || cfg.DecisionQuery != tc.want {
				t.Fatalf("config query %q: %q, %v", tc.query, cfg.DecisionQuery, err)
			}
		})
	}
}
