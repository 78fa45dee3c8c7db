package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/deputyhq/deputy/sidecar/identity"
)

// A partner's identity provider, trusted for its namespace, that does not
// serve its keys when a pod starts must not keep the pod out of service:
// Deputy decides the shop issuer's tokens and anonymous pages all the
// same, and a rollout, a scale-up or a restart during the partner's outage
// would otherwise leave the storefront without replicas. The probes (gRPC
// health, and /readyz leaving out redis and identity_namespaced as the
// chart asks) answer ready; /readyz still reports the namespaced issuers
// failing, and deputy_readiness too, for ops.
func TestProbesReadyWhileNamespacedIssuerHasNoKeys(t *testing.T) {
	shop := newTestIssuer(t, "https://login.example.com/realms/shop")
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	cfg := productionServer(t,
		identity.IssuerConfig{Issuer: shop.url, JWKSFile: shop.jwks},
		identity.IssuerConfig{Issuer: "https://accounts.partner.example", JWKSURL: down.URL, Namespace: "partner"})

	healthBecomes(t, healthClient(t, cfg.GRPC.Addr), healthpb.HealthCheckResponse_SERVING)
	status, checks := readyzAnswer(t, cfg.Metrics.Addr, "?exclude=redis&exclude="+namespacedIdentityCheck, readyTimeout+5*time.Second)
	if status != http.StatusOK || checks["identity"] != "ok" {
		t.Errorf("/readyz as the chart's probes ask = %d %v, want 200 with identity ok", status, checks)
	}
	status, checks = readyzAnswer(t, cfg.Metrics.Addr, "", readyTimeout+5*time.Second)
	if status != http.StatusServiceUnavailable || checks["identity"] != "ok" || checks[namespacedIdentityCheck] != "failing" {
		t.Errorf("/readyz = %d %v, want 503 with identity ok and %s failing", status, checks, namespacedIdentityCheck)
	}
	gauge := `deputy_readiness{check="` + namespacedIdentityCheck + `"}`
	eventually(t, gauge+" 0", func() bool {
		v, ok := sampled(t, "http://"+cfg.Metrics.Addr+"/metrics", gauge)
		return ok && v == 0
	})
	if got := checkPublicPage(t, cfg.GRPC.Addr); got != nil {
		t.Errorf("public page: %v, want allowed", got)
	}
}
