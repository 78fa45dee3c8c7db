package main

import (
	"bufio"
	"context"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/metrics/metricstest"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// copyTree copies the shipped policies so the test can break them.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), raw, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDashboardMetricsScrapedFromRunningServer runs Deputy on a real Redis,
// walks what ops would see in a day (checks allowed and denied over gRPC
// and HTTP, a Login as Customer session, a partner acting for a customer,
// a Redis outage, a broken policy edit), scrapes /metrics and checks that
// every metric the shipped dashboard and alert rules query is there.
func TestDashboardMetricsScrapedFromRunningServer(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	copyTree(t, "../../policies", dir)

	cfg := testConfig(t, dir, func(c *Config) {
		c.Policy.Watch = true
		c.Policy.PollInterval = 100 * time.Millisecond
		c.Redis.Addrs = []string{rs.Addr}
		c.DecisionLog.Sink = "redis"
	})
	keyFile := cfg.Identity.Dev.KeyFile
	stop, done := startRun(t, &cfg)
	defer func() { stop(); <-done }()
	waitListening(t, cfg.GRPC.Addr)
	waitListening(t, cfg.HTTP.Addr)

	dev, err := identity.LoadDevIssuer(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	token := func(c identity.DevClaims) string {
		c.TTL = time.Hour
		tok, err := dev.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	base := "http://" + cfg.HTTP.Addr
	api := func(method, path, tok, body string, wantStatus int) map[string]any {
		t.Helper()
		return apiCall(t, base, method, path, tok, body, wantStatus)
	}

	conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	check := func(path string, headers map[string]string) *authv3.CheckResponse {
		t.Helper()
		resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path, Host: headers[":authority"], Headers: headers}}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	// Redis's clock, measured at start: this host's own, so about 0.
	metricsURL := "http://" + cfg.Metrics.Addr + "/metrics"
	var offset float64
	eventually(t, "deputy_redis_clock_offset_seconds measured", func() bool {
		var ok bool
		offset, ok = sampled(t, metricsURL, "deputy_redis_clock_offset_seconds")
		return ok
	})
	if offset < -1 || offset > 1 {
		t.Errorf("deputy_redis_clock_offset_seconds = %v on one host, want about 0", offset)
	}
	// Redis's persistence, read at start: the test's Redis runs with
	// appendonly no. The outage below withdraws the figure until the next
	// reading, after the final scrape.
	var aof float64
	eventually(t, "deputy_redis_aof_enabled read", func() bool {
		var ok bool
		aof, ok = sampled(t, metricsURL, "deputy_redis_aof_enabled")
		return ok
	})
	if aof != 0 {
		t.Errorf("deputy_redis_aof_enabled = %v with appendonly no, want 0", aof)
	}

	// Plain checks, both transports.
	check("/catalog/shoes", nil)
	check("/admin", nil)
	if resp, err := http.Get(base + "/catalog/shoes"); err == nil {
		resp.Body.Close()
	}

	// Login as Customer.
	api("PUT", "/deputy/v1/customers/cust-9", token(identity.DevClaims{Subject: "shop", Roles: []string{"customer_sync"}}), `{"name":"Zoë"}`, 200)
	api("PUT", "/deputy/v1/customers/cust-9/consent", token(identity.DevClaims{Subject: "cust-9"}), `{"allowed":true}`, 200)
	started := api("POST", "/deputy/v1/impersonation/sessions", token(identity.DevClaims{Subject: "staff-1", Roles: []string{"support_lead"}}), `{"customer_id":"cust-9"}`, 201)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(base + started["redeem_url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie string
	for _, c := range resp.Cookies() {
		cookie = c.Value
	}
	for range 3 {
		// On the host the link was redeemed on: the session is bound to it.
		h := map[string]string{"cookie": "deputy_session=" + cookie, ":authority": strings.TrimPrefix(base, "http://")}
		if r := check("/customer/account", h); r.GetOkResponse() == nil {
			t.Fatalf("impersonated check denied: %v", r)
		}
	}

	// A partner acting for a customer.
	pat := token(identity.DevClaims{Subject: "pat", Org: "partnerco"})
	req := api("POST", "/deputy/v1/partner/requests", pat, `{"customer":"acme","contact_email":"c@acme.example","expiry_days":30,"level":"look","scope":"organisation"}`, 201)
	api("POST", "/deputy/v1/partner/requests/"+req["id"].(string)+"/approve", token(identity.DevClaims{Subject: "cora", Org: "acme", Roles: []string{"contact_manager"}}), ``, 200)
	for range 3 {
		check("/customers/acme/service-requests", map[string]string{"authorization": "Bearer " + pat, "x-on-behalf-of": "acme"})
	}

	// A Redis outage: an API write fails (503), Redis errors are counted,
	// and checks needing state for customers no cache holds trip the
	// breaker, which ops see on the dashboard until Redis is back.
	rs.Stop()
	api("PUT", "/deputy/v1/customers/cust-9/consent", token(identity.DevClaims{Subject: "cust-9"}), `{"allowed":true}`, 503)
	for i := range cfg.StateLookup.BreakerFailures {
		check("/service-requests", map[string]string{"authorization": "Bearer " + pat, "x-on-behalf-of": "outage-" + strconv.Itoa(i)})
	}
	if v := sample(t, metricsURL, "deputy_state_breaker_open"); v != 1 {
		t.Errorf("deputy_state_breaker_open = %v after %d failed state lookups, want 1", v, cfg.StateLookup.BreakerFailures)
	}
	if v := sample(t, metricsURL, "deputy_state_breaker_trips_total"); v != 1 {
		t.Errorf("deputy_state_breaker_trips_total = %v during one outage, want 1", v)
	}
	rs.Restart()
	eventually(t, "deputy_state_breaker_open back to 0 once Redis answers", func() bool {
		return sample(t, metricsURL, "deputy_state_breaker_open") == 0
	})

	// A broken policy edit is refused and counted.
	if err := os.WriteFile(filepath.Join(dir, "deputy", "broken.rego"), []byte("package deputy.broken\n\nx := {\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The watcher polls every 100 ms: the refusal is counted well within
	// the wait, and the test fails if it never is.
	refused := false
	for i := 0; i < 100 && !refused; i++ {
		time.Sleep(50 * time.Millisecond)
		refused = sample(t, metricsURL, "deputy_bundle_activation_failures_total") >= 1
	}
	if !refused {
		t.Fatalf("a broken policy edit was refused but deputy_bundle_activation_failures_total stayed at %v",
			sample(t, metricsURL, "deputy_bundle_activation_failures_total"))
	}
	scraped := scrape(t, metricsURL)
	wantQueriedMetrics(t, scraped, "deputy_redis_aof_enabled")
	if !scraped["deputy_build_info"] {
		t.Error("a running Deputy does not export deputy_build_info")
	}
}

// TestMetricsExportedFromStart scrapes a Deputy that has answered nothing
// yet: every family the dashboard and rules query is there, so no panel
// reads "No data" on a healthy, idle instance, and each state cache shows
// its lookups and evictions at zero.
func TestMetricsExportedFromStart(t *testing.T) {
	cfg := testConfig(t, "../../policies", func(*Config) {})
	runServer(t, &cfg)
	metricsURL := "http://" + cfg.Metrics.Addr + "/metrics"
	// deputy_readiness holds each condition as last evaluated: the first
	// evaluation runs beside the listeners, and may come after them.
	eventually(t, "the first readiness evaluation", func() bool { return scrape(t, metricsURL)["deputy_readiness"] })
	// The decision log's stream figures exist with the redis sink only
	// (TestDashboardMetricsScrapedFromRunningServer has them).
	// Redis's persistence is read only when there is a Redis.
	wantQueriedMetrics(t, scrape(t, metricsURL), "deputy_decision_log_stream_", "deputy_redis_aof_enabled", "deputy_redis_persistence_")
	for _, kind := range []string{"sessions", "grants", "shares", "assignments"} {
		for _, series := range []string{
			`deputy_state_cache_requests_total{cache="` + kind + `",result="miss"}`,
			`deputy_state_cache_evictions_total{cache="` + kind + `",reason="invalidated"}`,
		} {
			if v := sample(t, metricsURL, series); v != 0 {
				t.Errorf("%s = %v at start, want 0", series, v)
			}
		}
	}
	for _, series := range []string{
		"deputy_bundle_activation_failures_total",
		"deputy_state_breaker_open",
		"deputy_state_breaker_trips_total",
		`deputy_state_lookup_failures_total{reason="breaker_open"}`,
		`deputy_state_lookup_failures_total{reason="over_budget"}`,
		`deputy_state_lookup_failures_total{reason="unavailable"}`,
	} {
		if v := sample(t, metricsURL, series); v != 0 {
			t.Errorf("%s = %v after a clean start, want 0", series, v)
		}
	}
}

// wantQueriedMetrics fails for every metric the shipped dashboard or alert
// rules query that the scrape lacks, but those named with a prefix in
// absent.
func wantQueriedMetrics(t *testing.T, scraped map[string]bool, absent ...string) {
	t.Helper()
	var missing []string
	for name := range metricstest.Queried(t, "../../charts/deputy/dashboards/deputy.json", "../../charts/deputy/rules/deputy-rules.yaml") {
		if !scraped[name] && !slices.ContainsFunc(absent, func(p string) bool { return strings.HasPrefix(name, p) }) {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the dashboard or rules query metrics a running Deputy does not export: %v", missing)
	}
}

// scrape returns the series names of a Prometheus text exposition.
func scrape(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

// sample returns the value of one series (name with its labels, as
// exposed), failing the test when the scrape lacks it.
func sample(t *testing.T, url, series string) float64 {
	t.Helper()
	v, ok := sampled(t, url, series)
	if !ok {
		t.Fatalf("scrape has no series %s", series)
	}
	return v
}

// sampled is sample's value, and whether the scrape has the series.
func sampled(t *testing.T, url, series string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f, true
		}
	}
	return 0, false
}
