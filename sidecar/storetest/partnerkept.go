package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// testPartnerChangesKept: every decision on an access request, every
// approval marked recorded and every revocation of a grant is kept, as
// it now stands, for sidecar.AppendOnceWindow, where any replica reads it
// back: their records are appended after the change, and a process that
// stops, or loses the streams' node, before they are leaves the change
// with no record.
func testPartnerChangesKept(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	day := 24 * time.Hour
	start := e.now()
	for _, id := range []string{"r1", "r2", "r3"} {
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, id, "p1", "acme")))
	}
	kept, err := e.peer.RequestsDecided(e.ctx, start)
	must(t, err)
	if len(kept) != 0 {
		t.Fatalf("nothing decided; kept %v", requestStates(kept))
	}
	_, err = e.s.DecideRequest(e.ctx, "r1", sidecar.RequestApproved, "boss", e.now())
	must(t, err)
	e.clock.Advance(10 * time.Minute)
	second := e.now()
	_, err = e.s.DecideRequest(e.ctx, "r2", sidecar.RequestRejected, "boss", e.now())
	must(t, err)
	kept, err = e.peer.RequestsDecided(e.ctx, start)
	must(t, err)
	if got := requestStates(kept); !slices.Equal(got, []string{"r1:approved", "r2:rejected"}) {
		t.Fatalf("kept %v, want r1 approved, then r2 rejected", got)
	}
	kept, err = e.peer.RequestsDecided(e.ctx, second)
	must(t, err)
	if got := requestStates(kept); !slices.Equal(got, []string{"r2:rejected"}) {
		t.Fatalf("decided since r2's decision: %v, want r2", got)
	}
	// Marking r1's approval recorded keeps it again, at the marking: once.
	e.clock.Advance(time.Second)
	third := e.now()
	first, err := e.s.RecordApproval(e.ctx, "r1")
	must(t, err)
	if !first {
		t.Fatal("r1's approval marked recorded before")
	}
	kept, err = e.peer.RequestsDecided(e.ctx, start)
	must(t, err)
	if got := requestStates(kept); !slices.Equal(got, []string{"r2:rejected", "r1:approved"}) {
		t.Fatalf("kept %v, want r2, then r1 at its marking", got)
	}
	if !kept[1].ApprovalRecorded || kept[1].DecidedBy != "boss" {
		t.Fatalf("r1 kept as %+v, want it as it stands: approved by boss, marked recorded", kept[1])
	}
	kept, err = e.peer.RequestsDecided(e.ctx, third)
	must(t, err)
	if got := requestStates(kept); !slices.Equal(got, []string{"r1:approved"}) {
		t.Fatalf("kept since the marking %v, want r1", got)
	}

	// Revocations, as revoked, with who revoked.
	revs, err := e.peer.GrantsRevoked(e.ctx, start)
	must(t, err)
	if len(revs) != 0 {
		t.Fatalf("nothing revoked; kept %+v", revs)
	}
	for _, u := range []string{"pat", "sam"} {
		must(t, e.s.PutGrant(e.ctx, grant(e, "g-"+u, "acme", "p1", u, sidecar.LevelLook, 30*day)))
	}
	_, err = e.s.RevokeGrant(e.ctx, "acme", "g-pat", "boss", "acme")
	must(t, err)
	e.clock.Advance(time.Minute)
	fourth := e.now()
	_, err = e.s.RevokeGrant(e.ctx, "acme", "g-sam", "pat", "p1")
	must(t, err)
	_, err = e.s.RevokeGrant(e.ctx, "acme", "g-none", "pat", "p1")
	wantCode(t, err, sidecar.ENOTFOUND)
	type rev struct{ id, by, org string }
	revsOf := func(gs []sidecar.Grant) []rev {
		out := make([]rev, len(gs))
		for i, g := range gs {
			out[i] = rev{g.ID, g.RevokedBy, g.RevokedByOrg}
		}
		return out
	}
	revs, err = e.peer.GrantsRevoked(e.ctx, start)
	must(t, err)
	if got := revsOf(revs); !slices.Equal(got, []rev{{"g-pat", "boss", "acme"}, {"g-sam", "pat", "p1"}}) {
		t.Fatalf("kept %+v, want g-pat by boss, then g-sam by pat", got)
	}
	if revs[1].RevokedAt.IsZero() || revs[1].User != "sam" {
		t.Fatalf("g-sam kept as %+v, want it as revoked", revs[1])
	}
	revs, err = e.peer.GrantsRevoked(e.ctx, fourth)
	must(t, err)
	if got := revsOf(revs); !slices.Equal(got, []rev{{"g-sam", "pat", "p1"}}) {
		t.Fatalf("revoked since g-sam's revocation: %+v, want g-sam", got)
	}
	// An hour after r1's decision and r2's, only r1's marking is kept; an
	// hour after the first revocation, only the second.
	e.clock.Advance(sidecar.AppendOnceWindow - time.Minute - time.Second)
	kept, err = e.peer.RequestsDecided(e.ctx, start)
	must(t, err)
	if got := requestStates(kept); !slices.Equal(got, []string{"r1:approved"}) {
		t.Fatalf("an hour after r2's decision kept %v, want r1 (marked later)", got)
	}
	e.clock.Advance(time.Second)
	revs, err = e.peer.GrantsRevoked(e.ctx, start)
	must(t, err)
	if got := revsOf(revs); !slices.Equal(got, []rev{{"g-sam", "pat", "p1"}}) {
		t.Fatalf("an hour after g-pat's revocation kept %+v, want g-sam", got)
	}
	e.clock.Advance(time.Minute)
	kept, err = e.peer.RequestsDecided(e.ctx, start)
	must(t, err)
	revs, err2 := e.peer.GrantsRevoked(e.ctx, start)
	must(t, err2)
	if len(kept)+len(revs) != 0 {
		t.Fatalf("past the window kept %v and %+v", requestStates(kept), revsOf(revs))
	}
}

// testRequestsAndSharesKept: every access request created and every
// share put or withdrawn is kept, as created, put or removed, for
// sidecar.AppendOnceWindow, where any replica reads it back: the grant
// request's event and the shares' audit entries are appended after the
// change, and a process that stops, or loses the streams' node, before
// they are leaves the change with no record.
func testRequestsAndSharesKept(t *testing.T, newEnv func(*testing.T) *env) {
	t.Run("requests", func(t *testing.T) {
		e := newEnv(t)
		start := e.now()
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "r1", "p1", "acme")))
		e.clock.Advance(10 * time.Minute)
		second := e.now()
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "r2", "p1", "globex")))
		wantCode(t, e.s.CreateRequest(e.ctx, newRequest(e, "r1", "p2", "acme")), sidecar.ECONFLICT)
		_, err := e.s.DecideRequest(e.ctx, "r1", sidecar.RequestRejected, "boss", e.now())
		must(t, err)
		kept, err := e.peer.RequestsCreated(e.ctx, start)
		must(t, err)
		if got := requestStates(kept); !slices.Equal(got, []string{"r1:rejected", "r2:pending"}) {
			t.Fatalf("kept %v, want r1 as it stands (rejected), then r2", got)
		}
		if kept[0].PartnerOrg != "p1" || kept[0].ContactEmail != "boss@acme" {
			t.Fatalf("r1 kept as %+v, want the request as created (p1's), not the refused duplicate", kept[0])
		}
		kept, err = e.peer.RequestsCreated(e.ctx, second)
		must(t, err)
		if got := requestStates(kept); !slices.Equal(got, []string{"r2:pending"}) {
			t.Fatalf("created since r2: %v, want r2", got)
		}
		e.clock.Advance(sidecar.AppendOnceWindow - 10*time.Minute)
		kept, err = e.peer.RequestsCreated(e.ctx, start)
		must(t, err)
		if got := requestStates(kept); !slices.Equal(got, []string{"r2:pending"}) {
			t.Fatalf("an hour after r1 kept %v, want r2", got)
		}
		e.clock.Advance(10 * time.Minute)
		kept, err = e.peer.RequestsCreated(e.ctx, start)
		must(t, err)
		if len(kept) != 0 {
			t.Fatalf("past the window kept %v", requestStates(kept))
		}
	})
	t.Run("shares", func(t *testing.T) {
		e := newEnv(t)
		start := e.now()
		type change struct{ customer, resource, by string }
		of := func(shs []sidecar.Share) []change {
			out := make([]change, len(shs))
			for i, sh := range shs {
				by := "put by " + sh.SharedBy
				if !sh.RemovedAt.IsZero() {
					by = "removed by " + sh.RemovedBy
				}
				out[i] = change{sh.Customer, sh.Resource, by}
			}
			return out
		}
		put := func(customer, resource string) {
			t.Helper()
			must(t, ignore(e.s.PutShare(e.ctx, &sidecar.Share{Customer: customer, Resource: resource, User: "pat", PartnerOrg: "p1", SharedBy: "boss", SharedAt: e.now()})))
		}
		put("acme", "SR-1")
		put("acme", "SR-1") // the same write again, as a retry makes it: kept once
		e.clock.Advance(time.Minute)
		put("globex", "SR-9")
		e.clock.Advance(time.Minute)
		second := e.now()
		must(t, ignore(e.s.DeleteShare(e.ctx, "acme", "SR-1", "p1", "pat", "cora")))
		wantCode(t, ignore(e.s.DeleteShare(e.ctx, "acme", "SR-2", "p1", "pat", "cora")), sidecar.ENOTFOUND)
		kept, err := e.peer.SharesChanged(e.ctx, start)
		must(t, err)
		want := []change{{"acme", "SR-1", "put by boss"}, {"globex", "SR-9", "put by boss"}, {"acme", "SR-1", "removed by cora"}}
		if got := of(kept); !slices.Equal(got, want) {
			t.Fatalf("kept %+v, want %+v", got, want)
		}
		if !kept[2].RemovedAt.Equal(second) || kept[2].SharedBy != "boss" || kept[2].PartnerOrg != "p1" {
			t.Fatalf("withdrawal kept as %+v, want the share as removed", kept[2])
		}
		kept, err = e.peer.SharesChanged(e.ctx, second)
		must(t, err)
		if got := of(kept); !slices.Equal(got, want[2:]) {
			t.Fatalf("changed since the withdrawal: %+v, want it alone", got)
		}
		e.clock.Advance(sidecar.AppendOnceWindow - 2*time.Minute)
		put("acme", "SR-3")
		kept, err = e.peer.SharesChanged(e.ctx, start)
		must(t, err)
		want = []change{{"globex", "SR-9", "put by boss"}, {"acme", "SR-1", "removed by cora"}, {"acme", "SR-3", "put by boss"}}
		if got := of(kept); !slices.Equal(got, want) {
			t.Fatalf("an hour after the first put kept %+v, want %+v", got, want)
		}
		e.clock.Advance(2 * time.Minute)
		kept, err = e.peer.SharesChanged(e.ctx, start)
		must(t, err)
		if got := of(kept); !slices.Equal(got, want[2:]) {
			t.Fatalf("past the window kept %+v, want the last put alone", got)
		}
	})
}

// requestStates names each request by its id and status ("r1:rejected").
func requestStates(rs []sidecar.AccessRequest) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID + ":" + r.Status
	}
	return out
}
