package delegation_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// assignmentRecords counts what the trail and the events stream hold of
// the writes a reseller test makes: per customer, the audit entries of
// action and the assignment.changed events of change; and the import's
// audit entries.
type assignmentRecords struct {
	put, putEvents, del, delEvents, imports, importEvents int
	importRows                                            string
}

func assignmentRecordsOf(t *testing.T, s sidecar.Store, put, del string, imported ...string) assignmentRecords {
	t.Helper()
	var r assignmentRecords
	r.put = len(audited(t, s, "reseller.assignment.put", put))
	r.del = len(audited(t, s, "reseller.assignment.delete", del))
	imports := audited(t, s, "reseller.assignment.import", "")
	r.imports = len(imports)
	if len(imports) == 1 {
		r.importRows = imports[0].Data["rows"]
	}
	for _, e := range events(t, s, sidecar.EventAssignmentChanged) {
		switch {
		case e.Customer == put && e.Data["change"] == sidecar.ChangePut:
			r.putEvents++
		case e.Customer == del && e.Data["change"] == sidecar.ChangeDelete:
			r.delEvents++
		case e.Data["change"] == sidecar.ChangeImport:
			for _, c := range imported {
				if e.Customer == c {
					r.importEvents++
				}
			}
		}
	}
	return r
}

var resellerAdmin = &sidecar.Identity{Subject: "sa", Domain: "shop-a.example", Org: "resellerA"}

// A reseller super admin puts acme into a domain, deletes gone's
// assignment and imports two customers while the node of the audit and
// events streams refuses writes (or the store is lost after each write):
// each write stands, and its records wait in the replica's queue, which
// is lost when it stops — changes of which domain sees which customer,
// with no record. Once the streams take writes again, the next sweep of
// another replica (one that swept before, or a fresh one) records each
// write once, as the admin's: the put and the removal with their audit
// entry and event, the import with one audit entry naming its rows and an
// event for each row. Later sweeps, of any replica, append nothing more.
func TestResellerWritesRefusedAreRecordedBySweeps(t *testing.T) {
	refusedSweepCases(t, func(t *testing.T, _ string, clock *partnerClock, rs streamsRefused, sweptBefore bool) {
		ctx := context.Background()
		store := rs.store
		replica := func(s sidecar.Store, rec *delegation.Recorder) *delegation.Resellers {
			return delegation.NewResellers(s, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now), delegation.WithResellerRecorder(rec))
		}
		b := replica(store, delegation.NewRecorder(store, nil))
		if _, err := b.Put(ctx, resellerAdmin, "gone", "shop-a.example", allowAll); err != nil {
			t.Fatal(err)
		}
		if sweptBefore {
			must(t, b.RecordAgain(ctx))
		}
		clock.Advance(time.Minute)

		rs.refuse()
		rec := delegation.NewRecorder(rs.replica, nil)
		must(t, rec.Start(ctx))
		a := replica(rs.replica, rec)
		if _, err := a.Put(ctx, resellerAdmin, "acme", "shop-a.example", allowAll); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Second)
		must(t, a.Delete(ctx, resellerAdmin, "gone", allowAll))
		clock.Advance(time.Second)
		rows := []delegation.ImportRow{{Line: 1, Customer: "imp1", Domain: "shop-a.example"}, {Line: 2, Customer: "imp2", Domain: "shop-a.example"}}
		if n, err := a.Import(ctx, resellerAdmin, rows, allowAll); err != nil || n != 2 {
			t.Fatalf("import answered %d, %v", n, err)
		}
		if rec.Pending() == 0 {
			t.Fatal("no record waits for the refusing streams")
		}
		stopped, cancel := context.WithCancel(ctx)
		cancel()
		if err := rec.Stop(stopped); err == nil {
			t.Fatal("stopping with records queued answered no error")
		}
		clock.Advance(2 * delegation.RecordInterval)
		rs.accept()
		before := assignmentRecordsOf(t, store, "acme", "gone", "imp1", "imp2")
		if before != (assignmentRecords{}) {
			t.Fatalf("recorded while refused: %+v", before)
		}

		must(t, b.RecordAgain(ctx))
		want := assignmentRecords{put: 1, putEvents: 1, del: 1, delEvents: 1, imports: 1, importEvents: 2, importRows: "2"}
		if got := assignmentRecordsOf(t, store, "acme", "gone", "imp1", "imp2"); got != want {
			t.Fatalf("after b's sweep: %+v, want %+v", got, want)
		}
		for range 2 {
			clock.Advance(time.Minute)
			for _, r := range []*delegation.Resellers{b, replica(store, delegation.NewRecorder(store, nil))} {
				must(t, r.RecordAgain(ctx))
			}
		}
		if got := assignmentRecordsOf(t, store, "acme", "gone", "imp1", "imp2"); got != want {
			t.Fatalf("after later sweeps: %+v, want %+v", got, want)
		}
		for _, action := range []string{"reseller.assignment.put", "reseller.assignment.delete", "reseller.assignment.import"} {
			for _, e := range audited(t, store, action, "") {
				if e.Actor != resellerAdmin.Subject || e.Customer != "" && e.Data["domain"] != "shop-a.example" {
					t.Errorf("%s recorded as %+v, want sa's, in shop-a.example", action, e)
				}
			}
		}
		if imp := audited(t, store, "reseller.assignment.import", ""); len(imp) == 1 && imp[0].Data["domain"] != resellerAdmin.Domain {
			t.Errorf("import recorded as %+v, want through sa's domain", imp[0])
		}
	})
}

// A put, a removal and an import whose records got through are not
// recorded again by any sweep: the first sweep of a fresh replica reads
// back the whole hour, and finds each record's Once appended.
func TestResellerWritesRecordedOnceAreNotRecordedAgain(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			clock := newPartnerClock()
			store := ps.open(t, clock.Now)
			r := delegation.NewResellers(store, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now))
			for _, c := range []string{"gone", "acme"} {
				if _, err := r.Put(ctx, resellerAdmin, c, "shop-a.example", allowAll); err != nil {
					t.Fatal(err)
				}
			}
			clock.Advance(time.Second)
			must(t, r.Delete(ctx, resellerAdmin, "gone", allowAll))
			rows := []delegation.ImportRow{{Line: 1, Customer: "imp1", Domain: "shop-a.example"}, {Line: 2, Customer: "imp2", Domain: "shop-a.example"}}
			if _, err := r.Import(ctx, resellerAdmin, rows, allowAll); err != nil {
				t.Fatal(err)
			}
			want := assignmentRecords{put: 1, putEvents: 1, del: 1, delEvents: 1, imports: 1, importEvents: 2, importRows: "2"}
			if got := assignmentRecordsOf(t, store, "acme", "gone", "imp1", "imp2"); got != want {
				t.Fatalf("recorded %+v, want %+v", got, want)
			}
			fresh := delegation.NewResellers(store, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now))
			for range 2 {
				clock.Advance(time.Minute)
				for _, rr := range []*delegation.Resellers{r, fresh} {
					must(t, rr.RecordAgain(ctx))
				}
			}
			if got := assignmentRecordsOf(t, store, "acme", "gone", "imp1", "imp2"); got != want {
				t.Fatalf("after sweeps: %+v, want %+v", got, want)
			}
		})
	}
}
