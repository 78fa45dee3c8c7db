package delegation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// TestRetriedNarrowingReachesEveryReplica: a narrowing impersonation
// write whose change reached Redis but whose answer and eviction did not
// (the connection cut in between) answers 503, and the caller retries.
// The retry finds nothing left to change; it must still evict on every
// replica, or a replica that cached the session keeps honouring it until
// its cache TTL. The first attempt's write is made straight in Redis,
// without its eviction.
func TestRetriedNarrowingReachesEveryReplica(t *testing.T) {
	customer := &sidecar.Identity{Subject: "c42"}
	for _, tc := range []struct {
		name   string
		write  func(t *testing.T, w *retryWorld) // the first attempt's write
		retry  func(w *retryWorld) error
		reason string
	}{
		{"session_end", func(t *testing.T, w *retryWorld) {
			w.rewrite(t, w.imp("sess:"+w.started.Session.ID), func(m map[string]any) {
				m["ended_at"], m["ended_by"], m["end_reason"] = w.clock.Now().Format(time.RFC3339Nano), "alice", sidecar.EndEnded
			})
		}, func(w *retryWorld) error {
			_, err := w.lc.End(w.ctx, alice, w.started.Session.ID, allowAll)
			return err
		}, sidecar.EndEnded},
		{"consent_withdrawn", func(t *testing.T, w *retryWorld) {
			w.set(t, w.imp("consent:c42"), sidecar.Consent{Customer: "c42", SetBy: "c42", SetAt: w.clock.Now()})
		}, func(w *retryWorld) error {
			_, _, err := w.lc.SetConsent(w.ctx, customer, delegation.ConsentChange{Customer: "c42"}, allowAll)
			return err
		}, sidecar.EndConsentWithdrawn},
		{"consent_narrowed", func(t *testing.T, w *retryWorld) {
			w.set(t, w.imp("consent:c42"), sidecar.Consent{Customer: "c42", Allowed: true, ExpiresAt: w.narrowed(), SetBy: "c42", SetAt: w.clock.Now()})
		}, func(w *retryWorld) error {
			_, _, err := w.lc.SetConsent(w.ctx, customer, delegation.ConsentChange{Customer: "c42", Allowed: true, ExpiresAt: new(w.narrowed())}, allowAll)
			return err
		}, sidecar.EndConsentWithdrawn},
		{"customer_deleted", func(t *testing.T, w *retryWorld) {
			if err := w.srv.Client().Del(w.ctx, w.imp("customer:c42"), w.imp("consent:c42")).Err(); err != nil {
				t.Fatal(err)
			}
		}, func(w *retryWorld) error {
			return w.lc.DeleteCustomer(w.ctx, &sidecar.Identity{Subject: "storefront-sync"}, "c42", allowAll)
		}, sidecar.EndConsentWithdrawn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newRetryWorld(t, tc.name)
			tc.write(t, w)
			if _, err := w.resolvers["b"].Resolve(w.ctx, w.req, nil); err != nil {
				t.Fatalf("replica b with no eviction sent: %v, want its cached session", err)
			}
			if err := tc.retry(w); err != nil {
				t.Fatalf("retry: %v", err)
			}
			for name, r := range w.resolvers {
				partnerEventually(t, "replica "+name+" denies the session after the retry", func() bool {
					_, err := r.Resolve(w.ctx, w.req, nil)
					return sidecar.ErrorReason(err) == "session_"+tc.reason
				})
			}
		})
	}
}

// TestLostEvictionAnswersUnavailable cuts the connection to a real Redis
// after every possible number of commands of each narrowing write. Where
// the write went through, either its eviction reached the other replicas
// or the caller is told 503, so that it retries: never a success whose
// eviction was lost.
func TestLostEvictionAnswersUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch) // in the past: a start later than Redis's clock moves back to it
	n := 0
	for _, tc := range []struct {
		name string
		op   func(w *faultWorld) error
		keys []string // any of them evicts what the write narrowed
	}{
		{"session_end", func(w *faultWorld) error {
			_, err := w.lc.End(w.ctx, alice, w.started["alice@c1"].Session.ID, allowAll)
			return err
		}, nil}, // the session's own key, set once started
		{"consent_withdrawn", func(w *faultWorld) error {
			_, _, err := w.lc.SetConsent(w.ctx, &sidecar.Identity{Subject: "c1"}, delegation.ConsentChange{Customer: "c1"}, allowAll)
			return err
		}, []string{sidecar.ConsentKey("c1")}},
		{"customer_deleted", func(w *faultWorld) error {
			return w.lc.DeleteCustomer(w.ctx, &sidecar.Identity{Subject: "sync"}, "c1", allowAll)
		}, []string{sidecar.ConsentKey("c1"), sidecar.CustomerKey("c1")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var prev *faultWorld
			run := func(cut int) (total int, wasCut bool, err error, evicted bool) {
				if prev != nil {
					// The proxy counts the commands of every connection
					// through it: the last world's cut store, left open,
					// would subscribe again and ping whenever the machine
					// lets it, and move this world's cuts.
					_ = prev.cut.(io.Closer).Close()
				}
				n++
				prefix := fmt.Sprintf("evict%d", n)
				w := newFaultWorld(t, srv, proxy, prefix, clock)
				prev = w
				if cut < 0 {
					w.wholeRun(t, proxy, clock) // must succeed
				}
				s := w.redeemed(t, alice, "c1")
				keys := append([]string{sidecar.SessionKey(s.TokenHash)}, tc.keys...)
				got := make(chan struct{}, 1)
				cancel := w.direct.Subscribe(func(k string) {
					for _, want := range keys {
						if k == want {
							select {
							case got <- struct{}{}:
							default:
							}
						}
					}
				})
				defer cancel()
				settle(t, w.direct, w.direct, prefix)
				proxy.Reset()
				if cut >= 0 {
					proxy.CutAfter(cut)
				}
				err = tc.op(w)
				wasCut = proxy.WasCut()
				total = proxy.Commands()
				if cut >= 0 && !wasCut && err != nil && !(sidecar.IsUnpublished(err) && unconfirmed(w.cut) > 0) {
					// Without a cut, only replicas slower to confirm than
					// the default bound (faultStore; not wholeRun's) may
					// fail the write.
					t.Fatalf("no cut within %d commands, yet the write failed: %v", cut, err)
				}
				proxy.Reset()
				// A marker published after the write arrives after any
				// eviction the write published: pub/sub keeps order.
				settle(t, w.direct, w.direct, prefix)
				select {
				case <-got:
					evicted = true
				default:
				}
				return total, wasCut, err, evicted
			}
			total, _, err, evicted := run(-1)
			if err != nil || !evicted {
				t.Fatalf("without a fault: err %v, evicted %v", err, evicted)
			}
			// Cut after 0, 1, 2... commands until the write runs whole
			// before the cut comes (the fault-free run's count is only a
			// bound: a ping of the subscription may fall among the
			// write's commands, or not).
			unavailable := 0
			for cut := 0; ; cut++ {
				if cut > 2*total+10 {
					t.Fatalf("every cut up to %d commands happened: the write (%d commands without a fault) never ran whole", cut, total)
				}
				_, wasCut, err, evicted := run(cut)
				if err == nil && !evicted {
					t.Fatalf("cut after %d of %d commands: success, but no eviction was published", cut, total)
				}
				if !wasCut {
					break
				}
				if sidecar.ErrorCode(err) == sidecar.EUNAVAILABLE {
					unavailable++
				}
			}
			if unavailable == 0 {
				t.Fatal("no cut point answered 503")
			}
		})
	}
}

// settle returns once a marker published on from now reached to: pub/sub
// keeps a publisher's order, so every eviction from published before it
// has been delivered. The marker's own confirmation may fail where a
// replica's subscription was cut right before it: Redis still counted
// the dying connection, which never acknowledges, and the write is
// answered 503 once the bound runs out. The marker was published all the
// same, and its arrival is what settle waits for.
func settle(t *testing.T, from, to sidecar.Store, name string) {
	t.Helper()
	marker := "settled:" + name
	seen := make(chan struct{}, 1)
	cancel := to.Subscribe(func(k string) {
		if k == marker {
			select {
			case seen <- struct{}{}:
			default:
			}
		}
	})
	defer cancel()
	err := from.Invalidate(context.Background(), marker)
	if err != nil && sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
		t.Fatal(err)
	}
	select {
	case <-seen:
	case <-time.After(5 * time.Second):
		t.Fatalf("marker eviction never reached the other replica (publishing it: %v)", err)
	}
}

// retryWorld is a live session cached on two replicas of one real
// redis-server, its lifecycle on replica a.
type retryWorld struct {
	ctx       context.Context
	srv       *redistest.Server
	prefix    string
	clock     *storetest.Clock
	lc        *delegation.Impersonation
	started   *delegation.Started
	resolvers map[string]*resolve.SessionResolver
	req       *sidecar.Request
}

func newRetryWorld(t *testing.T, prefix string) *retryWorld {
	t.Helper()
	srv := redistest.Start(t)
	clock := storetest.NewClock(storetest.Epoch)
	a, b := redisReplica(t, srv, prefix, clock), redisReplica(t, srv, prefix, clock)
	lc := delegation.NewImpersonation(a, shippedData(t), delegation.WithImpersonationClock(clock.Now))
	st, resolvers, req := liveOnTwoReplicas(t, lc, a, b, clock)
	return &retryWorld{ctx: context.Background(), srv: srv, prefix: prefix, clock: clock, lc: lc, started: st, resolvers: resolvers, req: req}
}

func (w *retryWorld) imp(suffix string) string { return w.prefix + ":{imp}:" + suffix }

// narrowed is a consent expiry before the session's own.
func (w *retryWorld) narrowed() time.Time { return w.clock.Now().Add(10 * time.Minute) }

func (w *retryWorld) set(t *testing.T, key string, v any) {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.srv.Client().Set(w.ctx, key, raw, 0).Err(); err != nil {
		t.Fatal(err)
	}
}

func (w *retryWorld) rewrite(t *testing.T, key string, change func(map[string]any)) {
	t.Helper()
	raw, err := w.srv.Client().Get(w.ctx, key).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	change(m)
	w.set(t, key, m)
}
