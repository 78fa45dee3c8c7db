package decisionlog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
	deputyredis "github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// The sink remembers which ids a write whose reply was lost held until
// the logger delivers their records. The logger keeps the ids of a batch
// read from a spool an older version left (any of its records may have
// been in such a write) without settling it; the sink must forget them
// as unsure all the same, or its set grows with every such batch for the
// life of the process.
func TestSinkForgetsUnsureIDsOfKeptBatches(t *testing.T) {
	srv := redistest.Start(t)
	dir := t.TempDir()
	sp, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var left [][]byte
	for i := range 40 {
		left = append(left, fmt.Appendf(nil, `{"decision_id":"left-%02d","result":"allow"}`, i))
	}
	if _, err := sp.append(left, 0); err != nil {
		t.Fatal(err)
	}
	if err := sp.close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, unsureFile)); err != nil { // as an older version leaves it
		t.Fatal(err)
	}

	rc, err := deputyredis.NewClient(deputyredis.Config{Addrs: []string{srv.Addr}, ReadTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	cfg := Defaults()
	cfg.Sink, cfg.SpoolDir, cfg.BatchSize = SinkRedis, dir, 20
	cfg.FlushInterval, cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 10*time.Millisecond, 50*time.Millisecond
	sink := NewRedisSink(rc, cfg.Stream, 0, 0, 0)
	if err := sink.Write(context.Background(), [][]byte{[]byte(`{"decision_id":"warm"}`)}); err != nil {
		t.Fatal(err)
	}
	sink.Settled(false)

	// Redis stalls past read_timeout (SIGSTOP): the first write of the
	// spool's first batch loses its reply, and runs when Redis wakes.
	srv.Freeze()
	probe := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, ReadTimeout: 50 * time.Millisecond})
	defer probe.Close()
	WaitFor(t, "Redis to stall", func() bool { return probe.Ping(context.Background()).Err() != nil })

	l, err := New(cfg, sink, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer l.Stop(context.Background())
	WaitFor(t, "a write that lost its reply", func() bool { return l.SinkErrors() > 0 })
	srv.Thaw()
	WaitFor(t, "the spool to be delivered", func() bool { return l.Flushed() >= 40 && l.SpoolBytes() == 0 })
	// Later batches of this run come and go, settled.
	for i := range 60 {
		l.Log(&sidecar.Decision{ID: fmt.Sprintf("now-%02d", i), Time: time.Now(), Reason: "allow"})
	}
	WaitFor(t, "the later records to be written", func() bool { return l.Flushed() >= 100 })
	_ = l.Stop(context.Background())
	if l.SinkErrors() == 0 {
		t.Fatal("no write lost its reply: nothing shown")
	}
	if n := len(sink.unsure); n > 0 {
		t.Errorf("after every record was written and %d sink errors, the sink still holds %d unsure ids, which nothing will ever remove", l.SinkErrors(), n)
	}
}
