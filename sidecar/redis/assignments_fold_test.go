package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// writeLegacyAssignment writes a record as the previous version did:
// under the exact spelling, and in its domain's index.
func writeLegacyAssignment(t *testing.T, c goredis.UniversalClient, prefix, customer, domain string) {
	t.Helper()
	ctx := context.Background()
	b, _ := json.Marshal(sidecar.Assignment{Customer: customer, Reseller: "resellerco", Domain: domain})
	if err := c.Set(ctx, prefix+":{cust:"+customer+"}:assign", b, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ZAdd(ctx, prefix+":{dom:"+domain+"}:customers", goredis.Z{Member: customer}).Err(); err != nil {
		t.Fatal(err)
	}
}

// listedCustomers is the domain's listing: its customers, sorted.
func listedCustomers(t *testing.T, s *redis.Store, domain string) []string {
	t.Helper()
	as, _, err := s.AssignmentsByDomain(context.Background(), domain, sidecar.Page{Limit: sidecar.MaxPageLimit})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range as {
		names = append(names, a.Customer)
	}
	slices.Sort(names)
	return names
}

// TestFoldAssignmentsNeverWidens starts from what the previous version
// wrote, assignments under the exact spelling, including the state the
// variant bypass leaves (ACME in shop-b while acme is in shop-a), and
// shows that no domain gets a customer it did not hold, before the
// records are moved or after.
func TestFoldAssignmentsNeverWidens(t *testing.T) {
	single := redistest.Start(t)
	cluster := redistest.StartCluster(t, 3)
	for _, tc := range []struct {
		name   string
		cfg    redis.Config
		client goredis.UniversalClient
	}{
		{"single", redis.Config{Addrs: []string{single.Addr}, KeyPrefix: "fold[1]"}, single.Client()},
		{"cluster", redis.Config{Addrs: cluster.Addrs, Cluster: true, KeyPrefix: "fold*2"}, cluster.Client(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, err := redis.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			p := tc.cfg.KeyPrefix
			legacy := func(customer, domain string) { t.Helper(); writeLegacyAssignment(t, tc.client, p, customer, domain) }
			legacy("acme", "shop-a") // already folded: the key it always had
			legacy("ACME", "shop-b") // the bypass: a variant in another domain
			legacy("Globex", "shop-b")
			legacy("Initech", "shop-a")
			legacy("initech", "shop-a")
			legacy("Umbrella", "shop-a")
			legacy("UMBRELLA", "shop-b")

			// domainOf is where a lookup under this spelling finds the
			// customer as spelled: what the check path acts on.
			domainOf := func(customer string) string {
				t.Helper()
				a, err := s.GetAssignment(ctx, customer)
				if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
					return ""
				}
				if err != nil {
					t.Fatal(err)
				}
				if a.Customer != customer {
					return "" // a variant: refused on the check path
				}
				return a.Domain
			}
			listed := func(domain string) []string { t.Helper(); return listedCustomers(t, s, domain) }

			// Before the records are moved, access is at most what it was:
			// shop-b's ACME yields to the folded acme, the rest count as
			// unassigned.
			before := map[string]string{"acme": "shop-a", "ACME": "", "Globex": "", "Initech": "", "initech": "shop-a", "Umbrella": "", "UMBRELLA": ""}
			for c, want := range before {
				if got := domainOf(c); got != want {
					t.Errorf("before folding, %s acts in %q, want %q", c, got, want)
				}
			}

			rep, err := s.FoldAssignments(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// ACME/acme and UMBRELLA/Umbrella: two domains each, both removed.
			// Globex moves; Initech joins initech in shop-a; ACME meets acme
			// of another domain; the first Umbrella moves and the second
			// meets it from another domain.
			if rep != (redis.FoldReport{Moved: 2, Merged: 1, Conflicts: 2}) {
				t.Fatalf("report = %+v, want 2 moved, 1 merged, 2 conflicts", rep)
			}
			after := map[string]string{"acme": "", "ACME": "", "Globex": "shop-b", "GLOBEX": "", "Initech": "", "initech": "shop-a", "Umbrella": "", "UMBRELLA": ""}
			for c, want := range after {
				if got := domainOf(c); got != want {
					t.Errorf("after folding, %s acts in %q, want %q", c, got, want)
				}
			}
			if a, b := listed("shop-a"), listed("shop-b"); !slices.Equal(a, []string{"initech"}) || !slices.Equal(b, []string{"Globex"}) {
				t.Fatalf("listed shop-a %v, shop-b %v; want [initech] and [Globex]", a, b)
			}
			// A moved record is refused to another domain's claim under any
			// spelling, as one assigned after the change is.
			conflicts, err := s.ChangeAssignments(ctx, []sidecar.AssignmentChange{{Customer: "globex", To: &sidecar.Assignment{Customer: "globex", Reseller: "resellerco", Domain: "shop-a"}}})
			if err != nil || !slices.Equal(conflicts, []int{0}) {
				t.Fatalf("claim of globex as unassigned: conflicts %v, %v; want refused", conflicts, err)
			}
			// No record is left under an unfolded spelling.
			for _, c := range []string{"ACME", "Globex", "Initech", "Umbrella", "UMBRELLA"} {
				if n, err := tc.client.Exists(ctx, p+":{cust:"+c+"}:assign").Result(); err != nil || n != 0 {
					t.Errorf("legacy key of %s still there (%d, %v)", c, n, err)
				}
			}
			// The conflicts are in the audit trail for the super admins.
			audit, _, err := s.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, e := range audit {
				if e.Action == "reseller.assignment.fold_conflict" {
					n++
				}
			}
			if n != 2 {
				t.Fatalf("%d fold_conflict audit entries, want 2: %+v", n, audit)
			}

			// Once done, a pass is a single read.
			legacy("Hooli", "shop-a")
			if rep, err := s.FoldAssignments(ctx); err != nil || rep != (redis.FoldReport{}) {
				t.Fatalf("second pass = %+v, %v; want nothing done", rep, err)
			}
			if got := domainOf("Hooli"); got != "" {
				t.Fatalf("a record written under an unfolded spelling after the pass acts in %q, want unassigned", got)
			}
		})
	}
}

// TestFoldAssignmentsRemovesIDsOutsideASCII starts from what earlier
// versions wrote for customer ids outside the assignable set: under the
// exact spelling (łodz, acmé), and under a Unicode fold (Straße filed as
// strasse), after a pass of the folding version had run. The pass takes
// none of them into service: each is removed, logged and audited, and the
// store answers as memory, which never held one: unassigned, listed
// nowhere, free to assign under an ASCII id.
func TestFoldAssignmentsRemovesIDsOutsideASCII(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	c := srv.Client()
	const p = "ascii"
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: p}, redis.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	writeLegacyAssignment(t, c, p, "\u0142odz", "shop-a")
	writeLegacyAssignment(t, c, p, "acm\u00e9", "shop-b")
	writeLegacyAssignment(t, c, p, "Globex", "shop-b")
	b, _ := json.Marshal(sidecar.Assignment{Customer: "Stra\u00dfe", Reseller: "resellerco", Domain: "shop-a"})
	if err := c.Set(ctx, p+":{cust:strasse}:assign", b, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ZAdd(ctx, p+":{dom:shop-a}:customers", goredis.Z{Member: "Stra\u00dfe"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, p+":assignments-folded", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}

	rep, err := s.FoldAssignments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep != (redis.FoldReport{Moved: 1, Refused: 3}) {
		t.Fatalf("report = %+v, want 1 moved, 3 refused", rep)
	}
	for _, id := range []string{"\u0142odz", "acm\u00e9", "strasse", "Stra\u00dfe", "lodz", "acme"} {
		if a, err := s.GetAssignment(ctx, id); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
			t.Errorf("GetAssignment(%q) = %+v, %v; want not found", id, a, err)
		}
	}
	for d, want := range map[string][]string{"shop-a": nil, "shop-b": {"Globex"}} {
		if names := listedCustomers(t, s, d); !slices.Equal(names, want) {
			t.Errorf("%s lists %v, want %v", d, names, want)
		}
		if n, err := c.ZCard(ctx, p+":{dom:"+d+"}:customers").Result(); err != nil || n != int64(len(want)) {
			t.Errorf("%s index holds %d entries (%v), want %d", d, n, err, len(want))
		}
	}
	for _, k := range []string{"{cust:\u0142odz}:assign", "{cust:acm\u00e9}:assign", "{cust:strasse}:assign"} {
		if n, err := c.Exists(ctx, p+":"+k).Result(); err != nil || n != 0 {
			t.Errorf("%s still there (%d, %v)", k, n, err)
		}
	}
	audit, _, err := s.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: sidecar.MaxPageLimit}})
	if err != nil {
		t.Fatal(err)
	}
	var refused []string
	for _, e := range audit {
		if e.Action == "reseller.assignment.id_refused" && e.Outcome == "removed" {
			refused = append(refused, e.Customer+"@"+e.Data["domain"])
		}
	}
	slices.Sort(refused)
	if want := []string{"Stra\u00dfe@shop-a", "acm\u00e9@shop-b", "\u0142odz@shop-a"}; !slices.Equal(refused, want) {
		t.Fatalf("id_refused audit entries %v, want %v", refused, want)
	}
	// The ASCII id is free, as in a store that never held the variant.
	conflicts, err := s.ChangeAssignments(ctx, []sidecar.AssignmentChange{{Customer: "strasse", To: &sidecar.Assignment{Customer: "strasse", Reseller: "resellerco", Domain: "shop-b"}}})
	if err != nil || len(conflicts) != 0 {
		t.Fatalf("claim of unassigned strasse: conflicts %v, %v", conflicts, err)
	}
}

// TestFoldAssignmentsUnderFaults cuts Redis after every command of a pass:
// whatever the cut leaves, every spelling acts at most in the domain the
// previous version gave that very spelling, and a pass after it moves the
// rest.
func TestFoldAssignmentsUnderFaults(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	raw := srv.Client()
	legacyDomains := map[string]string{"acme": "shop-a", "ACME": "shop-b", "Globex": "shop-b", "Initech": "shop-a", "initech": "shop-a", "Umbrella": "shop-a", "UMBRELLA": "shop-b", "\u0142odz": "shop-a"}
	// Where an unbroken pass leaves each spelling acting.
	foldedDomains := map[string]string{"acme": "", "Globex": "shop-b", "Initech": "", "initech": "shop-a", "Umbrella": "", "UMBRELLA": "", "\u0142odz": ""}
	round := 0
	// world seeds the previous version's records under a fresh prefix and
	// returns a store through the proxy and one straight to Redis.
	world := func(t *testing.T) (viaProxy, direct *redis.Store) {
		t.Helper()
		round++
		p := fmt.Sprintf("fault%d", round)
		for c, d := range legacyDomains {
			writeLegacyAssignment(t, raw, p, c, d)
		}
		open := func(addr string) *redis.Store {
			s, err := redis.New(redis.Config{Addrs: []string{addr}, KeyPrefix: p, MaxRetries: -1,
				ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}
		return open(proxy.Addr), open(srv.Addr)
	}
	// check: no spelling acts in a domain its own legacy record did not name.
	check := func(t *testing.T, s *redis.Store, when string) {
		t.Helper()
		for c := range legacyDomains {
			for _, v := range []string{c, strings.ToUpper(c), strings.ToLower(c)} {
				a, err := s.GetAssignment(ctx, v)
				if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", when, err)
				}
				if a.Customer == v && legacyDomains[v] != a.Domain {
					t.Fatalf("%s: %s acts in %q; its record named %q", when, v, a.Domain, legacyDomains[v])
				}
			}
		}
	}

	// Without a fault, twice: the second pass counts the commands with
	// the scripts loaded, as every pass after it runs.
	total := 0
	for range 2 {
		viaProxy, direct := world(t)
		proxy.Reset()
		if _, err := viaProxy.FoldAssignments(ctx); err != nil {
			t.Fatalf("without a fault: %v", err)
		}
		total = proxy.Commands()
		check(t, direct, "no fault")
	}
	failed := 0
	for cut := range total {
		viaProxy, direct := world(t)
		proxy.Reset()
		proxy.CutAfter(cut)
		_, err := viaProxy.FoldAssignments(ctx)
		if !proxy.WasCut() {
			t.Fatalf("cut after %d of %d commands never happened", cut, total)
		}
		proxy.Reset()
		if err != nil {
			failed++
		}
		when := fmt.Sprintf("cut after %d of %d commands (err %v)", cut, total, err)
		check(t, direct, when)
		if _, err := direct.FoldAssignments(ctx); err != nil {
			t.Fatalf("%s: the pass after: %v", when, err)
		}
		check(t, direct, when+", then a whole pass")
		// And it ends where an unbroken pass does: variants of one id in
		// two domains removed, whichever of them a cut left moved.
		for _, c := range []string{"acme", "Globex", "Initech", "initech", "Umbrella", "UMBRELLA", "\u0142odz"} {
			a, err := direct.GetAssignment(ctx, c)
			got := ""
			if err == nil && a.Customer == c {
				got = a.Domain
			} else if err != nil && sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
				t.Fatal(err)
			}
			if got != foldedDomains[c] {
				t.Fatalf("%s, then a whole pass: %s acts in %q, want %q", when, c, got, foldedDomains[c])
			}
		}
	}
	if failed == 0 {
		t.Fatal("no cut point made the pass fail")
	}
	t.Logf("cut after each of 0..%d commands: %d failed, every state safe", total-1, failed)
}
