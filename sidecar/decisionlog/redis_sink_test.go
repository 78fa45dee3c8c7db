package decisionlog_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	deputyredis "github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

func redisConfig(queue int) decisionlog.Config {
	cfg := testConfig()
	cfg.Sink = decisionlog.SinkRedis
	cfg.QueueSize = queue
	cfg.BatchSize = 50
	return cfg
}

func streamIDs(t *testing.T, s *redistest.Server, stream string) []string {
	t.Helper()
	msgs, err := s.Client().XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		var r decisionlog.Record
		if err := json.Unmarshal([]byte(m.Values[decisionlog.RecordField].(string)), &r); err != nil {
			t.Fatalf("stream entry is not a record: %v", m.Values)
		}
		ids = append(ids, r.DecisionID)
	}
	return ids
}

func TestRedisSinkSurvivesOutage(t *testing.T) {
	srv := redistest.Start(t)
	rc := fastClient(t, srv.Addr)
	cfg := redisConfig(1000)
	sink, err := decisionlog.NewSink(cfg, rc, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := startLogger(t, cfg, sink)

	for i := range 200 {
		l.Log(impersonationDecision(fmt.Sprintf("before-%03d", i), requestInput(t)))
	}
	// Written and acknowledged: a batch whose reply is cut by the stop
	// below would be queued again (at least once), and counted twice.
	waitFor(t, "200 records written", func() bool { return l.Flushed() == 200 && l.QueueDepth() == 0 })
	if n := xlen(rc, cfg.Stream)(); n != 200 {
		t.Fatalf("stream holds %d records after 200 were written", n)
	}

	srv.Stop()
	var want []string
	for i := range 300 {
		id := fmt.Sprintf("during-%03d", i)
		want = append(want, id)
		l.Log(impersonationDecision(id, requestInput(t)))
	}
	waitFor(t, "a failed write while Redis is down", func() bool { return l.SinkErrors() > 0 })
	if d := l.QueueDepth(); d != 300 {
		t.Errorf("queue depth while Redis is down = %d, want 300", d)
	}

	srv.Restart() // no persistence: the stream restarts empty
	waitFor(t, "queued records after Redis returned", func() bool { return l.QueueDepth() == 0 })
	got := streamIDs(t, srv, cfg.Stream)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("stream after restart holds %d records, want the 300 queued in order", len(got))
	}
	if l.Dropped() != 0 {
		t.Errorf("Dropped = %d within the bound, want 0", l.Dropped())
	}
	if l.Flushed() != 500 {
		t.Errorf("Flushed = %d, want 500", l.Flushed())
	}
}

// A Redis stall longer than the client's read timeout (a slow fsync, a
// fork for BGSAVE; here SIGSTOP) times the batch's write out on the
// client while Redis still holds the command, and runs it on waking; the
// logger, seeing an error, writes the batch again (from memory, or from
// the spool it moved the batch to meanwhile). Each decision is in the
// stream once.
func TestRedisSinkWritesEachDecisionOnceAfterStall(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spool bool
	}{{"queued", false}, {"spooled", true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := redisConfig(1000)
			if tc.spool {
				cfg.SpoolDir = t.TempDir()
			}
			srv, _, sink := stallableSink(t, cfg)
			l := startLogger(t, cfg, sink)
			// A pooled connection, as in a running Deputy.
			l.Log(impersonationDecision("warm", requestInput(t)))
			waitFor(t, "the warm-up record written", func() bool { return l.Flushed() == 1 })

			resume := stallRedis(t, srv)
			want := []string{"warm"}
			for i := range 10 {
				id := fmt.Sprintf("stall-%02d", i)
				want = append(want, id)
				l.Log(impersonationDecision(id, requestInput(t)))
			}
			waitFor(t, "a write that timed out", func() bool { return l.SinkErrors() > 0 })
			resume()
			waitFor(t, "the records written after the stall", func() bool { return l.QueueDepth() == 0 && l.SpoolBytes() == 0 && l.Flushed() == 11 })
			if got := streamIDs(t, srv, cfg.Stream); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("stream holds %d records for 11 decisions: %v", len(got), got)
			}
		})
	}
}

// stallableSink starts a redis-server for stallRedis and returns it,
// Deputy's own client to it (its defaults: read_timeout 500ms, one retry)
// and a sink for cfg on that client.
func stallableSink(t *testing.T, cfg decisionlog.Config) (*redistest.Server, redis.UniversalClient, decisionlog.Sink) {
	t.Helper()
	srv := redistest.Start(t)
	s := deputySink(t, cfg, srv.Addr)
	return srv, s.client, s.sink
}

// clientSink is a sink and the Redis client it writes through.
type clientSink struct {
	client redis.UniversalClient
	sink   decisionlog.Sink
}

// deputySink returns a sink for cfg writing to the Redis at addr through
// Deputy's own client, its defaults (read_timeout 500ms, one retry).
func deputySink(t *testing.T, cfg decisionlog.Config, addr string) clientSink {
	t.Helper()
	return deputySinkWith(t, cfg, deputyredis.Config{Addrs: []string{addr}})
}

// deputySinkWith is deputySink through a client configured by rcfg.
func deputySinkWith(t *testing.T, cfg decisionlog.Config, rcfg deputyredis.Config) clientSink {
	t.Helper()
	rc, err := deputyredis.NewClient(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	sink, err := decisionlog.NewSink(cfg, rc, nil)
	if err != nil {
		t.Fatal(err)
	}
	return clientSink{rc, sink}
}

// stallRedis freezes srv (SIGSTOP, as a slow fsync or a BGSAVE fork holds
// Redis) and returns once a client with a 200ms read timeout sees it
// stalled. Commands sent meanwhile wait in the kernel's buffers, and Redis
// runs them when the returned function resumes it, also for a client that
// gave up and closed its connection. The stall lasts until the test ends
// it, however slow the machine: a stall of fixed length can end before
// what it must outlast.
func stallRedis(t *testing.T, srv *redistest.Server) (resume func()) {
	t.Helper()
	srv.Freeze()
	probe := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, ReadTimeout: 200 * time.Millisecond})
	defer probe.Close()
	waitFor(t, "Redis to stall", func() bool { return probe.Ping(context.Background()).Err() != nil })
	return srv.Thaw
}

// streamHolds waits until the stream holds at least n records: what
// Redis runs on waking, it runs after the resume returns.
func streamHolds(t *testing.T, srv *redistest.Server, stream string, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d records in the stream", n), func() bool {
		got, err := srv.Client().XLen(context.Background(), stream).Result()
		return err == nil && got >= int64(n)
	})
}

// wantEachOnce fails unless the stream holds want distinct decisions,
// each once.
func wantEachOnce(t *testing.T, srv *redistest.Server, stream string, want int) {
	t.Helper()
	got := streamIDs(t, srv, stream)
	count := map[string]int{}
	for _, id := range got {
		count[id]++
	}
	twice := 0
	for _, n := range count {
		if n > 1 {
			twice++
		}
	}
	if twice > 0 || len(count) != want {
		t.Errorf("stream holds %d entries for %d decisions (want %d), %d of them more than once", len(got), len(count), want, twice)
	}
}

// What the sink remembers of the decisions it wrote lives for
// decision_log.dedup_window, no longer: each id is scored by when it
// expires, and the set itself expires a window after the last write.
func TestRedisSinkRemembersWrittenDecisionsForTheWindow(t *testing.T) {
	for _, window := range []time.Duration{0, 90 * time.Second} {
		t.Run(window.String(), func(t *testing.T) {
			cfg := redisConfig(100)
			cfg.DedupWindow = window
			cfg.SetDefaults()
			srv, rc, sink := stallableSink(t, cfg)
			ctx := context.Background()
			if err := sink.Write(ctx, [][]byte{[]byte(`{"decision_id":"d-window","result":"allow"}`)}); err != nil {
				t.Fatal(err)
			}
			keys, err := rc.Keys(ctx, "*once*").Result()
			if err != nil || len(keys) != 1 {
				t.Fatalf("once keys %v, %v; want one", keys, err)
			}
			want := cfg.DedupWindow
			ttl := srv.Client().PTTL(ctx, keys[0]).Val()
			if ttl <= want-5*time.Second || ttl > want {
				t.Fatalf("%s lives %s, want about %s (dedup_window %s)", keys[0], ttl, want, window)
			}
			now, err := rc.Time(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			score, err := rc.ZScore(ctx, keys[0], "d-window").Result()
			if err != nil {
				t.Fatalf("d-window in %s: %v", keys[0], err)
			}
			if left := time.UnixMilli(int64(score)).Sub(now); left <= want-5*time.Second || left > want {
				t.Fatalf("d-window expires in %s, want about %s (dedup_window %s)", left, want, window)
			}
		})
	}
}

// Stop's context may be over before the last write (the shutdown grace
// spent elsewhere): nothing is sent then, so the records are dropped and
// counted as such, with Stop's error, not hidden as unconfirmed.
func TestRedisSinkStopWithAnEndedContextCountsDrops(t *testing.T) {
	cfg := redisConfig(1000)
	cfg.BatchSize = 100
	cfg.FlushInterval = time.Hour // nothing wakes the writer before Stop
	srv, _, sink := stallableSink(t, cfg)
	l := startLogger(t, cfg, sink)
	for i := range 10 {
		l.Log(impersonationDecision(fmt.Sprintf("never-%02d", i), requestInput(t)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	stopErr := l.Stop(ctx)
	if n := len(streamIDs(t, srv, cfg.Stream)); n != 0 {
		t.Fatalf("the stream holds %d records after a write with an ended context", n)
	}
	if l.Dropped() != 10 || l.Unconfirmed() != 0 || stopErr == nil {
		t.Fatalf("dropped %d, unconfirmed %d, Stop error %v; want 10 dropped, none unconfirmed, an error", l.Dropped(), l.Unconfirmed(), stopErr)
	}
}

// A batch whose reply was lost in a stall, spooled at shutdown, is
// written again by the next process (a new sink on the same spool); Redis
// ran the first write on waking. Each decision is in the stream once.
func TestRedisSinkWritesEachDecisionOnceAcrossRestart(t *testing.T) {
	cfg := redisConfig(1000)
	cfg.SpoolDir = t.TempDir()
	srv, rc, sink1 := stallableSink(t, cfg)
	l1 := startLogger(t, cfg, sink1)
	l1.Log(impersonationDecision("warm", requestInput(t)))
	waitFor(t, "the warm-up record written", func() bool { return l1.Flushed() == 1 })

	resume := stallRedis(t, srv)
	for i := range 10 {
		l1.Log(impersonationDecision(fmt.Sprintf("stall-%02d", i), requestInput(t)))
	}
	waitFor(t, "a write that timed out", func() bool { return l1.SinkErrors() > 0 })
	// SIGTERM: a short deadline moves the batch to the spool.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_ = l1.Stop(ctx)
	cancel()
	resume()
	if l1.SpoolBytes() == 0 {
		t.Fatal("nothing was spooled at shutdown: the restart retries nothing")
	}
	// The warm-up record and at least one from the write Redis ran on
	// waking, before the next process starts.
	streamHolds(t, srv, cfg.Stream, 2)

	sink2, err := decisionlog.NewSink(cfg, rc, nil)
	if err != nil {
		t.Fatal(err)
	}
	l2 := startLogger(t, cfg, sink2)
	waitFor(t, "the spool delivered", func() bool { return l2.SpoolBytes() == 0 && l2.QueueDepth() == 0 && l2.Flushed() > 0 })
	wantEachOnce(t, srv, cfg.Stream, 11)
}

// A batch whose reply was lost, which the spool (at its bound) takes only
// in part, is retried in two writes; the first one's success does not
// make the sink forget what the lost write put in the stream.
func TestRedisSinkWritesEachDecisionOnceWhenSpoolSplitsBatch(t *testing.T) {
	cfg := redisConfig(1000)
	cfg.BatchSize = 100
	cfg.FlushInterval = time.Hour // a full batch wakes the writer
	cfg.SpoolDir = t.TempDir()
	cfg.SpoolMaxBytes = decisionlog.MinSpoolMaxBytes
	srv, _, sink := stallableSink(t, cfg)
	l := startLogger(t, cfg, sink)
	for i := range 100 { // loads the script and pools a connection
		l.Log(impersonationDecision(fmt.Sprintf("warm-%03d", i), requestInput(t)))
	}
	waitFor(t, "the warm-up batch written", func() bool { return l.Flushed() == 100 })

	resume := stallRedis(t, srv)
	for i := range 100 { // about 1 KB each: more than the spool holds
		l.Log(impersonationDecision(fmt.Sprintf("stall-%03d", i), requestInput(t)))
	}
	waitFor(t, "a write that timed out", func() bool { return l.SinkErrors() > 0 })
	resume()
	waitFor(t, "everything delivered", func() bool { return l.SpoolBytes() == 0 && l.QueueDepth() == 0 && l.Flushed() >= 200 })
	wantEachOnce(t, srv, cfg.Stream, 200)
}

// Without a spool, Stop's deadline gives up what is still unwritten: as
// dropped when Redis refused the connection, as unconfirmed (no drop, no
// drop alert) when the last write's reply was lost in a stall and Redis
// ran it on waking.
func TestRedisSinkStopCountsLostReplyAsUnconfirmed(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		stall                bool
		dropped, unconfirmed uint64
	}{
		{"reply lost in a stall", true, 0, 10}, // when the ten go in one batch
		{"connection refused", false, 10, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := redisConfig(1000)
			srv, _, sink := stallableSink(t, cfg)
			l := startLogger(t, cfg, sink)
			l.Log(impersonationDecision("warm", requestInput(t)))
			waitFor(t, "the warm-up record written", func() bool { return l.Flushed() == 1 })
			var resume func()
			if tc.stall {
				resume = stallRedis(t, srv)
			} else {
				srv.Stop()
			}
			for i := range 10 {
				l.Log(impersonationDecision(fmt.Sprintf("stop-%02d", i), requestInput(t)))
			}
			waitFor(t, "a write that failed", func() bool { return l.SinkErrors() > 0 })
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			stopErr := l.Stop(ctx)
			cancel()
			dropped, unconfirmed := tc.dropped, tc.unconfirmed
			if tc.stall {
				resume()
				// Redis ran the write whose reply was lost: its records are
				// in the stream, each once, and counted unconfirmed, not
				// dropped. The logger may have taken the ten records in
				// more than one batch; those after the stalled one were
				// never sent before Stop's deadline, and are dropped.
				unconfirmed = l.Unconfirmed()
				if unconfirmed == 0 {
					t.Fatalf("no record counted unconfirmed after a write whose reply was lost")
				}
				dropped = 10 - unconfirmed
				streamHolds(t, srv, cfg.Stream, 1+int(unconfirmed))
				wantEachOnce(t, srv, cfg.Stream, 1+int(unconfirmed))
			}
			if l.Dropped() != dropped || l.Unconfirmed() != unconfirmed || (stopErr != nil) != (dropped > 0) {
				t.Errorf("Stop: %v; dropped %d, unconfirmed %d; want %d, %d", stopErr, l.Dropped(), l.Unconfirmed(), dropped, unconfirmed)
			}
		})
	}
}

// The sink keeps what it wrote in keys beside the stream: on a Redis
// Cluster they share the stream's slot, whether or not the stream's name
// carries a hash tag, and a second sink (another process) writing the
// same batch again adds nothing.
func TestRedisSinkOnCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	for _, name := range []string{"deputy:decisions", "{deputy}:decisions", "a{b}c"} {
		t.Run(name, func(t *testing.T) {
			batch := [][]byte{[]byte(`{"decision_id":"d1"}`), []byte(`{"decision_id":"d2"}`), []byte(`{"no_id":true}`)}
			for _, sink := range []*decisionlog.RedisSink{decisionlog.NewRedisSink(c, name, 0, 0, 0), decisionlog.NewRedisSink(c, name, 0, 0, 0)} {
				if err := sink.Write(context.Background(), batch); err != nil {
					t.Fatal(err)
				}
			}
			if n, err := c.XLen(context.Background(), name).Result(); err != nil || n != 3 {
				t.Errorf("XLEN = %d, %v; want the 3 records, once each", n, err)
			}
		})
	}
}

func TestRedisSinkDropsOnlyPastBound(t *testing.T) {
	srv := redistest.Start(t)
	rc := fastClient(t, srv.Addr)
	cfg := redisConfig(100)
	sink, _ := decisionlog.NewSink(cfg, rc, nil)
	srv.Stop()
	l := startLogger(t, cfg, sink)
	for i := range 150 {
		l.Log(impersonationDecision(fmt.Sprintf("d-%03d", i), nil))
	}
	if l.Dropped() != 50 {
		t.Errorf("Dropped = %d, want the 50 past the bound of 100", l.Dropped())
	}
	srv.Restart()
	waitFor(t, "the queue to drain", func() bool { return l.QueueDepth() == 0 })
	got := streamIDs(t, srv, cfg.Stream)
	sort.Strings(got)
	if len(got) != 100 || got[0] != "d-000" || got[99] != "d-099" {
		t.Errorf("stream holds %d records (%v…), want the first 100", len(got), got[:min(3, len(got))])
	}
	if l.Dropped() != 50 {
		t.Errorf("Dropped after recovery = %d, want still 50", l.Dropped())
	}
}

func TestStreamTrimmed(t *testing.T) {
	srv := redistest.Start(t)
	rc := fastClient(t, srv.Addr)
	st := decisionlog.NewStream(rc, "deputy:test", 10)
	ctx := context.Background()
	for i := range 500 {
		if _, err := st.Append(ctx, map[string]any{"event": "session_started", "n": i}); err != nil {
			t.Fatal(err)
		}
	}
	n, _ := rc.XLen(ctx, "deputy:test").Result()
	// MAXLEN ~ trims whole macro nodes: the stream stays near the bound.
	if n >= 500 || n < 10 {
		t.Errorf("XLEN = %d, want trimmed to about 10", n)
	}
	msgs, err := st.Range(ctx, "-", 1)
	if err != nil || len(msgs) != 1 || msgs[0].Values["event"] != "session_started" {
		t.Errorf("Range = %v, %v", msgs, err)
	}
	t.Run("unavailable when Redis is down", func(t *testing.T) {
		srv.Stop()
		_, err := st.Append(ctx, map[string]any{"event": "x"})
		if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
			t.Errorf("Append = %v, want EUNAVAILABLE", err)
		}
	})
}

func TestTail(t *testing.T) {
	srv := redistest.Start(t)
	rc := fastClient(t, srv.Addr)
	cfg := redisConfig(100)
	sink, _ := decisionlog.NewSink(cfg, rc, nil)
	l := startLogger(t, cfg, sink)
	partner := &sidecar.Decision{ID: "p-1", Allowed: false, HTTPStatus: 403, Reason: "level_too_low",
		Method: "POST", Host: "support.example.com", Path: "/cases",
		Identity:   &sidecar.Identity{Subject: "partner-ann"},
		Delegation: &sidecar.Delegation{Mode: sidecar.ModePartner, ID: "g-1", Actor: "partner-ann", Subject: "org-7", Level: "look"}}
	self := &sidecar.Decision{ID: "s-1", Allowed: true, HTTPStatus: 200, Method: "GET", Path: "/", Identity: &sidecar.Identity{Subject: "cust-42"}}
	l.Log(impersonationDecision("i-1", nil))
	l.Log(partner)
	l.Log(self)
	waitFor(t, "records in the stream", func() bool { return xlen(rc, cfg.Stream)() == 3 })
	cases := []struct {
		name   string
		filter decisionlog.Filter
		want   string
	}{
		{"all", decisionlog.Filter{}, "i-1,p-1,s-1"},
		{"deny", decisionlog.Filter{Result: "deny"}, "p-1"},
		{"mode partner", decisionlog.Filter{Mode: "partner"}, "p-1"},
		{"no delegation", decisionlog.Filter{Mode: "none"}, "s-1"},
		{"actor", decisionlog.Filter{Actor: "staff-17"}, "i-1"},
		{"subject", decisionlog.Filter{Subject: "cust-42"}, "i-1,s-1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var got []string
			err := decisionlog.Tail(ctx, rc, decisionlog.TailOptions{Stream: cfg.Stream, From: "0", Filter: tc.filter, Block: 50 * time.Millisecond},
				func(_ string, r *decisionlog.Record) error {
					got = append(got, r.DecisionID)
					if r.DecisionID == "s-1" || len(got) == strings.Count(tc.want, ",")+1 {
						cancel()
					}
					return nil
				})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != tc.want {
				t.Errorf("got %v, want %s", got, tc.want)
			}
		})
	}
	t.Run("follows new entries", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		go func() {
			time.Sleep(100 * time.Millisecond)
			l.Log(impersonationDecision("late", nil))
		}()
		var got string
		_ = decisionlog.Tail(ctx, rc, decisionlog.TailOptions{Stream: cfg.Stream, Block: 50 * time.Millisecond},
			func(_ string, r *decisionlog.Record) error { got = r.DecisionID; cancel(); return nil })
		if got != "late" {
			t.Errorf("followed %q, want the new record", got)
		}
	})
	t.Run("malformed entries skipped", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rc.XAdd(ctx, &redis.XAddArgs{Stream: cfg.Stream, Values: []any{decisionlog.RecordField, "{not json"}})
		rc.XAdd(ctx, &redis.XAddArgs{Stream: cfg.Stream, Values: []any{"other", "field"}})
		rc.XAdd(ctx, &redis.XAddArgs{Stream: cfg.Stream, Values: []any{decisionlog.RecordField, `{"decision_id":"after","result":"allow"}`}})
		var got []string
		err := decisionlog.Tail(ctx, rc, decisionlog.TailOptions{Stream: cfg.Stream, From: "0", Block: 50 * time.Millisecond},
			func(_ string, r *decisionlog.Record) error {
				got = append(got, r.DecisionID)
				if r.DecisionID == "after" {
					cancel()
				}
				return nil
			})
		if err != nil || strings.Join(got, ",") != "i-1,p-1,s-1,late,after" {
			t.Errorf("got %v, %v; want the records around the malformed entries", got, err)
		}
	})
	t.Run("wrong type ends the tail", func(t *testing.T) {
		rc.Set(context.Background(), "not-a-stream", "x", 0)
		err := decisionlog.Tail(context.Background(), rc, decisionlog.TailOptions{Stream: "not-a-stream", From: "0"}, nil)
		if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE || !strings.Contains(err.Error(), "WRONGTYPE") {
			t.Errorf("err = %v, want the server's WRONGTYPE", err)
		}
	})
	t.Run("bad filter", func(t *testing.T) {
		err := decisionlog.Tail(context.Background(), rc, decisionlog.TailOptions{Stream: cfg.Stream, Filter: decisionlog.Filter{Result: "maybe"}}, nil)
		if sidecar.ErrorField(err) != "result" {
			t.Errorf("err = %v, want result named", err)
		}
	})
}

func TestFormatLine(t *testing.T) {
	cases := []struct {
		name string
		d    *sidecar.Decision
		want []string
	}{
		{"impersonation", impersonationDecision("i-1", nil), []string{"ALLOW 200 POST shop.example.com/search", "actor=staff-17 subject=cust-42", "mode=impersonation", "session=sess-9", "1.500ms", "trace=4bf92f35"}},
		{"anonymous deny", &sidecar.Decision{ID: "a", HTTPStatus: 401, Reason: "no_identity", Method: "GET", Path: "/x"}, []string{"DENY 401 GET /x", "reason=no_identity", "id=a"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out lines
			l := startLogger(t, testConfig(), decisionlog.NewWriterSink(&out))
			l.Log(tc.d)
			_ = l.Stop(context.Background())
			b, _ := json.Marshal(out.records(t)[0])
			var r decisionlog.Record
			_ = json.Unmarshal(b, &r)
			line := decisionlog.FormatLine(&r)
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("line %q lacks %q", line, w)
				}
			}
		})
	}
}

// TestTailFollowsThroughRestart: a tail that is following the stream keeps
// following it across a Redis restart: of a Redis that comes back empty,
// and of one that answers LOADING while it reads its data back. The tail
// is shown following first (it printed a record logged after it
// started), so its "$" is pinned before Redis goes away; a tail that
// never reached Redis starts at the newest entry it finds when it first
// does, as TailOptions.From says.
func TestTailFollowsThroughRestart(t *testing.T) {
	t.Run("empty", func(t *testing.T) { tailThroughRestart(t, redistest.Start(t), nil) })
	t.Run("loading its data", func(t *testing.T) {
		// 1000 keys read back at 1 ms each: LOADING for about a second.
		srv := redistest.Start(t, "--key-load-delay", "1000", "--loading-process-events-interval-bytes", "1024")
		tailThroughRestart(t, srv, func(rc *redis.Client) {
			ctx := context.Background()
			p := rc.Pipeline()
			for i := range 1000 {
				p.Set(ctx, fmt.Sprintf("load-%d", i), "x", 0)
			}
			if _, err := p.Exec(ctx); err != nil {
				t.Fatal(err)
			}
			if err := rc.Save(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		})
	})
}

// tailThroughRestart follows srv's decisions stream, restarts srv (after
// beforeStop, if set) and wants the tail to print the record logged after
// the restart.
func tailThroughRestart(t *testing.T, srv *redistest.Server, beforeStop func(*redis.Client)) {
	rc := fastClient(t, srv.Addr)
	cfg := redisConfig(100)
	sink, _ := decisionlog.NewSink(cfg, rc, nil)
	l := startLogger(t, cfg, sink)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(chan string, 100)
	ended := make(chan error, 1)
	var retries atomic.Int64
	go func() {
		ended <- decisionlog.Tail(ctx, rc, decisionlog.TailOptions{Stream: cfg.Stream, Block: 50 * time.Millisecond,
			OnError: func(error) { retries.Add(1) }},
			func(_ string, r *decisionlog.Record) error { got <- r.DecisionID; return nil })
	}()
	// until waits for the tail to print id, passing over the "before"
	// records, of which more than one may be logged; while resend is set
	// it logs id again at every wait.
	until := func(id string, resend bool) {
		t.Helper()
		for {
			select {
			case g := <-got:
				if g == id {
					return
				}
				if g != "before" {
					t.Fatalf("tail printed %q, want %q", g, id)
				}
			case err := <-ended:
				t.Fatalf("tail ended (%v) before it printed %q", err, id)
			case <-ctx.Done():
				t.Fatalf("tail did not print %q", id)
			case <-time.After(50 * time.Millisecond):
				if resend {
					l.Log(impersonationDecision(id, nil))
				}
			}
		}
	}
	until("before", true) // the tail is following
	if beforeStop != nil {
		beforeStop(rc)
	}
	srv.Stop()
	waitFor(t, "the tail to notice Redis is gone", func() bool { return retries.Load() > 0 })
	srv.Restart()
	l.Log(impersonationDecision("after-restart", nil))
	until("after-restart", false)
}

// FormatLine writes what a token or request put in a record escaped: no
// byte of it can drive the operator's terminal (ESC, OSC, BEL, C1 CSI,
// DEL), end the line, or pass for another field; plain values stay bare.
func TestFormatLineEscapesHostileValues(t *testing.T) {
	r := decisionlog.Record{
		Result: "deny", HTTPStatus: 403, Method: "GET\x1b[2J", Host: "shop.example.com", Path: "/a\r\nALLOW 200",
		Actor: "staff-1", Subject: "al\x1b[31mice\x1b]0;title\a", Mode: "impersonation", Level: "\u009b2J",
		SessionID: "s 1", Reason: "x\x7f\u202egnp.exe", TraceID: "t\xff", DecisionID: "d-1",
	}
	line := decisionlog.FormatLine(&r)
	for _, want := range []string{
		`DENY 403 "GET\x1b[2J" "shop.example.com/a\r\nALLOW 200"`,
		`actor=staff-1 subject="al\x1b[31mice\x1b]0;title\a"`,
		`mode=impersonation level="\u009b2J" session="s 1" reason="x\x7f\u202egnp.exe"`,
		`trace="t\xff" id=d-1`,
	} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
	if i := strings.IndexFunc(line, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0x202e }); i >= 0 {
		t.Errorf("line %q holds control rune %q at %d", line, line[i:i+1], i)
	}
}

// JSONLine, what --json prints, carries no raw control character either:
// encoding/json alone leaves DEL, C1 (U+009B is CSI) and bidi overrides
// raw. The line is still JSON that reads back to the same record.
func TestJSONLineEscapesC1(t *testing.T) {
	r := decisionlog.Record{Result: "deny", Subject: "al\u009b2J\x7f\x1b]0;t\a", Path: "/é<x>\u202egnp.exe\u2066", DecisionID: "d-1"}
	line, err := decisionlog.JSONLine(&r)
	if err != nil {
		t.Fatal(err)
	}
	body, ok := bytes.CutSuffix(line, []byte("\n"))
	if !ok || bytes.ContainsFunc(body, func(c rune) bool {
		return c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069)
	}) {
		t.Fatalf("line %q holds a raw control character", line)
	}
	var back decisionlog.Record
	if err := json.Unmarshal(body, &back); err != nil || back.Subject != r.Subject || back.Path != r.Path {
		t.Fatalf("read back %+v, %v from %s", back, err, line)
	}
}

// BenchmarkRedisSinkWrite is one batch of the default size written to a
// real Redis: the sink's cost per batch, round trip included. Each round
// writes new decision ids and settles them, as the logger does.
func BenchmarkRedisSinkWrite(b *testing.B) {
	srv := redistest.Start(b)
	rc := fastClient(b, srv.Addr)
	sink := decisionlog.NewRedisSink(rc, "deputy:bench", 1000, 0, 0)
	batch := make([][]byte, decisionlog.DefaultBatchSize)
	for i := range batch {
		batch[i] = fmt.Appendf(nil, `{"decision_id":"%032x","time":"2026-03-01T12:00:00Z","result":"allow"}`, i)
	}
	ctx := context.Background()
	const idAt = len(`{"decision_id":"`)
	b.ReportAllocs()
	for round := uint64(0); b.Loop(); round++ {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], round)
		for _, r := range batch {
			hex.Encode(r[idAt:idAt+16], n[:])
		}
		if err := sink.Write(ctx, batch); err != nil {
			b.Fatal(err)
		}
		sink.Settled(false)
	}
}
