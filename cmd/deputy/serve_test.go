package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/porttest"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// freePort is a loopback address for a server the test starts.
func freePort(t *testing.T) string {
	t.Helper()
	return porttest.Free(t)
}

// testConfig is a dev-mode config on free loopback ports serving the
// policies in dir; change adjusts it before validation.
func testConfig(t *testing.T, dir string, change func(*Config)) Config {
	t.Helper()
	var cfg Config
	cfg.Dev = true
	cfg.LogLevel = "error"
	cfg.GRPC.Addr, cfg.HTTP.Addr, cfg.Metrics.Addr = freePort(t), freePort(t), freePort(t)
	cfg.Policy.Paths = []string{dir}
	cfg.Identity.Dev.KeyFile = filepath.Join(t.TempDir(), "dev-key.json")
	change(&cfg)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("%s never listened", addr)
}

// runServer builds and runs Deputy on cfg until the test ends.
func runServer(t *testing.T, cfg *Config) {
	t.Helper()
	stop, done := startRun(t, cfg)
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	waitListening(t, cfg.Metrics.Addr)
}

// startRun builds Deputy on cfg and runs it: stop is its shutdown
// signal, done delivers what run returns.
func startRun(t *testing.T, cfg *Config) (stop context.CancelFunc, done <-chan error) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	s, err := build(ctx, cfg)
	// A port chosen free may be taken before the bind by a server another
	// test (of this package or one beside it) chose at random too: the
	// listeners on loopback ports move to others, a few times at most.
	for try := 0; err != nil && strings.Contains(err.Error(), "address already in use") && try < 5; try++ {
		for _, addr := range []*string{&cfg.GRPC.Addr, &cfg.HTTP.Addr, &cfg.Metrics.Addr} {
			if strings.HasPrefix(*addr, "127.0.0.1:") {
				*addr = freePort(t)
			}
		}
		s, err = build(ctx, cfg)
	}
	if err != nil {
		stop()
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- s.run(ctx) }()
	return stop, ran
}

// devToken mints hour-long tokens the dev-mode server on cfg accepts.
func devToken(t *testing.T, cfg *Config) func(identity.DevClaims) string {
	t.Helper()
	dev, err := identity.LoadDevIssuer(cfg.Identity.Dev.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return func(c identity.DevClaims) string {
		t.Helper()
		c.TTL = time.Hour
		tok, err := dev.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
}

// TestServeDrainsInFlightChecksOnShutdown starts the whole server, holds a
// check inside policy evaluation (http.send to a slow local service), asks
// the server to stop, and expects that check to complete normally and its
// decision record to reach the Redis stream: the decision log flushes
// after the listeners drained, not when the shutdown signal arrives.
func TestServeDrainsInFlightChecksOnShutdown(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		w.Header().Set("content-type", "application/json")
		io.WriteString(w, `{"ok": true}`)
	}))
	defer slow.Close()

	dir := t.TempDir()
	rego := `package deputy.authz

default decision := {"allowed": false, "reason": "no"}

decision := {"allowed": true, "reason": "slow_ok"} if {
	input.attributes.request.http.path == "/slow"
	http.send({"method": "GET", "url": "` + slow.URL + `", "timeout": "20s"}).body.ok
}

decision := {"allowed": true, "reason": "fast"} if input.attributes.request.http.path == "/fast"
`
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(rego), 0o600); err != nil {
		t.Fatal(err)
	}
	rs := redistest.Start(t)
	cfg := testConfig(t, dir, func(c *Config) {
		c.Redis.Addrs = []string{rs.Addr}
		c.DecisionLog.Sink = "redis"
		c.DecisionLog.FlushInterval = time.Hour // only the shutdown flush writes
		// The policy holds the check in evaluation with http.send, which
		// Deputy refuses unless named here.
		c.Policy.AllowBuiltins = []string{"http.send"}
	})

	stop, done := startRun(t, &cfg)
	defer stop()
	waitListening(t, cfg.GRPC.Addr)

	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		resp, err := http.Get("http://" + cfg.Metrics.Addr + path)
		if err != nil || resp.StatusCode != want {
			t.Fatalf("%s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}

	conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	req := func(path string) *authv3.CheckRequest {
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path}}}}
	}
	if resp, err := client.Check(context.Background(), req("/fast")); err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Fatalf("fast check: %v %v", resp, err)
	}
	resp, err := http.Get("http://" + cfg.Metrics.Addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metricsText), `deputy_decisions_total{`) {
		t.Errorf("no decision counted in /metrics")
	}

	type outcome struct {
		resp *authv3.CheckResponse
		err  error
	}
	inflight := make(chan outcome, 1)
	go func() {
		r, err := client.Check(context.Background(), req("/slow"))
		inflight <- outcome{r, err}
	}()
	<-entered
	stop() // SIGTERM
	// The slow check is released only once shutdown has closed the gRPC
	// listener, so it is still in flight while Deputy shuts down.
	eventually(t, "the gRPC listener closed by shutdown", func() bool {
		c, err := net.DialTimeout("tcp", cfg.GRPC.Addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	close(release)

	got := <-inflight
	if got.err != nil || codes.Code(got.resp.GetStatus().GetCode()) != codes.OK {
		t.Fatalf("in-flight check did not finish: %v %v", got.resp, got.err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("server did not stop")
	}
	if _, err := client.Check(context.Background(), req("/fast")); err == nil {
		t.Fatal("server still answering after shutdown")
	}
	entries, err := rs.Client().XRange(context.Background(), cfg.DecisionLog.Stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range entries {
		var r decisionlog.Record
		if err := json.Unmarshal([]byte(e.Values[decisionlog.RecordField].(string)), &r); err != nil {
			t.Fatal(err)
		}
		reasons = append(reasons, r.Reason)
	}
	if strings.Join(reasons, ",") != "fast,slow_ok" {
		t.Fatalf("decision records after shutdown = %v, want [fast slow_ok]", reasons)
	}
}

func TestBuildRefusesBadPolicyNamingIt(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.rego"), []byte("package deputy.authz\n\ndecision := {\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var cfg Config
	cfg.Dev = true
	cfg.Policy.Paths = []string{dir}
	cfg.SetDefaults()
	cfg.Identity.Dev.KeyFile = filepath.Join(t.TempDir(), "k.json")
	cfg.DecisionLog.Sink = "none"
	_, err := build(context.Background(), &cfg)
	if err == nil || !strings.Contains(err.Error(), "bad.rego") {
		t.Fatalf("err = %v, want the bad file named", err)
	}
}

// A bundle server that is down at start leaves Deputy running but unready
// (so Kubernetes waits) rather than exiting into a crash loop; checks are
// denied meanwhile.
func TestStartsUnreadyWhenBundleServerIsDown(t *testing.T) {
	cfg := testConfig(t, "", func(c *Config) {
		c.Policy.Paths = nil
		c.Policy.BundleURL = "http://" + freePort(t) + "/bundle.tar.gz"
		c.DecisionLog.Sink = "none"
	})
	ctx, stop := context.WithCancel(context.Background())
	s, err := build(ctx, &cfg)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	defer func() { stop(); <-done }()
	waitListening(t, cfg.Metrics.Addr)
	resp, err := http.Get("http://" + cfg.Metrics.Addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d, want 503", resp.StatusCode)
	}
	// The metrics port is open to every scraper: it names the failing
	// check, and leaves why (the bundle server's address, its answer) to
	// the log.
	var body struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("/readyz body %s: %v", raw, err)
	}
	if body.Status != "not ready" || body.Checks["policy"] != "failing" || body.Checks["identity"] != "ok" {
		t.Errorf("/readyz body %s, want policy failing, identity ok", raw)
	}
	if host := strings.TrimPrefix(cfg.Policy.BundleURL, "http://"); strings.Contains(string(raw), host[:strings.Index(host, "/")]) || strings.Contains(string(raw), "bundle") {
		t.Errorf("/readyz body %s tells why the policy failed", raw)
	}
	conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{})
	if err != nil || r.GetOkResponse() != nil {
		t.Fatalf("check without policy: %v %v", r, err)
	}
}

// The HTTP port decides "//" paths and refuses dot segments itself, as
// the gRPC check does, instead of answering with a redirect to a cleaned
// path that is no decision at all.
func TestHTTPCheckDecidesUncleanPathsLikeGRPC(t *testing.T) {
	dir := t.TempDir()
	rego := `package deputy.authz

default decision := {"allowed": false, "reason": "no"}

decision := {"allowed": true, "reason": "seen_as_sent"} if input.attributes.request.http.path == "//x/y"
`
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(rego), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := startServer(t, func(c *Config) { c.Policy.Paths = []string{dir} })
	waitListening(t, cfg.GRPC.Addr)
	waitListening(t, cfg.HTTP.Addr)

	conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	for _, tc := range []struct {
		path string
		want int
	}{
		{path: "//x/y", want: http.StatusOK},
		{path: "/x//y", want: http.StatusForbidden},
		{path: "/x/../deputy/v1/", want: http.StatusBadRequest},
		{path: "/x/./y", want: http.StatusBadRequest},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := noRedirect.Get("http://" + cfg.HTTP.Addr + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want || resp.Header.Get("x-deputy-decision-id") == "" {
				t.Errorf("HTTP: %d (Location %q, decision %q), want %d decided", resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("x-deputy-decision-id"), tc.want)
			}
			g, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: tc.path}}}})
			if err != nil {
				t.Fatal(err)
			}
			grpcStatus := http.StatusOK
			if d := g.GetDeniedResponse(); d != nil {
				grpcStatus = int(d.GetStatus().GetCode())
			}
			if grpcStatus != resp.StatusCode {
				t.Errorf("gRPC decided %d, HTTP %d", grpcStatus, resp.StatusCode)
			}
		})
	}
}

// Spellings of Deputy's own paths are never decided: a proxy that matched
// one as Deputy's and passed it on as sent would hand the check answer,
// actor token included, to the client.
func TestHTTPNeverDecidesSpellingsOfDeputyPaths(t *testing.T) {
	cfg := startServer(t, func(*Config) {})
	waitListening(t, cfg.HTTP.Addr)
	for _, path := range []string{"//deputy/authz", "/deputy//authz", "/Deputy/Authz", "//deputy/v1/customers", "/DEPUTY/v1/x", "/deputy/x", "//.well-known/jwks.json", "/.Well-Known/jwks.json",
		"/%64eputy/v1/customers", "/deputy%2Fv1/customers", "/.well-known%2Fjwks.json", "/%2Ewell-known/jwks.json", "/deputy/v1%2Fcustomers",
		"/%64eputy/v1/customers|", "/%64eputy/v1/customers/bob|/consent", "/%2Ewell-known/jwks.json^", "/%64eputy/v1/x{"} {
		req, err := http.NewRequest(http.MethodGet, "http://"+cfg.HTTP.Addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(path, "|^{") {
			// Sent as written: Go's client would escape the byte and
			// send the decoded path.
			req.URL.Opaque = path
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("x-deputy-decision-id") != "" {
			t.Errorf("%s: %d, decision %q; want 404 and no decision", path, resp.StatusCode, resp.Header.Get("x-deputy-decision-id"))
		}
	}
	// The paths themselves still work.
	resp, err := http.Get("http://" + cfg.HTTP.Addr + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("jwks: %d", resp.StatusCode)
	}
}

func TestDevBannerNamesTheStoreInUse(t *testing.T) {
	cases := []struct {
		name  string
		redis redis.Config
		want  string
	}{
		{"embedded", redis.Config{}, "state           embedded store"},
		{"single node", redis.Config{Addrs: []string{"127.0.0.1:6379"}}, "state           Redis at 127.0.0.1:6379"},
		{"sentinel", redis.Config{Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "main"}, "Redis Sentinel master main via s1:26379, s2:26379"},
		{"cluster", redis.Config{Addrs: []string{"c1:7000", "c2:7000"}, Cluster: true}, "Redis Cluster, seeds c1:7000, c2:7000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Dev: true, Redis: tc.redis}
			cfg.SetDefaults()
			var out strings.Builder
			printNextSteps(&out, &cfg, "127.0.0.1:9191", "127.0.0.1:8181", "127.0.0.1:9090")
			if !strings.Contains(out.String(), tc.want) {
				t.Fatalf("banner lacks %q:\n%s", tc.want, out.String())
			}
			if tc.redis.Enabled() && strings.Contains(out.String(), "embedded") {
				t.Fatalf("banner speaks of the embedded store while Redis is in use:\n%s", out.String())
			}
			if !strings.Contains(out.String(), "policies        policies") {
				t.Fatalf("banner does not name the policy source:\n%s", out.String())
			}
		})
	}
}

// Behind Envoy's http_service no header names the request to decide:
// there is no forwarded endpoint to send X-Original-URI to.
func TestCheckProxyEnvoyServesNoForwardedEndpoint(t *testing.T) {
	cfg := startServer(t, func(c *Config) { c.HTTP.CheckProxy = "envoy" })
	waitListening(t, cfg.HTTP.Addr)
	req, _ := http.NewRequest("GET", "http://"+cfg.HTTP.Addr+cfg.HTTP.CheckPath, nil)
	req.Header.Set("X-Original-URI", "/catalog/shoes")
	req.Header.Set("X-Original-Method", "GET")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("x-deputy-decision-id") != "" {
		t.Fatalf("%s: %d, decision %q; want 404 and no decision", cfg.HTTP.CheckPath, resp.StatusCode, resp.Header.Get("x-deputy-decision-id"))
	}
}

// redeemCookie follows an impersonation session's redeem link on the
// storefront host shop.example, the host the session is bound to, and
// returns the session cookie it sets, as name=value.
func redeemCookie(t *testing.T, base, redeemURL string) string {
	t.Helper()
	redeem, err := http.NewRequest("GET", base+redeemURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	redeem.Host = "shop.example"
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Do(redeem)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie string
	for _, c := range resp.Cookies() {
		cookie = c.Name + "=" + c.Value
	}
	if cookie == "" {
		t.Fatalf("redeem set no cookie: %d", resp.StatusCode)
	}
	return cookie
}

// apiCall sends a management API request with a bearer token and a JSON
// body and decodes the JSON answer. It fails the test unless the status is
// wantStatus (any 2xx when wantStatus is 0).
func apiCall(t *testing.T, base, method, path, tok, body string, wantStatus int) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
	req.Header.Set("authorization", "Bearer "+tok)
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if wantStatus == 0 && resp.StatusCode/100 != 2 || wantStatus != 0 && resp.StatusCode != wantStatus {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return out
}
