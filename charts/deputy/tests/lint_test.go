package tests

import (
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"
)

// Helm's own linter, strict (warnings fail), over the chart with the
// values a first install gives.
func TestHelmLintStrict(t *testing.T) {
	for _, values := range []string{"testdata/default.yaml", "testdata/sidecar-only.yaml", "testdata/redis.yaml", "testdata/bundle-url.yaml"} {
		t.Run(values, func(t *testing.T) {
			vals, err := chartutil.ReadValuesFile(values)
			if err != nil {
				t.Fatal(err)
			}
			lint := action.NewLint()
			lint.Strict = true
			lint.Namespace = "storefront"
			res := lint.Run([]string{chartDir}, vals)
			if res.TotalChartsLinted != 1 {
				t.Fatalf("linted %d charts", res.TotalChartsLinted)
			}
			for _, m := range res.Messages {
				if m.Severity > support.InfoSev {
					t.Errorf("%s", m)
				} else {
					t.Logf("%s", m)
				}
			}
			for _, err := range res.Errors {
				t.Errorf("lint: %v", err)
			}
		})
	}
}

// The linter checks values against the schema. (It turns the chart's own
// `fail` calls off by design: TestRenderRefusesUnsafeCombinations covers
// those.)
func TestHelmLintReportsRefusedValues(t *testing.T) {
	lint := action.NewLint()
	lint.Strict = true
	res := lint.Run([]string{chartDir}, map[string]any{"mode": "sidecar-and-more"})
	if len(res.Errors) == 0 {
		t.Fatalf("lint passed values the chart refuses to render: %v", res.Messages)
	}
}
