package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/buildinfo"
	"github.com/deputyhq/deputy/sidecar/metrics"
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
		// Whatever reads standard output (the stdout decision log) or
		// standard error may go away: a log shipper or tee restarting, a
		// broken journald stream. The Go runtime ends a program whose
		// write to a broken pipe on fd 1 or 2 fails unless SIGPIPE is
		// ignored; ignored, the write fails with EPIPE, the decision log
		// counts its sink's errors and drops, and checks go on being
		// decided.
		signal.Ignore(syscall.SIGPIPE)
		return serve(ctx, cfg)
	}
	return cmd
}

// server is everything `deputy serve` runs: components started in
// stages, in order (each may use the earlier stages', never its own
// stage's), and stopped in reverse, the components of a stage together:
// the listeners close first, in-flight checks finish, the decision log
// and the delegation records flush side by side, each with the whole
// flush budget, the stores close, and the metrics listener closes last.
type server struct {
	cfg     *Config
	log     *slog.Logger
	stages  [][]component
	servers *servers
	serving bool // servers started: the metrics listener is open

	// lost counts the records lost for good (decision records, audit
	// entries, events), to tell whether the shutdown's flush lost any.
	lost []func() uint64
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func serve(ctx context.Context, cfg *Config) error {
	tuneRuntime(cfg)
	s, err := build(ctx, cfg)
	if err != nil {
		return err
	}
	// Start-up's garbage (policy compilation above all) is collected and its
	// pages returned to the kernel once, now, rather than as the scavenger
	// gets to them: an idle Deputy stays about 3 MB smaller. Never on a
	// request's path.
	debug.FreeOSMemory()
	if err := releaseStartupPages(); err != nil {
		s.log.Warn("start-up pages stay resident", "error", err)
	}
	return s.run(ctx)
}

// tuneRuntime applies the process-wide runtime settings; what the
// operator sets in GOGC or GODEBUG wins.
func tuneRuntime(cfg *Config) {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(cfg.GCPercent)
	}
	// Heap profiling samples an allocation in every 512 KiB and keeps a
	// bucket per sampled stack for the life of the process, in a 1.4 MiB
	// hash table, unwinding the stack at each sample: memory and work for
	// a profile that only the pprof listener serves.
	if cfg.Pprof.Addr == "" && !strings.Contains(os.Getenv("GODEBUG"), "memprofilerate=") {
		runtime.MemProfileRate = 0
	}
}

// build wires the components and starts them in order; it fails, naming
// the cause, before any port opens (the servers start last), stopping
// what it started. ctx bounds start-up only.
func build(ctx context.Context, cfg *Config) (_ *server, err error) {
	s := &server{cfg: cfg, log: newLogger(cfg.LogLevel)}
	defer func() {
		if err != nil {
			s.stop(context.Background())
		}
	}()
	// stage begins a stage: the components started next may use those
	// started before it, and stop before them.
	stage := func() { s.stages = append(s.stages, nil) }
	start := func(c component) error {
		if err := c.Start(ctx); err != nil {
			return err
		}
		s.stages[len(s.stages)-1] = append(s.stages[len(s.stages)-1], c)
		return nil
	}
	stage()
	registry := prometheus.NewRegistry()
	m, err := metrics.New(registry)
	if err != nil {
		return nil, err
	}
	bi := buildinfo.Get()
	if err := m.RegisterBuildInfo(bi.Version, bi.Commit, bi.GoVersion); err != nil {
		return nil, err
	}

	pol, err := newPolicyPart(cfg.Policy, s.log, m)
	if err != nil {
		return nil, err
	}
	if err := start(pol); err != nil {
		return nil, err
	}
	ready := []readiness{{"policy", pol.ready}}

	state, err := newStatePart(cfg, s.log, m)
	if err != nil {
		return nil, err
	}
	stage()
	if err := start(state); err != nil {
		return nil, err
	}
	if state.ping != nil {
		ready = append(ready, readiness{storeCheck, state.ping})
	}
	// What uses the state store, and stops before it closes. These stop
	// together: the decision log and the delegation records each flush
	// within the whole flush_timeout, a silent store under one spending
	// none of the other's.
	stage()
	live := newLiveCounts(state.store, cfg.Metrics.LiveRefresh)
	if err := start(live); err != nil {
		return nil, err
	}
	if err := m.RegisterLiveDelegations(live.get); err != nil {
		return nil, err
	}

	if state.redis != nil {
		clock := newClockWatch(state.redis.ClockOffset, clockCheckEvery, s.log)
		if err := start(clock); err != nil {
			return nil, err
		}
		if err := m.RegisterRedisClockOffset(clock.get); err != nil {
			return nil, err
		}
		// With snapshots only, a Redis restart undoes answered writes
		// that narrow access: said in a metric and the log, and, with
		// redis.require_aof, in readiness.
		durable := newPersistenceWatch(state.redis.Persistence, persistenceCheckEvery, s.log)
		if err := start(durable); err != nil {
			return nil, err
		}
		if err := m.RegisterRedisPersistence(durable.aof, durable.readErrors); err != nil {
			return nil, err
		}
		if cfg.Redis.RequireAOF {
			ready = append(ready, readiness{aofCheck, durable.ready})
		}
	}

	dlog, err := newDecisionLog(cfg.DecisionLog, cfg.Identity.CredentialCarriers, state.client, s.log, m)
	if err != nil {
		return nil, err
	}
	if err := start(dlog); err != nil {
		return nil, err
	}
	s.lost = append(s.lost, dlog.Dropped)

	id, err := newIdentityPart(cfg, s.log)
	if err != nil {
		return nil, err
	}
	if err := m.RegisterKeySets(id.keySets); err != nil {
		return nil, err
	}
	if err := start(id); err != nil {
		return nil, err
	}
	ready = append(ready, readiness{"identity", id.ready})
	if id.verifier.HasNamespacedReadiness() {
		ready = append(ready, readiness{namespacedIdentityCheck, id.readyNamespaced})
	}

	del, err := newDelegationPart(cfg, state, pol.data, s.log, m)
	if err != nil {
		return nil, err
	}
	if err := start(del); err != nil {
		return nil, err
	}
	s.lost = append(s.lost, del.records.AuditDropped, del.records.EventsDropped)

	pipeline := authz.New(pol.engine, append(checkOptions(cfg),
		authz.WithVerifier(id.verifier),
		authz.WithResolvers(del.sessions, del.onBehalf),
		authz.WithActorTokenSigner(id.signer),
		authz.WithObserver(m),
		authz.WithDecisionLogger(dlog),
		authz.WithDecisionInput(cfg.DecisionLog.InputIncluded()),
		authz.WithRedeemBurner(api.Prefix, del.imp.BurnExposed),
	)...)
	mgmt := api.New(
		api.WithConfig(cfg.API),
		api.WithVerifier(id.verifier),
		api.WithEngine(pol.engine),
		api.WithLogger(s.log),
		api.WithMiddleware(func(h http.Handler) http.Handler { return m.InstrumentHTTP("api", h) }),
		api.WithStaffRecorder(del.imp.RecordStaff),
		api.WithDecisionLogger(dlog),
		api.WithRoutes(api.NewImpersonation(del.imp), api.NewPartner(del.partners), api.NewReseller(del.resellers), api.NewStreams(state.store)),
	)

	if s.servers, err = newServers(cfg, s.log, m, handlers{
		pipeline:  pipeline,
		api:       mgmt,
		wellKnown: id.signer.Handler(),
		registry:  registry,
		ready:     ready,
	}); err != nil {
		return nil, err
	}
	pol.notify(s.servers.health.readinessChanged)
	stage()
	if err := start(s.servers); err != nil {
		return nil, err
	}
	s.serving = true
	return s, nil
}

// stop stops the started components, last stage first, within ctx, and
// then closes the metrics listener.
func (s *server) stop(ctx context.Context) {
	s.stopStages(ctx)
	s.closeAdmin()
}

// stopStages stops the started components, last stage first, the
// components of a stage together, within ctx.
func (s *server) stopStages(ctx context.Context) {
	for i := len(s.stages) - 1; i >= 0; i-- {
		var wg sync.WaitGroup
		for _, c := range s.stages[i] {
			wg.Add(1)
			go func() { defer wg.Done(); s.stopOne(ctx, c) }()
		}
		wg.Wait()
	}
	s.stages = nil
}

func (s *server) stopOne(ctx context.Context, c component) {
	if err := c.Stop(ctx); err != nil {
		s.log.Error("shutdown", "component", fmt.Sprintf("%T", c), "error", err)
	}
}

// adminCloseTimeout bounds how long the metrics listener's last scrapes
// and probes may take to finish at the very end: they take milliseconds.
const adminCloseTimeout = time.Second

func (s *server) closeAdmin() {
	if !s.serving {
		return
	}
	s.serving = false
	ctx, cancel := context.WithTimeout(context.Background(), adminCloseTimeout)
	defer cancel()
	if err := s.servers.closeAdmin(ctx); err != nil {
		s.log.Error("shutdown", "component", "metrics", "error", err)
	}
}

func (s *server) lostRecords() uint64 {
	var n uint64
	for _, f := range s.lost {
		n += f()
	}
	return n
}

// run serves until ctx ends or a server fails, then shuts down: listeners
// close and in-flight checks finish within shutdown_timeout (what is left
// then is cut), then the decision log and the delegation records flush,
// side by side, and the stores close, within decision_log.flush_timeout.
// The flush has a budget of its own: checks answered just before the
// servers' deadline still have their records queued, and a deadline the
// servers used up would throw them away. The metrics listener serves
// until the end: when the flush lost records, it waits up to
// metrics.final_scrape_wait for a scrape that sees them counted.
func (s *server) run(ctx context.Context) error {
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-s.servers.failed():
	}
	s.log.Info("deputy shutting down")
	before := s.lostRecords()
	if n := len(s.stages) - 1; n >= 0 && slices.Equal(s.stages[n], []component{s.servers}) {
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		s.stopOne(sctx, s.servers)
		cancel()
		s.stages = s.stages[:n]
	}
	fctx, cancel := context.WithTimeout(context.Background(), s.cfg.DecisionLog.FlushTimeout)
	defer cancel()
	s.stopStages(fctx)
	if lost := s.lostRecords() - before; lost > 0 && s.serving && s.cfg.Metrics.finalScrapeWait() > 0 {
		wait := s.cfg.Metrics.finalScrapeWait()
		s.log.Warn("records lost at shutdown; the metrics listener waits for a scrape to count them", "lost", lost, "wait", wait.String())
		if !s.servers.awaitScrape(time.Now(), wait) {
			s.log.Warn("no scrape came before metrics.final_scrape_wait ran out")
		}
	}
	s.closeAdmin()
	return runErr
}
