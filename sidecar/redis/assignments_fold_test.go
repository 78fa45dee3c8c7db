package redis_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

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
			// legacy writes a record as the previous version did: under the
			// exact spelling, and in its domain's index.
			legacy := func(customer, domain string) {
				t.Helper()
				b, _ := json.Marshal(sidecar.Assignment{Customer: customer, Reseller: "resellerco", Domain: domain})
				if err := tc.client.Set(ctx, p+":{cust:"+customer+"}:assign", b, 0).Err(); err != nil {
					t.Fatal(err)
				}
				if err := tc.client.ZAdd(ctx, p+":{dom:"+domain+"}:customers", goredis.Z{Member: customer}).Err(); err != nil {
					t.Fatal(err)
				}
			}
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
			listed := func(domain string) []string {
				t.Helper()
				as, _, err := s.AssignmentsByDomain(ctx, domain, sidecar.Page{Limit: sidecar.MaxPageLimit})
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
