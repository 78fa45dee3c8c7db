package main

import "testing"

// Deployments sharing one Redis with their own key prefixes keep their
// decision records apart: the stream follows the prefix unless set.
func TestDecisionStreamFollowsKeyPrefix(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"default prefix", nil, "deputy:decisions"},
		{"own prefix", map[string]string{"DEPUTY_REDIS_KEY_PREFIX": "tenant-a"}, "tenant-a:decisions"},
		{"stream set", map[string]string{"DEPUTY_REDIS_KEY_PREFIX": "tenant-a", "DEPUTY_DECISION_LOG_STREAM": "audit:deputy"}, "audit:deputy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"DEPUTY_IDENTITY_ANONYMOUS_ONLY": "true"}
			for k, v := range tc.env {
				env[k] = v
			}
			cfg, err := loadWith(t, nil, env, "")
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DecisionLog.Stream != tc.want {
				t.Errorf("decision_log.stream = %q, want %q", cfg.DecisionLog.Stream, tc.want)
			}
		})
	}
}
