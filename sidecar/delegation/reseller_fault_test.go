package delegation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// resellerCutWorld is one cut point of a reseller fault test: the store
// behind the cutting proxy with a running recorder, and the uncut store
// that inspects what Redis holds.
type resellerCutWorld struct {
	direct    sidecar.Store
	resellers *delegation.Resellers
	recorder  *delegation.Recorder
	cut       sidecar.Store
}

func newResellerCutWorld(t *testing.T, srv *redistest.Server, proxy *redistest.Proxy, prefix string, clock sidecar.Clock) *resellerCutWorld {
	t.Helper()
	w := &resellerCutWorld{direct: directStore(t, srv.Addr, prefix, clock), cut: faultStore(t, proxy.Addr, prefix, clock)}
	w.recorder = delegation.NewRecorder(w.cut, nil)
	if err := w.recorder.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.resellers = delegation.NewResellers(w.cut, delegation.ResellerConfig{}, delegation.WithResellerClock(clock), delegation.WithResellerRecorder(w.recorder))
	return w
}

// stop appends what the recorder holds, now that Redis is back, and
// closes the cut store.
func (w *resellerCutWorld) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.recorder.Stop(ctx); err != nil {
		t.Fatalf("recorder: %v", err)
	}
	_ = w.cut.(interface{ Close() error }).Close()
}

// assignmentEvents counts customer's assignment.changed events of change.
func assignmentEvents(t *testing.T, s sidecar.Store, customer, change string) int {
	t.Helper()
	es, _, err := s.ReadEvents(context.Background(), sidecar.StreamFilter{Type: sidecar.EventAssignmentChanged, Customer: customer, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range es {
		if e.Data["change"] == change {
			n++
		}
	}
	return n
}

// A bulk import cut off at every point, then retried once Redis is back
// until it succeeds: every customer it assigned is announced once, with
// one assignment.changed event, whether the cut fell before the write,
// took the write's reply, or took the event's append.
func TestResellerImportUnderCutsAnnouncesEachAssignmentOnce(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch)
	ctx := context.Background()
	admin := &sidecar.Identity{Subject: "sa", Domain: "shop-a.example", Org: "resellerA"}
	rows := []delegation.ImportRow{{Line: 1, Customer: "acme", Domain: "shop-a.example"}, {Line: 2, Customer: "globex", Domain: "shop-a.example"}}
	for n := 0; ; n++ {
		proxy.Reset()
		w := newResellerCutWorld(t, srv, proxy, fmt.Sprintf("impcut%d", n), clock.Now)
		proxy.CutAfter(n)
		_, first := w.resellers.Import(ctx, admin, rows, allowAll)
		wasCut := proxy.WasCut()
		proxy.Reset()
		var err error
		for range 5 {
			if _, err = w.resellers.Import(ctx, admin, rows, allowAll); err == nil {
				break
			}
		}
		w.stop(t)
		if err != nil {
			t.Fatalf("cut after %d commands: import retried: %v", n, err)
		}
		for _, c := range []string{"acme", "globex"} {
			if a, err := w.direct.GetAssignment(ctx, c); err != nil || a.Domain != "shop-a.example" {
				t.Fatalf("cut after %d commands: %s = %+v, %v; want assigned to shop-a.example", n, c, a, err)
			}
			if got := assignmentEvents(t, w.direct, c, "import"); got != 1 {
				t.Errorf("cut after %d commands (first import: %v): %s assigned, announced %d times, want once", n, first, c, got)
			}
		}
		if !wasCut {
			break
		}
	}
}

// An assignment delete cut off at every point, then retried once Redis
// is back until it succeeds: the removal is recorded once, with one audit entry and one
// assignment.changed event, wherever the cut fell.
func TestResellerDeleteUnderCutsRecordsTheRemovalOnce(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch)
	ctx := context.Background()
	admin := &sidecar.Identity{Subject: "sa", Domain: "shop-a.example", Org: "resellerA"}
	for n := 0; ; n++ {
		proxy.Reset()
		w := newResellerCutWorld(t, srv, proxy, fmt.Sprintf("delcut%d", n), clock.Now)
		setup := delegation.NewResellers(w.direct, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now))
		if _, err := setup.Put(ctx, admin, "acme", "shop-a.example", allowAll); err != nil {
			t.Fatal(err)
		}
		proxy.CutAfter(n)
		first := w.resellers.Delete(ctx, admin, "acme", allowAll)
		wasCut := proxy.WasCut()
		proxy.Reset()
		// Until it succeeds, as the import's retry: the first retry may
		// still find this replica's subscription being opened again
		// after the cut, and answer that the change is saved but not
		// yet announced (503, retry).
		var err error
		for range 5 {
			if err = w.resellers.Delete(ctx, admin, "acme", allowAll); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("cut after %d commands: delete retried: %v", n, err)
		}
		w.stop(t)
		if _, err := w.direct.GetAssignment(ctx, "acme"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
			t.Fatalf("cut after %d commands: acme still assigned: %v", n, err)
		}
		audit, _, err := w.direct.ReadAudit(ctx, sidecar.StreamFilter{Type: "reseller.assignment.delete", Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
		if err != nil {
			t.Fatal(err)
		}
		if got := assignmentEvents(t, w.direct, "acme", "delete"); len(audit) != 1 || got != 1 {
			t.Errorf("cut after %d commands (first delete: %v): acme unassigned; %d audit entries and %d delete events, want 1 and 1", n, first, len(audit), got)
		}
		if !wasCut {
			break
		}
	}
}

// An assignment put cut off at every point, then retried once Redis is
// back (time moving on between attempts) until it succeeds, then another
// replica's sweep: the put is recorded once, with one audit entry and one
// assignment.changed event, wherever the cut fell. A cut at the publish
// step answers "change saved, but not yet announced" after recording the
// put; the retry is the same write and is not recorded again.
func TestResellerPutUnderCutsIsRecordedOnce(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch)
	ctx := context.Background()
	admin := &sidecar.Identity{Subject: "sa", Domain: "shop-a.example", Org: "resellerA"}
	unpublished := false
	for n := 0; ; n++ {
		proxy.Reset()
		w := newResellerCutWorld(t, srv, proxy, fmt.Sprintf("putcut%d", n), clock.Now)
		proxy.CutAfter(n)
		clock.Advance(time.Millisecond)
		_, first := w.resellers.Put(ctx, admin, "acme", "shop-a.example", allowAll)
		unpublished = unpublished || sidecar.IsUnpublished(first)
		wasCut := proxy.WasCut()
		proxy.Reset()
		err := first
		for k := 0; k < 5 && err != nil; k++ {
			clock.Advance(time.Millisecond)
			_, err = w.resellers.Put(ctx, admin, "acme", "shop-a.example", allowAll)
		}
		w.stop(t)
		if err != nil {
			t.Fatalf("cut after %d commands: put retried: %v", n, err)
		}
		must(t, delegation.NewResellers(w.direct, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now)).RecordAgain(ctx))
		puts, ev := len(audited(t, w.direct, "reseller.assignment.put", "acme")), assignmentEvents(t, w.direct, "acme", "put")
		if puts != 1 || ev != 1 {
			t.Errorf("cut after %d commands (first put: %v): one put recorded as %d audit entries and %d events, want 1 and 1", n, first, puts, ev)
		}
		if !wasCut {
			break
		}
	}
	if !unpublished {
		t.Error("no cut fell at the publish step")
	}
}

// A bulk import cut off at every point, then retried once Redis is back
// (time moving on between attempts) until it succeeds, then another
// replica's sweep: the import is audited once. A cut at the publish step
// answers "change saved, but not yet announced" after recording the
// import; the retry finds every row written by it and is that import, not
// another. (A first attempt cut part-way through its rows whose undo
// fails too leaves rows written by an import that was never recorded; its
// retry, which writes the rest, is audited beside the sweep's entry for
// those rows.)
func TestResellerImportUnderCutsIsAuditedOnce(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	clock := storetest.NewClock(storetest.Epoch)
	ctx := context.Background()
	admin := &sidecar.Identity{Subject: "sa", Domain: "shop-a.example", Org: "resellerA"}
	rows := []delegation.ImportRow{{Line: 1, Customer: "acme", Domain: "shop-a.example"}, {Line: 2, Customer: "globex", Domain: "shop-a.example"}}
	unpublished := false
	for n := 0; ; n++ {
		proxy.Reset()
		w := newResellerCutWorld(t, srv, proxy, fmt.Sprintf("impaudit%d", n), clock.Now)
		proxy.CutAfter(n)
		clock.Advance(time.Millisecond)
		_, first := w.resellers.Import(ctx, admin, rows, allowAll)
		unpublished = unpublished || sidecar.IsUnpublished(first)
		wasCut := proxy.WasCut()
		proxy.Reset()
		as, err := w.direct.GetAssignments(ctx, []string{"acme", "globex"})
		must(t, err)
		partly := (as[0] == nil) != (as[1] == nil)
		err = first
		for k := 0; k < 5 && err != nil; k++ {
			clock.Advance(time.Millisecond)
			_, err = w.resellers.Import(ctx, admin, rows, allowAll)
		}
		w.stop(t)
		if err != nil {
			t.Fatalf("cut after %d commands: import retried: %v", n, err)
		}
		must(t, delegation.NewResellers(w.direct, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now)).RecordAgain(ctx))
		if imps := audited(t, w.direct, "reseller.assignment.import", ""); len(imps) != 1 && !partly {
			t.Errorf("cut after %d commands (first import: %v): one import audited %d times, want once", n, first, len(imps))
		}
		if !wasCut {
			break
		}
	}
	if !unpublished {
		t.Error("no cut fell at the publish step")
	}
}
