package delegation_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// What the recorder cannot append is counted, never lost unseen: an
// append that fails with no relay running, and what still waits for Redis
// when Stop's deadline ends; what waits is appended, in order, once Redis
// is back.
func TestRecorderCountsWhatItCannotAppend(t *testing.T) {
	entry := func(target string) *sidecar.AuditEntry {
		return &sidecar.AuditEntry{Action: "impersonation.start", Actor: "alice", Customer: "c1", Target: target}
	}
	t.Run("not_started", func(t *testing.T) {
		srv := redistest.Start(t)
		rec := delegation.NewRecorder(faultStore(t, srv.Addr, "rec", time.Now), nil)
		srv.Stop()
		rec.Audit(context.Background(), entry("s1"))
		rec.Event(context.Background(), &sidecar.Event{Type: sidecar.EventImpersonationStarted, Customer: "c1"})
		if rec.AuditDropped() != 1 || rec.EventsDropped() != 1 || rec.Pending() != 0 {
			t.Errorf("dropped %d audit entries and %d events, %d pending; want 1, 1 and 0", rec.AuditDropped(), rec.EventsDropped(), rec.Pending())
		}
	})
	t.Run("stopped_while_redis_is_down", func(t *testing.T) {
		srv := redistest.Start(t)
		rec := delegation.NewRecorder(faultStore(t, srv.Addr, "rec", time.Now), nil)
		if err := rec.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		srv.Stop()
		rec.Audit(context.Background(), entry("s1"))
		rec.Audit(context.Background(), entry("s2"))
		if rec.Pending() != 2 {
			t.Fatalf("pending = %d while Redis is down, want 2", rec.Pending())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if err := rec.Stop(ctx); sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
			t.Errorf("Stop = %v, want EUNAVAILABLE naming what was not appended", err)
		}
		if rec.AuditDropped() != 2 || rec.Pending() != 0 {
			t.Errorf("dropped %d, pending %d after Stop; want 2 and 0", rec.AuditDropped(), rec.Pending())
		}
	})
	t.Run("appended_when_redis_is_back", func(t *testing.T) {
		srv := redistest.Start(t)
		store := faultStore(t, srv.Addr, "rec", time.Now)
		rec := delegation.NewRecorder(store, nil)
		if err := rec.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rec.Stop(context.Background()) })
		srv.Stop()
		for _, s := range []string{"s1", "s2", "s3"} {
			rec.Audit(context.Background(), entry(s))
		}
		srv.Restart()
		partnerEventually(t, "the waiting entries appended", func() bool { return rec.Pending() == 0 })
		got, _, err := store.ReadAudit(context.Background(), sidecar.StreamFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var targets []string
		for _, a := range got {
			targets = append(targets, a.Target)
		}
		if len(targets) != 3 || targets[0] != "s1" || targets[1] != "s2" || targets[2] != "s3" || rec.AuditDropped() != 0 {
			t.Errorf("audit trail = %v, %d dropped; want s1 s2 s3 in order, none dropped", targets, rec.AuditDropped())
		}
	})
}
