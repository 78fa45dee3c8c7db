package metrics_test

import (
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/metrics"
)

// Each trusted issuer's key set age and fetch failures are exported as the
// verifier reports them when scraped.
func TestKeySets(t *testing.T) {
	m, reg := newMetrics(t)
	now := []metrics.KeySet{
		{Issuer: "https://login.example.com/", Age: 90 * time.Second, FetchFailures: 3},
		{Issuer: "deputy-dev"},
	}
	if err := m.RegisterKeySets(func() []metrics.KeySet { return now }); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, metric, issuer string
		want                 float64
	}{
		{"age", "deputy_identity_key_set_age_seconds", "https://login.example.com/", 90},
		{"failures", "deputy_identity_key_set_fetch_failures_total", "https://login.example.com/", 3},
		{"fresh", "deputy_identity_key_set_age_seconds", "deputy-dev", 0},
		{"none failed", "deputy_identity_key_set_fetch_failures_total", "deputy-dev", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := series(t, reg, tc.metric, map[string]string{"issuer": tc.issuer})
			if !ok || got != tc.want {
				t.Errorf("got %v (present %v), want %v", got, ok, tc.want)
			}
		})
	}
}
