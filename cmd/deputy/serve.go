package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/actortoken"
	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/buildinfo"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/envoy"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/metrics"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/redis"
)

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Answer Envoy ext_authz checks (gRPC and HTTP) and serve the management API",
		Args:  cobra.NoArgs,
	}
	loader := newConfigLoader(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := loader.load()
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return serve(ctx, cfg)
	}
	return cmd
}

// server is everything `deputy serve` runs, wired from the config.
type server struct {
	cfg      *Config
	log      *slog.Logger
	registry *prometheus.Registry
	metrics  *metrics.Metrics
	engine   *policy.Engine
	pipeline *authz.Pipeline
	source   *policy.Source

	api       http.Handler
	wellKnown http.Handler

	grpc       *grpc.Server
	health     *health.Server
	httpSrv    *http.Server
	metricsSrv *http.Server
	ready      []readiness
	closers    []func(context.Context) error
}

// readiness is one condition /readyz reports.
type readiness struct {
	name  string
	check func(context.Context) error
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func serve(ctx context.Context, cfg *Config) error {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(cfg.GCPercent)
	}
	s, err := build(ctx, cfg)
	if err != nil {
		return err
	}
	return s.run(ctx)
}

// build wires the server; it fails, naming the cause, before any port opens.
func build(ctx context.Context, cfg *Config) (*server, error) {
	s := &server{cfg: cfg, log: newLogger(cfg.LogLevel), registry: prometheus.NewRegistry()}
	m, err := metrics.New(s.registry)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	bi := buildinfo.Get()
	if err := m.RegisterBuildInfo(bi.Version, bi.Commit, bi.GoVersion); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.close(context.Background())
		}
	}()

	// Policy: the engine, fed by a directory, a bundle file or a bundle server.
	s.engine = policy.New(
		policy.WithQueries(cfg.Policy.DecisionQuery, policy.DefaultManageQuery),
		policy.WithLogger(s.log),
		policy.OnActivate(func(a *policy.Activation, err error) {
			rev, at := "", time.Time{}
			if a != nil {
				rev, at = a.Revision, a.ActivatedAt
			}
			m.ObserveActivation(rev, at, err)
		}),
	)
	src, err := policy.NewSource(cfg.Policy, s.engine, policy.WithSourceLogger(s.log))
	if err != nil {
		return nil, err
	}
	if err := src.Start(ctx); err != nil {
		return nil, err
	}
	// A mask policy that cannot run would log credentials or nothing: refuse
	// it at start. (A bundle server that is down at start leaves no policy
	// yet: Deputy then starts unready, and the decision log counts mask
	// failures of later revisions.)
	if s.engine.Ready() {
		if err := decisionlog.ValidateMask(ctx, s.engine); err != nil {
			return nil, err
		}
	}
	s.source = src
	s.closers = append(s.closers, src.Stop)
	s.ready = append(s.ready, readiness{"policy", func(context.Context) error {
		if st := src.Status(); !st.Ready {
			if st.LastError != "" {
				return errors.New(st.LastError)
			}
			return errors.New("no policy active")
		}
		return nil
	}})

	// State: Redis when configured, else the embedded store.
	var store sidecar.Store
	var client goredis.UniversalClient
	if cfg.Redis.Enabled() {
		if client, err = redis.NewClient(cfg.Redis); err != nil {
			return nil, err
		}
		client.AddHook(m.RedisHook())
		s.closers = append(s.closers, func(context.Context) error { return client.Close() })
		rs := redis.NewFromClient(client, cfg.Redis, redis.WithLogger(s.log))
		store = rs
		s.ready = append(s.ready, readiness{"redis", rs.Ping})
	} else {
		if !cfg.Dev {
			s.log.Warn("no redis configured: state lives in this process only; run a single replica")
		}
		store = memory.New()
	}
	s.closers = append(s.closers, func(context.Context) error { return store.Close() })
	if err := m.RegisterLiveDelegations(liveDelegations(store)); err != nil {
		return nil, err
	}

	// Decision log: asynchronous, bounded, masked; flushed on shutdown.
	sink, err := decisionlog.NewSink(cfg.DecisionLog, client, os.Stdout)
	if err != nil {
		return nil, err
	}
	dlog, err := decisionlog.New(cfg.DecisionLog, sink, decisionlog.WithMaskPolicy(s.engine), decisionlog.WithLogger(s.log))
	if err != nil {
		return nil, err
	}
	if err := m.RegisterDecisionLog(dlog); err != nil {
		return nil, err
	}
	if err := dlog.Start(ctx); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, dlog.Stop)

	// Identity of callers, and the actor token for upstreams.
	if cfg.Dev {
		cfg.Identity.Dev.Enabled = true
	}
	idOpts := []identity.Option{identity.WithLogger(s.log)}
	if cfg.Identity.Dev.Enabled {
		dev, err := identity.LoadDevIssuer(cfg.Identity.Dev.KeyFile)
		if err != nil {
			return nil, err
		}
		idOpts = append(idOpts, identity.WithDevIssuer(dev))
	}
	verifier, err := identity.New(cfg.Identity, idOpts...)
	if err != nil {
		return nil, err
	}
	if err := verifier.Start(ctx); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func(context.Context) error { return verifier.Close() })
	s.ready = append(s.ready, readiness{"identity", func(context.Context) error { return verifier.Ready() }})

	var atOpts []actortoken.Option
	if cfg.Dev && len(cfg.ActorToken.KeyFiles) == 0 {
		k, err := actortoken.GenerateKey()
		if err != nil {
			return nil, err
		}
		atOpts = append(atOpts, actortoken.WithKeys(k))
	}
	signer, err := actortoken.New(cfg.ActorToken, atOpts...)
	if err != nil {
		return nil, err
	}

	// Delegation: impersonation sessions, partner grants, reseller domains.
	policyData := func() map[string]any {
		if a := s.engine.Current(); a != nil {
			return a.Data()
		}
		return nil
	}
	imp := delegation.NewImpersonation(store, policyData,
		delegation.WithImpersonationConfig(cfg.Impersonation), delegation.WithImpersonationLogger(s.log))
	sessions := delegation.NewSessionResolver(store, cfg.Impersonation,
		delegation.WithSessionLogger(s.log), delegation.WithSessionObserver(cacheMetrics{m}))
	s.closers = append(s.closers, func(context.Context) error { return sessions.Close() })
	cached := delegation.NewCachedState(store, cfg.StateCache, time.Now, cacheMetrics{m})
	s.closers = append(s.closers, func(context.Context) error { return cached.Close() })
	onBehalf, err := delegation.NewOnBehalfResolver(cached, cached, cfg.Partner, cfg.Reseller)
	if err != nil {
		return nil, err
	}
	partners := delegation.NewPartners(store, cfg.Partner,
		delegation.WithPartnerPolicyData(policyData), delegation.WithPartnerLogger(s.log))
	resellers := delegation.NewResellers(store, cfg.Reseller, delegation.WithResellerLogger(s.log))
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	go partners.RunSweeper(sweepCtx)
	s.closers = append(s.closers, func(context.Context) error { stopSweep(); return nil })

	s.pipeline = authz.New(s.engine,
		authz.WithQuery(cfg.Policy.DecisionQuery),
		authz.WithVerifier(verifier),
		authz.WithResolvers(sessions, onBehalf),
		authz.WithActorTokenSigner(signer),
		authz.WithOwnedPrefix(cfg.Check.OwnedPrefix),
		authz.WithActorTokenHeader(cfg.Check.ActorTokenHeader),
		authz.WithErrorStatus(cfg.Check.ErrorStatus),
		authz.WithBodyParsing(cfg.Check.ParseBody),
		authz.WithDryRun(cfg.Policy.DryRun),
		authz.WithObserver(m),
		authz.WithDecisionLogger(dlog),
		authz.WithDecisionInput(cfg.DecisionLog.IncludeInput),
	)

	s.api = api.New(
		api.WithConfig(cfg.API),
		api.WithVerifier(verifier),
		api.WithEngine(s.engine),
		api.WithLogger(s.log),
		api.WithMiddleware(func(h http.Handler) http.Handler { return m.InstrumentHTTP("api", h) }),
		api.WithRoutes(api.NewImpersonation(imp), api.NewPartner(partners), api.NewReseller(resellers), api.NewStreams(store)),
	)
	s.wellKnown = signer.Handler()

	if err := s.buildGRPC(); err != nil {
		return nil, err
	}
	s.buildHTTP()
	ok = true
	return s, nil
}

// close runs the closers, last opened first.
func (s *server) close(ctx context.Context) {
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](ctx); err != nil {
			s.log.Error("shutdown", "error", err)
		}
	}
	s.closers = nil
}

func (s *server) buildGRPC() error {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.cfg.GRPC.MaxRecvMsgBytes),
		// Policy evaluation runs deep: a fresh goroutine per check would grow
		// (copy) its stack every time. Workers keep theirs grown.
		grpc.NumStreamWorkers(uint32(s.cfg.GRPC.StreamWorkers)),
		grpc.ChainUnaryInterceptor(s.metrics.GRPC().UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(s.metrics.GRPC().StreamServerInterceptor()),
	}
	if s.cfg.GRPC.TLSCert != "" {
		creds, err := serverTLS(s.cfg.GRPC)
		if err != nil {
			return err
		}
		opts = append(opts, grpc.Creds(creds))
	}
	s.grpc = grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(s.grpc, envoy.NewGRPCServer(s.pipeline))
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	if s.cfg.GRPC.Reflection {
		reflection.Register(s.grpc)
	}
	s.metrics.GRPC().InitializeMetrics(s.grpc)
	return nil
}

func serverTLS(c GRPCConfig) (credentials.TransportCredentials, error) {
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("grpc.tls_cert: %w", err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.ClientCA != "" {
		pem, err := os.ReadFile(c.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("grpc.client_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("grpc.client_ca: no certificates in %s", c.ClientCA)
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(conf), nil
}

func (s *server) buildHTTP() {
	routes := &httpRoutes{
		checkPath: s.cfg.HTTP.CheckPath,
		api:       s.api,
		apiPrefix: api.Prefix,
		wellKnown: s.wellKnown,
		check:     s.metrics.InstrumentHTTP("check", envoy.NewHTTPHandler(s.pipeline, envoy.WithPathPrefix(s.cfg.HTTP.PathPrefix), envoy.WithMaxBody(s.cfg.HTTP.MaxBodyBytes))),
	}
	if proxy := envoy.Proxy(s.cfg.HTTP.CheckProxy); proxy != envoy.ProxyEnvoy {
		routes.forwarded = envoy.NewHTTPHandler(s.pipeline, envoy.WithTrustedProxy(proxy), envoy.WithOwned(s.pipeline.Owned), envoy.WithMaxBody(s.cfg.HTTP.MaxBodyBytes))
	}
	s.httpSrv = &http.Server{Handler: routes, ReadHeaderTimeout: 10 * time.Second}

	mm := http.NewServeMux()
	mm.Handle("/metrics", metrics.Handler(s.registry))
	mm.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mm.HandleFunc("/readyz", s.readyz)
	s.metricsSrv = &http.Server{Handler: s.metrics.InstrumentHTTP("admin", mm), ReadHeaderTimeout: 10 * time.Second}
}

// readyz reports each readiness condition; 503 when any fails.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	status := http.StatusOK
	checks := map[string]string{}
	for _, c := range s.ready {
		if err := c.check(ctx); err != nil {
			checks[c.name] = err.Error()
			status = http.StatusServiceUnavailable
		} else {
			checks[c.name] = "ok"
		}
	}
	body := map[string]any{"status": map[bool]string{true: "ready", false: "not ready"}[status == http.StatusOK], "checks": checks}
	body["policy"] = s.source.Status()
	w.Header().Set("content-type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		_ = os.Remove(path)
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", addr)
}

// run opens the listeners, serves until ctx ends, then shuts down
// gracefully: in-flight checks finish, decision logs flush.
func (s *server) run(ctx context.Context) error {
	gl, err := listen(s.cfg.GRPC.Addr)
	if err != nil {
		return fmt.Errorf("grpc.addr: %w", err)
	}
	hl, err := net.Listen("tcp", s.cfg.HTTP.Addr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("http.addr: %w", err)
	}
	ml, err := net.Listen("tcp", s.cfg.Metrics.Addr)
	if err != nil {
		gl.Close()
		hl.Close()
		return fmt.Errorf("metrics.addr: %w", err)
	}
	if s.cfg.Pprof.Addr != "" {
		stopPprof, err := startPprof(s.cfg.Pprof.Addr)
		if err != nil {
			gl.Close()
			hl.Close()
			ml.Close()
			return err
		}
		s.closers = append(s.closers, stopPprof)
	}
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); errc <- s.grpc.Serve(gl) }()
	go func() { defer wg.Done(); errc <- ignoreClosed(s.httpSrv.Serve(hl)) }()
	go func() { defer wg.Done(); errc <- ignoreClosed(s.metricsSrv.Serve(ml)) }()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus("envoy.service.auth.v3.Authorization", healthpb.HealthCheckResponse_SERVING)
	s.log.Info("deputy serving", "version", buildinfo.Get().Version, "grpc", gl.Addr().String(), "http", hl.Addr().String(), "metrics", ml.Addr().String(), "dev", s.cfg.Dev)
	if s.cfg.Dev {
		printNextSteps(os.Stderr, gl.Addr().String(), hl.Addr().String(), ml.Addr().String())
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	s.log.Info("deputy shutting down")
	s.health.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	_ = s.httpSrv.Shutdown(sctx)
	select {
	case <-done:
	case <-sctx.Done():
		s.grpc.Stop()
	}
	_ = s.metricsSrv.Shutdown(sctx)
	s.close(sctx)
	wg.Wait()
	return runErr
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func printNextSteps(out io.Writer, grpcAddr, httpAddr, metricsAddr string) {
	fmt.Fprintf(out, `
Deputy is running in dev mode (embedded store, shipped policies).
  gRPC ext_authz  %s
  HTTP            %s   (HTTP ext_authz, /deputy/v1/ API, /.well-known/jwks.json)
  metrics/health  %s   (/metrics, /healthz, /readyz)

Try:
  curl -i http://localhost%s/catalog/shoes            # public route: 200
  curl -i http://localhost%s/customer/account         # needs a token: 401
  TOKEN=$(bin/deputy dev token --sub alice --roles customer)
  curl -i -H "authorization: Bearer $TOKEN" http://localhost%s/customer/account
See README.md for the Login as Customer and partner walkthroughs.
`, grpcAddr, httpAddr, metricsAddr, port(httpAddr), port(httpAddr), port(httpAddr))
}

func port(addr string) string {
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		return addr[i:]
	}
	return addr
}

// cacheMetrics counts the delegation caches' traffic.
type cacheMetrics struct{ m *metrics.Metrics }

func (c cacheMetrics) Hit(kind string)   { c.m.CacheHit(kind) }
func (c cacheMetrics) Miss(kind string)  { c.m.CacheMiss(kind) }
func (c cacheMetrics) Evict(kind string) { c.m.CacheEviction(kind, "invalidated") }

// liveDelegations counts live sessions and grants when Prometheus scrapes.
// It reads the store, so its cost is per scrape, never per check.
func liveDelegations(store sidecar.Store) metrics.LiveFunc {
	return func() map[string]int {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		out := map[string]int{}
		sessions, _, err := store.ListSessions(ctx, sidecar.SessionFilter{LiveOnly: true, From: time.Now().Add(-24 * time.Hour), Page: sidecar.Page{Limit: 10000}})
		if err == nil {
			out[sidecar.ModeImpersonation] = len(sessions)
		}
		grants, err := store.GrantsExpiringBefore(ctx, time.Now().AddDate(100, 0, 0), 100000)
		if err == nil {
			out[sidecar.ModePartner] = len(grants)
		}
		return out
	}
}
