package delegation_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// A contact manager rejects a partner's access request; the decision's
// transaction runs in Redis but its reply is lost (503). The retry answers
// as the first rejection would have, and the rejection is recorded once: a
// partner.reject audit entry and a grant.rejected event for the partner's
// mailer.
func TestRejectRetriedAfterLostReplyIsRecordedOnce(t *testing.T) {
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	clock := storetest.NewClock(storetest.Epoch)
	ctx := context.Background()
	pat := &sidecar.Identity{Subject: "pat", Org: "globex"}
	mgr := &sidecar.Identity{Subject: "mgr", Org: "acme"}
	direct := directStore(t, srv.Addr, "lostreject", clock.Now)
	setup := delegation.NewPartners(direct, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))
	in := delegation.AccessRequestInput{Customer: "acme", ContactEmail: "mgr@acme.example", ExpiryDays: 30, Level: sidecar.LevelLook, Scope: sidecar.ScopeOrganisation}
	warm, err := setup.Request(ctx, pat, in, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	r, err := setup.Request(ctx, pat, in, allowAll)
	if err != nil {
		t.Fatal(err)
	}
	stall := &stallBeforeTx{t: t, srv: srv, stalled: make(chan error, 1)}
	stalling := stallingStore(t, srv, "lostreject", stall, clock.Now)
	rec := startedRecorder(t, stalling)
	p := delegation.NewPartners(stalling, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now), delegation.WithPartnerRecorder(rec))
	// Loads the decision's script, as any running Deputy has.
	if _, err := p.Reject(ctx, mgr, warm.ID, allowAll); err != nil {
		t.Fatal(err)
	}
	stall.armed.Store(true)
	_, err = p.Reject(ctx, mgr, r.ID, allowAll)
	wantLostReply(t, &stall.armed, stall.stalled, "Reject", err)
	if got, err := direct.GetRequest(ctx, r.ID); err != nil || got.Status != sidecar.RequestRejected {
		t.Fatalf("request after the stall = %+v, %v; want rejected by the late write", got, err)
	}
	for range 2 {
		got, err := p.Reject(ctx, mgr, r.ID, allowAll)
		if err != nil || got.ID != r.ID || got.Status != sidecar.RequestRejected {
			t.Fatalf("Reject retried = %+v, %v; want the rejected request, as the first would have answered", got, err)
		}
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	audit, _, err := direct.ReadAudit(ctx, sidecar.StreamFilter{Type: "partner.reject", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range audit {
		if a.Target == r.ID {
			n++
			if a.Actor != mgr.Subject {
				t.Errorf("rejection recorded as %s's, want %s's", a.Actor, mgr.Subject)
			}
		}
	}
	e := 0
	for _, ev := range events(t, direct, sidecar.EventGrantRejected) {
		if ev.Data["request_id"] == r.ID {
			e++
		}
	}
	if n != 1 || e != 1 {
		t.Errorf("request %s rejected; audit holds %d partner.reject entries and events %d grant.rejected, want 1 and 1", r.ID, n, e)
	}
}

// A rejection is answered again as a retry only to the manager who made
// it, and only while the store can still tell whether its records got
// through: another manager, or the same one much later, is told the
// request was rejected already.
func TestRejectOfARejectedRequestConflicts(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			env := newPartnerEnv(t, ps)
			ctx := context.Background()
			r, err := env.partners.Request(ctx, patUser, orgRequest(sidecar.LevelLook, 30), allowAll)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := env.partners.Reject(ctx, cora, r.ID, allowAll); err != nil {
				t.Fatal(err)
			}
			other := &sidecar.Identity{Subject: "carl", Org: cora.Org}
			_, err = env.partners.Reject(ctx, other, r.ID, allowAll)
			wantCode(t, err, sidecar.ECONFLICT, "request_already_rejected")
			env.clock.Advance(sidecar.AppendOnceWindow)
			_, err = env.partners.Reject(ctx, cora, r.ID, allowAll)
			wantCode(t, err, sidecar.ECONFLICT, "request_already_rejected")
			if got := len(events(t, env.store, sidecar.EventGrantRejected)); got != 1 {
				t.Errorf("one rejection; events hold %d grant.rejected, want 1", got)
			}
		})
	}
}

// A contact manager withdraws a share from a cc-level partner user; the
// withdrawal's script runs in Redis but its reply is lost (503). The
// retry finds no share, answers success, and records the withdrawal as
// the manager's, once however often it is retried, with or without naming
// the partner organisation.
func TestUnshareRetriedAfterLostReplyIsRecordedOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		retry delegation.ShareInput
	}{
		{"same_withdrawal", delegation.ShareInput{Resource: "SR-1", User: "pat", PartnerOrg: "globex"}},
		{"from_every_organisation", delegation.ShareInput{Resource: "SR-1", User: "pat"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t, "--enable-debug-command", "yes")
			clock := storetest.NewClock(storetest.Epoch)
			ctx := context.Background()
			mgr := &sidecar.Identity{Subject: "mgr", Org: "acme"}
			direct := directStore(t, srv.Addr, "lostunshare", clock.Now)
			setup := delegation.NewPartners(direct, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))
			for _, res := range []string{"SR-1", "SR-warm"} {
				if _, err := setup.Share(ctx, mgr, "acme", delegation.ShareInput{Resource: res, User: "pat", PartnerOrg: "globex"}, allowAll); err != nil {
					t.Fatal(err)
				}
			}
			stall := &stallBeforeScript{t: t, srv: srv, keyPart: "shares", stalled: make(chan error, 1)}
			stalling := stallingStore(t, srv, "lostunshare", stall, clock.Now)
			rec := startedRecorder(t, stalling)
			p := delegation.NewPartners(stalling, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now), delegation.WithPartnerRecorder(rec))
			// Loads the withdrawal's script, as any running Deputy has.
			if err := p.Unshare(ctx, mgr, "acme", delegation.ShareInput{Resource: "SR-warm", User: "pat", PartnerOrg: "globex"}, allowAll); err != nil {
				t.Fatal(err)
			}
			stall.armed.Store(true)
			err := p.Unshare(ctx, mgr, "acme", delegation.ShareInput{Resource: "SR-1", User: "pat", PartnerOrg: "globex"}, allowAll)
			wantLostReply(t, &stall.armed, stall.stalled, "Unshare", err)
			if ok, err := direct.IsShared(ctx, "acme", "SR-1", "globex", "pat"); err != nil || ok {
				t.Fatalf("share after the stall: %v %v; want it deleted by the late write", ok, err)
			}
			clock.Advance(time.Minute)
			for range 2 {
				if err := p.Unshare(ctx, mgr, "acme", tc.retry, allowAll); err != nil {
					t.Fatalf("Unshare retried: %v", err)
				}
			}
			partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
			audit, _, err := direct.ReadAudit(ctx, sidecar.StreamFilter{Type: "share.delete", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, a := range audit {
				if a.Target == "SR-1" {
					n++
					if a.Actor != mgr.Subject || a.Data["partner_org"] != "globex" || a.Data["user"] != "pat" {
						t.Errorf("withdrawal recorded as %+v", a)
					}
				}
			}
			if n != 1 {
				t.Errorf("the share of SR-1 was withdrawn; audit holds %d share.delete entries for it, want 1", n)
			}
		})
	}
}

// A withdrawal retried after the store stopped telling whether its
// records got through (sidecar.AppendOnceWindow) records nothing: it
// could only record the withdrawal twice.
func TestUnshareRetriedLateIsNotRecordedAgain(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			env := newPartnerEnv(t, ps)
			ctx := context.Background()
			in := delegation.ShareInput{Resource: "SR-1", User: "pat", PartnerOrg: "partnerco"}
			if _, err := env.partners.Share(ctx, cora, "acme", in, allowAll); err != nil {
				t.Fatal(err)
			}
			if err := env.partners.Unshare(ctx, cora, "acme", in, allowAll); err != nil {
				t.Fatal(err)
			}
			env.clock.Advance(sidecar.AppendOnceWindow)
			if err := env.partners.Unshare(ctx, cora, "acme", in, allowAll); err != nil {
				t.Fatal(err)
			}
			audit, _, err := env.store.ReadAudit(ctx, sidecar.StreamFilter{Type: "share.delete", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
			if err != nil {
				t.Fatal(err)
			}
			if len(audit) != 1 {
				t.Errorf("one withdrawal, retried late; audit holds %d share.delete entries, want 1", len(audit))
			}
		})
	}
}

// Cora shares SR-1 with pat; the share's write runs in Redis but its
// reply is lost (503). Cora retries, which succeeds, and another replica's
// sweep reads the first write back. One share was asked for: it is
// recorded once, as the retry carries the first write's SharedAt and so
// its Once.
func TestShareRetriedAfterLostReplyIsRecordedOnce(t *testing.T) {
	srv := redistest.Start(t, "--enable-debug-command", "yes")
	clock := storetest.NewClock(storetest.Epoch)
	ctx := context.Background()
	direct := directStore(t, srv.Addr, "lostshare", clock.Now)
	stall := &stallBeforeScript{t: t, srv: srv, keyPart: "{cust:acme}:shares:kept", stalled: make(chan error, 1)}
	stalling := stallingStore(t, srv, "lostshare", stall, clock.Now)
	rec := startedRecorder(t, stalling)
	p := delegation.NewPartners(stalling, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now), delegation.WithPartnerRecorder(rec))
	// Loads the share's script, as any running Deputy has.
	if _, err := p.Share(ctx, cora, "acme", delegation.ShareInput{Resource: "SR-0", User: "pat", PartnerOrg: "partnerco"}, allowAll); err != nil {
		t.Fatal(err)
	}
	stall.armed.Store(true)
	_, err := p.Share(ctx, cora, "acme", sharedSR1, allowAll)
	wantLostReply(t, &stall.armed, stall.stalled, "Share", err)
	clock.Advance(time.Second)
	sh, err := p.Share(ctx, cora, "acme", sharedSR1, allowAll)
	if err != nil {
		t.Fatalf("Share retried: %v", err)
	}
	partnerEventually(t, "the recorder to append what waited", func() bool { return rec.Pending() == 0 })
	other := delegation.NewPartners(direct, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))
	must(t, other.RecordAgain(ctx))
	if n := len(audited(t, direct, "share.put", "SR-1")); n != 1 {
		t.Errorf("one share of SR-1, retried after a lost reply; audit holds %d share.put entries, want 1", n)
	}
	if want := clock.Now().Add(-time.Second); !sh.SharedAt.Equal(want) {
		t.Errorf("retried share answered as shared at %v, want the first write's %v", sh.SharedAt, want)
	}
}

// A share that is not the same write as the one stored is a new write,
// recorded as one: by another sharer, to another user or partner
// organisation, after a withdrawal, or once the store no longer tells
// whether the first was recorded (sidecar.AppendOnceWindow). The same
// share by the same sharer within the window is recorded once, and the
// store keeps nothing new.
func TestShareAgainIsANewWriteUnlessTheSame(t *testing.T) {
	dora := &sidecar.Identity{Subject: "dora", Org: "acme"}
	for _, ps := range partnerStores(t) {
		for _, tc := range []struct {
			name  string
			again func(ctx context.Context, t *testing.T, p *delegation.Partners, clock *partnerClock)
			want  int // share.put entries
			kept  int // shares as put the store keeps
		}{
			{"same sharer and share", func(ctx context.Context, t *testing.T, p *delegation.Partners, clock *partnerClock) {
				clock.Advance(time.Minute)
				mustShare(ctx, t, p, cora, sharedSR1)
			}, 1, 1},
			{"another sharer", func(ctx context.Context, t *testing.T, p *delegation.Partners, clock *partnerClock) {
				clock.Advance(time.Minute)
				mustShare(ctx, t, p, dora, sharedSR1)
			}, 2, 2},
			{"another user", func(ctx context.Context, t *testing.T, p *delegation.Partners, clock *partnerClock) {
				clock.Advance(time.Minute)
				mustShare(ctx, t, p, cora, delegation.ShareInput{Resource: "SR-1", User: "sam", PartnerOrg: "partnerco"})
			}, 2, 2},
			{"another partner organisation", func(ctx context.Context, t *testing.T, p *delegation.Partners, clock *partnerClock) {
				clock.Advance(time.Minute)
				mustShare(ctx, t, p, cora, delegation.ShareInput{Resource: "SR-1", User: "pat", PartnerOrg: "otherco"})
			}, 2, 2},
			{"after a withdrawal", func(ctx context.Context, t *testing.T, p *delegation.Partners, clock *partnerClock) {
				clock.Advance(time.Minute)
				must(t, p.Unshare(ctx, cora, "acme", sharedSR1, allowAll))
				clock.Advance(time.Minute)
				mustShare(ctx, t, p, cora, sharedSR1)
			}, 2, 2},
			{"past the window", func(ctx context.Context, t *testing.T, p *delegation.Partners, clock *partnerClock) {
				clock.Advance(sidecar.AppendOnceWindow)
				mustShare(ctx, t, p, cora, sharedSR1)
			}, 2, 1}, // the first is past the window
		} {
			t.Run(ps.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				clock := newPartnerClock()
				s := ps.open(t, clock.Now)
				p := delegation.NewPartners(s, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now))
				start := clock.Now()
				mustShare(ctx, t, p, cora, sharedSR1)
				tc.again(ctx, t, p, clock)
				must(t, delegation.NewPartners(s, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(clock.Now)).RecordAgain(ctx))
				if n := len(audited(t, s, "share.put", "SR-1")); n != tc.want {
					t.Errorf("audit holds %d share.put entries, want %d", n, tc.want)
				}
				kept, err := s.SharesChanged(ctx, start)
				must(t, err)
				puts := 0
				for _, sh := range kept {
					if sh.RemovedAt.IsZero() {
						puts++
					}
				}
				if puts != tc.kept {
					t.Errorf("store keeps %d shares as put, want %d", puts, tc.kept)
				}
			})
		}
	}
}

func mustShare(ctx context.Context, t *testing.T, p *delegation.Partners, by *sidecar.Identity, in delegation.ShareInput) {
	t.Helper()
	if _, err := p.Share(ctx, by, "acme", in, allowAll); err != nil {
		t.Fatal(err)
	}
}
