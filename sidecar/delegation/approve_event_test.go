package delegation_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

// eventsFailing is a store whose event appends fail while fail is set, as
// when the node holding the events stream is paused or failing over.
type eventsFailing struct {
	sidecar.Store
	fail atomic.Bool
}

func (s *eventsFailing) AppendEvent(ctx context.Context, e *sidecar.Event) error {
	if s.fail.Load() {
		return sidecar.Unavailable("append event", errors.New("events stream paused"))
	}
	return s.Store.AppendEvent(ctx, e)
}

// An approval whose grant.approved event fails to append answers 503 with
// its grants already live. Its retry found the request approved and
// answered 409 request_already_approved before it recorded anything, so
// the customer's mailer was never told a partner got access. A retry
// within sidecar.AppendOnceWindow records the approval again (appending
// only what did not get through), and still answers that the request was
// approved; one that fails to append answers the fault again.
func TestApprovalRetriedAfterItsEventFailedIsAnnounced(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			failing := &eventsFailing{}
			env := newPartnerEnv(t, partnerStore{name: ps.name, open: func(t *testing.T, clock sidecar.Clock) sidecar.Store {
				failing.Store = ps.open(t, clock)
				return failing
			}})
			ctx := context.Background()
			r, err := env.partners.Request(ctx, patUser, individualRequest(sidecar.LevelFullAdmin, 30, "pat"), allowAll)
			if err != nil {
				t.Fatal(err)
			}
			failing.fail.Store(true)
			if _, _, err := env.partners.Approve(ctx, cora, r.ID, allowAll); sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
				t.Fatalf("approval with its event failing: %v, want unavailable", err)
			}
			if g, err := env.store.EffectiveGrants(ctx, "acme", "partnerco", "pat"); err != nil || g.Individual == nil {
				t.Fatalf("pat's grant after the failed answer: %+v %v (this case needs it live)", g, err)
			}
			// Still failing: the retry answers the fault, not a conflict
			// that says all is done.
			if _, _, err := env.partners.Approve(ctx, cora, r.ID, allowAll); sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
				t.Fatalf("retry with the event still failing: %v, want unavailable", err)
			}
			failing.fail.Store(false)
			_, _, err = env.partners.Approve(ctx, cora, r.ID, allowAll)
			wantCode(t, err, sidecar.ECONFLICT, "request_already_approved")
			evs := 0
			for _, e := range events(t, env.store, sidecar.EventGrantApproved) {
				if e.Data["request_id"] == r.ID {
					evs++
				}
			}
			if evs != 1 {
				t.Fatalf("%d grant.approved events for %s, want 1", evs, r.ID)
			}
			// Once recorded, a later retry appends nothing more.
			_, _, err = env.partners.Approve(ctx, cora, r.ID, allowAll)
			wantCode(t, err, sidecar.ECONFLICT, "request_already_approved")
			if n := len(events(t, env.store, sidecar.EventGrantApproved)); n != 1 {
				t.Fatalf("%d grant.approved events after another retry, want 1", n)
			}
			if n := len(audited(t, env.store, "partner.approve", r.ID)); n != 1 {
				t.Fatalf("%d partner.approve audit entries, want 1", n)
			}
		})
	}
}
