package decisionlog_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/metrics"
	"github.com/deputyhq/deputy/sidecar/metrics/metricstest"
	deputyredis "github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// streamMetrics registers l's metrics, its stream's among them, as the
// server does, on a registry of their own.
func streamMetrics(t *testing.T, l *decisionlog.Logger) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.WithoutRuntime())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterDecisionLog(l); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterDecisionLogStream(func() (metrics.DecisionLogStream, bool) {
		s, ok := l.StreamStats()
		return metrics.DecisionLogStream(s), ok
	}, l.StreamReadErrors); err != nil {
		t.Fatal(err)
	}
	return reg
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string) (float64, bool) {
	t.Helper()
	return metricstest.Series(t, reg, name, nil)
}

// The decision log's stream is a ring any client rotates: every check
// adds a record, and past max_len the oldest go. A refused attempt to act
// for someone else, followed by enough anonymous checks, leaves no record
// of the attempt, and no drop or error counter says so. The metrics say
// how many records trimming discarded and how old the oldest one kept is.
func TestRedisStreamRotationShowsInMetrics(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(1000)
	cfg.MaxLen = 100
	cfg.StatsInterval = 20 * time.Millisecond
	l := startLogger(t, cfg, deputySink(t, cfg, srv.Addr).sink)
	reg := streamMetrics(t, l)
	// A reading that fails (a slow Redis on a loaded machine) withdraws
	// the stream's gauges until the next one: a series is read once the
	// stats export it again.
	value := func(name string) float64 {
		var v float64
		waitFor(t, name+" exported", func() bool {
			var ok bool
			v, ok = metricValue(t, reg, name)
			return ok
		})
		return v
	}

	t0 := time.Now()
	logN(t, l, "probe", 1)
	waitFor(t, "the probe's record written", func() bool { return l.Flushed() == 1 })
	waitFor(t, "the stream read with the probe's record", func() bool {
		return value("deputy_decision_log_stream_length") == 1
	})
	if v := value("deputy_decision_log_stream_trimmed_total"); v != 0 {
		t.Errorf("trimmed = %v before the stream reached max_len", v)
	}
	if v := value("deputy_decision_log_stream_max_len"); v != 100 {
		t.Errorf("max_len = %v, want 100", v)
	}
	// The oldest record's age grows while it stays the oldest.
	waitFor(t, "the probe's record a second old", func() bool {
		return value("deputy_decision_log_stream_oldest_age_seconds") >= 1
	})
	if age, most := value("deputy_decision_log_stream_oldest_age_seconds"), time.Since(t0).Seconds(); age > most+0.05 {
		t.Errorf("oldest age %.3fs, but the probe was logged %.3fs ago", age, most)
	}

	flood := time.Now()
	logN(t, l, "anon", 500)
	waitFor(t, "the flood written", func() bool { return l.Flushed() == 501 && l.QueueDepth() == 0 })
	rc := srv.Client()
	n, err := rc.XLen(context.Background(), cfg.Stream).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n >= 501 || n < 100 {
		t.Fatalf("XLEN %d after 501 records at max_len 100: the stream was not trimmed as the test expects", n)
	}
	if slices.Contains(streamIDs(t, srv, cfg.Stream), "probe-00") {
		t.Fatal("the probe's record survived the flood: nothing was rotated")
	}
	waitFor(t, "the stream read after the flood", func() bool {
		return value("deputy_decision_log_stream_length") == float64(n) &&
			value("deputy_decision_log_stream_trimmed_total") == float64(501-n)
	})
	// The oldest record kept is one of the flood's: younger than the flood.
	age := value("deputy_decision_log_stream_oldest_age_seconds")
	if most := time.Since(flood).Seconds(); age > most+0.05 || age < 0 {
		t.Errorf("oldest age after the flood %.3fs, want within the %.3fs since it began", age, most)
	}
	if l.Dropped() != 0 || l.Oversized() != 0 {
		t.Errorf("dropped %d, oversized %d: the flood lost nothing the logger counts", l.Dropped(), l.Oversized())
	}
}

// Deleted entries count as discarded too, and a stream that holds
// nothing (yet) exports a length of 0 and an age of 0.
func TestRedisStreamStatsOfAnEmptyStream(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(1000)
	cfg.StatsInterval = 20 * time.Millisecond
	l := startLogger(t, cfg, deputySink(t, cfg, srv.Addr).sink)
	reg := streamMetrics(t, l)
	waitFor(t, "the missing stream read", func() bool {
		_, ok := metricValue(t, reg, "deputy_decision_log_stream_length")
		return ok
	})
	for _, name := range []string{"deputy_decision_log_stream_length", "deputy_decision_log_stream_trimmed_total", "deputy_decision_log_stream_oldest_age_seconds"} {
		if v, _ := metricValue(t, reg, name); v != 0 {
			t.Errorf("%s = %v with no stream", name, v)
		}
	}
	logN(t, l, "one", 2)
	waitFor(t, "two records written", func() bool { return l.Flushed() == 2 })
	ids, err := srv.Client().XRange(context.Background(), cfg.Stream, "-", "+").Result()
	if err != nil || len(ids) != 2 {
		t.Fatalf("XRANGE: %d entries, %v", len(ids), err)
	}
	if err := srv.Client().XDel(context.Background(), cfg.Stream, ids[0].ID, ids[1].ID).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the emptied stream read", func() bool {
		v, _ := metricValue(t, reg, "deputy_decision_log_stream_trimmed_total")
		return v == 2
	})
	if v, _ := metricValue(t, reg, "deputy_decision_log_stream_oldest_age_seconds"); v != 0 {
		t.Errorf("oldest age %v of an empty stream", v)
	}
}

// The stream's metrics are read on the logger's own schedule, never by a
// scrape: a Redis that is down (refusing connections) or hung (holding
// them without a reply, the client's read timeout far away) costs a
// scrape nothing, and the stale figures leave rather than stand for the
// stream's state.
func TestRedisStreamStatsScrapeWhileRedisDown(t *testing.T) {
	for _, tc := range []struct {
		name     string
		down, up func(*redistest.Server)
	}{
		{"stopped", (*redistest.Server).Stop, (*redistest.Server).Restart},
		{"frozen", (*redistest.Server).Freeze, (*redistest.Server).Thaw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			rc := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1,
				DialTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
			t.Cleanup(func() { rc.Close() })
			cfg := redisConfig(1000)
			cfg.StatsInterval = 20 * time.Millisecond
			sink, err := decisionlog.NewSink(cfg, rc, nil)
			if err != nil {
				t.Fatal(err)
			}
			l := startLogger(t, cfg, sink)
			reg := streamMetrics(t, l)
			logN(t, l, "before", 3)
			waitFor(t, "the stream read", func() bool {
				v, _ := metricValue(t, reg, "deputy_decision_log_stream_length")
				return v == 3
			})

			tc.down(srv)
			t.Cleanup(func() { tc.up(srv) }) // before the logger's Stop, which flushes
			var slowest time.Duration
			scrapes := 0
			waitFor(t, "the stale stream figures gone", func() bool {
				start := time.Now()
				mfs, err := reg.Gather()
				if err != nil {
					t.Fatal(err)
				}
				slowest = max(slowest, time.Since(start))
				scrapes++
				return !slices.ContainsFunc(mfs, func(mf *dto.MetricFamily) bool {
					return strings.HasPrefix(mf.GetName(), "deputy_decision_log_stream_") &&
						mf.GetName() != "deputy_decision_log_stream_read_errors_total"
				})
			})
			// What is left says why. (A hung read fails only at the
			// client's read timeout, 10 s here, so only the refused
			// connection is counted by now.)
			if v, _ := metricValue(t, reg, "deputy_decision_log_stream_read_errors_total"); v == 0 && tc.name == "stopped" {
				t.Errorf("no failed read counted while Redis was %s", tc.name)
			}
			// Well under the client's 10 s timeouts, and under what a
			// Prometheus scrape allows by default (10 s), on a loaded machine.
			if slowest > time.Second {
				t.Errorf("a scrape took %v while Redis was %s", slowest, tc.name)
			}
			t.Logf("%d scrapes while Redis was %s, the slowest %v", scrapes, tc.name, slowest)
			// Checks are logged without waiting either.
			start := time.Now()
			logN(t, l, "during", 3)
			if d := time.Since(start); d > time.Second {
				t.Errorf("logging 3 records took %v", d)
			}
		})
	}
}

// A stream the logger cannot read leaves its figures absent, which looks
// just like "no redis sink" or "no recent read", and no alert on them can
// fire. An ACL user that may write the stream but not run XINFO (a common
// least-privilege setup), or a key of another type at the stream's name:
// every failed read is counted, the sink's writes aside.
func TestRedisStreamReadErrorsCounted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, srv *redistest.Server, cfg decisionlog.Config) deputyredis.Config
	}{
		{"acl user without xinfo", func(t *testing.T, srv *redistest.Server, cfg decisionlog.Config) deputyredis.Config {
			if err := srv.Client().Do(context.Background(), "ACL", "SETUSER", "logger", "on", ">logger-pw", "~*", "&*", "+@all", "-xinfo").Err(); err != nil {
				t.Fatal(err)
			}
			// The stream exists before the logger starts: a missing one
			// is read without XINFO, and that reading would succeed.
			if err := srv.Client().Do(context.Background(), "XADD", cfg.Stream, "*", "probe", "1").Err(); err != nil {
				t.Fatal(err)
			}
			return deputyredis.Config{Addrs: []string{srv.Addr}, Username: "logger", Password: "logger-pw"}
		}},
		{"wrong type at the stream name", func(t *testing.T, srv *redistest.Server, cfg decisionlog.Config) deputyredis.Config {
			if err := srv.Client().Set(context.Background(), cfg.Stream, "not a stream", 0).Err(); err != nil {
				t.Fatal(err)
			}
			return deputyredis.Config{Addrs: []string{srv.Addr}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			cfg := redisConfig(1000)
			cfg.StatsInterval = 20 * time.Millisecond
			l := startLogger(t, cfg, deputySinkWith(t, cfg, tc.setup(t, srv, cfg)).sink)
			reg := streamMetrics(t, l)
			waitFor(t, "three failed reads counted", func() bool {
				v, ok := metricValue(t, reg, "deputy_decision_log_stream_read_errors_total")
				return ok && v >= 3
			})
			if _, ok := metricValue(t, reg, "deputy_decision_log_stream_length"); ok {
				t.Error("the stream's length is exported though no read succeeded")
			}
		})
	}
}
