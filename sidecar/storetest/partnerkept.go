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
	ids := func(rs []sidecar.AccessRequest) []string {
		out := make([]string, len(rs))
		for i, r := range rs {
			out[i] = r.ID + ":" + r.Status
		}
		return out
	}
	for _, id := range []string{"r1", "r2", "r3"} {
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, id, "p1", "acme")))
	}
	kept, err := e.peer.RequestsDecided(e.ctx, start)
	must(t, err)
	if len(kept) != 0 {
		t.Fatalf("nothing decided; kept %v", ids(kept))
	}
	_, err = e.s.DecideRequest(e.ctx, "r1", sidecar.RequestApproved, "boss", e.now())
	must(t, err)
	e.clock.Advance(10 * time.Minute)
	second := e.now()
	_, err = e.s.DecideRequest(e.ctx, "r2", sidecar.RequestRejected, "boss", e.now())
	must(t, err)
	kept, err = e.peer.RequestsDecided(e.ctx, start)
	must(t, err)
	if got := ids(kept); !slices.Equal(got, []string{"r1:approved", "r2:rejected"}) {
		t.Fatalf("kept %v, want r1 approved, then r2 rejected", got)
	}
	kept, err = e.peer.RequestsDecided(e.ctx, second)
	must(t, err)
	if got := ids(kept); !slices.Equal(got, []string{"r2:rejected"}) {
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
	if got := ids(kept); !slices.Equal(got, []string{"r2:rejected", "r1:approved"}) {
		t.Fatalf("kept %v, want r2, then r1 at its marking", got)
	}
	if !kept[1].ApprovalRecorded || kept[1].DecidedBy != "boss" {
		t.Fatalf("r1 kept as %+v, want it as it stands: approved by boss, marked recorded", kept[1])
	}
	kept, err = e.peer.RequestsDecided(e.ctx, third)
	must(t, err)
	if got := ids(kept); !slices.Equal(got, []string{"r1:approved"}) {
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
	if got := ids(kept); !slices.Equal(got, []string{"r1:approved"}) {
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
		t.Fatalf("past the window kept %v and %+v", ids(kept), revsOf(revs))
	}
}
