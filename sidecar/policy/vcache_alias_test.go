package policy_test

import (
	"context"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// Deputy's per-evaluation rule cache (vcache.go) keeps the ast.Ref OPA
// hands to Put as the entry's key. For function calls OPA hands the
// cacheKey buffer of a pooled evalFunc, which the next call overwrites
// (eval.go evalCache: e.cacheKey = slices.Grow(e.cacheKey, plen)[:plen]).
// The stored key then equals whatever the next call looks up, and a
// lookup hashing to the same bucket is answered with the earlier call's
// value. Ref.Hash sums the element hashes, so f(a, b) and f(b, a) always
// share a bucket: f(b, a) is answered with f(a, b).
const aliasFollowsPolicy = `package deputy.authz

follows(a, b) if b in data.deputy.social.follows[a]

default decision := {"allowed": false, "reason": "not_followed"}

# A fan (the viewer follows the owner) on the owner's block list is
# denied for that reason; otherwise the owner must follow the viewer.
decision := {"allowed": false, "reason": "blocked"} if {
	follows(input.viewer, input.owner)
	input.viewer in data.deputy.social.blocked[input.owner]
} else := {"allowed": true, "reason": "owner_follows_viewer"} if {
	follows(input.owner, input.viewer)
}
`

func TestRuleCacheAnswersPermutedCallWithOtherCallsValue(t *testing.T) {
	set := &policy.Set{
		Modules: map[string]*ast.Module{"authz.rego": ast.MustParseModuleWithOpts(aliasFollowsPolicy, ast.ParserOptions{RegoVersion: ast.RegoV1})},
		Data: map[string]any{"deputy": map[string]any{"social": map[string]any{"follows": map[string]any{
			"mallory": []any{"olivia"}, // mallory follows olivia; olivia follows nobody
		}, "blocked": map[string]any{}}}},
		Source: "test",
	}
	e := policy.New(policy.WithLogger(quiet()))
	if err := e.Activate(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	in := ast.MustParseTerm(`{"viewer": "mallory", "owner": "olivia"}`).Value
	res, err := e.Eval(context.Background(), policy.DefaultDecisionQuery, in)
	if err != nil {
		t.Fatal(err)
	}
	got := res.Value.String()

	// Plain OPA on the same module, data and input.
	r := rego.New(rego.Query(policy.DefaultDecisionQuery),
		rego.ParsedModule(ast.MustParseModuleWithOpts(aliasFollowsPolicy, ast.ParserOptions{RegoVersion: ast.RegoV1})),
		rego.Store(nil), rego.Input(map[string]any{"viewer": "mallory", "owner": "olivia"}),
		rego.Data(set.Data))
	rs, err := r.Eval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ast.InterfaceToValue(rs[0].Expressions[0].Value)
	t.Logf("deputy: %s", got)
	t.Logf("opa:    %v", want)
	if got != want.String() {
		t.Errorf("Deputy decides %s where OPA decides %v: mallory (a fan olivia does not follow) is allowed as if olivia followed mallory", got, want)
	}
}

// The same with a one-argument function and numbers the client sends:
// OPA hashes a number as its integer part, so qty_ok(10.9) shares a
// bucket with qty_ok(10), and an order line of 10.9 units passes a
// limit of 10 when a line of 10 came first.
const aliasQtyPolicy = `package deputy.authz

qty_ok(n) if {
	n >= 1
	n <= 10
}

default decision := {"allowed": false, "reason": "quantity"}

decision := {"allowed": true, "reason": "order_ok"} if {
	every item in input.parsed_body.items {
		qty_ok(item.qty)
	}
}
`

func TestRuleCacheAnswersNumberByItsIntegerPart(t *testing.T) {
	mod := func() *ast.Module {
		return ast.MustParseModuleWithOpts(aliasQtyPolicy, ast.ParserOptions{RegoVersion: ast.RegoV1})
	}
	e := policy.New(policy.WithLogger(quiet()))
	if err := e.Activate(context.Background(), &policy.Set{Modules: map[string]*ast.Module{"q.rego": mod()}, Data: map[string]any{}, Source: "test"}); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{
		`{"parsed_body": {"items": [{"qty": 10.9}]}}`,
		`{"parsed_body": {"items": [{"qty": 10}, {"qty": 10.9}]}}`,
	} {
		res, err := e.Eval(context.Background(), policy.DefaultDecisionQuery, ast.MustParseTerm(body).Value)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := rego.New(rego.Query(policy.DefaultDecisionQuery), rego.ParsedModule(mod()),
			rego.ParsedInput(ast.MustParseTerm(body).Value)).Eval(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		want, _ := ast.InterfaceToValue(rs[0].Expressions[0].Value)
		t.Logf("%s: deputy %s, opa %v", body, res.Value, want)
		if res.Value.String() != want.String() {
			t.Errorf("%s: Deputy decides %s, OPA %v", body, res.Value, want)
		}
	}
}

// The rule cache of each evaluation is its own: many checks at once, each
// calling the same function with other arguments, decide as each alone.
func TestRuleCacheConcurrentChecksDecideAlone(t *testing.T) {
	set := &policy.Set{
		Modules: map[string]*ast.Module{"authz.rego": ast.MustParseModuleWithOpts(aliasFollowsPolicy, ast.ParserOptions{RegoVersion: ast.RegoV1})},
		Data: map[string]any{"deputy": map[string]any{"social": map[string]any{"follows": map[string]any{
			"mallory": []any{"olivia"},
		}, "blocked": map[string]any{}}}},
		Source: "test",
	}
	e := policy.New(policy.WithLogger(quiet()))
	if err := e.Activate(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ input, want string }{
		// olivia follows nobody: mallory is refused on olivia's page.
		{`{"viewer": "mallory", "owner": "olivia"}`, `"not_followed"`},
		// mallory follows olivia: olivia is allowed on mallory's page.
		{`{"viewer": "olivia", "owner": "mallory"}`, `"owner_follows_viewer"`},
	}
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				c := cases[(g+i)%len(cases)]
				res, err := e.Eval(context.Background(), policy.DefaultDecisionQuery, ast.MustParseTerm(c.input).Value)
				if err != nil {
					errs <- err.Error()
					return
				}
				if got := res.Value.Value.(ast.Object).Get(ast.StringTerm("reason")).String(); got != c.want {
					errs <- c.input + ": reason " + got + ", want " + c.want
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
}
