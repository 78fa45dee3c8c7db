package delegation_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// cora2 is acme's second contact manager.
var cora2 = &sidecar.Identity{Subject: "cora2", Org: "acme", Roles: []string{"contact_manager"}}

// approval is what one Approve call answered.
type approval struct {
	grants []sidecar.Grant
	err    error
}

func approveInto(ctx context.Context, p *delegation.Partners, caller *sidecar.Identity, id string, out chan<- approval) {
	_, gs, err := p.Approve(ctx, caller, id, allowAll)
	out <- approval{gs, err}
}

func grantIDsOf(gs []sidecar.Grant) []string {
	ids := make([]string, 0, len(gs))
	for _, g := range gs {
		ids = append(ids, g.ID)
	}
	return ids
}

// Two approvals of one request at once: cora's decides it and is held
// before it stores pat's grant, while cora2's, finding the approval under
// way, stores the grant too. Whichever write lands last, both answer the
// one grant stored, the approval is audited and announced once, and
// revoking the id either was shown ends pat's access. A revocation made
// before cora's held write lands stays: cora is told the request is
// closed.
func TestApprovalsOfOneRequestAnswerTheStoredGrant(t *testing.T) {
	for _, ps := range partnerStores(t) {
		for _, tc := range []struct {
			name string
			// lateBeforeClose lets cora's held write land while cora2's
			// approval is about to close the request; else after it closed.
			lateBeforeClose bool
			// revokeFirst: cora2 revokes her answer before cora's write lands.
			revokeFirst bool
		}{
			{name: "held_write_lands_before_close", lateBeforeClose: true},
			{name: "held_write_lands_after_close"},
			{name: "revoked_before_held_write_lands", revokeFirst: true},
		} {
			t.Run(ps.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				env := newPartnerEnv(t, ps)
				store, p := hookedPartners(t, env, "")
				r, err := p.Request(ctx, patUser, individualRequest(sidecar.LevelFullAdmin, 30, "pat"), allowAll)
				if err != nil {
					t.Fatal(err)
				}
				want := []string{delegation.GrantID(r.ID, "pat")}

				store.hold("pat")
				answers := make(chan approval, 1)
				go approveInto(ctx, p, cora, r.ID, answers)
				<-store.held // cora's approval decided, its grant write held
				var late approval
				if tc.lateBeforeClose {
					store.mu.Lock()
					store.onGrantsIssued = func() { close(store.release); late = <-answers }
					store.mu.Unlock()
				}
				_, gs, err := p.Approve(ctx, cora2, r.ID, allowAll)
				if err != nil || !slices.Equal(grantIDsOf(gs), want) {
					t.Fatalf("cora2's approval: %v (%v), want grants %v", grantIDsOf(gs), err, want)
				}
				if tc.revokeFirst {
					if g, err := p.Revoke(ctx, cora2, "acme", gs[0].ID, allowAll); err != nil || g == nil {
						t.Fatalf("cora2 revokes %s: %+v (%v), want it revoked", gs[0].ID, g, err)
					}
				}
				if !tc.lateBeforeClose {
					close(store.release)
					late = <-answers
				}

				if tc.revokeFirst {
					wantCode(t, late.err, sidecar.ECONFLICT, "request_grants_closed")
					noGrant(t, store, "pat", gs[0].ID)
				} else {
					if late.err != nil || !slices.Equal(grantIDsOf(late.grants), want) {
						t.Fatalf("cora's approval: %v (%v), want grants %v", grantIDsOf(late.grants), late.err, want)
					}
					wantGrant(t, store, "pat", r.ID, sidecar.LevelFullAdmin)
					// Either id shown revokes the grant pat holds.
					if g, err := p.Revoke(ctx, cora, "acme", late.grants[0].ID, allowAll); err != nil || g == nil {
						t.Fatalf("revoking %s: %+v (%v), want it revoked", late.grants[0].ID, g, err)
					}
					noGrant(t, store, "pat", late.grants[0].ID)
				}
				wantRecordedOnce(t, env.store, r.ID, "cora")
				if n := len(audited(t, env.store, "partner.revoke", "")); n != 1 {
					t.Errorf("%d revocations audited, want 1", n)
				}
			})
		}
	}
}

// Many approvals of one request sent at once, rounds on end, on a real
// Redis and in memory: every approval that succeeds answers the grants
// stored, the others that the request is approved already; the approval
// is audited and announced once; revoking the answered ids leaves
// nothing of the request live.
func TestConcurrentApprovalsOfOneRequest(t *testing.T) {
	const approvers, rounds = 8, 25
	managers := make([]*sidecar.Identity, approvers)
	for i := range managers {
		managers[i] = &sidecar.Identity{Subject: fmt.Sprintf("manager%d", i), Org: "acme", Roles: []string{"contact_manager"}}
	}
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			for round := range rounds {
				in := individualRequest(sidecar.LevelUpdate, 30, "pat", "paul")
				if round%2 == 1 {
					in = orgRequest(sidecar.LevelLook, 30)
				}
				r, err := env.partners.Request(ctx, patUser, in, allowAll)
				if err != nil {
					t.Fatal(err)
				}
				var want []string
				for _, u := range []string{"pat", "paul"} {
					if r.Scope == sidecar.ScopeOrganisation {
						u = ""
					}
					if !slices.Contains(want, delegation.GrantID(r.ID, u)) {
						want = append(want, delegation.GrantID(r.ID, u))
					}
				}
				start := make(chan struct{})
				answers := make(chan approval, approvers)
				var wg sync.WaitGroup
				for _, m := range managers {
					wg.Go(func() {
						<-start
						approveInto(ctx, env.partners, m, r.ID, answers)
					})
				}
				close(start)
				wg.Wait()
				close(answers)
				succeeded := 0
				for a := range answers {
					if a.err != nil {
						wantCode(t, a.err, sidecar.ECONFLICT, "request_already_approved")
						continue
					}
					succeeded++
					if got := grantIDsOf(a.grants); !slices.Equal(got, want) {
						t.Fatalf("round %d: an approval answered grants %v, want %v", round, got, want)
					}
				}
				if succeeded == 0 {
					t.Fatalf("round %d: no approval of %d succeeded", round, approvers)
				}
				for _, id := range want {
					if g, err := env.partners.Revoke(ctx, cora, "acme", id, allowAll); err != nil || g == nil {
						t.Fatalf("round %d: revoking %s: %+v (%v), want it revoked", round, id, g, err)
					}
				}
				for _, u := range []string{"pat", "paul"} {
					if e, err := env.store.EffectiveGrants(ctx, "acme", "partnerco", u); err != nil || e.Effective() != nil {
						t.Fatalf("round %d: %s holds %+v after every answered grant was revoked (%v)", round, u, e.Effective(), err)
					}
				}
				wantRecordedOnce(t, env.store, r.ID, "")
			}
		})
	}
}

// A revocation names the grant an approval answered. When that id is not
// stored, the grant its request issued to the same user is revoked
// whatever its id; when nothing of the request is live for the user,
// revoking it is a no-op, or a conflict while a later grant holds the
// user's access. Another customer's request is not looked at:
// its grant's id is unknown at acme.
func TestRevokeOfAnAnsweredIDNotStored(t *testing.T) {
	globexManager := &sidecar.Identity{Subject: "gina", Org: "globex", Roles: []string{"contact_manager"}}
	for _, ps := range partnerStores(t) {
		for _, tc := range []struct {
			name string
			// prep sets the case up and returns the id to revoke at acme.
			prep       func(t *testing.T, env *partnerEnv) string
			caller     *sidecar.Identity // who revokes; cora when nil
			wantID     string            // the grant revoked; "" for none
			wantErr    string            // the error code answered, "" for none
			wantLevel  sidecar.Level
			wantGlobex bool // pat's globex grant stays
		}{
			{name: "stored_under_another_id", wantID: "g-earlier", prep: func(t *testing.T, env *partnerEnv) string {
				// A grant stored, by an approval cut part-way, under an id
				// not made from its request.
				ctx := context.Background()
				r, err := env.partners.Request(ctx, patUser, individualRequest(sidecar.LevelCreate, 30, "pat"), allowAll)
				if err != nil {
					t.Fatal(err)
				}
				d, err := env.store.DecideRequest(ctx, r.ID, sidecar.RequestApproved, cora.Subject, env.clock.Now())
				if err != nil {
					t.Fatal(err)
				}
				g := sidecar.Grant{ID: "g-earlier", Customer: "acme", PartnerOrg: "partnerco", User: "pat", Level: r.Level,
					ExpiresAt: d.DecidedAt.Add(30 * day), ApprovedBy: cora.Subject, ApprovedAt: d.DecidedAt, RequestID: r.ID, Seq: d.Seq}
				if err := env.store.PutGrant(ctx, &g); err != nil {
					t.Fatal(err)
				}
				return delegation.GrantID(r.ID, "pat")
			}},
			// A later request's grant holds pat's access: refused, naming it
			// (TestRevokeOfAReplacedGrantNamesTheLiveOne).
			{name: "replaced_by_a_later_request", wantErr: sidecar.ECONFLICT, wantLevel: sidecar.LevelCC, prep: func(t *testing.T, env *partnerEnv) string {
				ctx := context.Background()
				first := env.grant(t, patUser, individualRequest(sidecar.LevelFullAdmin, 30, "pat"))
				env.grant(t, patUser, individualRequest(sidecar.LevelCC, 30, "pat"))
				id := delegation.GrantID(first.ID, "pat")
				if _, err := env.store.GetGrant(ctx, "acme", id); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
					t.Fatalf("the replaced grant %s: %v, want it gone", id, err)
				}
				return id
			}},
			{name: "approval_not_yet_stored", prep: func(t *testing.T, env *partnerEnv) string {
				// Decided, its grant not written yet: revoking it first
				// closes the approval, whose retry then issues nothing.
				ctx := context.Background()
				r, err := env.partners.Request(ctx, patUser, individualRequest(sidecar.LevelCreate, 30, "pat"), allowAll)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := env.store.DecideRequest(ctx, r.ID, sidecar.RequestApproved, cora.Subject, env.clock.Now()); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					_, _, err := env.partners.Approve(ctx, cora, r.ID, allowAll)
					wantCode(t, err, sidecar.ECONFLICT, "request_already_approved")
					noGrant(t, env.store, "pat", delegation.GrantID(r.ID, "pat"))
				})
				return delegation.GrantID(r.ID, "pat")
			}},
			{name: "request_not_approved", wantErr: sidecar.ENOTFOUND, prep: func(t *testing.T, env *partnerEnv) string {
				// Its grant id was never issued: revoking it changes
				// nothing, and the approval that follows issues it.
				ctx := context.Background()
				r, err := env.partners.Request(ctx, patUser, individualRequest(sidecar.LevelCreate, 30, "pat"), allowAll)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if _, _, err := env.partners.Approve(ctx, cora, r.ID, allowAll); err != nil {
						t.Errorf("approval after the refused revocation: %v", err)
					}
					wantGrant(t, env.store, "pat", r.ID, sidecar.LevelCreate)
				})
				return delegation.GrantID(r.ID, "pat")
			}},
			{name: "caller_no_party", caller: otherOrgBob, wantErr: sidecar.ENOTFOUND, wantLevel: sidecar.LevelCreate, prep: func(t *testing.T, env *partnerEnv) string {
				// Answered exactly as an unknown id, and changes nothing.
				r := env.grant(t, patUser, individualRequest(sidecar.LevelCreate, 30, "pat"))
				return delegation.GrantID(r.ID, "pat")
			}},
			{name: "another_customers_request", wantErr: sidecar.ENOTFOUND, wantGlobex: true, prep: func(t *testing.T, env *partnerEnv) string {
				ctx := context.Background()
				in := individualRequest(sidecar.LevelCreate, 30, "pat")
				in.Customer, in.ContactEmail = "globex", "gina@globex.example"
				r, err := env.partners.Request(ctx, patUser, in, allowAll)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := env.partners.Approve(ctx, globexManager, r.ID, allowAll); err != nil {
					t.Fatal(err)
				}
				return delegation.GrantID(r.ID, "pat")
			}},
		} {
			t.Run(ps.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				env := newPartnerEnv(t, ps)
				id := tc.prep(t, env)
				caller := cmp.Or(tc.caller, cora)
				g, err := env.partners.Revoke(ctx, caller, "acme", id, allowAll)
				if sidecar.ErrorCode(err) != tc.wantErr {
					t.Fatalf("revoking %s: %v, want code %q", id, err, tc.wantErr)
				}
				if got := ""; g != nil {
					got = g.ID
					if got != tc.wantID {
						t.Fatalf("revoking %s revoked %s, want %q", id, got, tc.wantID)
					}
				} else if tc.wantID != "" {
					t.Fatalf("revoking %s revoked nothing, want %s revoked", id, tc.wantID)
				}
				e, err := env.store.EffectiveGrants(ctx, "acme", "partnerco", "pat")
				if err != nil {
					t.Fatal(err)
				}
				if got := e.Effective(); (got == nil) != (tc.wantLevel == "") || got != nil && got.Level != tc.wantLevel {
					t.Errorf("pat's acme grant after the revocation: %+v, want level %q", got, tc.wantLevel)
				}
				if e, err := env.store.EffectiveGrants(ctx, "globex", "partnerco", "pat"); err != nil || (e.Individual != nil) != tc.wantGlobex {
					t.Errorf("pat's globex grant after acme's revocation: %+v (%v), want it kept: %v", e.Individual, err, tc.wantGlobex)
				}
				revocations := audited(t, env.store, "partner.revoke", "")
				if n := len(revocations); (n == 1) != (tc.wantID != "") || n > 1 {
					t.Errorf("%d revocations audited: %+v", n, revocations)
				}
			})
		}
	}
}

// audited returns the audit records of action, of target when set.
func audited(t *testing.T, s sidecar.Store, action, target string) []sidecar.AuditEntry {
	t.Helper()
	as, _, err := s.ReadAudit(context.Background(), sidecar.StreamFilter{Type: action, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(as, func(a sidecar.AuditEntry) bool { return target != "" && a.Target != target })
}

// wantRecordedOnce fails unless the approval of request is audited once,
// as decided by decider when set, and announced once.
func wantRecordedOnce(t *testing.T, s sidecar.Store, request, decider string) {
	t.Helper()
	as := audited(t, s, "partner.approve", request)
	if len(as) != 1 || decider != "" && as[0].Actor != decider {
		t.Errorf("approval of %s audited as %+v, want once, by %q", request, as, decider)
	}
	es := slices.DeleteFunc(events(t, s, sidecar.EventGrantApproved), func(e sidecar.Event) bool { return e.Data["request_id"] != request })
	if len(es) != 1 {
		t.Errorf("approval of %s announced %d times: %+v, want once", request, len(es), es)
	}
}

// Two contact managers approve one request at once on two replicas: both
// answer the one grant stored, and revoking it on one replica ends the
// access on the other, whose resolver caches grants for an hour.
func TestApprovalsOnTwoReplicasAnswerOneGrant(t *testing.T) {
	_, a, b, clock := twoReplicas(t)
	pa := delegation.NewPartners(a, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))
	pb := delegation.NewPartners(b, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))
	resolverB := settledResolver(t, a, b, clock)
	ctx := context.Background()
	for round := range 10 {
		r, err := pa.Request(ctx, patUser, orgRequest(sidecar.LevelCreate, 30), allowAll)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{delegation.GrantID(r.ID, "")}
		if got := resolvedLevel(resolverB, patUser, "acme"); got != "no_live_grant" {
			t.Fatalf("round %d: replica b resolves %q before the approvals, want no_live_grant", round, got)
		}
		start := make(chan struct{})
		answers := make(chan approval, 2)
		var wg sync.WaitGroup
		for _, on := range []struct {
			p      *delegation.Partners
			caller *sidecar.Identity
		}{{pa, cora}, {pb, cora2}} {
			wg.Go(func() {
				<-start
				approveInto(ctx, on.p, on.caller, r.ID, answers)
			})
		}
		close(start)
		wg.Wait()
		close(answers)
		var shown []string
		for ans := range answers {
			if ans.err != nil {
				wantCode(t, ans.err, sidecar.ECONFLICT, "request_already_approved")
				continue
			}
			if got := grantIDsOf(ans.grants); !slices.Equal(got, want) {
				t.Fatalf("round %d: an approval answered %v, want %v", round, got, want)
			}
			shown = append(shown, ans.grants[0].ID)
		}
		if len(shown) == 0 {
			t.Fatalf("round %d: neither approval succeeded", round)
		}
		if e, err := b.EffectiveGrants(ctx, "acme", "partnerco", ""); err != nil || e.Organisation == nil || e.Organisation.ID != want[0] {
			t.Fatalf("round %d: the grant stored is %+v (%v), want %s", round, e.Organisation, err, want[0])
		}
		partnerEventually(t, "the approval on replica b", func() bool { return resolvedLevel(resolverB, patUser, "acme") == "create" })
		if g, err := pa.Revoke(ctx, cora, "acme", shown[len(shown)-1], allowAll); err != nil || g == nil {
			t.Fatalf("round %d: revoking %s: %+v (%v), want it revoked", round, shown[len(shown)-1], g, err)
		}
		partnerEventually(t, "the revocation on replica b", func() bool { return resolvedLevel(resolverB, patUser, "acme") == "no_live_grant" })
		wantRecordedOnce(t, a, r.ID, "")
	}
}

// Two approvals of an older request race a later request's approval for
// the same user (the partner asked again with another level): the later
// decision stands, both older approvals answer grant_superseded, the
// older approval is audited once and announces no grant, and revoking the
// id the older request makes leaves the later grant alone, answered 409
// naming it.
func TestApprovalsOfOneRequestRacingALaterRequest(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			store, p := hookedPartners(t, env, "")
			older, err := p.Request(ctx, patUser, individualRequest(sidecar.LevelFullAdmin, 30, "pat"), allowAll)
			if err != nil {
				t.Fatal(err)
			}
			later, err := p.Request(ctx, patUser, individualRequest(sidecar.LevelCC, 30, "pat"), allowAll)
			if err != nil {
				t.Fatal(err)
			}
			store.hold("pat")
			answers := make(chan approval, 1)
			go approveInto(ctx, p, cora, older.ID, answers)
			<-store.held // the older approval decided, its grant write held
			if _, _, err := p.Approve(ctx, cora, later.ID, allowAll); err != nil {
				t.Fatal(err)
			}
			_, _, err = p.Approve(ctx, cora2, older.ID, allowAll)
			if sidecar.ErrorReason(err) != sidecar.ReasonGrantSuperseded {
				t.Errorf("cora2's approval of the older request: %v, want %s", err, sidecar.ReasonGrantSuperseded)
			}
			close(store.release)
			if a := <-answers; sidecar.ErrorReason(a.err) != sidecar.ReasonGrantSuperseded {
				t.Errorf("cora's approval of the older request: %v (%v), want %s", grantIDsOf(a.grants), a.err, sidecar.ReasonGrantSuperseded)
			}
			wantGrant(t, store, "pat", later.ID, sidecar.LevelCC)
			if as := audited(t, env.store, "partner.approve", older.ID); len(as) != 1 {
				t.Errorf("older approval audited as %+v, want once", as)
			}
			for _, e := range events(t, env.store, sidecar.EventGrantApproved) {
				if e.Data["request_id"] == older.ID {
					t.Errorf("the older approval announced a grant it did not issue: %+v", e)
				}
			}
			g, err := p.Revoke(ctx, cora, "acme", delegation.GrantID(older.ID, "pat"), allowAll)
			if g != nil {
				t.Errorf("revoking the older request's grant id revoked %+v, want nothing revoked", g)
			}
			wantReplacedBy(t, err, delegation.GrantID(later.ID, "pat"))
			wantGrant(t, store, "pat", later.ID, sidecar.LevelCC)
		})
	}
}
