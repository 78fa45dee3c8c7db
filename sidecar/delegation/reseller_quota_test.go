package delegation_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// resellerData is the shipped policy data with the reseller section's
// limits set to what the case names.
func resellerData(t *testing.T, limits map[string]any) delegation.PolicyData {
	t.Helper()
	base := shippedData(t)()
	data := maps.Clone(base)
	deputy := maps.Clone(base["deputy"].(map[string]any))
	reseller := maps.Clone(deputy["reseller"].(map[string]any))
	maps.Copy(reseller, limits)
	deputy["reseller"] = reseller
	data["deputy"] = deputy
	return func() map[string]any { return data }
}

func importRows(from, n int, domain string) []delegation.ImportRow {
	rows := make([]delegation.ImportRow, n)
	for i := range rows {
		rows[i] = delegation.ImportRow{Line: i + 1, Customer: fmt.Sprintf("q%d", from+i), Domain: domain}
	}
	return rows
}

// A domain holds at most max_domain_assignments customers: a PUT or an
// import that would take it past that is refused whole, naming the limit,
// and nothing is written or announced.
func TestResellerDomainBound(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			rs := delegation.NewResellers(env.store, delegation.ResellerConfig{}, delegation.WithResellerClock(env.clock.Now),
				delegation.WithResellerPolicyData(resellerData(t, map[string]any{"max_domain_assignments": 5})))
			if n, err := rs.Import(ctx, superAdmin, importRows(0, 4, "shop-a.example"), allowAll); err != nil || n != 4 {
				t.Fatalf("import of 4 into a bound of 5: %d %v", n, err)
			}
			before := len(events(t, env.store, sidecar.EventAssignmentChanged))
			_, err := rs.Import(ctx, superAdmin, importRows(4, 2, "shop-a.example"), allowAll)
			wantTooMany(t, err)
			for _, c := range []string{"q4", "q5"} {
				if _, err := env.store.GetAssignment(ctx, c); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
					t.Fatalf("%s of a refused import: %v", c, err)
				}
			}
			if _, err := rs.Put(ctx, superAdmin, "q4", "shop-a.example", allowAll); err != nil {
				t.Fatal(err)
			}
			_, err = rs.Put(ctx, superAdmin, "q5", "shop-a.example", allowAll)
			wantTooMany(t, err)
			if after := len(events(t, env.store, sidecar.EventAssignmentChanged)); after != before+1 {
				t.Fatalf("%d assignment events after one PUT and two refusals, want %d", after, before+1)
			}
			// Importing rows already held adds none.
			if _, err := rs.Import(ctx, superAdmin, importRows(0, 5, "shop-a.example"), allowAll); err != nil {
				t.Fatalf("re-import of the 5 held: %v", err)
			}
			// Ids fold: a held customer in another spelling adds none either.
			if _, err := rs.Put(ctx, superAdmin, "Q1", "shop-a.example", allowAll); err != nil {
				t.Fatalf("PUT of q1 respelled Q1 into its full domain: %v", err)
			}
			if _, err := rs.Import(ctx, superAdmin, []delegation.ImportRow{{Line: 1, Customer: "Q2", Domain: "shop-a.example"}}, allowAll); err != nil {
				t.Fatalf("import of q2 respelled Q2 into its full domain: %v", err)
			}
			if err := rs.Delete(ctx, superAdmin, "q0", allowAll); err != nil {
				t.Fatal(err)
			}
			if _, err := rs.Put(ctx, superAdmin, "q5", "shop-a.example", allowAll); err != nil {
				t.Fatalf("a place freed by a delete: %v", err)
			}
		})
	}
}

func wantTooMany(t *testing.T, err error) {
	t.Helper()
	var e *sidecar.Error
	if !errors.As(err, &e) || e.Code != sidecar.ECONFLICT || !strings.Contains(e.Message, "max_domain_assignments (5)") {
		t.Fatalf("error %v, want a conflict naming max_domain_assignments (5)", err)
	}
}

// Concurrent imports into one domain never together pass its bound.
func TestResellerDomainBoundConcurrentImports(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			rs := delegation.NewResellers(env.store, delegation.ResellerConfig{}, delegation.WithResellerClock(env.clock.Now),
				delegation.WithResellerPolicyData(resellerData(t, map[string]any{"max_domain_assignments": 30})))
			var (
				wg     sync.WaitGroup
				mu     sync.Mutex
				passed int
			)
			for i := range 6 {
				wg.Go(func() {
					_, err := rs.Import(ctx, superAdmin, importRows(i*100, 10, "shop-a.example"), allowAll)
					switch {
					case err == nil:
						mu.Lock()
						passed++
						mu.Unlock()
					case sidecar.ErrorReason(err) != sidecar.ReasonTooManyAssignments:
						t.Errorf("import %d: %v", i, err)
					}
				})
			}
			wg.Wait()
			listed, _, err := env.store.AssignmentsByDomain(ctx, "shop-a.example", sidecar.Page{Limit: sidecar.MaxPageLimit})
			if err != nil {
				t.Fatal(err)
			}
			if passed != 3 || len(listed) != 30 {
				t.Fatalf("%d imports of 10 passed a bound of 30, %d listed; want 3 and 30", passed, len(listed))
			}
		})
	}
}

// A domain writes at most max_assignment_rows_per_hour rows an hour: an
// import counts its rows, a PUT one; past it the call is refused (rate
// limited, with the wait) and writes nothing.
func TestResellerRowBudget(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			// Behind the real clock: Redis ends a budget's window once it is
			// over by both its clock and the store's (TakeAssignmentRows).
			env := &partnerEnv{clock: &partnerClock{now: time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)}}
			env.store = ps.open(t, env.clock.Now)
			rs := delegation.NewResellers(env.store, delegation.ResellerConfig{}, delegation.WithResellerClock(env.clock.Now),
				delegation.WithResellerPolicyData(resellerData(t, map[string]any{"max_assignment_rows_per_hour": 10})))
			if _, err := rs.Import(ctx, superAdmin, importRows(0, 8, "shop-a.example"), allowAll); err != nil {
				t.Fatal(err)
			}
			env.clock.Advance(time.Minute)
			before := len(events(t, env.store, sidecar.EventAssignmentChanged))
			_, err := rs.Import(ctx, superAdmin, importRows(8, 3, "shop-a.example"), allowAll)
			var ra *sidecar.RetryAfter
			if sidecar.ErrorCode(err) != sidecar.ERATELIMIT || !errors.As(err, &ra) || ra.Wait != time.Hour-time.Minute ||
				!strings.Contains(sidecar.ErrorMessage(err), "max_assignment_rows_per_hour (10)") {
				t.Fatalf("3 rows past 8 of 10: %v, want rate limited for %v naming the limit", err, time.Hour-time.Minute)
			}
			if _, err := env.store.GetAssignment(ctx, "q8"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
				t.Fatalf("a row of a refused import was written: %v", err)
			}
			if _, err := rs.Put(ctx, superAdmin, "p1", "shop-a.example", allowAll); err != nil {
				t.Fatal(err)
			}
			if _, err := rs.Put(ctx, superAdmin, "p2", "shop-a.example", allowAll); err != nil {
				t.Fatal(err)
			}
			_, err = rs.Put(ctx, superAdmin, "p3", "shop-a.example", allowAll)
			if sidecar.ErrorCode(err) != sidecar.ERATELIMIT {
				t.Fatalf("11th row in the hour: %v, want rate limited", err)
			}
			if after := len(events(t, env.store, sidecar.EventAssignmentChanged)); after != before+2 {
				t.Fatalf("%d events after two PUTs and two refusals, want %d", after, before+2)
			}
			// An import larger than the whole budget can never pass: refused
			// as too large, not as a wait.
			_, err = rs.Import(ctx, superAdmin, importRows(100, 11, "shop-a.example"), allowAll)
			if sidecar.ErrorCode(err) != sidecar.ETOOLARGE {
				t.Fatalf("an import of 11 rows under a budget of 10: %v, want too large", err)
			}
			env.clock.Advance(time.Hour)
			if _, err := rs.Import(ctx, superAdmin, importRows(8, 3, "shop-a.example"), allowAll); err != nil {
				t.Fatalf("next hour: %v", err)
			}
		})
	}
}

// Without policy data a domain is bounded by the defaults.
func TestResellerDefaultLimits(t *testing.T) {
	rules, err := delegation.ReadRules(shippedData(t)())
	if err != nil {
		t.Fatal(err)
	}
	if r := rules.Reseller; r.MaxDomainAssignments != delegation.DefaultMaxDomainAssignments ||
		r.MaxAssignmentRowsPerHour != delegation.DefaultMaxAssignmentRowsPerHour {
		t.Fatalf("shipped reseller limits %d and %d, want the defaults %d and %d", r.MaxDomainAssignments, r.MaxAssignmentRowsPerHour,
			delegation.DefaultMaxDomainAssignments, delegation.DefaultMaxAssignmentRowsPerHour)
	}
}
