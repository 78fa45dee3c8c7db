package delegation_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// managePolicy asks the shipped data.deputy.manage.decision, as the API
// does, and tells the caller, for every allowed call, the target policy
// judged.
func managePolicy(t *testing.T) func(by *sidecar.Identity, judged func(target map[string]any)) delegation.Authorize {
	t.Helper()
	set, err := policy.LoadPaths([]string{"../../policies"})
	if err != nil {
		t.Fatal(err)
	}
	engine := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)), policy.WithQueries(policy.DefaultManageQuery))
	if err := engine.Activate(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	return func(by *sidecar.Identity, judged func(map[string]any)) delegation.Authorize {
		roles := make([]any, len(by.Roles))
		for i, r := range by.Roles {
			roles[i] = r
		}
		identity := map[string]any{"sub": by.Subject, "org": by.Org, "domain": by.Domain, "roles": roles, "privileges": []any{}}
		return func(action string, target map[string]any) error {
			in, err := ast.InterfaceToValue(map[string]any{"action": action, "target": target, "identity": identity})
			if err != nil {
				return err
			}
			res, err := engine.Eval(context.Background(), policy.DefaultManageQuery, in)
			if err != nil {
				return err
			}
			var d struct {
				Allowed bool   `json:"allowed"`
				Reason  string `json:"reason"`
			}
			// Every judgement is heard, refusals too: a Delete refused as
			// another domain's customer answers as for an unassigned one.
			judged(maps.Clone(target))
			if res.Value == nil || ast.As(res.Value.Value, &d) != nil || !d.Allowed {
				return sidecar.Errorf(sidecar.EFORBIDDEN, "%s", d.Reason)
			}
			return nil
		}
	}
}

// assignedDomain is the customer's domain in store, "" when unassigned.
func assignedDomain(t *testing.T, store sidecar.AssignmentStore, customer string) string {
	t.Helper()
	a, err := store.GetAssignment(context.Background(), customer)
	switch {
	case err == nil:
		return a.Domain
	case sidecar.ErrorCode(err) != sidecar.ENOTFOUND:
		t.Fatal(err)
	}
	return ""
}

// move is one assignment change that landed, as policy judged it: the
// customer's domain before (from, "" when unassigned) and after (to).
type move struct{ from, to string }

// TestAssignmentRaces: super admins of three domains claim the same
// customers, put them again and remove them, all at once. Every change
// that lands must have been judged by policy on the domain the customer
// was in when it landed: then the changes of a customer chain up, each
// starting where the one before ended, from where the customer started to
// where it ends. A change judged on a stale read breaks the chain (two
// claims of one unassigned customer, or a removal from a domain it was
// moved out of meanwhile): the customer was taken out of a domain whose
// admin policy never asked.
func TestAssignmentRaces(t *testing.T) {
	const (
		rounds  = 20
		workers = 12
	)
	domains := []string{"shop-a.example", "shop-b.example", "shop-c.example"}
	policyFor := managePolicy(t)
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			clock := newPartnerClock()
			store := ps.open(t, clock.Now)
			rs := delegation.NewResellers(store, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now))
			var (
				mu      sync.Mutex
				landed  = map[string][]move{}
				refused = map[string]int{}
			)
			for round := range rounds {
				// free starts unassigned, held in shop-a.
				free, held := fmt.Sprintf("free-%d", round), fmt.Sprintf("held-%d", round)
				if err := store.PutAssignment(ctx, &sidecar.Assignment{Customer: held, Reseller: "resellerco", Domain: domains[0]}); err != nil {
					t.Fatal(err)
				}
				start := make(chan struct{})
				var wg sync.WaitGroup
				for w := range workers {
					domain := domains[w%len(domains)]
					admin := &sidecar.Identity{Subject: fmt.Sprintf("admin-%d", w), Org: "resellerco", Domain: domain, Roles: []string{"reseller_super_admin"}}
					wg.Go(func() {
						<-start
						for step := range 4 {
							customer := free
							if (w+step)%2 == 1 {
								customer = held
							}
							var last map[string]any
							authorize := policyFor(admin, func(target map[string]any) { last = target })
							var err error
							remove := (w+round+step)%3 == 2
							if remove {
								err = rs.Delete(ctx, admin, customer, authorize)
							} else {
								_, err = rs.Put(ctx, admin, customer, domain, authorize)
							}
							mu.Lock()
							switch code := sidecar.ErrorCode(err); {
							case err == nil:
								from, _ := last["current_domain"].(string)
								to := domain
								if remove {
									to = ""
									if from != domain {
										// Another domain's customer is answered as an
										// unassigned one: nothing changed.
										from = ""
									}
								}
								if from != "" || to != "" { // removing an unassigned customer writes nothing
									landed[customer] = append(landed[customer], move{from, to})
								}
							case code == sidecar.EFORBIDDEN || code == sidecar.ECONFLICT:
								refused[code]++
							default:
								t.Errorf("%s on %s: %v", admin.Subject, customer, err)
							}
							mu.Unlock()
						}
					})
				}
				close(start)
				wg.Wait()
				for customer, begin := range map[string]string{free: "", held: domains[0]} {
					end := assignedDomain(t, store, customer)
					if err := chained(begin, end, landed[customer]); err != nil {
						t.Errorf("%s: started in %q, ended in %q, changes that landed %v: %v", customer, begin, end, landed[customer], err)
					}
				}
			}
			total := 0
			for _, ms := range landed {
				total += len(ms)
			}
			t.Logf("%d rounds × %d workers: %d changes landed, %d refused by policy, %d conflicts after retries",
				rounds, workers, total, refused[sidecar.EFORBIDDEN], refused[sidecar.ECONFLICT])
			if total < rounds*2 {
				t.Fatalf("only %d changes landed in %d rounds: the race was not exercised", total, rounds)
			}
		})
	}
}

// chained reports whether the moves, in some order, lead from begin to end
// with each move starting in the domain the one before left the customer
// in: an Euler path through the moves as edges between domains.
func chained(begin, end string, moves []move) error {
	out, in := map[string]int{}, map[string]int{}
	adj := map[string][]string{}
	for _, m := range moves {
		out[m.from]++
		in[m.to]++
		adj[m.from] = append(adj[m.from], m.to)
		adj[m.to] = append(adj[m.to], m.from)
	}
	nodes := map[string]bool{begin: true, end: true}
	for _, m := range moves {
		nodes[m.from], nodes[m.to] = true, true
	}
	for n := range nodes {
		want := 0
		if begin != end {
			switch n {
			case begin:
				want = 1
			case end:
				want = -1
			}
		}
		if got := out[n] - in[n]; got != want {
			return fmt.Errorf("domain %q: %d changes out of it, %d into it: some change started where the customer was not", n, out[n], in[n])
		}
	}
	// Every domain a change touches must be reachable from begin.
	seen := map[string]bool{begin: true}
	queue := []string{begin}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, next := range adj[n] {
			if !seen[next] {
				seen[next] = true
				queue = append(queue, next)
			}
		}
	}
	for n := range nodes {
		if !seen[n] {
			return fmt.Errorf("a change in domain %q, where the customer never was", n)
		}
	}
	return nil
}

// TestAssignmentJudgedOnStaleFacts puts another admin's change between a
// call's read and its write (inside the call's policy question): the call
// must be written on the facts as they are now, asked again, or not at all.
func TestAssignmentJudgedOnStaleFacts(t *testing.T) {
	policyFor := managePolicy(t)
	admin := func(name, domain string) *sidecar.Identity {
		return &sidecar.Identity{Subject: name, Org: "resellerco", Domain: domain, Roles: []string{"reseller_super_admin"}}
	}
	anna, alan, bea := admin("anna", "shop-a.example"), admin("alan", "shop-a.example"), admin("bea", "shop-b.example")
	// step is another admin's change, which must succeed; domain "" removes.
	type step struct {
		by               *sidecar.Identity
		customer, domain string
	}
	cases := []struct {
		name     string
		seed     map[string]string // customer → domain
		op       string            // anna's call on customer: put (into shop-a), delete, or import (with another row)
		customer string
		during   [][]step // other admins' changes before anna's first, second, ... policy question
		code     string
		want     map[string]string // customer → domain after ("" unassigned)
	}{
		{name: "claim_of_a_customer_another_domain_claimed_meanwhile", op: "put", customer: "free",
			during: [][]step{{{bea, "free", "shop-b.example"}}},
			code:   sidecar.EFORBIDDEN, want: map[string]string{"free": "shop-b.example"}},
		// Judged on the new facts, the customer is another domain's: the
		// removal answers as for an unassigned one and changes nothing.
		{name: "removal_of_a_customer_moved_to_another_domain_meanwhile", op: "delete", customer: "held",
			seed:   map[string]string{"held": "shop-a.example"},
			during: [][]step{{{alan, "held", ""}, {bea, "held", "shop-b.example"}}},
			want:   map[string]string{"held": "shop-b.example"}},
		{name: "import_of_a_customer_another_domain_claimed_meanwhile", op: "import", customer: "free",
			during: [][]step{{{bea, "free", "shop-b.example"}}},
			code:   sidecar.EFORBIDDEN, want: map[string]string{"free": "shop-b.example", "other": ""}},
		{name: "put_still_allowed_on_the_new_facts_lands", op: "put", customer: "held",
			seed:   map[string]string{"held": "shop-a.example"},
			during: [][]step{{{alan, "held", ""}}},
			want:   map[string]string{"held": "shop-a.example"}},
		{name: "import_still_allowed_on_the_new_facts_lands", op: "import", customer: "held",
			seed:   map[string]string{"held": "shop-a.example"},
			during: [][]step{{{alan, "held", ""}}},
			want:   map[string]string{"held": "shop-a.example", "other": "shop-a.example"}},
		{name: "a_customer_that_keeps_moving_is_a_conflict", op: "put", customer: "held",
			seed:   map[string]string{"held": "shop-a.example"},
			during: [][]step{{{alan, "held", ""}}, {{alan, "held", "shop-a.example"}}, {{alan, "held", ""}}},
			code:   sidecar.ECONFLICT, want: map[string]string{"held": ""}},
	}
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					clock := newPartnerClock()
					store := ps.open(t, clock.Now)
					rs := delegation.NewResellers(store, delegation.ResellerConfig{}, delegation.WithResellerClock(clock.Now))
					ctx := context.Background()
					for c, d := range tc.seed {
						if err := store.PutAssignment(ctx, &sidecar.Assignment{Customer: c, Reseller: "resellerco", Domain: d}); err != nil {
							t.Fatal(err)
						}
					}
					change := func(by *sidecar.Identity, customer, domain string, az delegation.Authorize) error {
						if domain == "" {
							return rs.Delete(ctx, by, customer, az)
						}
						_, err := rs.Put(ctx, by, customer, domain, az)
						return err
					}
					questions := 0
					annaAsks := policyFor(anna, func(map[string]any) {})
					az := func(action string, target map[string]any) error {
						if questions < len(tc.during) {
							for _, st := range tc.during[questions] {
								if err := change(st.by, st.customer, st.domain, policyFor(st.by, func(map[string]any) {})); err != nil {
									t.Fatalf("%s's change of %s: %v", st.by.Subject, st.customer, err)
								}
							}
						}
						questions++
						return annaAsks(action, target)
					}
					var err error
					switch tc.op {
					case "put":
						err = change(anna, tc.customer, "shop-a.example", az)
					case "delete":
						err = change(anna, tc.customer, "", az)
					case "import":
						_, err = rs.Import(ctx, anna, []delegation.ImportRow{
							{Line: 1, Customer: "other", Domain: "shop-a.example"},
							{Line: 2, Customer: tc.customer, Domain: "shop-a.example"},
						}, az)
					}
					if got := sidecar.ErrorCode(err); err != nil && got != tc.code || err == nil && tc.code != "" {
						t.Fatalf("error %v, want code %q", err, tc.code)
					}
					for c, want := range tc.want {
						if got := assignedDomain(t, store, c); got != want {
							t.Errorf("%s is in %q, want %q", c, got, want)
						}
					}
				})
			}
		})
	}
}
