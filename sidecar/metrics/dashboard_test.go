package metrics_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/metrics"
	"github.com/deputyhq/deputy/sidecar/metrics/metricstest"
)

const (
	dashboardFile = "../../charts/deputy/dashboards/deputy.json"
	rulesFile     = "../../charts/deputy/rules/deputy-rules.yaml"
)

// exported registers every collector the server registers, exercises each
// metric once and returns the series names a scrape would show.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	m, reg := newMetrics(t)
	l, err := decisionlog.New(decisionlog.Defaults(), decisionlog.DiscardSink{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterDecisionLog(l); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterLiveDelegations(func() map[string]int { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterDecisionLogStream(func() (metrics.DecisionLogStream, bool) { return metrics.DecisionLogStream{}, true }, func() uint64 { return 0 }); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterEventsDropped(func() uint64 { return 0 }); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterBundleSource(func() bool { return false }, func() uint64 { return 0 }); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterInvalidationsUnconfirmed(func() uint64 { return 0 }); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterNarrowingUnreplicated(func() uint64 { return 0 }); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterInvalidationLease(func() bool { return true }); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterKeySets(func() []metrics.KeySet { return []metrics.KeySet{{Issuer: "https://login.example.com/"}} }); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterRedisClockOffset(func() (time.Duration, bool) { return 0, true }); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterRedisPersistence(func() (bool, bool) { return true, true }, func() uint64 { return 0 }); err != nil {
		t.Fatal(err)
	}
	zero := func() uint64 { return 0 }
	if err := m.RegisterRecords(metrics.RecordsFuncs{AuditDropped: zero, EventsDropped: zero, Pending: func() int { return 0 }}); err != nil {
		t.Fatal(err)
	}
	m.ObserveDecision(&sidecar.Decision{Allowed: true, Latency: time.Millisecond,
		Stages: sidecar.Stages{Identity: 1, State: 1, Policy: 1}})
	m.CacheHit("session")
	m.InitStateLookups("breaker_open", "over_budget", "unavailable")
	m.StateBreakerChanged(true)
	m.StateLookupFailed("breaker_open")
	m.CacheEviction("session", "expired")
	m.ObserveReadiness("redis", false)
	m.ObserveActivation("rev", time.Now(), nil)
	m.ObserveActivation("", time.Time{}, errors.New("compile"))
	h := m.InstrumentHTTP("check", http.NotFoundHandler())
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	c.AddHook(m.RedisHook())
	_ = c.Ping(context.Background()).Err()
	c.Close()
	serveGRPC(t, m)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		n := mf.GetName()
		names[n] = true
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[n+"_sum"], names[n+"_count"] = true, true
		}
	}
	return names
}

func TestDashboardAndRulesQueryExportedMetrics(t *testing.T) {
	names := exported(t)
	exprs, _ := metricstest.DashboardExprs(t, dashboardFile)
	rules := metricstest.LoadRules(t, rulesFile)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	if len(exprs) < 20 {
		t.Fatalf("found only %d queries; the walk is broken", len(exprs))
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, n := range metricstest.MetricNames(t, e) {
			used[n] = true
		}
	}
	var missing []string
	for n := range used {
		if !names[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("queried but not exported: %v", missing)
	}
	t.Run("every Deputy metric has a panel", func(t *testing.T) {
		dash, _ := metricstest.DashboardExprs(t, dashboardFile)
		all := strings.Join(dash, "\n")
		for n := range names {
			if strings.HasPrefix(n, metrics.Namespace+"_") && !strings.HasSuffix(n, "_sum") && !strings.HasSuffix(n, "_count") {
				base := strings.TrimSuffix(n, "_bucket")
				if !strings.Contains(all, base) {
					t.Errorf("%s is exported but no panel shows it", n)
				}
			}
		}
	})
}

func TestAlertRulesShape(t *testing.T) {
	rules := metricstest.LoadRules(t, rulesFile)
	want := []string{"DeputyHighDenyRate", "DeputyCheckErrors", "DeputyServerErrors", "DeputyCheckLatencyHigh",
		"DeputyDecisionLogDropping", "DeputyDecisionLogSpoolFailing", "DeputyDecisionLogShort", "DeputyDecisionLogStreamUnread", "DeputyRedisErrors", "DeputyRedisUnreachable", "DeputyRedisClockSkew", "DeputyRedisNotDurable", "DeputyRedisPersistenceUnread", "DeputyStateBreakerOpen", "DeputyStateBreakerFlapping", "DeputyBundleActivationFailing", "DeputyUnusualImpersonationVolume", "DeputyCheckPanics", "DeputyIdentityKeysStale"}
	seen := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			t.Run(r.Alert, func(t *testing.T) {
				if seen[r.Alert] {
					t.Error("alert defined twice")
				}
				seen[r.Alert] = true
				switch r.Labels["severity"] {
				case "warning", "critical":
				default:
					t.Errorf("severity %q, want warning or critical", r.Labels["severity"])
				}
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Error("summary and description are what the on-call reads")
				}
				if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
					t.Error("unbalanced parentheses")
				}
				if r.For != "" {
					if _, err := time.ParseDuration(r.For); err != nil {
						t.Errorf("for %q: %v", r.For, err)
					}
				}
			})
		}
	}
	for _, a := range want {
		if !seen[a] {
			t.Errorf("alert %s missing", a)
		}
	}
}

func TestDashboardShape(t *testing.T) {
	_, panels := metricstest.DashboardExprs(t, dashboardFile)
	ids := map[float64]bool{}
	for _, p := range panels {
		title, _ := p["title"].(string)
		t.Run(title, func(t *testing.T) {
			id := p["id"].(float64)
			if ids[id] {
				t.Errorf("panel id %v repeated", id)
			}
			ids[id] = true
			if p["type"] == "row" {
				return
			}
			targets, _ := p["targets"].([]any)
			if len(targets) == 0 {
				t.Error("panel has no query")
			}
			for _, tg := range targets {
				expr := tg.(map[string]any)["expr"].(string)
				if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
					t.Errorf("unbalanced query %q", expr)
				}
			}
		})
	}
}
