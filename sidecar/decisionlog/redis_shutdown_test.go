package decisionlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// The sink's write is sent once (go-redis does not retry it), so a pooled
// connection that a load balancer forgot fails the first write after an
// idle spell while Redis is fine. At shutdown the logger writes again on
// a fresh connection until flush_timeout runs out, with or without a
// spool: the records reach Redis, not the spool.
func TestShutdownWritesAgainAfterDeadPooledConnection(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rst, spool bool
	}{
		{"closed, spool", false, true},
		{"reset, spool", true, true},
		{"closed, no spool", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			proxy := startHoldProxy(t, srv.Addr)
			cfg := redisConfig(1000)
			cfg.BatchSize = 3
			cfg.FlushInterval = time.Hour // a batch is written when full, or at Stop
			if tc.spool {
				cfg.SpoolDir = t.TempDir()
			}
			l := startLogger(t, cfg, deputySink(t, cfg, proxy.addr).sink)
			logN(t, l, "warm", 3) // a full batch, written at once: pools the connection
			waitFor(t, "warm-up written", func() bool { return l.Flushed() == 3 })

			proxy.cut(tc.rst)
			logN(t, l, "late", 2)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // flush_timeout's default
			defer cancel()
			if err := l.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			if l.SinkErrors() == 0 {
				t.Fatal("no write failed: the dead connection was never used")
			}
			if l.SpoolBytes() != 0 || l.Dropped() != 0 || l.Unconfirmed() != 0 {
				t.Errorf("spooled %d bytes, dropped %d, unconfirmed %d: want every record written", l.SpoolBytes(), l.Dropped(), l.Unconfirmed())
			}
			wantEachOnce(t, srv, cfg.Stream, 5)
		})
	}
}
