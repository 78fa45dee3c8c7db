package delegation_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// Three replicas approve, reject and revoke the same requests at once
// while each runs the records sweep: afterwards every request has exactly
// one decision record, the one matching its stored status, whichever
// replica decided it and however the sweeps interleaved. Run under -race.
func TestPartnerRecordsSweepConcurrent(t *testing.T) {
	for _, backend := range []string{"memory", "redis"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			clock := newPartnerClock()
			var store sidecar.Store
			if backend == "memory" {
				store = memory.New(memory.WithClock(clock.Now))
			} else {
				srv := redistest.Start(t)
				s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "sweeprace"}, redis.WithClock(clock.Now))
				if err != nil {
					t.Fatal(err)
				}
				store = s
			}
			t.Cleanup(func() { _ = store.Close() })
			if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: "paul", Org: "partnerco"}, sidecar.Protection{}); err != nil {
				t.Fatal(err)
			}
			var ids atomic.Int64
			replica := func() *delegation.Partners {
				return delegation.NewPartners(store, shippedData(t), delegation.PartnerConfig{},
					delegation.WithPartnerClock(clock.Now), delegation.WithPartnerRecorder(delegation.NewRecorder(store, nil)),
					delegation.WithPartnerIDs(func() string { return fmt.Sprintf("req%d", ids.Add(1)) }))
			}
			reps := []*delegation.Partners{replica(), replica(), replica()}
			var reqs []*sidecar.AccessRequest
			for i := 0; i < 10; i++ {
				in := individualRequest(sidecar.LevelLook, 30, "pat")
				if i%3 == 0 {
					in = individualRequest(sidecar.LevelLook, 30, "paul")
				}
				r, err := reps[0].Request(ctx, patUser, in, allowAll)
				if err != nil {
					t.Fatal(err)
				}
				reqs = append(reqs, r)
			}
			clock.Advance(time.Minute)
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for _, p := range reps {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						_ = p.RecordAgain(ctx)
					}
				}()
			}
			var work sync.WaitGroup
			for _, r := range reqs {
				for k, p := range reps {
					work.Add(1)
					go func() {
						defer work.Done()
						if k == 1 {
							_, _ = p.Reject(ctx, cora, r.ID, allowAll)
							return
						}
						_, gs, _ := p.Approve(ctx, cora, r.ID, allowAll)
						for _, g := range gs {
							_, _ = p.Revoke(ctx, cora, "acme", g.ID, allowAll)
						}
					}()
				}
			}
			work.Wait()
			close(stop)
			wg.Wait()
			clock.Advance(2 * time.Minute)
			if err := replica().RecordAgain(ctx); err != nil {
				t.Fatal(err)
			}
			for _, r := range reqs {
				got, err := store.GetRequest(ctx, r.ID)
				if err != nil {
					t.Fatal(err)
				}
				ap, _ := partnerRecords(t, store, "partner.approve", sidecar.EventGrantApproved, "request_id", r.ID)
				rj, _ := partnerRecords(t, store, "partner.reject", sidecar.EventGrantRejected, "request_id", r.ID)
				switch got.Status {
				case sidecar.RequestApproved:
					if ap != 1 || rj != 0 {
						t.Errorf("%s approved: %d approve, %d reject records", r.ID, ap, rj)
					}
				case sidecar.RequestRejected:
					if ap != 0 || rj != 1 {
						t.Errorf("%s rejected: %d approve, %d reject records", r.ID, ap, rj)
					}
				default:
					t.Errorf("%s status %s", r.ID, got.Status)
				}
			}
		})
	}
}
