package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/metrics"
	"github.com/deputyhq/deputy/sidecar/metrics/metricstest"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

func newMetrics(t testing.TB) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// series returns the value of the series of name whose labels include want.
func series(t testing.TB, reg *prometheus.Registry, name string, want map[string]string) (float64, bool) {
	t.Helper()
	return metricstest.Series(t, reg, name, want)
}

// labelValues joins every label value of the series of name.
func labelValues(t testing.TB, reg *prometheus.Registry, name string) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					b.WriteString(lp.GetValue() + " ")
				}
			}
		}
	}
	return b.String()
}

func TestObserveDecision(t *testing.T) {
	m, reg := newMetrics(t)
	imp := &sidecar.Delegation{Mode: sidecar.ModeImpersonation, Actor: "staff-17", Subject: "cust-42", ID: "s-1"}
	decisions := []*sidecar.Decision{
		{Allowed: true, Reason: "impersonation_session", Delegation: imp, Latency: 40 * time.Microsecond,
			Stages: sidecar.Stages{Identity: 5 * time.Microsecond, State: 10 * time.Microsecond, Policy: 20 * time.Microsecond}},
		{Allowed: true, Reason: "impersonation_session", Delegation: imp, Latency: 40 * time.Microsecond},
		{Allowed: false, Reason: "no_identity", Latency: 10 * time.Microsecond, Stages: sidecar.Stages{Identity: time.Microsecond}},
		{Allowed: false, Reason: "state_unavailable", Error: "redis down", Delegation: &sidecar.Delegation{Mode: "partner"}},
		{Allowed: false, Delegation: &sidecar.Delegation{Mode: "made-up"}},
	}
	for _, d := range decisions {
		m.ObserveDecision(d)
	}
	cases := []struct {
		name   string
		metric string
		labels map[string]string
		want   float64
	}{
		{"allowed impersonation", "deputy_decisions_total", map[string]string{"result": "allow", "mode": "impersonation", "reason": "impersonation_session"}, 2},
		{"deny without delegation", "deputy_decisions_total", map[string]string{"result": "deny", "mode": "none", "reason": "no_identity"}, 1},
		{"error", "deputy_decisions_total", map[string]string{"result": "error", "mode": "partner", "reason": "state_unavailable"}, 1},
		{"unknown mode bounded", "deputy_decisions_total", map[string]string{"result": "deny", "mode": "other", "reason": "none"}, 1},
		{"latency observed per check", "deputy_check_duration_seconds", nil, 5},
		{"identity stage only when spent", "deputy_check_stage_duration_seconds", map[string]string{"stage": "identity"}, 2},
		{"state stage", "deputy_check_stage_duration_seconds", map[string]string{"stage": "state"}, 1},
		{"policy stage", "deputy_check_stage_duration_seconds", map[string]string{"stage": "policy"}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := series(t, reg, tc.metric, tc.labels)
			if !ok || got != tc.want {
				t.Errorf("%s%v = %v (present %v), want %v", tc.metric, tc.labels, got, ok, tc.want)
			}
		})
	}
	t.Run("no user ids in labels", func(t *testing.T) {
		out := labelValues(t, reg, "deputy_decisions_total")
		for _, id := range []string{"staff-17", "cust-42", "s-1"} {
			if strings.Contains(out, id) {
				t.Errorf("label carries %q", id)
			}
		}
	})
}

func TestReasonLabelBounded(t *testing.T) {
	m, reg := newMetrics(t)
	for i := range 500 {
		m.ObserveDecision(&sidecar.Decision{Reason: fmt.Sprintf("reason-%d", i)})
	}
	m.ObserveDecision(&sidecar.Decision{Reason: strings.Repeat("x", 200)})
	if n := testutil.CollectAndCount(reg, "deputy_decisions_total"); n > 70 {
		t.Errorf("%d series for 501 reasons, want bounded", n)
	}
	if got, _ := series(t, reg, "deputy_decisions_total", map[string]string{"reason": "other"}); got != 501-64 {
		t.Errorf("other = %v, want %d", got, 501-64)
	}
}

// A policy whose reason carries request data (sprintf("no_route:%s",
// [input.parsed_path]), an OPA-Envoy habit) hands ObserveDecision a new
// reason on every request a client makes up. The label is folded to
// "other"; the memory behind it must stay bounded as well, whatever the
// reasons' number and size.
func TestDecisionReasonsFromRequestDataRetainNoMemory(t *testing.T) {
	liveHeap := func() uint64 {
		runtime.GC()
		var s runtime.MemStats
		runtime.ReadMemStats(&s)
		return s.HeapAlloc
	}
	for _, tc := range []struct {
		name   string
		n      int
		reason func(i int) string
		other  int // of the n counted as "other"
	}{
		// Past maxReasonLen: folded by length.
		{"long reasons", 20000, func(i int) string { return fmt.Sprintf("no_route:/x/%d/%s", i, strings.Repeat("p", 2000)) }, 20000},
		// Short enough for a label, past the bound on distinct reasons.
		{"short reasons past the bound", 200000, func(i int) string { return fmt.Sprintf("no_route:/x/%d", i) }, 200000 - 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, reg := newMetrics(t)
			before := liveHeap()
			for i := range tc.n {
				m.ObserveDecision(&sidecar.Decision{Reason: tc.reason(i)})
			}
			after := liveHeap()
			// Kept per distinct reason before this was bounded: some 40 MB.
			if after > before && after-before > 4<<20 {
				t.Errorf("%d distinct reasons left %d MB on the heap, want the bounded labels' few KB", tc.n, (after-before)>>20)
			}
			if got, _ := series(t, reg, "deputy_decisions_total", map[string]string{"result": "deny", "reason": "other"}); int(got) != tc.other {
				t.Errorf("other = %v, want %d", got, tc.other)
			}
			runtime.KeepAlive(m)
		})
	}
}

func TestInstrumentHTTP(t *testing.T) {
	m, reg := newMetrics(t)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /deputy/v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
	})
	mux.HandleFunc("POST /deputy/v1/sessions", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("{}")) })
	srv := httptest.NewServer(m.InstrumentHTTP("api", mux))
	defer srv.Close()
	do := func(method, path string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	do("GET", "/deputy/v1/sessions/cust-42-secret")
	do("GET", "/deputy/v1/sessions/another")
	do("POST", "/deputy/v1/sessions")
	do("BREW", "/deputy/v1/sessions")
	cases := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"route is the pattern, not the path", map[string]string{"server": "api", "route": "GET /deputy/v1/sessions/{id}", "method": "GET", "code": "404"}, 2},
		{"implicit 200", map[string]string{"route": "POST /deputy/v1/sessions", "method": "POST", "code": "200"}, 1},
		{"unknown method bounded", map[string]string{"method": "other", "code": "405"}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := series(t, reg, "deputy_http_requests_total", tc.labels); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if strings.Contains(labelValues(t, reg, "deputy_http_requests_total"), "cust-42") {
		t.Error("a request path reached a label")
	}
}

func TestRedisHook(t *testing.T) {
	m, reg := newMetrics(t)
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	c.AddHook(m.RedisHook())
	ctx := context.Background()
	c.Set(ctx, "s", "text", 0)
	_ = c.Get(ctx, "missing").Err() // redis.Nil is an answer, not an error
	_ = c.Incr(ctx, "s").Err()      // ERR value is not an integer
	_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, "s", "x") // WRONGTYPE
		p.Get(ctx, "s")
		return nil
	})
	// A WATCH conflict is the optimistic lock working, not a failure.
	err := c.Watch(ctx, func(tx *redis.Tx) error {
		c.Set(ctx, "w", "changed", 0)
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error { p.Set(ctx, "w", "mine", 0); return nil })
		return err
	}, "w")
	if !errors.Is(err, redis.TxFailedErr) {
		t.Fatalf("Watch = %v, want the conflict", err)
	}
	// A caller that gave up is not Redis failing.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_ = c.XRead(cctx, &redis.XReadArgs{Streams: []string{"s2", "$"}, Block: time.Second}).Err()
	srv.Stop()
	_ = c.Ping(ctx).Err()
	cases := []struct {
		command string
		want    float64
	}{{"incr", 1}, {"lpush", 1}, {"get", 0}, {"set", 0}, {"exec", 0}, {"multi", 0}, {"xread", 0}, {"ping", 1}, {"dial", 1}}
	for _, tc := range cases {
		t.Run(tc.command, func(t *testing.T) {
			got, _ := series(t, reg, "deputy_redis_errors_total", map[string]string{"command": tc.command})
			if got < tc.want || (tc.want == 0 && got != 0) {
				t.Errorf("errors for %s = %v, want %v", tc.command, got, tc.want)
			}
		})
	}
}

func TestStateCache(t *testing.T) {
	m, reg := newMetrics(t)
	m.CacheHit("session")
	m.CacheHit("session")
	m.CacheMiss("session")
	m.CacheEviction("grant", "invalidated")
	m.CacheEviction("grant", "because")
	cases := []struct {
		name, metric string
		labels       map[string]string
		want         float64
	}{
		{"hits", "deputy_state_cache_requests_total", map[string]string{"cache": "session", "result": "hit"}, 2},
		{"misses", "deputy_state_cache_requests_total", map[string]string{"cache": "session", "result": "miss"}, 1},
		{"eviction", "deputy_state_cache_evictions_total", map[string]string{"cache": "grant", "reason": "invalidated"}, 1},
		{"unknown reason bounded", "deputy_state_cache_evictions_total", map[string]string{"cache": "grant", "reason": "other"}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := series(t, reg, tc.metric, tc.labels); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPolicyActivation(t *testing.T) {
	m, reg := newMetrics(t)
	eng := policy.New(policy.OnActivate(func(a *policy.Activation, err error) {
		if err != nil || a == nil {
			m.ObserveActivation("", time.Time{}, err)
			return
		}
		m.ObserveActivation(a.Revision, a.ActivatedAt, nil)
	}), policy.WithClock(func() time.Time { return time.Unix(1700000000, 0) }))
	good, err := policy.LoadPaths([]string{"testdata/policy"})
	if err != nil {
		t.Fatal(err)
	}
	good.Revision = "rev-1"
	if err := eng.Activate(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	bad, err := policy.LoadPaths([]string{"testdata/policy"})
	if err != nil {
		t.Fatal(err)
	}
	bad.Revision = "rev-2"
	bad.Modules["broken.rego"] = bad.Modules[firstKey(bad.Modules)].Copy()
	bad.Modules["broken.rego"].Rules = append(bad.Modules["broken.rego"].Rules, bad.Modules["broken.rego"].Rules...)
	if err := eng.Activate(context.Background(), bad); err == nil {
		t.Fatal("conflicting rules activated")
	}
	cases := []struct {
		name, metric string
		labels       map[string]string
		want         float64
	}{
		{"serving revision", "deputy_bundle_info", map[string]string{"revision": "rev-1"}, 1},
		{"last activation", "deputy_bundle_last_activation_timestamp_seconds", nil, 1700000000},
		{"failures", "deputy_bundle_activation_failures_total", nil, 1},
		{"activations", "deputy_bundle_activations_total", nil, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := series(t, reg, tc.metric, tc.labels); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if _, ok := series(t, reg, "deputy_bundle_info", map[string]string{"revision": "rev-2"}); ok {
		t.Error("a refused revision is reported as serving")
	}
}

func firstKey[V any](m map[string]V) string {
	for k := range m {
		return k
	}
	return ""
}

// serveGRPC starts a gRPC server instrumented as Deputy's ext_authz
// server is, with the health service, and calls it once.
func serveGRPC(t *testing.T, m *metrics.Metrics) {
	t.Helper()
	conn, err := grpc.NewClient(startHealthServer(t, m), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestGRPCServerMetrics(t *testing.T) {
	m, reg := newMetrics(t)
	serveGRPC(t, m)
	got, _ := series(t, reg, "grpc_server_handled_total", map[string]string{"grpc_method": "Check", "grpc_code": "OK"})
	if got != 1 {
		t.Errorf("grpc_server_handled_total{Check,OK} = %v, want 1", got)
	}
}

// The gRPC server metrics keep go-grpc-middleware's meanings, which the
// dashboard and alert rules read: a failed call is handled under its
// code and sends nothing; a stream counts its messages; every method has
// its series from the start.
func TestGRPCServerMetricsByCodeAndStream(t *testing.T) {
	m, reg := newMetrics(t)
	check := &grpc.UnaryServerInfo{FullMethod: "/envoy.service.auth.v3.Authorization/Check"}
	intercept := m.GRPC().UnaryServerInterceptor()
	for _, err := range []error{nil, status.Error(codes.PermissionDenied, "no"), context.DeadlineExceeded, status.Error(codes.Code(42), "odd")} {
		if _, got := intercept(context.Background(), nil, check, func(context.Context, any) (any, error) { return nil, err }); got != err {
			t.Fatalf("interceptor changed the handler's error %v into %v", err, got)
		}
	}
	conn, err := grpc.NewClient(startHealthServer(t, m), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A bidirectional stream the server ends: once the client reads its
	// end, the interceptor has counted everything.
	info, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := info.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := info.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := info.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := info.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v, want EOF", err)
	}
	unary := map[string]string{"grpc_type": "unary", "grpc_service": "envoy.service.auth.v3.Authorization", "grpc_method": "Check"}
	stream := map[string]string{"grpc_type": "bidi_stream", "grpc_service": "grpc.reflection.v1.ServerReflection", "grpc_method": "ServerReflectionInfo"}
	with := func(base map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"grpc_server_started_total", unary, 4},
		{"grpc_server_msg_received_total", unary, 4},
		{"grpc_server_msg_sent_total", unary, 1},
		{"grpc_server_handled_total", with(unary, "grpc_code", "OK"), 1},
		{"grpc_server_handled_total", with(unary, "grpc_code", "PermissionDenied"), 1},
		{"grpc_server_handled_total", with(unary, "grpc_code", "DeadlineExceeded"), 1},
		{"grpc_server_handled_total", with(unary, "grpc_code", "Code(42)"), 1},
		{"grpc_server_handled_total", with(unary, "grpc_code", "Internal"), 0},
		{"grpc_server_started_total", stream, 1},
		{"grpc_server_msg_received_total", stream, 1},
		{"grpc_server_msg_sent_total", stream, 1},
		{"grpc_server_handled_total", with(stream, "grpc_code", "OK"), 1},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "List", "grpc_code": "OK"}, 0},
	} {
		got, found := series(t, reg, tc.name, tc.labels)
		if !found {
			t.Errorf("%s%v: no series", tc.name, tc.labels)
			continue
		}
		if got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	hist, found := series(t, reg, "grpc_server_handling_seconds", unary)
	if !found || hist != 4 {
		t.Errorf("grpc_server_handling_seconds{Check} count = %v (found %v), want 4", hist, found)
	}
}

// The method label comes from the registered services, but a server
// with an unknown-service handler (a proxying front, say) runs its
// interceptors for any method a client names: past a bound, methods
// share one "other" series, and nothing is kept per name.
func TestGRPCUnknownMethodsBounded(t *testing.T) {
	m, reg := newMetrics(t)
	addr := startHealthServer(t, m,
		grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error { return status.Error(codes.Unimplemented, "unknown") }))
	// Every registered method has its series from the start.
	registered := testutil.CollectAndCount(reg, "grpc_server_started_total")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const calls = 200
	for i := range calls {
		err := conn.Invoke(context.Background(), fmt.Sprintf("/made.up.Service%d/Method", i), &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("call %d: %v, want Unimplemented from the unknown-service handler", i, err)
		}
	}
	const maxMethods = 64
	if n := testutil.CollectAndCount(reg, "grpc_server_started_total"); n > maxMethods+1 {
		t.Errorf("%d started series for %d registered and %d made-up methods, want at most %d", n, registered, calls, maxMethods+1)
	}
	other, _ := series(t, reg, "grpc_server_started_total", map[string]string{"grpc_service": "other", "grpc_method": "other"})
	if want := calls - (maxMethods - registered); int(other) != want {
		t.Errorf("started{other} = %v, want %d", other, want)
	}
}

// startHealthServer serves the health and reflection services, instrumented as Deputy's
// gRPC server is, with opts besides, and returns its address.
func startHealthServer(t *testing.T, m *metrics.Metrics, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.GRPC().UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.GRPC().StreamServerInterceptor()),
	}, opts...)...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	reflection.Register(srv)
	m.GRPC().InitializeMetrics(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func TestDecisionLogAndLiveDelegations(t *testing.T) {
	m, reg := newMetrics(t)
	cfg := decisionlog.Defaults()
	cfg.QueueSize, cfg.BatchSize = 2, 1
	l, err := decisionlog.New(cfg, decisionlog.DiscardSink{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterDecisionLog(l); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterLiveDelegations(func() map[string]int { return map[string]int{sidecar.ModeImpersonation: 3} }); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		d := &sidecar.Decision{ID: fmt.Sprint(i)}
		if i == 0 {
			d.Path = "/" + strings.Repeat("a", cfg.MaxRecordBytes) // written without input, counted
		}
		l.Log(d)
	}
	cases := []struct {
		name, metric string
		labels       map[string]string
		want         float64
	}{
		{"queue depth", "deputy_decision_log_queue_depth", nil, 2},
		{"dropped past the bound", "deputy_decision_log_dropped_total", nil, 1},
		{"none unconfirmed", "deputy_decision_log_unconfirmed_total", nil, 0},
		{"impersonation sessions", "deputy_live_delegations", map[string]string{"mode": "impersonation"}, 3},
		{"modes without any are zero", "deputy_live_delegations", map[string]string{"mode": "partner"}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := series(t, reg, tc.metric, tc.labels)
			if !ok || got != tc.want {
				t.Errorf("got %v (present %v), want %v", got, ok, tc.want)
			}
		})
	}
	_ = l.Start(context.Background())
	_ = l.Stop(context.Background())
	if got, _ := series(t, reg, "deputy_decision_log_flushed_total", nil); got != 2 {
		t.Errorf("flushed = %v, want 2", got)
	}
	if got, _ := series(t, reg, "deputy_decision_log_oversized_total", nil); got != 1 {
		t.Errorf("oversized = %v, want 1", got)
	}
}

func TestHandlerServesScrape(t *testing.T) {
	m, reg := newMetrics(t)
	m.ObserveDecision(&sidecar.Decision{Allowed: true})
	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`deputy_decisions_total{mode="none",reason="none",result="allow"} 1`, "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
}

func TestNoGlobalRegistration(t *testing.T) {
	before, _ := prometheus.DefaultGatherer.Gather()
	newMetrics(t)
	after, _ := prometheus.DefaultGatherer.Gather()
	if len(before) != len(after) {
		t.Errorf("New registered %d families on the default registry", len(after)-len(before))
	}
	t.Run("twice on one registry is an error", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		if _, err := metrics.New(reg); err != nil {
			t.Fatal(err)
		}
		if _, err := metrics.New(reg); err == nil {
			t.Error("second registration accepted")
		}
	})
}

func TestBuildInfo(t *testing.T) {
	m, reg := newMetrics(t)
	if err := m.RegisterBuildInfo("v1.2.3", "abc123", "go1.26.0"); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP deputy_build_info The running Deputy build (value 1).
# TYPE deputy_build_info gauge
deputy_build_info{commit="abc123",go_version="go1.26.0",version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "deputy_build_info"); err != nil {
		t.Fatal(err)
	}
}

// The decision log stream's figures are what fn reports, read at scrape
// time: absent while fn has no recent read, and the trimmed count absent
// when Redis does not report it (before 7.0) rather than a false 0. The
// failed reads are counted whether or not a recent read succeeded: an
// unreadable stream shows there, not only as figures gone.
func TestDecisionLogStream(t *testing.T) {
	m, reg := newMetrics(t)
	s, ok := metrics.DecisionLogStream{Length: 1003, Trimmed: 497, OldestAge: 90 * time.Second, MaxLen: 1000}, true
	var readErrors uint64
	if err := m.RegisterDecisionLogStream(func() (metrics.DecisionLogStream, bool) { return s, ok }, func() uint64 { return readErrors }); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP deputy_decision_log_stream_length Entries in the decision log's Redis stream, as last read; the same on every replica writing to it.
# TYPE deputy_decision_log_stream_length gauge
deputy_decision_log_stream_length 1003
# HELP deputy_decision_log_stream_max_len decision_log.max_len: the approximate length the decision log's Redis stream is trimmed to (0: never trimmed).
# TYPE deputy_decision_log_stream_max_len gauge
deputy_decision_log_stream_max_len 1000
# HELP deputy_decision_log_stream_oldest_age_seconds Age of the oldest record the decision log's Redis stream keeps, by its entry id (Redis's clock): how far back the log reaches; 0 while it holds none.
# TYPE deputy_decision_log_stream_oldest_age_seconds gauge
deputy_decision_log_stream_oldest_age_seconds 90
`
	names := []string{"deputy_decision_log_stream_length", "deputy_decision_log_stream_max_len", "deputy_decision_log_stream_oldest_age_seconds", "deputy_decision_log_stream_trimmed_total"}
	if v, _ := series(t, reg, "deputy_decision_log_stream_trimmed_total", nil); v != 497 {
		t.Errorf("trimmed = %v, want 497", v)
	}
	s.Trimmed = -1
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Errorf("with Redis before 7.0: %v", err)
	}
	if v, ok := series(t, reg, "deputy_decision_log_stream_read_errors_total", nil); !ok || v != 0 {
		t.Errorf("read errors = %v (exported %v) before any failed, want 0", v, ok)
	}
	ok, readErrors = false, 7
	if n, err := testutil.GatherAndCount(reg, names...); err != nil || n != 0 {
		t.Errorf("%d series with no recent read (%v), want none", n, err)
	}
	if v, _ := series(t, reg, "deputy_decision_log_stream_read_errors_total", nil); v != 7 {
		t.Errorf("read errors = %v with no recent read, want 7", v)
	}
}
