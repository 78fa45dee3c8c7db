package redis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A narrowing write whose reply is lost after Redis applied it (its
// transaction is not retried: the caller gets an error and cannot tell
// whether it happened) still evicts what it may have narrowed on every
// replica. Before, the writer returned before publishing, and another
// replica kept honouring the ended session from its cache until the
// cache's lifetime ran out.
func TestNarrowingWriteWithLostReplyStillEvicts(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	px := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch)
	prefix := freshPrefix()
	open := func(addr string) *redis.Store {
		s, err := redis.New(redis.Config{Addrs: []string{addr}, KeyPrefix: prefix, ReadTimeout: redistest.ReplyTimeout,
			WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	// The writer reaches Redis through the proxy; the other replica does
	// not, and records what it is told to evict.
	writer, other := open(px.Addr), open(srv.Addr)
	t.Cleanup(writer.Subscribe(func(string) {}))
	heard := &keyLog{}
	t.Cleanup(other.Subscribe(heard.add))
	eventuallyNoSubscriberBut(t, srv.Client(), prefix+":invalidate", 2)

	live := func(t *testing.T, customer string) *sidecar.Session {
		t.Helper()
		now := clock.Now()
		ss := &sidecar.Session{ID: "s-" + customer, Actor: "staff-" + customer, Customer: customer, StartedAt: now,
			ExpiresAt: now.Add(time.Hour), Host: "shop.example"}
		if err := storetest.StartRedeemed(ctx, writer, ss, "tok-"+customer); err != nil {
			t.Fatal(err)
		}
		return ss
	}
	ended := func(t *testing.T, id string) {
		t.Helper()
		ss, err := other.GetSession(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if ss.EndedAt.IsZero() {
			t.Fatalf("session %s is not ended in Redis: the write did not land, so this case shows nothing", id)
		}
	}
	n := 0
	for _, tc := range []struct {
		name  string
		write func(customer string) error
		check func(t *testing.T, customer string)
		keys  func(customer string) []string
	}{
		{"consent withdrawn", func(c string) error {
			_, err := writer.SetConsent(ctx, &sidecar.Consent{Customer: c, Allowed: false, SetBy: c, SetAt: clock.Now()})
			return err
		}, func(t *testing.T, c string) { ended(t, "s-"+c) }, func(c string) []string {
			return []string{sidecar.ConsentKey(c), sidecar.SessionKey("tok-" + c)}
		}},
		{"session ended by staff", func(c string) error {
			_, err := writer.EndSession(ctx, "s-"+c, "lead", sidecar.EndEnded, clock.Now())
			return err
		}, func(t *testing.T, c string) { ended(t, "s-"+c) }, func(c string) []string {
			return []string{sidecar.SessionKey("tok-" + c)}
		}},
		{"customer marked as staff", func(c string) error {
			_, err := writer.MarkStaff(ctx, c)
			return err
		}, func(t *testing.T, c string) { ended(t, "s-"+c) }, func(c string) []string {
			return []string{sidecar.CustomerKey(c), sidecar.SessionKey("tok-" + c)}
		}},
		{"customer synced as protected", func(c string) error {
			_, err := writer.PutCustomer(ctx, &sidecar.Customer{ID: c, Protected: true, UpdatedBy: "sync"}, sidecar.Protection{})
			return err
		}, func(t *testing.T, c string) { ended(t, "s-"+c) }, func(c string) []string {
			return []string{sidecar.CustomerKey(c), sidecar.SessionKey("tok-" + c)}
		}},
		{"customer deleted", func(c string) error {
			_, err := writer.DeleteCustomer(ctx, c, "sync")
			return err
		}, func(t *testing.T, c string) { ended(t, "s-"+c) }, func(c string) []string {
			return []string{sidecar.ConsentKey(c), sidecar.CustomerKey(c), sidecar.SessionKey("tok-" + c)}
		}},
		{"session replaced by the same staff's next", func(c string) error {
			now := clock.Now()
			_, err := writer.StartSession(ctx, sidecar.SessionStart{CodeHash: "code-next-" + c, CodeExpiresAt: now.Add(30 * time.Second),
				ReplaceLive: true, Session: &sidecar.Session{ID: "next-" + c, Actor: "staff-" + c, Customer: c, StartedAt: now,
					ExpiresAt: now.Add(time.Hour)}})
			return err
		}, func(t *testing.T, c string) { ended(t, "s-"+c) }, func(c string) []string {
			return []string{sidecar.SessionKey("tok-" + c)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			customer := fmt.Sprintf("c%d", n)
			n++
			live(t, customer)
			// Setting up publishes some of the same keys, the redeem's
			// without waiting for replicas: once that one is heard, only
			// what is heard after the write counts.
			eventually(t, "the redeem heard", func() bool { return heard.has(sidecar.SessionKey("tok-" + customer)) })
			before := map[string]int{}
			for _, k := range tc.keys(customer) {
				before[k] = heard.count(k)
			}
			px.LoseReply("exec")
			err := tc.write(customer)
			if sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
				t.Fatalf("write whose reply was lost: %v, want unavailable", err)
			}
			tc.check(t, customer)
			for _, k := range tc.keys(customer) {
				eventually(t, "the other replica told to evict "+k, func() bool { return heard.count(k) > before[k] })
			}
		})
	}
}
