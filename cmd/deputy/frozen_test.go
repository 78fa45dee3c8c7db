package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// TestFrozenRedis runs Deputy on a real Redis and freezes it (SIGSTOP:
// connections stay open, nothing answers). Checks that need state fail
// closed with 503 state_unavailable, within the state budget and then, the
// breaker open, at once; /metrics keeps answering with the last counts;
// once Redis answers again, checks reach it again.
func TestFrozenRedis(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	copyTree(t, "../../policies", dir)
	cfg := testConfig(t, dir, func(c *Config) {
		c.Redis.Addrs = []string{rs.Addr}
		c.DecisionLog.Sink = "none"
		c.Metrics.LiveRefresh = 20 * time.Millisecond
		c.StateLookup.ProbeInterval = 20 * time.Millisecond
	})
	runServer(t, &cfg)
	token := devToken(t, &cfg)
	api := func(method, path, tok, body string) map[string]any {
		t.Helper()
		return apiCall(t, "http://"+cfg.HTTP.Addr, method, path, tok, body, 0)
	}
	scrapeLive := func() string {
		t.Helper()
		resp, err := http.Get("http://" + cfg.Metrics.Addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics = %d", resp.StatusCode)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, `deputy_live_delegations{mode="partner"}`) {
				return line
			}
		}
		t.Fatal("no deputy_live_delegations in /metrics")
		return ""
	}

	// One live partner grant, counted in the background.
	pat := token(identity.DevClaims{Subject: "pat", Org: "partnerco"})
	req := api("POST", "/deputy/v1/partner/requests", pat, `{"customer":"acme","contact_email":"c@acme.example","expiry_days":30,"level":"look","scope":"organisation"}`)
	api("POST", "/deputy/v1/partner/requests/"+req["id"].(string)+"/approve", token(identity.DevClaims{Subject: "cora", Org: "acme", Roles: []string{"contact_manager"}}), ``)
	const oneGrant = `deputy_live_delegations{mode="partner"} 1`
	eventually(t, "the grant counted", func() bool { return scrapeLive() == oneGrant })

	conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	// A customer never looked up before: the check must read state.
	check := func(customer string) (*authv3.CheckResponse, time.Duration) {
		t.Helper()
		start := time.Now()
		resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/customers/" + customer + "/service-requests",
				Headers: map[string]string{"authorization": "Bearer " + pat, "x-on-behalf-of": customer}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp, time.Since(start)
	}
	if r, _ := check("cust-warm"); r.GetStatus().GetMessage() == authz.ReasonStateUnavailable {
		t.Fatalf("check with Redis up: %v", r)
	}

	rs.Freeze()
	if got := scrapeLive(); got != oneGrant {
		t.Errorf("/metrics with Redis frozen: %q, want the last count %q", got, oneGrant)
	}
	var took []time.Duration
	for i := range cfg.StateLookup.BreakerFailures + 3 {
		r, d := check(fmt.Sprintf("cust-%d", i))
		if r.GetStatus().GetMessage() != authz.ReasonStateUnavailable || r.GetDeniedResponse().GetStatus().GetCode() != http.StatusServiceUnavailable {
			t.Fatalf("check %d needing state with Redis frozen: %v, want 503 %s", i, r, authz.ReasonStateUnavailable)
		}
		took = append(took, d)
	}
	// Reported, not asserted: how long a check needing state takes to fail.
	t.Logf("checks needing state, Redis frozen (budget %s, breaker after %d): %v", cfg.StateLookup.Budget, cfg.StateLookup.BreakerFailures, took)

	rs.Thaw()
	eventually(t, "checks reaching Redis again", func() bool {
		r, _ := check(fmt.Sprintf("cust-after-%d", time.Now().UnixNano()))
		return r.GetStatus().GetMessage() != authz.ReasonStateUnavailable
	})
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
