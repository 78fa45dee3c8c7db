package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

func healthClient(t *testing.T, addr string) healthpb.HealthClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// healthIs fails the test unless every health service answers want.
func healthIs(t *testing.T, hc healthpb.HealthClient, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	if err := healthAnswers(hc, want); err != nil {
		t.Error(err)
	}
}

// healthBecomes waits for every health service to answer want: a Check
// answers from an evaluation up to checkFreshness old.
func healthBecomes(t *testing.T, hc healthpb.HealthClient, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	eventually(t, "gRPC health "+want.String(), func() bool { return healthAnswers(hc, want) == nil })
}

func healthAnswers(hc healthpb.HealthClient, want healthpb.HealthCheckResponse_ServingStatus) error {
	for _, svc := range healthServices {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		cancel()
		if err != nil || r.GetStatus() != want {
			return fmt.Errorf("health %q = %v %v, want %v", svc, r.GetStatus(), err, want)
		}
	}
	return nil
}

func readyzStatus(t *testing.T, metricsAddr string) int {
	t.Helper()
	code, err := getReadyz(metricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// readyzClient gives up on a /readyz that hangs, well after readyTimeout:
// a hang is a failure, not a slow answer.
var readyzClient = &http.Client{Timeout: 10 * time.Second}

func getReadyz(metricsAddr string) (int, error) {
	resp, err := readyzClient.Get("http://" + metricsAddr + "/readyz")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// redisPings is how many PINGs the server has run (INFO commandstats).
func redisPings(t *testing.T, rs *redistest.Server) int {
	t.Helper()
	info, err := rs.Client().Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_ping:calls="); ok {
			n, err := strconv.Atoi(rest[:strings.IndexByte(rest+",", ',')])
			if err != nil {
				t.Fatalf("commandstats %q: %v", line, err)
			}
			return n
		}
	}
	return 0 // no PING yet
}

// /readyz is open to every scraper and probe: a flood of requests shares
// evaluations, costing Redis about one PING per checkFreshness rather
// than one a request, and every request still gets its answer.
func TestReadyzFloodCostsRedisFewPings(t *testing.T) {
	rs := redistest.Start(t)
	cfg := startServer(t, func(c *Config) { c.Redis.Addrs = []string{rs.Addr} })
	if got := readyzStatus(t, cfg.Metrics.Addr); got != http.StatusOK {
		t.Fatalf("/readyz = %d, want 200", got)
	}
	before, start := redisPings(t, rs), time.Now()
	var wg sync.WaitGroup
	var answered, failed atomic.Int32
	for range 20 {
		wg.Go(func() {
			for range 20 {
				code, err := getReadyz(cfg.Metrics.Addr)
				if err != nil || code != http.StatusOK {
					failed.Add(1)
					continue
				}
				answered.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed, pings := time.Since(start), redisPings(t, rs)-before
	if answered.Load() != 400 || failed.Load() != 0 {
		t.Errorf("%d of 400 /readyz answered 200, %d did not", answered.Load(), failed.Load())
	}
	// One evaluation per checkFreshness from requests, one from gRPC
	// health's ticker, one in progress when counting began.
	if max := int(elapsed/checkFreshness) + int(elapsed/healthRefresh) + 3; pings > max {
		t.Errorf("400 /readyz requests in %s sent Redis %d PINGs, want at most %d", elapsed, pings, max)
	}
}

// A Redis that stops answering (SIGSTOP: connections stay open, nothing
// replies) makes /readyz answer 503 within readyTimeout, to concurrent
// requests too, rather than hang with it; readiness returns with Redis.
// gRPC health leaves Redis out (TestProbesStayReadyThroughRedisOutage).
func TestReadyzWithAFrozenRedis(t *testing.T) {
	rs := redistest.Start(t)
	cfg := startServer(t, func(c *Config) { c.Redis.Addrs = []string{rs.Addr} })
	hc := healthClient(t, cfg.GRPC.Addr)
	if got := readyzStatus(t, cfg.Metrics.Addr); got != http.StatusOK {
		t.Fatalf("/readyz = %d, want 200", got)
	}
	rs.Freeze()
	eventually(t, "/readyz 503 with Redis frozen", func() bool { return readyzStatus(t, cfg.Metrics.Addr) == http.StatusServiceUnavailable })
	codes := make(chan int, 10)
	var wg sync.WaitGroup
	for range cap(codes) {
		wg.Go(func() {
			code, err := getReadyz(cfg.Metrics.Addr)
			if err != nil {
				t.Errorf("/readyz with Redis frozen: %v", err)
			}
			codes <- code
		})
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusServiceUnavailable {
			t.Errorf("/readyz with Redis frozen = %d, want 503", code)
		}
	}
	healthIs(t, hc, healthpb.HealthCheckResponse_SERVING)

	rs.Thaw()
	eventually(t, "readiness back with Redis", func() bool { return readyzStatus(t, cfg.Metrics.Addr) == http.StatusOK })
}

// A pod whose policy has not loaded must not be marked ready by the
// chart's gRPC readiness probe: gRPC health answers as /readyz does, and
// a watcher learns of the first activation without asking again.
func TestGRPCHealthFollowsPolicyReadiness(t *testing.T) {
	b, err := policy.BuildBundle([]string{"../../policies"}, policy.BuildOptions{Revision: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	var tarball bytes.Buffer
	if err := policy.WriteBundle(&tarball, b); err != nil {
		t.Fatal(err)
	}
	var serving atomic.Bool
	bundles := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !serving.Load() {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(tarball.Bytes())
	}))
	defer bundles.Close()
	cfg := testConfig(t, "", func(c *Config) {
		c.Policy.Paths = nil
		c.Policy.BundleURL = bundles.URL + "/bundle.tar.gz"
		c.Policy.PollInterval = 50 * time.Millisecond
		c.DecisionLog.Sink = "none"
	})
	runServer(t, &cfg)
	hc := healthClient(t, cfg.GRPC.Addr)

	if got := readyzStatus(t, cfg.Metrics.Addr); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz without policy = %d, want 503", got)
	}
	healthIs(t, hc, healthpb.HealthCheckResponse_NOT_SERVING)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: healthServices[1]})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil || first.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch before policy = %v %v, want NOT_SERVING", first.GetStatus(), err)
	}
	serving.Store(true)
	next, err := watch.Recv()
	if err != nil || next.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch after activation = %v %v, want SERVING", next.GetStatus(), err)
	}
	healthIs(t, hc, healthpb.HealthCheckResponse_SERVING)
	if got := readyzStatus(t, cfg.Metrics.Addr); got != http.StatusOK {
		t.Fatalf("/readyz with policy = %d, want 200", got)
	}
}

// kubeletTimeout is how long the kubelet waits for a probe's answer by
// default (timeoutSeconds: 1): an answer that takes longer fails it.
const kubeletTimeout = time.Second

// readyzAnswer is /readyz's status and checks for query, asked within
// timeout: kubeletTimeout as a probe asks, or longer for an evaluation
// that waits on a hanging store.
func readyzAnswer(t *testing.T, metricsAddr, query string, timeout time.Duration) (int, map[string]string) {
	t.Helper()
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get("http://" + metricsAddr + "/readyz" + query)
	if err != nil {
		t.Fatalf("/readyz%s: %v", query, err)
	}
	defer resp.Body.Close()
	var body struct{ Checks map[string]string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("/readyz%s: %v", query, err)
	}
	return resp.StatusCode, body.Checks
}

// A Redis outage must not take the storefront out of service (DESIGN §6:
// checks that need no delegation state keep being decided). gRPC health,
// which the chart's readinessProbe asks, and /readyz?exclude=redis, which
// its startupProbe asks, keep answering ready within the kubelet's
// timeout whether Redis is down or hangs; /readyz still reports the store
// failing, and so does deputy_readiness, refreshed in the background
// without anyone asking /readyz, for the alert.
func TestProbesStayReadyThroughRedisOutage(t *testing.T) {
	outages := []struct {
		name         string
		cut, recover func(*redistest.Server)
	}{
		{"frozen", (*redistest.Server).Freeze, (*redistest.Server).Thaw},
		{"stopped", (*redistest.Server).Stop, (*redistest.Server).Restart},
	}
	for _, o := range outages {
		t.Run(o.name, func(t *testing.T) {
			rs := redistest.Start(t)
			cfg := startServer(t, func(c *Config) { c.Redis.Addrs = []string{rs.Addr} })
			hc := healthClient(t, cfg.GRPC.Addr)
			metricsURL := "http://" + cfg.Metrics.Addr + "/metrics"
			const storeUp = `deputy_readiness{check="redis"}`
			healthIs(t, hc, healthpb.HealthCheckResponse_SERVING)
			// Set by the first background evaluation, which runs as the
			// server starts.
			eventually(t, storeUp+" 1 with Redis up", func() bool {
				v, ok := sampled(t, metricsURL, storeUp)
				return ok && v == 1
			})

			o.cut(rs)
			// The background evaluation runs every healthRefresh and gives
			// the store up to readyTimeout.
			// eventually's bound (10 s) is past both.
			eventually(t, storeUp+" 0 with Redis down", func() bool {
				return sample(t, metricsURL, storeUp) == 0
			})
			for _, svc := range healthServices {
				ctx, cancel := context.WithTimeout(context.Background(), kubeletTimeout)
				r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
				cancel()
				if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					t.Errorf("gRPC health %q with Redis %s = %v %v, want SERVING", svc, o.name, r.GetStatus(), err)
				}
			}
			if status, checks := readyzAnswer(t, cfg.Metrics.Addr, "?exclude=redis", kubeletTimeout); status != http.StatusOK || checks["policy"] != "ok" || checks["identity"] != "ok" || checks["redis"] != "" {
				t.Errorf("/readyz?exclude=redis with Redis %s = %d %v, want 200 without redis", o.name, status, checks)
			}
			if got := checkPublicPage(t, cfg.GRPC.Addr); got != nil {
				t.Errorf("public page with Redis %s: %v, want allowed", o.name, got)
			}
			status, checks := readyzAnswer(t, cfg.Metrics.Addr, "", readyTimeout+5*time.Second)
			if status != http.StatusServiceUnavailable || checks["redis"] != "failing" || checks["policy"] != "ok" {
				t.Errorf("/readyz with Redis %s = %d %v, want 503 with redis failing", o.name, status, checks)
			}

			o.recover(rs)
			eventually(t, "/readyz ready with Redis back", func() bool {
				status, _ := readyzAnswer(t, cfg.Metrics.Addr, "", readyTimeout+5*time.Second)
				return status == http.StatusOK
			})
			// The gauge follows the background evaluation, which may run
			// up to healthRefresh after /readyz's own saw Redis back.
			eventually(t, storeUp+" 1 with Redis back", func() bool {
				v, ok := sampled(t, metricsURL, storeUp)
				return ok && v == 1
			})
			healthIs(t, hc, healthpb.HealthCheckResponse_SERVING)
		})
	}
}

// checkPublicPage asks ext_authz about an anonymous GET of a catalog page,
// which needs no delegation state: nil when allowed.
func checkPublicPage(t *testing.T, grpcAddr string) error {
	t.Helper()
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/catalog/shoes", Host: "shop.example"}}}})
	if err != nil {
		return err
	}
	if r.GetOkResponse() == nil {
		return fmt.Errorf("denied: %v", r.GetStatus())
	}
	return nil
}

// The health status is shared: a client whose Checks expire before
// readiness is evaluated must not show NOT_SERVING to the others, and
// Checks cost Redis nothing (they leave it out): only the background
// evaluation's PING per healthRefresh.
func TestGRPCHealthIsNotClientControlled(t *testing.T) {
	rs := redistest.Start(t)
	proxy := redistest.StartProxy(t, rs.Addr)
	cfg := startServer(t, func(c *Config) { c.Redis.Addrs = []string{proxy.Addr} })
	hc := healthClient(t, cfg.GRPC.Addr)
	healthIs(t, hc, healthpb.HealthCheckResponse_SERVING)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: healthServices[1]})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch = %v %v, want SERVING", r.GetStatus(), err)
	}
	seen := make(chan healthpb.HealthCheckResponse_ServingStatus, 16)
	go func() {
		defer close(seen)
		for {
			r, err := watch.Recv()
			if err != nil {
				return
			}
			seen <- r.GetStatus()
		}
	}()

	for range 300 {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Microsecond)
		_, _ = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: healthServices[1]})
		cancel()
	}
	proxy.Reset()
	start := time.Now()
	for range 100 {
		healthIs(t, hc, healthpb.HealthCheckResponse_SERVING)
	}
	elapsed, pings := time.Since(start), proxy.Commands()

	cancel()
	for st := range seen {
		t.Errorf("a watcher saw a change to %v while Redis and the policy were fine", st)
	}
	// One evaluation per checkFreshness from Checks, one from the ticker
	// and one in progress when counting began.
	if max := int(elapsed/checkFreshness) + int(elapsed/healthRefresh) + 3; pings > max {
		t.Errorf("200 health Checks in %s sent Redis %d commands, want at most %d", elapsed, pings, max)
	}
}

// A key set fetch in flight must not hold readiness: any client starts
// one with a token naming a kid nobody knows (signed or not), and an
// identity provider that hangs keeps it in flight for
// identity.fetch_timeout, then again a second later. Were the identity
// check to wait for it, every replica would fail its probes and leave the
// Service, while every check is decided with the keys loaded.
func TestReadyWhileIdentityProviderHangs(t *testing.T) {
	is := newTestIssuer(t, "https://login.example.com/realms/shop")
	set, err := os.ReadFile(is.jwks)
	if err != nil {
		t.Fatal(err)
	}
	var hang atomic.Bool
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if hang.Load() {
			select {
			case arrived <- struct{}{}:
			default:
			}
			<-release
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(set)
	}))
	t.Cleanup(idp.Close) // after the server stops, which waits for the fetch
	var once sync.Once
	answer := func() { once.Do(func() { close(release) }) }
	defer answer()
	// The fetch ends when the test lets the provider answer, not before.
	cfg := productionServerWith(t, func(c *Config) { c.Identity.FetchTimeout = time.Hour },
		identity.IssuerConfig{Issuer: is.url, JWKSURL: idp.URL})
	if status, checks := readyzAnswer(t, cfg.Metrics.Addr, "", readyTimeout+5*time.Second); status != http.StatusOK {
		t.Fatalf("/readyz before the provider hangs = %d %v, want 200", status, checks)
	}

	hang.Store(true)
	enc := base64.RawURLEncoding
	// It names the issuer: a token of an issuer not trusted fetches nothing.
	junk := enc.EncodeToString([]byte(`{"alg":"ES256","kid":"nobody-knows"}`)) + "." + enc.EncodeToString([]byte(`{"iss":"`+is.url+`"}`)) + "." + enc.EncodeToString([]byte("sig"))
	conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	checked := make(chan error, 1)
	go func() {
		_, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Host: "shop.example", Headers: map[string]string{"authorization": "Bearer " + junk}}}}})
		checked <- err
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("a kid nobody knows started no key set fetch")
	}
	// Leaving the policy out asks for an evaluation nobody has asked for
	// yet, so it runs now, during the fetch, and reads identity.
	status, checks := readyzAnswer(t, cfg.Metrics.Addr, "?exclude=policy", readyTimeout+5*time.Second)
	if status != http.StatusOK || checks["identity"] != "ok" {
		t.Errorf("/readyz?exclude=policy during the fetch = %d %v, want 200 with identity ok: the issuer's keys are loaded", status, checks)
	}
	answer()
	if err := <-checked; err != nil {
		t.Errorf("check of the unknown kid: %v", err)
	}
}
