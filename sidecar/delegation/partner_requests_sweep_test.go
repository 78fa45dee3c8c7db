package delegation_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// sharedSR1 is a share of SR-1 with pat of partnerco.
var sharedSR1 = delegation.ShareInput{Resource: "SR-1", User: "pat", PartnerOrg: "partnerco"}

// requestAndShareRecords counts what the trail and the events stream hold
// of access request id and of SR-1's shares: the request's audit entries
// and grant.requested events, SR-1's share.put and share.delete entries.
type requestAndShareRecords struct{ requestAudit, requestEvents, sharePut, shareDelete int }

func requestAndShareRecordsOf(t *testing.T, s sidecar.Store, id string) requestAndShareRecords {
	t.Helper()
	var r requestAndShareRecords
	r.requestAudit, r.requestEvents = partnerRecords(t, s, "partner.request", sidecar.EventGrantRequested, "request_id", id)
	r.sharePut = len(audited(t, s, "share.put", sharedSR1.Resource))
	r.shareDelete = len(audited(t, s, "share.delete", sharedSR1.Resource))
	return r
}

// An access request is created, and SR-1 shared with pat and withdrawn,
// while the node of the audit and events streams refuses writes (or the
// store is lost after each change): each change is committed, and its
// records wait in the replica's queue, which is lost when it stops. The
// contact manager was never asked about the request. Once the streams
// take writes again, the next sweep of another replica (one that swept
// before, or a fresh one) records each change once: the grant.requested
// event the customer's mailer asks the contact manager by, the request's
// audit entry, the share and its withdrawal, each as its maker's. Later
// sweeps, of any replica, append nothing more.
func TestPartnerRequestsAndSharesRefusedAreRecordedBySweeps(t *testing.T) {
	refusedSweepCases(t, func(t *testing.T, _ string, clock *partnerClock, rs streamsRefused, sweptBefore bool) {
		ctx := context.Background()
		store := rs.store
		replica := func(s sidecar.Store, rec *delegation.Recorder) *delegation.Partners {
			return delegation.NewPartners(s, shippedData(t), delegation.PartnerConfig{},
				delegation.WithPartnerClock(clock.Now), delegation.WithPartnerRecorder(rec))
		}
		b := replica(store, delegation.NewRecorder(store, nil))
		if sweptBefore {
			must(t, b.RecordAgain(ctx))
		}
		clock.Advance(time.Minute)

		rs.refuse()
		rec := delegation.NewRecorder(rs.replica, nil)
		must(t, rec.Start(ctx))
		a := replica(rs.replica, rec)
		r, err := a.Request(ctx, patUser, orgRequest(sidecar.LevelLook, 30), allowAll)
		if r == nil || err == nil {
			t.Fatalf("request with the events stream refusing writes answered %+v, %v; want the request stored and the event's failure", r, err)
		}
		if _, err := a.Share(ctx, cora, "acme", sharedSR1, allowAll); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Second)
		if err := a.Unshare(ctx, cora, "acme", sharedSR1, allowAll); err != nil {
			t.Fatal(err)
		}
		if rec.Pending() == 0 {
			t.Fatal("no audit entry waits for the refusing stream")
		}
		stopped, cancel := context.WithCancel(ctx)
		cancel()
		if err := rec.Stop(stopped); err == nil {
			t.Fatal("stopping with audit entries queued answered no error")
		}
		if _, err := store.GetRequest(ctx, r.ID); err != nil {
			t.Fatalf("request not stored: %v", err)
		}
		clock.Advance(2 * delegation.RecordInterval)
		rs.accept()
		if got := requestAndShareRecordsOf(t, store, r.ID); got != (requestAndShareRecords{}) {
			t.Fatalf("recorded while refused: %+v", got)
		}

		must(t, b.RecordAgain(ctx))
		want := requestAndShareRecords{1, 1, 1, 1}
		if got := requestAndShareRecordsOf(t, store, r.ID); got != want {
			t.Fatalf("after b's sweep: %+v, want %+v", got, want)
		}
		for range 2 {
			clock.Advance(time.Minute)
			for _, p := range []*delegation.Partners{b, replica(store, delegation.NewRecorder(store, nil))} {
				must(t, p.RecordAgain(ctx))
			}
		}
		if got := requestAndShareRecordsOf(t, store, r.ID); got != want {
			t.Fatalf("after later sweeps: %+v, want %+v", got, want)
		}
		es := events(t, store, sidecar.EventGrantRequested)
		if len(es) != 1 || es[0].Actor != patUser.Subject || es[0].Data["to"] != "cora@acme.example" || es[0].Data["request_id"] != r.ID {
			t.Errorf("grant.requested events %+v, want one from pat asking cora@acme.example", es)
		}
		for _, action := range []string{"share.put", "share.delete"} {
			if as := audited(t, store, action, "SR-1"); len(as) != 1 || as[0].Actor != cora.Subject || as[0].Data["user"] != "pat" {
				t.Errorf("%s audited as %+v, want once, by cora, for pat", action, as)
			}
		}
	})
}

// A request, a share and a withdrawal whose records got through are not
// recorded again by any sweep: the first sweep of a fresh replica reads
// back the whole hour, and finds each record's Once appended.
func TestPartnerRequestsAndSharesRecordedOnceAreNotRecordedAgain(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			r, err := env.partners.Request(ctx, patUser, orgRequest(sidecar.LevelLook, 30), allowAll)
			must(t, err)
			_, err = env.partners.Share(ctx, cora, "acme", sharedSR1, allowAll)
			must(t, err)
			env.clock.Advance(time.Second)
			must(t, env.partners.Unshare(ctx, cora, "acme", sharedSR1, allowAll))
			want := requestAndShareRecords{1, 1, 1, 1}
			if got := requestAndShareRecordsOf(t, env.store, r.ID); got != want {
				t.Fatalf("recorded %+v, want %+v", got, want)
			}
			fresh := delegation.NewPartners(env.store, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(env.clock.Now))
			for range 2 {
				env.clock.Advance(time.Minute)
				for _, p := range []*delegation.Partners{env.partners, fresh} {
					must(t, p.RecordAgain(ctx))
				}
			}
			if got := requestAndShareRecordsOf(t, env.store, r.ID); got != want {
				t.Fatalf("after sweeps: %+v, want %+v", got, want)
			}
		})
	}
}

// markingCut is a replica cut off from the store the moment it would
// mark an approval recorded: its grants are stored, the approval not
// marked, and its records never appended.
type markingCut struct{ appendsLost }

func (markingCut) RecordApproval(context.Context, string) (bool, error) {
	return false, sidecar.Unavailable("store unreachable", nil)
}

// An approval whose call is cut before it marks the approval recorded,
// and which the contact manager never retries, leaves pat's grant live
// with no record of it. Within delegation.ApprovalGrace of the decision
// the sweep leaves it to the call (which may still be completing it);
// past it, the sweep marks it recorded and records it once, as cora's,
// naming the grant's user. Later sweeps, and the contact manager's
// retry, record nothing more.
func TestPartnerApprovalCutBeforeMarkedIsRecordedBySweep(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			r, err := env.partners.Request(ctx, patUser, individualRequest(sidecar.LevelLook, 30, "pat"), allowAll)
			must(t, err)
			must(t, env.partners.RecordAgain(ctx))
			cut := delegation.NewPartners(markingCut{appendsLost{env.store}}, shippedData(t), delegation.PartnerConfig{},
				delegation.WithPartnerClock(env.clock.Now))
			if _, _, err := cut.Approve(ctx, cora, r.ID, allowAll); err == nil {
				t.Fatal("approval cut before its marking answered no error")
			}
			if g, err := env.partners.Effective(ctx, "acme", "partnerco", "pat"); err != nil || g == nil {
				t.Fatalf("pat's grant not live after the cut approval: %+v, %v", g, err)
			}
			approvals := func() (int, int) {
				return partnerRecords(t, env.store, "partner.approve", sidecar.EventGrantApproved, "request_id", r.ID)
			}
			env.clock.Advance(delegation.ApprovalGrace / 2)
			must(t, env.partners.RecordAgain(ctx))
			if au, ev := approvals(); au+ev != 0 {
				t.Fatalf("within the grace the sweep recorded %d audit entries, %d events; want none", au, ev)
			}
			env.clock.Advance(delegation.ApprovalGrace)
			must(t, env.partners.RecordAgain(ctx))
			if au, ev := approvals(); au != 1 || ev != 1 {
				t.Fatalf("past the grace: %d audit entries, %d events; want one of each", au, ev)
			}
			wantRecordedOnce(t, env.store, r.ID, cora.Subject)
			es := events(t, env.store, sidecar.EventGrantApproved)
			if len(es) != 1 || es[0].Data["users"] != "pat" {
				t.Errorf("approval announced as %+v, want for pat", es)
			}
			fresh := delegation.NewPartners(env.store, shippedData(t), delegation.PartnerConfig{}, delegation.WithPartnerClock(env.clock.Now))
			for range 2 {
				env.clock.Advance(time.Minute)
				for _, p := range []*delegation.Partners{env.partners, fresh} {
					must(t, p.RecordAgain(ctx))
				}
			}
			if _, gs, err := env.partners.Approve(ctx, cora, r.ID, allowAll); err != nil || len(gs) != 1 {
				t.Fatalf("cora's retry answered %+v, %v; want pat's grant", gs, err)
			}
			if au, ev := approvals(); au != 1 || ev != 1 {
				t.Fatalf("after later sweeps and the retry: %d audit entries, %d events; want one of each", au, ev)
			}
		})
	}
}
