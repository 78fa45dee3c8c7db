package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// testAssignmentChanges: a change applies only while the customer is still
// in the domain it was judged on, so two admins who both saw a customer
// unassigned cannot both claim it, and a removal judged in one domain
// cannot take the customer out of another.
func testAssignmentChanges(t *testing.T, newEnv func(*testing.T) *env) {
	assign := func(customer, domain string) *sidecar.Assignment {
		return &sidecar.Assignment{Customer: customer, Reseller: "r1", Domain: domain}
	}
	// domainOf is the customer's domain as read and as listed.
	domainOf := func(t *testing.T, e *env, customer string) string {
		t.Helper()
		a, err := e.s.GetAssignment(e.ctx, customer)
		if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
			a = &sidecar.Assignment{}
		} else {
			must(t, err)
		}
		for _, d := range []string{"eu.r1", "us.r1", "asia.r1"} {
			listed, _, err := e.s.AssignmentsByDomain(e.ctx, d, sidecar.Page{Limit: sidecar.MaxPageLimit})
			must(t, err)
			in := slices.ContainsFunc(listed, func(l sidecar.Assignment) bool { return l.Customer == customer })
			if in != (a.Domain == d) {
				t.Fatalf("%s is in %q but listed in %s: %v", customer, a.Domain, d, in)
			}
		}
		return a.Domain
	}
	change := func(t *testing.T, e *env, c sidecar.AssignmentChange) bool {
		t.Helper()
		conflicts, err := e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{c})
		must(t, err)
		return len(conflicts) == 0
	}

	t.Run("applies_only_from_the_domain_judged", func(t *testing.T) {
		steps := []struct {
			name    string
			from    string
			to      string // "" removes
			applied bool
			then    string
		}{
			{"claim_unassigned", "", "eu.r1", true, "eu.r1"},
			{"second_claim_of_unassigned", "", "us.r1", false, "eu.r1"},
			{"move_from_a_stale_domain", "us.r1", "asia.r1", false, "eu.r1"},
			{"remove_from_a_stale_domain", "us.r1", "", false, "eu.r1"},
			{"remove_as_unassigned", "", "", false, "eu.r1"},
			{"move_from_the_current_domain", "eu.r1", "us.r1", true, "us.r1"},
			{"put_again_in_the_current_domain", "us.r1", "us.r1", true, "us.r1"},
			{"remove_from_the_current_domain", "us.r1", "", true, ""},
			{"remove_again", "us.r1", "", false, ""},
			{"claim_after_removal", "", "asia.r1", true, "asia.r1"},
		}
		e := newEnv(t)
		for _, st := range steps {
			t.Run(st.name, func(t *testing.T) {
				c := sidecar.AssignmentChange{Customer: "c1", From: st.from}
				if st.to != "" {
					c.To = assign("c1", st.to)
				}
				if got := change(t, e, c); got != st.applied {
					t.Fatalf("applied = %v, want %v", got, st.applied)
				}
				if got := domainOf(t, e, "c1"); got != st.then {
					t.Fatalf("c1 is in %q, want %q", got, st.then)
				}
			})
		}
	})

	t.Run("bulk_reports_each_conflict_and_writes_none_of_them", func(t *testing.T) {
		e := newEnv(t)
		must(t, e.s.PutAssignment(e.ctx, assign("held", "eu.r1")))
		must(t, e.s.PutAssignment(e.ctx, assign("moved", "us.r1")))
		conflicts, err := e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{
			{Customer: "free", From: "", To: assign("free", "asia.r1")},
			{Customer: "moved", From: "eu.r1", To: assign("moved", "asia.r1")}, // judged before it moved to us
			{Customer: "held", From: "eu.r1", To: assign("held", "asia.r1")},
			{Customer: "taken", From: "us.r1", To: nil}, // judged before it was removed
		})
		must(t, err)
		if !slices.Equal(conflicts, []int{1, 3}) {
			t.Fatalf("conflicts = %v, want [1 3]", conflicts)
		}
		for c, want := range map[string]string{"free": "asia.r1", "moved": "us.r1", "held": "asia.r1", "taken": ""} {
			if got := domainOf(t, e, c); got != want {
				t.Errorf("%s is in %q, want %q", c, got, want)
			}
		}
	})

	t.Run("malformed_changes_write_nothing", func(t *testing.T) {
		cases := []struct {
			name, field string
			c           sidecar.AssignmentChange
		}{
			{"no_customer", "customer", sidecar.AssignmentChange{To: assign("c1", "eu.r1")}},
			{"assignment_of_another_customer", "customer", sidecar.AssignmentChange{Customer: "c1", To: assign("c2", "eu.r1")}},
			{"assignment_without_domain", "domain", sidecar.AssignmentChange{Customer: "c1", To: assign("c1", "")}},
			{"assignment_without_reseller", "reseller", sidecar.AssignmentChange{Customer: "c1", To: &sidecar.Assignment{Customer: "c1", Domain: "eu.r1"}}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t)
				_, err := e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{
					{Customer: "ok", To: assign("ok", "eu.r1")}, tc.c,
				})
				wantCode(t, err, sidecar.EINVALID)
				if sidecar.ErrorField(err) != tc.field {
					t.Fatalf("field = %q, want %q", sidecar.ErrorField(err), tc.field)
				}
				for _, c := range []string{"ok", "c1", "c2"} {
					if d := domainOf(t, e, c); d != "" {
						t.Fatalf("%s assigned to %s by a refused call", c, d)
					}
				}
			})
		}
	})

	// Ids that fold alike (sidecar.FoldID: letter case) are one customer:
	// an upstream that compares as MySQL's and MariaDB's *_ci collations
	// do acts on acme for every one of them. So no two domains can hold
	// variants of one id; the record keeps, and the listing shows, the
	// spelling last assigned.
	t.Run("variants_are_one_customer", func(t *testing.T) {
		e := newEnv(t)
		listed := func(t *testing.T, d string) []string {
			t.Helper()
			as, _, err := e.s.AssignmentsByDomain(e.ctx, d, sidecar.Page{Limit: sidecar.MaxPageLimit})
			must(t, err)
			var names []string
			for _, a := range as {
				names = append(names, a.Customer)
			}
			return names
		}
		if !change(t, e, sidecar.AssignmentChange{Customer: "acme", To: assign("acme", "eu.r1")}) {
			t.Fatal("claim of unassigned acme not applied")
		}
		for _, v := range []string{"ACME", "Acme", "aCmE"} {
			if change(t, e, sidecar.AssignmentChange{Customer: v, To: assign(v, "us.r1")}) {
				t.Fatalf("%q claimed as unassigned while acme is in eu.r1", v)
			}
			a, err := e.s.GetAssignment(e.ctx, v)
			if err != nil || a.Customer != "acme" || a.Domain != "eu.r1" {
				t.Fatalf("GetAssignment(%q) = %+v, %v; want acme in eu.r1", v, a, err)
			}
		}
		got, err := e.s.GetAssignments(e.ctx, []string{"ACME", "globex", "AcMe"})
		must(t, err)
		if len(got) != 3 || got[0] == nil || got[0].Customer != "acme" || got[1] != nil || got[2] == nil || got[2].Domain != "eu.r1" {
			t.Fatalf("GetAssignments = %+v, want acme, nil, acme", got)
		}
		if l := listed(t, "us.r1"); len(l) != 0 {
			t.Fatalf("us.r1 lists %v after refused claims", l)
		}
		// Respelled within its domain: one record, listed once, as respelled.
		if !change(t, e, sidecar.AssignmentChange{Customer: "ACME", From: "eu.r1", To: assign("ACME", "eu.r1")}) {
			t.Fatal("respelling within eu.r1 not applied")
		}
		if l := listed(t, "eu.r1"); !slices.Equal(l, []string{"ACME"}) {
			t.Fatalf("eu.r1 lists %v, want [ACME]", l)
		}
		// A bulk load moves it, whatever the spelling.
		must(t, e.s.PutAssignment(e.ctx, assign("Acme", "us.r1")))
		if l, m := listed(t, "eu.r1"), listed(t, "us.r1"); len(l) != 0 || !slices.Equal(m, []string{"Acme"}) {
			t.Fatalf("eu.r1 lists %v, us.r1 %v; want nothing and [Acme]", l, m)
		}
		// Removed under a variant: gone under every spelling.
		if !change(t, e, sidecar.AssignmentChange{Customer: "aCME", From: "us.r1"}) {
			t.Fatal("removal under a variant not applied")
		}
		for _, v := range []string{"acme", "Acme"} {
			if _, err := e.s.GetAssignment(e.ctx, v); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
				t.Fatalf("GetAssignment(%q) after removal: %v, want not found", v, err)
			}
		}
		must(t, e.s.PutAssignment(e.ctx, assign("ACME", "eu.r1")))
		must(t, e.s.DeleteAssignment(e.ctx, "acmE"))
		if l := listed(t, "eu.r1"); len(l) != 0 {
			t.Fatalf("eu.r1 lists %v after deletion under a variant", l)
		}
		wantCode(t, e.s.DeleteAssignment(e.ctx, "acme"), sidecar.ENOTFOUND)
	})

	// A change removing an assignment keeps it, as it was, with who
	// removed it and when, for sidecar.AppendOnceWindow: a retried
	// removal finds there what it removed. A move, or a removal that
	// found nothing, keeps nothing.
	t.Run("removed_kept_for_the_once_window", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.s.RemovedAssignment(e.ctx, "acme")
		wantCode(t, err, sidecar.ENOTFOUND)
		written := e.now()
		a := &sidecar.Assignment{Customer: "Acme", Reseller: "r1", Domain: "eu.r1", UpdatedBy: "sam", UpdatedAt: written}
		if !change(t, e, sidecar.AssignmentChange{Customer: "Acme", To: a}) ||
			!change(t, e, sidecar.AssignmentChange{Customer: "Acme", From: "eu.r1", To: &sidecar.Assignment{Customer: "Acme", Reseller: "r1", Domain: "us.r1", UpdatedBy: "sam", UpdatedAt: written}}) {
			t.Fatal("claim and move of Acme not applied")
		}
		_, err = e.s.RemovedAssignment(e.ctx, "acme")
		wantCode(t, err, sidecar.ENOTFOUND)
		e.clock.Advance(time.Minute)
		removedAt := e.now()
		if !change(t, e, sidecar.AssignmentChange{Customer: "acme", From: "us.r1", By: "rae", At: removedAt}) {
			t.Fatal("removal of Acme not applied")
		}
		for _, v := range []string{"acme", "ACME"} {
			got, err := e.s.RemovedAssignment(e.ctx, v)
			must(t, err)
			if got.Customer != "Acme" || got.Domain != "us.r1" || got.UpdatedBy != "sam" || !got.UpdatedAt.Equal(written) ||
				got.RemovedBy != "rae" || !got.RemovedAt.Equal(removedAt) {
				t.Fatalf("RemovedAssignment(%q) = %+v", v, got)
			}
		}
		change(t, e, sidecar.AssignmentChange{Customer: "globex", By: "rae", At: removedAt})
		_, err = e.s.RemovedAssignment(e.ctx, "globex")
		wantCode(t, err, sidecar.ENOTFOUND)
		e.clock.Advance(sidecar.AppendOnceWindow)
		_, err = e.s.RemovedAssignment(e.ctx, "acme")
		wantCode(t, err, sidecar.ENOTFOUND)
	})

	// Outside ASCII letters, digits and . _ - @ : no fold matches every
	// collation an upstream may compare ids with (sidecar.ValidAssignedID):
	// neither store takes such an id, so none is ever assigned.
	t.Run("ids_outside_ascii_refused", func(t *testing.T) {
		e := newEnv(t)
		for _, v := range []string{"\uff41\uff43\uff4d\uff45", "acm\u00e9", "\u0142odz", "stra\u00dfe", "acme\u00a0", "acme\u20dd", "a b"} {
			wantCode(t, e.s.PutAssignment(e.ctx, assign(v, "eu.r1")), sidecar.EINVALID)
			_, err := e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{{Customer: v, To: assign(v, "eu.r1")}})
			wantCode(t, err, sidecar.EINVALID)
			_, err = e.s.GetAssignment(e.ctx, v)
			wantCode(t, err, sidecar.ENOTFOUND)
		}
		as, _, err := e.s.AssignmentsByDomain(e.ctx, "eu.r1", sidecar.Page{Limit: sidecar.MaxPageLimit})
		must(t, err)
		if len(as) != 0 {
			t.Fatalf("eu.r1 lists %+v after refused ids", as)
		}
	})

	// Listings of a domain run while customers are claimed into it and
	// moved between domains: once the changes are done, every customer is
	// listed in the domain it is assigned to, whatever listing ran in the
	// middle of a change.
	t.Run("listing_during_changes_drops_no_assignment", func(t *testing.T) {
		e := newEnv(t)
		const customers = 40
		done := make(chan struct{})
		var (
			wg      sync.WaitGroup
			listErr error
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				for _, d := range []string{"eu.r1", "us.r1"} {
					if _, _, err := e.s.AssignmentsByDomain(e.ctx, d, sidecar.Page{Limit: sidecar.MaxPageLimit}); err != nil {
						listErr = err
						return
					}
				}
			}
		}()
		for i := range customers {
			c := fmt.Sprintf("lc%02d", i)
			if !change(t, e, sidecar.AssignmentChange{Customer: c, To: assign(c, "eu.r1")}) {
				t.Fatalf("claim of %s not applied", c)
			}
			if i%2 == 1 && !change(t, e, sidecar.AssignmentChange{Customer: c, From: "eu.r1", To: assign(c, "us.r1")}) {
				t.Fatalf("move of %s not applied", c)
			}
		}
		close(done)
		wg.Wait()
		must(t, listErr)
		for i := range customers {
			c, want := fmt.Sprintf("lc%02d", i), "eu.r1"
			if i%2 == 1 {
				want = "us.r1"
			}
			if got := domainOf(t, e, c); got != want {
				t.Fatalf("%s in %q, want %s", c, got, want)
			}
		}
	})

	// Twelve admins of four domains claim the same unassigned customer at
	// once, each on the read "unassigned": exactly one claim lands, and the
	// customer is where that one put it.
	t.Run("concurrent_claims_land_once", func(t *testing.T) {
		e := newEnv(t)
		const rounds, claimers = 20, 12
		domains := []string{"eu.r1", "us.r1", "asia.r1", "eu.r1"}
		for round := range rounds {
			customer := fmt.Sprintf("c%d", round)
			var (
				mu     sync.Mutex
				winner []string
				wg     sync.WaitGroup
			)
			start := make(chan struct{})
			for i := range claimers {
				d := domains[i%len(domains)]
				wg.Go(func() {
					<-start
					conflicts, err := e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{{Customer: customer, To: assign(customer, d)}})
					if err != nil {
						t.Error(err)
						return
					}
					if len(conflicts) == 0 {
						mu.Lock()
						winner = append(winner, d)
						mu.Unlock()
					}
				})
			}
			close(start)
			wg.Wait()
			if len(winner) != 1 {
				t.Fatalf("%s: %d claims landed (%v), want exactly one", customer, len(winner), winner)
			}
			if got := domainOf(t, e, customer); got != winner[0] {
				t.Fatalf("%s is in %q, the claim that landed put it in %q", customer, got, winner[0])
			}
		}
	})
}

// testAssignmentWritesKept: every write a caller asked for (put, import)
// and every removal by someone is kept, as written or removed, for
// sidecar.AppendOnceWindow, where any replica reads it back: its records
// are appended after it, and a process that stops, or loses the streams'
// node, before they are leaves a change of which domain sees which
// customer with no record. A write that changes nothing, a change that
// did not apply, and a put-back keep nothing; a put-back forgets the
// write it undoes.
func testAssignmentWritesKept(t *testing.T, newEnv func(*testing.T) *env) {
	e := newEnv(t)
	start := e.now()
	assign := func(customer, domain, by string) *sidecar.Assignment {
		return &sidecar.Assignment{Customer: customer, Reseller: "r1", Domain: domain, UpdatedBy: by, UpdatedAt: e.now()}
	}
	apply := func(cs ...sidecar.AssignmentChange) {
		t.Helper()
		conflicts, err := e.s.ChangeAssignments(e.ctx, cs)
		must(t, err)
		if len(conflicts) != 0 {
			t.Fatalf("changes %v not applied", conflicts)
		}
	}
	type write struct{ customer, domain, change, by string }
	of := func(ws []sidecar.AssignmentWrite) []write {
		out := make([]write, len(ws))
		for i, w := range ws {
			by := w.UpdatedBy
			if w.Change == sidecar.ChangeDelete {
				by = w.RemovedBy
			}
			out[i] = write{w.Customer, w.Domain, w.Change, by}
		}
		return out
	}
	kept := func(since time.Time, want ...write) {
		t.Helper()
		ws, err := e.peer.AssignmentsChanged(e.ctx, since)
		must(t, err)
		if got := of(ws); !slices.Equal(got, want) {
			t.Fatalf("kept %+v, want %+v", got, want)
		}
	}
	kept(start)
	acme := assign("Acme", "eu.r1", "sam")
	apply(sidecar.AssignmentChange{Customer: "Acme", To: acme, Change: sidecar.ChangePut})
	e.clock.Advance(time.Minute)
	second := e.now()
	globex := assign("globex", "us.r1", "ivy")
	apply(sidecar.AssignmentChange{Customer: "globex", To: globex, Change: sidecar.ChangeImport},
		// Written again as it is: no change to record.
		sidecar.AssignmentChange{Customer: "acme", From: "eu.r1", To: acme, Change: sidecar.ChangeImport},
		// Loaded, not asked for: nothing to record.
		sidecar.AssignmentChange{Customer: "initech", To: assign("initech", "us.r1", "")})
	conflicts, err := e.s.ChangeAssignments(e.ctx, []sidecar.AssignmentChange{{Customer: "hooli", From: "eu.r1", To: assign("hooli", "us.r1", "ivy"), Change: sidecar.ChangePut}})
	must(t, err)
	if len(conflicts) != 1 {
		t.Fatal("a change from a domain hooli is not in applied")
	}
	kept(start, write{"Acme", "eu.r1", "put", "sam"}, write{"globex", "us.r1", "import", "ivy"})
	e.clock.Advance(time.Minute)
	third := e.now()
	apply(sidecar.AssignmentChange{Customer: "ACME", From: "eu.r1", By: "rae", At: third})
	// Removed with no one removing it (a put-back): nothing to record.
	apply(sidecar.AssignmentChange{Customer: "initech", From: "us.r1"})
	ws, err := e.peer.AssignmentsChanged(e.ctx, third)
	must(t, err)
	if len(ws) != 1 || ws[0].Change != sidecar.ChangeDelete || !ws[0].RemovedAt.Equal(third) || ws[0].UpdatedBy != "sam" || ws[0].Domain != "eu.r1" {
		t.Fatalf("since the removal kept %+v, want Acme as removed by rae", ws)
	}
	kept(second, write{"globex", "us.r1", "import", "ivy"}, write{"Acme", "eu.r1", "delete", "rae"})
	// An import undone: globex put back where it was, its write forgotten.
	imported := sidecar.AssignmentChange{Customer: "globex", From: "us.r1", To: assign("globex", "eu.r1", "ivy"), Change: sidecar.ChangeImport}
	apply(imported)
	kept(third, write{"Acme", "eu.r1", "delete", "rae"}, write{"globex", "eu.r1", "import", "ivy"})
	apply(sidecar.AssignmentChange{Customer: "globex", From: "eu.r1", To: globex, Undoes: &imported})
	kept(start, write{"Acme", "eu.r1", "put", "sam"}, write{"globex", "us.r1", "import", "ivy"}, write{"Acme", "eu.r1", "delete", "rae"})
	e.clock.Advance(sidecar.AppendOnceWindow - 2*time.Minute)
	kept(start, write{"globex", "us.r1", "import", "ivy"}, write{"Acme", "eu.r1", "delete", "rae"})
	e.clock.Advance(2 * time.Minute)
	kept(start)
}
