package decisionlog_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
)

// What the redis sink keeps to write each record once does not grow with
// the decision rate: anonymous checks of a public route, each one a
// record, must not fill the Redis that holds delegation state. Once the
// logger has delivered its batches, Redis holds the stream and one
// once-set, and the set holds at most the ids of the last batch.
func TestRedisSinkDedupMemoryDoesNotGrowWithDecisions(t *testing.T) {
	const decisions = 2000
	cfg := redisConfig(decisions)
	srv, rc, sink := stallableSink(t, cfg)
	l := startLogger(t, cfg, sink)
	for i := range decisions {
		l.Log(impersonationDecision(fmt.Sprintf("public-%04d", i), nil))
	}
	waitFor(t, "every record written", func() bool { return l.Flushed() == decisions })
	ctx := context.Background()
	if n := rc.DBSize(ctx).Val(); n > 2 {
		keys, _ := rc.Keys(ctx, "*").Result()
		t.Fatalf("Redis holds %d keys after %d decisions, want the stream and its once-set: %v", n, decisions, keys[:min(len(keys), 5)])
	}
	once := "{" + cfg.Stream + "}:once"
	if n := rc.ZCard(ctx, once).Val(); n > int64(cfg.BatchSize) {
		t.Errorf("%s holds %d ids after %d delivered decisions, want at most one batch (%d)", once, n, decisions, cfg.BatchSize)
	}
	wantEachOnce(t, srv, cfg.Stream, decisions)
}

// Ids never confirmed delivered (a sink whose writes nobody settles, as
// after replies lost in a row) stay in the once-set up to
// decision_log.dedup_max_ids, no further; its memory stays within
// DedupIDBytes per id, what stream_max_bytes counts for it. The newest
// batches are the ones kept: written again, they add nothing.
func TestRedisSinkDedupSetIsCapped(t *testing.T) {
	cfg := redisConfig(1000)
	cfg.BatchSize = 100
	cfg.DedupMaxIDs = 500
	_, rc, sink := stallableSink(t, cfg)
	ctx := context.Background()
	var last [][]byte
	for b := range 20 {
		last = make([][]byte, cfg.BatchSize)
		for i := range last {
			last[i] = fmt.Appendf(nil, `{"decision_id":"%032x","result":"allow"}`, b*cfg.BatchSize+i)
		}
		if err := sink.Write(ctx, last); err != nil {
			t.Fatal(err)
		}
	}
	once := "{" + cfg.Stream + "}:once"
	if n := rc.ZCard(ctx, once).Val(); n != cfg.DedupMaxIDs {
		t.Errorf("%s holds %d ids after 2000 unsettled writes, want dedup_max_ids (%d)", once, n, cfg.DedupMaxIDs)
	}
	mem, err := rc.MemoryUsage(ctx, once, 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	if mem > cfg.DedupMaxIDs*decisionlog.DedupIDBytes {
		t.Errorf("%s takes %d bytes for %d ids, over the %d per id stream_max_bytes counts", once, mem, cfg.DedupMaxIDs, decisionlog.DedupIDBytes)
	}
	before := rc.XLen(ctx, cfg.Stream).Val()
	if err := sink.Write(ctx, last); err != nil {
		t.Fatal(err)
	}
	if after := rc.XLen(ctx, cfg.Stream).Val(); after != before {
		t.Errorf("the newest batch written again added %d records", after-before)
	}
}
