package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// pastAnyScan is more records than a store examines in one read (the
// Redis store stops at ten full pages): a filtered list that walks this
// many non-matching records to reach a match must say it stopped.
const pastAnyScan = 10*sidecar.MaxPageLimit + 1

// testLongLists: a filtered list whose matches lie behind more
// non-matching records than a store examines in one read still reaches
// them by following the cursor. A store may answer a short, even empty,
// page with a cursor; a page without one is the last, so a client that
// stops there must have every match (the live-session list is ops' view
// of who acts as a customer now).
func testLongLists(t *testing.T, newEnv func(*testing.T) *env) {
	t.Run("live_sessions", func(t *testing.T) {
		e := newEnv(t)
		started := e.now()
		must(t, begin(e, newSession(e, "live", "mallory", "victim")))
		// Newer sessions of other staff, each lapsed before the list is read.
		for i := range pastAnyScan {
			e.clock.Advance(time.Millisecond)
			s := newSession(e, fmt.Sprintf("busy%05d", i), fmt.Sprintf("agent%d", i%50), "busy")
			s.ExpiresAt = e.now().Add(time.Millisecond)
			must(t, begin(e, s))
		}
		e.clock.Advance(time.Second)
		for _, f := range []sidecar.SessionFilter{
			{LiveOnly: true},
			{LiveOnly: true, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}},
			{LiveOnly: true, Page: sidecar.Page{Limit: 1}},
			{LiveOnly: true, From: started},
		} {
			got := followSessions(t, e, f)
			if !slices.Equal(got, []string{"live"}) {
				t.Errorf("%+v: listed %v, want [live]", f, got)
			}
		}
	})
	t.Run("access_requests", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.CreateRequest(e.ctx, newRequest(e, "old", "p1", "acme")))
		for i := range pastAnyScan {
			e.clock.Advance(time.Millisecond)
			must(t, e.s.CreateRequest(e.ctx, newRequest(e, fmt.Sprintf("r%05d", i), "p2", "acme")))
		}
		f := sidecar.RequestFilter{Customer: "acme", PartnerOrg: "p1", Status: sidecar.RequestPending}
		var got []string
		for pages := 0; ; pages++ {
			rs, next, err := e.s.ListRequests(e.ctx, f)
			must(t, err)
			for _, r := range rs {
				got = append(got, r.ID)
			}
			if next == "" {
				break
			}
			if pages > pastAnyScan/sidecar.DefaultPageLimit {
				t.Fatal("cursor does not advance")
			}
			f.Cursor = next
		}
		if !slices.Equal(got, []string{"old"}) {
			t.Errorf("listed %v, want [old]", got)
		}
	})
}

// followSessions reads every page f selects, following the cursor.
func followSessions(t *testing.T, e *env, f sidecar.SessionFilter) []string {
	t.Helper()
	var ids []string
	for pages := 0; ; pages++ {
		got, next, err := e.s.ListSessions(e.ctx, f)
		must(t, err)
		ids = append(ids, sessionIDs(got)...)
		if next == "" {
			return ids
		}
		if pages > pastAnyScan {
			t.Fatal("cursor does not advance")
		}
		f.Cursor = next
	}
}
