package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/buildinfo"
	"github.com/deputyhq/deputy/sidecar/envoy"
	"github.com/deputyhq/deputy/sidecar/metrics"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/redis"
)

// servers is the listening part of Deputy: gRPC ext_authz, the HTTP
// listener (HTTP ext_authz, management API, JWKS) and metrics/health. It
// starts last and stops first: no new check or API call is accepted
// while the rest shuts down. The metrics listener (and pprof's) is the
// exception: it serves until the rest has stopped (closeAdmin), so that
// what the shutdown's flush lost can still be scraped.
type servers struct {
	cfg     *Config
	log     *slog.Logger
	grpc    *grpc.Server
	health  *readyHealth
	http    *http.Server
	metrics *http.Server

	readiness *readinessChecks // what /readyz and gRPC health answer from

	stopPprof func(context.Context) error // nil unless pprof.addr is set

	errc    chan error
	wg      sync.WaitGroup // the gRPC and HTTP servers
	adminWG sync.WaitGroup // the metrics server

	// lastScrape is when the latest /metrics answer served began (Unix
	// nanoseconds); scraped is told after each.
	lastScrape atomic.Int64
	scraped    chan struct{}
}

// handlers is what the servers serve.
type handlers struct {
	pipeline  *authz.Pipeline
	api       http.Handler
	wellKnown http.Handler
	registry  *prometheus.Registry
	ready     []readiness
}

func newServers(cfg *Config, log *slog.Logger, m *metrics.Metrics, h handlers) (*servers, error) {
	s := &servers{cfg: cfg, log: log, readiness: newReadinessChecks(h.ready, log, m.ObserveReadiness), errc: make(chan error, 3),
		scraped: make(chan struct{}, 1)}
	if err := s.buildGRPC(m, h.pipeline); err != nil {
		return nil, err
	}
	s.buildHTTP(m, h)
	return s, nil
}

func (s *servers) buildGRPC(m *metrics.Metrics, pipeline *authz.Pipeline) error {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.cfg.GRPC.MaxRecvMsgBytes),
		// One that starts its handshake and stalls is closed as the HTTP
		// listeners close one that stalls its headers.
		grpc.ConnectionTimeout(readHeaderTimeout),
		// A connection long without an RPC gets a GOAWAY (Envoy reopens
		// one when it next checks); the cap (serveGRPCCapped) closes idle
		// ones sooner when it needs their places.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: grpcMaxConnectionIdle}),
		// gRPC's default refuses pings more often than every 5 minutes,
		// and with no stream open, and answers them with a GOAWAY
		// (too_many_pings): an Envoy cluster with
		// http2_protocol_options.connection_keepalive (interval 30s and
		// up is usual) would lose its connection on every ping.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: grpcMinPingInterval, PermitWithoutStream: true}),
		grpc.ForceServerCodecV2(envoy.Codec{}), // CheckRequest headers without reflection
		// Policy evaluation runs deep: a fresh goroutine per check would grow
		// (copy) its stack every time. Workers keep theirs grown.
		grpc.NumStreamWorkers(uint32(*s.cfg.GRPC.StreamWorkers)),
		grpc.ChainUnaryInterceptor(m.GRPC().UnaryServerInterceptor(), countRPCs(s.recovery(m).UnaryInterceptor())),
		grpc.ChainStreamInterceptor(m.GRPC().StreamServerInterceptor()),
	}
	if s.cfg.GRPC.TLSCert != "" {
		creds, err := serverTLS(s.cfg.GRPC)
		if err != nil {
			return err
		}
		opts = append(opts, grpc.Creds(creds))
	}
	s.grpc = grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(s.grpc, envoy.NewGRPCServer(pipeline))
	s.health = newReadyHealth(s.readiness)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	if s.cfg.GRPC.Reflection {
		reflection.Register(s.grpc)
	}
	m.GRPC().InitializeMetrics(s.grpc)
	return nil
}

// recovery denies a check that panics, with the error status, instead of
// letting it take the process down.
func (s *servers) recovery(m *metrics.Metrics) envoy.Recovery {
	return envoy.Recovery{Status: s.cfg.Check.ErrorStatus, Logger: s.log, Count: m.CheckPanicked}
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

func (s *servers) buildHTTP(m *metrics.Metrics, h handlers) {
	check, forwarded := httpChecks(s.cfg, h.pipeline)
	routes := &httpRoutes{
		checkPath: s.cfg.HTTP.CheckPath,
		api:       h.api,
		apiPrefix: api.Prefix,
		wellKnown: h.wellKnown,
		check:     m.InstrumentHTTP("check", s.recovery(m).Handler(check)),
	}
	if forwarded != nil {
		routes.forwarded = s.recovery(m).Handler(forwarded)
	}
	s.http = &http.Server{
		Handler:           routes,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       s.cfg.HTTP.ReadTimeout,
		IdleTimeout:       s.cfg.HTTP.IdleTimeout,
		MaxHeaderBytes:    s.cfg.HTTP.MaxHeaderBytes,
	}

	mm := http.NewServeMux()
	mm.Handle("/metrics", s.noteScrapes(metrics.Handler(h.registry)))
	mm.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mm.HandleFunc("/readyz", readyz(s.readiness))
	// Scrapes and probes send no body: their whole request gets the
	// header's time.
	s.metrics = &http.Server{
		Handler:           m.InstrumentHTTP("admin", mm),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readHeaderTimeout,
		IdleTimeout:       s.cfg.Metrics.IdleTimeout,
	}
}

// noteScrapes records when each answer of h began, for awaitScrape.
func (s *servers) noteScrapes(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		began := time.Now().UnixNano()
		h.ServeHTTP(w, r)
		for {
			last := s.lastScrape.Load()
			if last >= began || s.lastScrape.CompareAndSwap(last, began) {
				break
			}
		}
		select {
		case s.scraped <- struct{}{}:
		default:
		}
	})
}

// awaitScrape waits, up to wait, for a /metrics answer begun at since or
// later to be served; it reports whether one was.
func (s *servers) awaitScrape(since time.Time, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		if s.lastScrape.Load() >= since.UnixNano() {
			return true
		}
		select {
		case <-s.scraped:
		case <-t.C:
			return false
		}
	}
}

// grpcMaxConnectionIdle is how long a gRPC connection stays open without
// an RPC; grpcMinPingInterval is the shortest keepalive ping interval a
// client may use.
const (
	grpcMaxConnectionIdle = 5 * time.Minute
	grpcMinPingInterval   = 10 * time.Second
)

// readHeaderTimeout bounds how long a client may take to send a request's
// headers, on every listener.
const readHeaderTimeout = 10 * time.Second

// readyz reports each readiness condition by name, "ok" or "failing";
// 503 when any fails. As Kubernetes' own /readyz, ?exclude=name (repeated
// for several) leaves a condition out: the chart's probes ask
// /readyz?exclude=redis (see storeCheck). The port is open to scrapers
// and probes: why a condition fails (addresses, bundle server errors)
// goes to the log, and the answer comes from an evaluation at most
// checkFreshness old, so a flood of requests costs Redis a PING a second.
func readyz(r *readinessChecks) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		ok, checks := r.check(req.Context(), checkFreshness, req.URL.Query()["exclude"]...)
		status, body := http.StatusOK, map[string]any{"status": "ready", "checks": checks}
		if !ok {
			status, body["status"] = http.StatusServiceUnavailable, "not ready"
		}
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
}

// listen opens addr: host:port, or unix:/path for a socket with the given
// mode. The socket is bound in a private directory, given its mode there
// and then renamed into place, so that no one connects while the umask's
// mode holds. Only a stale socket at the path is replaced: any other file
// there is an error, never deleted.
func listen(addr string, mode os.FileMode) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		return net.Listen("tcp", addr)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("%s exists and is not a socket: not replacing it", path)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".deputy")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	l, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, err
	}
	// Closing would unlink the private path, gone by then.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if err = os.Chmod(tmp, mode); err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Start opens the listeners and serves; a listener that cannot open fails
// Start naming its setting.
func (s *servers) Start(context.Context) error {
	gl, err := listen(s.cfg.GRPC.Addr, s.cfg.GRPC.socketMode())
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
		if s.stopPprof, err = startPprof(s.cfg.Pprof.Addr); err != nil {
			gl.Close()
			hl.Close()
			ml.Close()
			return err
		}
	}
	s.wg.Add(2)
	s.adminWG.Add(1)
	go func() { defer s.wg.Done(); s.errc <- serveGRPCCapped(s.grpc, gl, s.cfg.GRPC.MaxConnections) }()
	go func() { defer s.wg.Done(); s.errc <- ignoreClosed(serveCapped(s.http, hl, s.cfg.HTTP.MaxConnections)) }()
	go func() {
		defer s.adminWG.Done()
		s.errc <- ignoreClosed(serveCapped(s.metrics, ml, s.cfg.Metrics.MaxConnections))
	}()
	s.health.start()
	s.log.Info("deputy serving", "version", buildinfo.Get().Version, "grpc", gl.Addr().String(), "http", hl.Addr().String(), "metrics", ml.Addr().String(), "dev", s.cfg.Dev)
	if s.cfg.Dev {
		printNextSteps(os.Stderr, s.cfg, gl.Addr().String(), hl.Addr().String(), ml.Addr().String())
	}
	return nil
}

// failed delivers the first error a server stops with on its own.
func (s *servers) failed() <-chan error { return s.errc }

// Stop refuses new checks and API calls and lets in-flight ones finish,
// up to ctx; then it cuts what is left, so that no client, however slow,
// holds the process past its shutdown budget. The metrics listener stays
// open: closeAdmin closes it.
func (s *servers) Stop(ctx context.Context) error {
	s.health.stop()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	err := shutdownHTTP(ctx, "http", s.http)
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		err = errors.Join(err, fmt.Errorf("grpc: in-flight checks cut: %w", ctx.Err()))
	}
	s.wg.Wait()
	return err
}

// closeAdmin closes the metrics and health listener, and pprof's, once
// everything else has stopped: a scrape in flight finishes, up to ctx.
func (s *servers) closeAdmin(ctx context.Context) error {
	err := shutdownHTTP(ctx, "metrics", s.metrics)
	if s.stopPprof != nil {
		err = errors.Join(err, s.stopPprof(ctx))
	}
	s.adminWG.Wait()
	return err
}

// shutdownHTTP lets srv's in-flight requests finish up to ctx, then closes
// the connections still open. Shutdown alone would leave them to their
// clients: one that never finishes its body would keep its handler, and
// the connection, running.
func shutdownHTTP(ctx context.Context, name string, srv *http.Server) error {
	err := srv.Shutdown(ctx)
	if err == nil {
		return nil
	}
	return errors.Join(fmt.Errorf("%s: in-flight requests cut: %w", name, err), srv.Close())
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func printNextSteps(out io.Writer, cfg *Config, grpcAddr, httpAddr, metricsAddr string) {
	fmt.Fprintf(out, `
Deputy is running in dev mode.
  state           %s
  policies        %s`, describeStore(cfg.Redis), describePolicy(cfg.Policy))
	fmt.Fprintf(out, `
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

// describeStore names the state store in use, as the start banner shows it.
func describeStore(c redis.Config) string {
	addrs := strings.Join(c.Addrs, ", ")
	switch {
	case !c.Enabled():
		return "embedded store (this process only: a restart loses it)"
	case c.Cluster:
		return "Redis Cluster, seeds " + addrs
	case c.MasterName != "":
		return "Redis Sentinel master " + c.MasterName + " via " + addrs
	}
	return "Redis at " + addrs
}

// describePolicy names where the policies come from.
func describePolicy(c policy.Config) string {
	switch {
	case c.BundleURL != "":
		return "bundle server " + sidecar.RedactURL(c.BundleURL)
	case c.BundleFile != "":
		return "bundle " + c.BundleFile
	}
	return strings.Join(c.Paths, ", ")
}

func port(addr string) string {
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		return addr[i:]
	}
	return addr
}
