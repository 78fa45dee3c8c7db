package delegation_test

import (
	"context"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// revokeHeldStore runs atRevoke once right before a RevokeGrant reaches
// the store: after Revoke looked the grant up (and closed its approval).
type revokeHeldStore struct {
	*hookStore
	atRevoke func()
}

func (s *revokeHeldStore) RevokeGrant(ctx context.Context, customer, id, by, byOrg string) (*sidecar.Grant, error) {
	if f := s.atRevoke; f != nil {
		s.atRevoke = nil
		f()
	}
	return s.hookStore.Store.RevokeGrant(ctx, customer, id, by, byOrg)
}

// wantReplacedBy fails unless err is the 409 of a revocation of a grant
// no longer live, naming the grant live instead.
func wantReplacedBy(t *testing.T, err error, live string) {
	t.Helper()
	if sidecar.ErrorCode(err) != sidecar.ECONFLICT || sidecar.ErrorReason(err) != "grant_replaced" || !strings.Contains(sidecar.ErrorMessage(err), live) {
		t.Fatalf("revoking the replaced grant: %v, want 409 grant_replaced naming %s", err, live)
	}
}

// pat holds grant A; a later approval of pat's request B replaces it
// (asking again replaces the earlier grant). Revoking A's id, by either
// side, sequentially or with B's grant landing between the revocation's
// lookup and its write, answers 409 naming B's grant: never success while
// pat holds B. Nothing is revoked or recorded, and pat keeps B.
func TestRevokeOfAReplacedGrantNamesTheLiveOne(t *testing.T) {
	for _, ps := range partnerStores(t) {
		for _, revoker := range []*sidecar.Identity{cora, paulUser} {
			for _, interleaved := range []bool{false, true} {
				name := ps.name + "/" + revoker.Subject + "/sequential"
				if interleaved {
					name = ps.name + "/" + revoker.Subject + "/replaced_during_the_revocation"
				}
				t.Run(name, func(t *testing.T) {
					ctx := context.Background()
					env := newPartnerEnv(t, ps)
					store := &revokeHeldStore{hookStore: &hookStore{Store: env.store}}
					p := delegation.NewPartners(store, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(env.clock.Now))
					a := env.grant(t, patUser, individualRequest(sidecar.LevelLook, 30, "pat"))
					b, err := p.Request(ctx, patUser, individualRequest(sidecar.LevelFullAdmin, 30, "pat"), allowAll)
					must(t, err)
					approve := func() {
						if _, _, err := p.Approve(ctx, cora, b.ID, allowAll); err != nil {
							t.Errorf("approval of B: %v", err)
						}
					}
					if interleaved {
						store.atRevoke = approve
					} else {
						approve()
					}
					aID, bID := delegation.GrantID(a.ID, "pat"), delegation.GrantID(b.ID, "pat")
					g, err := p.Revoke(ctx, revoker, "acme", aID, allowAll)
					if g != nil {
						t.Errorf("revoking A answered grant %+v", g)
					}
					wantReplacedBy(t, err, bID)
					wantGrant(t, env.store, "pat", b.ID, sidecar.LevelFullAdmin)
					if rs := audited(t, env.store, "partner.revoke", ""); len(rs) != 0 {
						t.Errorf("revocations audited: %+v, want none", rs)
					}
					if es := events(t, env.store, sidecar.EventGrantRevoked); len(es) != 0 {
						t.Errorf("grant.revoked events: %+v, want none", es)
					}
					// Revoking B by the id named ends pat's access.
					if _, err := p.Revoke(ctx, revoker, "acme", bID, allowAll); err != nil {
						t.Fatalf("revoking B: %v", err)
					}
					noGrant(t, env.store, "pat", bID)
				})
			}
		}
	}
}

// A revocation that revoked A answers as the first time when repeated
// (a retry after a lost reply), also once pat holds a newer grant: the
// store kept A as revoked, and it is A's revocation the retry repeats.
// A replaced grant whose replacement is gone leaves nothing live, and
// revoking it is a no-op as it was.
func TestRevokeOfAGrantNoLongerLiveWithNothingElseLive(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name+"/revoked_then_a_new_grant", func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			a := env.grant(t, patUser, individualRequest(sidecar.LevelLook, 30, "pat"))
			aID := delegation.GrantID(a.ID, "pat")
			if _, err := env.partners.Revoke(ctx, paulUser, "acme", aID, allowAll); err != nil {
				t.Fatal(err)
			}
			c := env.grant(t, patUser, individualRequest(sidecar.LevelCreate, 30, "pat"))
			if g, err := env.partners.Revoke(ctx, paulUser, "acme", aID, allowAll); err != nil || g != nil {
				t.Fatalf("revoking A again: %+v, %v; want nothing, no error, as the first time", g, err)
			}
			wantGrant(t, env.store, "pat", c.ID, sidecar.LevelCreate)
			if rs := audited(t, env.store, "partner.revoke", ""); len(rs) != 1 || rs[0].Target != aID {
				t.Errorf("revocations audited: %+v, want A's once", rs)
			}
		})
		t.Run(ps.name+"/replaced_then_the_replacement_revoked", func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			a := env.grant(t, patUser, individualRequest(sidecar.LevelLook, 30, "pat"))
			b := env.grant(t, patUser, individualRequest(sidecar.LevelCreate, 30, "pat"))
			if _, err := env.partners.Revoke(ctx, cora, "acme", delegation.GrantID(b.ID, "pat"), allowAll); err != nil {
				t.Fatal(err)
			}
			if g, err := env.partners.Revoke(ctx, cora, "acme", delegation.GrantID(a.ID, "pat"), allowAll); err != nil || g != nil {
				t.Fatalf("revoking A: %+v, %v; want nothing, no error: nothing of pat's access is live", g, err)
			}
			if rs := audited(t, env.store, "partner.revoke", ""); len(rs) != 1 {
				t.Errorf("revocations audited: %+v, want B's once", rs)
			}
		})
	}
}
