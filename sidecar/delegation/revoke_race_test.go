package delegation_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// hookStore is a store whose PutGrant fails once for one user (a fault
// part-way through an approval) and can be held for another, and whose
// GrantsIssued can run a hook first: how a retried approval is caught at
// each point of a revocation.
type hookStore struct {
	sidecar.Store
	mu             sync.Mutex
	failUser       string
	holdUser       string
	held, release  chan struct{}
	onGrantsIssued func()
}

func (s *hookStore) PutGrant(ctx context.Context, g *sidecar.Grant) error {
	s.mu.Lock()
	fail := g.User == s.failUser
	if fail {
		s.failUser = ""
	}
	hold := g.User == s.holdUser && s.held != nil
	if hold {
		s.holdUser = ""
	}
	s.mu.Unlock()
	if fail {
		return sidecar.Unavailable("cut", errors.New("connection reset"))
	}
	if hold {
		close(s.held)
		<-s.release
	}
	return s.Store.PutGrant(ctx, g)
}

func (s *hookStore) GrantsIssued(ctx context.Context, id string) error {
	s.mu.Lock()
	hook := s.onGrantsIssued
	s.onGrantsIssued = nil
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return s.Store.GrantsIssued(ctx, id)
}

// hold makes the next PutGrant for user close held and wait until
// release is closed.
func (s *hookStore) hold(user string) {
	s.mu.Lock()
	s.holdUser, s.held, s.release = user, make(chan struct{}), make(chan struct{})
	s.mu.Unlock()
}

// hookedPartners is the partner lifecycle on a hookStore over env's
// store, whose PutGrant fails once for failUser.
func hookedPartners(t *testing.T, env *partnerEnv, failUser string) (*hookStore, *delegation.Partners) {
	t.Helper()
	store := &hookStore{Store: env.store, failUser: failUser}
	return store, delegation.NewPartners(store, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(env.clock.Now))
}

// cutApproval opens a store with hooks on ps and approves an individual
// request for pat and paul whose approval stores pat's grant and is cut
// before paul's; it returns the store, the lifecycle on it, the request
// and pat's grant.
func cutApproval(t *testing.T, ps partnerStore) (*hookStore, *delegation.Partners, *sidecar.AccessRequest, string) {
	t.Helper()
	ctx := context.Background()
	env := newPartnerEnv(t, ps)
	store, p := hookedPartners(t, env, "paul")
	r, err := p.Request(ctx, patUser, individualRequest(sidecar.LevelFullAdmin, 30, "pat", "paul"), allowAll)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Approve(ctx, cora, r.ID, allowAll); err == nil {
		t.Fatal("approval was not cut")
	}
	e, err := store.EffectiveGrants(ctx, "acme", "partnerco", "pat")
	if err != nil || e.Individual == nil {
		t.Fatalf("pat's grant after the cut approval: %+v %v", e, err)
	}
	return store, p, r, e.Individual.ID
}

// A revocation is effective at once, also while the approval that issued
// the grant is being retried: the retry must not issue the grant again,
// wherever it is when the customer revokes.
func TestRevokeWinsOverARetriedApproval(t *testing.T) {
	for _, ps := range partnerStores(t) {
		// The retry has checked that the request's grants are still to be
		// issued, and is about to write pat's grant.
		t.Run(ps.name+"/retry_about_to_write", func(t *testing.T) {
			ctx := context.Background()
			store, p, r, patGrant := cutApproval(t, ps)

			store.hold("pat")
			done := make(chan error, 1)
			go func() { _, _, err := p.Approve(ctx, cora, r.ID, allowAll); done <- err }()
			<-store.held
			if _, err := p.Revoke(ctx, cora, "acme", patGrant, allowAll); err != nil {
				t.Fatal(err)
			}
			close(store.release)
			if err := <-done; sidecar.ErrorCode(err) != sidecar.ECONFLICT {
				t.Errorf("retry after the revocation: %v, want %s", err, sidecar.ECONFLICT)
			}
			noGrant(t, store, "pat", patGrant)
		})
		// The retry completes after Revoke has looked the grant up, before
		// it closes the approval: the grant revoked is no longer the one
		// the retry wrote for pat.
		t.Run(ps.name+"/retry_completed_during_revoke", func(t *testing.T) {
			ctx := context.Background()
			store, p, r, patGrant := cutApproval(t, ps)

			var retried error
			store.onGrantsIssued = func() { _, _, retried = p.Approve(ctx, cora, r.ID, allowAll) }
			if _, err := p.Revoke(ctx, cora, "acme", patGrant, allowAll); err != nil {
				t.Fatal(err)
			}
			if retried != nil {
				t.Fatalf("retry before the revocation closed the approval: %v", retried)
			}
			noGrant(t, store, "pat", patGrant)
		})
	}
}

func noGrant(t *testing.T, store sidecar.Store, user, revoked string) {
	t.Helper()
	e, err := store.EffectiveGrants(context.Background(), "acme", "partnerco", user)
	if err != nil {
		t.Fatal(err)
	}
	if e.Individual != nil {
		t.Errorf("%s holds %s again (grant %s) after acme revoked grant %s", user, e.Individual.Level, e.Individual.ID, revoked)
	}
}
