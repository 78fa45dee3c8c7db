package delegation_test

import (
	"context"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

// A revocation is effective at once, also against an approval decided
// before it and completed after it: pat's full_admin approval is cut
// before its grant is written, pat asks again for cc, acme approves and
// then revokes that, and the client retries the first approval. The
// retry must not give pat full_admin back; a request decided after the
// revocation is a new decision and stands.
func TestOlderApprovalRetryDoesNotUndoARevocation(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			store, p := hookedPartners(t, env, "pat")
			a, err := p.Request(ctx, patUser, individualRequest(sidecar.LevelFullAdmin, 30, "pat"), allowAll)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := p.Approve(ctx, cora, a.ID, allowAll); sidecar.ErrorCode(err) != sidecar.EUNAVAILABLE {
				t.Fatalf("approval of A with its grant write cut: %v, want %s", err, sidecar.EUNAVAILABLE)
			}
			env.clock.Advance(1e9)
			b, err := p.Request(ctx, patUser, individualRequest(sidecar.LevelCC, 30, "pat"), allowAll)
			if err != nil {
				t.Fatal(err)
			}
			_, gs, err := p.Approve(ctx, cora, b.ID, allowAll)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Revoke(ctx, cora, "acme", gs[0].ID, allowAll); err != nil {
				t.Fatal(err)
			}
			noGrant(t, store, "pat", gs[0].ID)

			_, _, err = p.Approve(ctx, cora, a.ID, allowAll) // the client retries A
			if sidecar.ErrorReason(err) != sidecar.ReasonGrantSuperseded {
				t.Errorf("retry of A after the revocation: %v, want %s", err, sidecar.ReasonGrantSuperseded)
			}
			noGrant(t, store, "pat", gs[0].ID)
			_, _, err = p.Approve(ctx, cora, a.ID, allowAll) // and again: A is done
			wantCode(t, err, sidecar.ECONFLICT, "request_already_approved")
			noGrant(t, store, "pat", gs[0].ID)

			c, err := p.Request(ctx, patUser, individualRequest(sidecar.LevelLook, 30, "pat"), allowAll)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := p.Approve(ctx, cora, c.ID, allowAll); err != nil {
				t.Fatalf("approval decided after the revocation: %v", err)
			}
			wantGrant(t, store, "pat", c.ID, sidecar.LevelLook)
		})
	}
}

// Asking again replaces the earlier grant once approved, in the order the
// approvals were decided: an approval of A (full_admin) held up before
// its grant write, while B (cc) is decided later and completes, must not
// overwrite B's grant when it is released. A request naming other users
// still issues theirs.
func TestSlowOlderApprovalDoesNotReplaceALaterOne(t *testing.T) {
	for _, ps := range partnerStores(t) {
		for _, tc := range []struct {
			name     string
			users    []string
			wantErr  string        // reason of A's answer, "" for success
			wantPaul sidecar.Level // paul's level after A, "" for none
		}{
			{"pat_only", []string{"pat"}, sidecar.ReasonGrantSuperseded, ""},
			{"pat_and_paul", []string{"pat", "paul"}, "", sidecar.LevelFullAdmin},
		} {
			t.Run(ps.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				env := newPartnerEnv(t, ps)
				store, p := hookedPartners(t, env, "")
				a, err := p.Request(ctx, patUser, individualRequest(sidecar.LevelFullAdmin, 30, tc.users...), allowAll)
				if err != nil {
					t.Fatal(err)
				}
				b, err := p.Request(ctx, patUser, individualRequest(sidecar.LevelCC, 30, "pat"), allowAll)
				if err != nil {
					t.Fatal(err)
				}
				store.hold("pat")
				done := make(chan error, 1)
				go func() { _, _, err := p.Approve(ctx, cora, a.ID, allowAll); done <- err }()
				<-store.held // A is decided, its grant for pat not written
				if _, _, err := p.Approve(ctx, cora, b.ID, allowAll); err != nil {
					t.Fatal(err)
				}
				close(store.release)
				err = <-done
				if got := sidecar.ErrorReason(err); (tc.wantErr == "") != (err == nil) || err != nil && got != tc.wantErr {
					t.Errorf("approval of A, released after B completed: %v, want %q", err, tc.wantErr)
				}
				wantGrant(t, store, "pat", b.ID, sidecar.LevelCC)
				if tc.wantPaul != "" {
					wantGrant(t, store, "paul", a.ID, tc.wantPaul)
				}
				if r, err := store.GetRequest(ctx, a.ID); err != nil || r.GrantsPending {
					t.Errorf("A after its approval: %+v %v, want its grants no longer pending", r, err)
				}
			})
		}
	}
}

// wantGrant fails unless user's individual grant at acme comes from
// request reqID with level.
func wantGrant(t *testing.T, store sidecar.Store, user, reqID string, level sidecar.Level) {
	t.Helper()
	e, err := store.EffectiveGrants(context.Background(), "acme", "partnerco", user)
	if err != nil {
		t.Fatal(err)
	}
	if g := e.Individual; g == nil || g.RequestID != reqID || g.Level != level {
		t.Errorf("%s's grant: %+v, want %s from request %s", user, g, level, reqID)
	}
}
