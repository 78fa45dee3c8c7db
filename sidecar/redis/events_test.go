package redis_test

import (
	"context"
	"fmt"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// The events stream keeps what the host's mailer (a consumer group) has
// not handled yet, however many events customers write: trimming to
// events_maxlen stops at what the slowest group has not acknowledged, and
// only past events_hard_maxlen are entries dropped, each counted.
func TestEventsTrimKeepsWhatTheMailerHasNotRead(t *testing.T) {
	const maxLen, hard = 50, 500
	ctx := context.Background()
	s, rc, key, appendN := mailerStream(t, maxLen, hard)
	xlen := func() int64 {
		t.Helper()
		n, err := rc.XLen(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// read reads as the mailer does: XREADGROUP, then XACK once sent.
	read := func(count int64) []goredis.XMessage {
		t.Helper()
		got, err := rc.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "mailer", Consumer: "m1", Streams: []string{key, ">"}, Count: count}).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range got[0].Messages {
			if err := rc.XAck(ctx, key, "mailer", m.ID).Err(); err != nil {
				t.Fatal(err)
			}
		}
		return got[0].Messages
	}

	appendN(1, sidecar.EventImpersonationStarted)
	appendN(6*maxLen, sidecar.EventConsentChanged)
	if n := xlen(); n != 6*maxLen+1 {
		t.Fatalf("XLEN = %d with the mailer behind, want every one of %d kept", n, 6*maxLen+1)
	}
	if first := read(1); len(first) != 1 || first[0].Values["type"] != sidecar.EventImpersonationStarted {
		t.Fatalf("the mailer's next event = %+v, want the impersonation it has not read", first)
	}

	t.Run("trimmed once read", func(t *testing.T) {
		read(10 * maxLen)
		appendN(1, sidecar.EventConsentChanged)
		if n := xlen(); n != maxLen {
			t.Fatalf("XLEN = %d once the mailer read everything, want %d", n, maxLen)
		}
		if s.EventsDropped() != 0 {
			t.Fatalf("dropped = %d, want none", s.EventsDropped())
		}
	})

	t.Run("trimmed to what is unread", func(t *testing.T) {
		read(1) // the one appended above: all read
		appendN(2*maxLen, sidecar.EventConsentChanged)
		if n := xlen(); n != 2*maxLen {
			t.Fatalf("XLEN = %d, want the %d unread", n, 2*maxLen)
		}
		read(30)
		appendN(1, sidecar.EventConsentChanged)
		if n := xlen(); n != 2*maxLen+1-30 {
			t.Fatalf("XLEN = %d, want the %d unread", n, 2*maxLen+1-30)
		}
	})

	t.Run("dropped past the hard cap, counted", func(t *testing.T) {
		before := xlen()
		appendN(int(hard-before)+7, sidecar.EventConsentChanged)
		if n := xlen(); n != hard {
			t.Fatalf("XLEN = %d, want the hard cap %d", n, hard)
		}
		if got := s.EventsDropped(); got != 7 {
			t.Fatalf("dropped = %d, want 7", got)
		}
	})

	t.Run("without groups as before", func(t *testing.T) {
		if err := rc.XGroupDestroy(ctx, key, "mailer").Err(); err != nil {
			t.Fatal(err)
		}
		appendN(300, sidecar.EventConsentChanged)
		if n := xlen(); n > 3*maxLen {
			t.Fatalf("XLEN = %d without consumer groups, want about %d", n, maxLen)
		}
	})
}

// A mailer that read notifications with XREADGROUP and stopped before
// XACK re-claims them with XAUTOCLAIM: trimming keeps a group's pending
// entries, not only what it has yet to be delivered, and past the hard
// cap the pending ones dropped are counted too.
func TestEventsTrimKeepsWhatTheMailerHasNotAcknowledged(t *testing.T) {
	const maxLen, hard = 50, 100
	ctx := context.Background()
	s, rc, key, appendN := mailerStream(t, maxLen, hard)
	appendN(10, sidecar.EventImpersonationStarted)
	got, err := rc.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "mailer", Consumer: "m1", Streams: []string{key, ">"}, Count: 10}).Result()
	if err != nil || len(got) != 1 || len(got[0].Messages) != 10 {
		t.Fatalf("XREADGROUP = %v, %v", got, err)
	}
	// The mailer stops here, nothing acknowledged, while events keep coming.
	appendN(hard-10, sidecar.EventConsentChanged)
	claimed, _, err := rc.XAutoClaim(ctx, &goredis.XAutoClaimArgs{Stream: key, Group: "mailer", Consumer: "m2", Start: "0", Count: 100}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 10 {
		t.Fatalf("re-claimed %d of the 10 unacknowledged events", len(claimed))
	}
	for k, m := range claimed {
		if m.ID != got[0].Messages[k].ID || m.Values["type"] != sidecar.EventImpersonationStarted {
			t.Fatalf("re-claimed %d = %s %v, want %s impersonation.started", k, m.ID, m.Values, got[0].Messages[k].ID)
		}
	}
	if s.EventsDropped() != 0 {
		t.Fatalf("dropped = %d under the hard cap", s.EventsDropped())
	}

	// Past the hard cap the oldest go, read or not, and are counted.
	appendN(3, sidecar.EventConsentChanged)
	if n := rc.XLen(ctx, key).Val(); n != hard {
		t.Fatalf("XLEN = %d, want the hard cap %d", n, hard)
	}
	if got := s.EventsDropped(); got != 3 {
		t.Fatalf("dropped = %d, want the 3 pending events the hard cap took", got)
	}

	// Read and acknowledged, they are trimmed as usual.
	if err := rc.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "mailer", Consumer: "m1", Streams: []string{key, ">"}, Count: 1000}).Err(); err != nil {
		t.Fatal(err)
	}
	pend, err := rc.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: key, Group: "mailer", Start: "-", End: "+", Count: 1000}).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pend {
		if err := rc.XAck(ctx, key, "mailer", p.ID).Err(); err != nil {
			t.Fatal(err)
		}
	}
	appendN(1, sidecar.EventConsentChanged)
	if n := rc.XLen(ctx, key).Val(); n != maxLen {
		t.Fatalf("XLEN = %d once all is acknowledged, want %d", n, maxLen)
	}
	if got := s.EventsDropped(); got != 3 {
		t.Fatalf("dropped = %d after trimming acknowledged events, want still 3", got)
	}
}

// mailerStream opens a store on a fresh redis-server whose events stream
// has a consumer group "mailer", and returns a plain client, the stream's
// key, and a helper appending n events of a type.
func mailerStream(t *testing.T, maxLen, hard int64) (*redis.Store, *goredis.Client, string, func(n int, typ string)) {
	t.Helper()
	ctx := context.Background()
	srv := redistest.Start(t)
	prefix := freshPrefix()
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: prefix, EventsMaxLen: maxLen, EventsHardMaxLen: hard,
		ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	rc := srv.Client()
	t.Cleanup(func() { _ = rc.Close() })
	key := prefix + ":events"
	if err := rc.XGroupCreateMkStream(ctx, key, "mailer", "0").Err(); err != nil {
		t.Fatal(err)
	}
	return s, rc, key, func(n int, typ string) {
		t.Helper()
		for i := range n {
			if err := s.AppendEvent(ctx, &sidecar.Event{Type: typ, Customer: fmt.Sprint("cust", i%3)}); err != nil {
				t.Fatal(err)
			}
		}
	}
}
