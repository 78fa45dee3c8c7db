package authz

import (
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// resultTerms holds, for one activation, the parsed form of every object
// a rule of it states as its value outright ({"allowed": true, "reason":
// "public_route"}, the impersonation allow with its cache headers): OPA
// answers a decision that is such a value with the rule's own term, the
// same one on every check, so the term is parsed and checked once per
// activation rather than on every check (an impersonated allow's headers
// cost some six allocations to read). Results a rule builds (lib.deny(403,
// reason)) are new terms and are parsed as before.
//
// Keyed by the term's address: the activation's compiled modules hold
// every key, so no address is reused while the map lives, and OPA never
// changes a compiled term. A parsed result is shared by every check that
// gets its term, as the activation's facts are: its slices are at full
// capacity, so a caller appending to one copies it, and no adapter
// changes a response's slices. Results with dynamic_metadata, a map, and
// results that fail to parse or name Deputy's headers are left out: they
// are parsed on every check, as before.
type resultTerms struct {
	act    *policy.Activation
	parsed map[*ast.Term]*policyResult
}

// newResultTerms parses the stated object values of act's rules.
func newResultTerms(act *policy.Activation, opts *InputOptions) *resultTerms {
	t := &resultTerms{act: act, parsed: map[*ast.Term]*policyResult{}}
	if act.Compiler == nil {
		return t
	}
	for _, m := range act.Compiler.Modules {
		for _, rule := range m.Rules {
			ast.WalkRules(rule, func(r *ast.Rule) bool {
				t.add(r.Head.Value, opts)
				return false
			})
		}
	}
	return t
}

func (t *resultTerms) add(v *ast.Term, opts *InputOptions) {
	if v == nil || !v.IsGround() {
		return
	}
	obj, ok := v.Value.(ast.Object)
	if !ok {
		return
	}
	pr, err := parseObject(obj)
	if err == nil {
		err = pr.namesDeputys(opts)
	}
	if err != nil || pr.dynamicMetadata != nil {
		return
	}
	pr.headers = slices.Clip(pr.headers)
	pr.headersToRemove = slices.Clip(pr.headersToRemove)
	pr.responseHeadersToAdd = slices.Clip(pr.responseHeadersToAdd)
	pr.queryToSet = slices.Clip(pr.queryToSet)
	pr.queryToRemove = slices.Clip(pr.queryToRemove)
	t.parsed[v] = &pr
}

// result returns the parsed and checked result of a decision under act.
func (p *Pipeline) result(act *policy.Activation, v *ast.Term) (policyResult, error) {
	t := p.resultTerms.Load()
	if (t == nil || t.act != act) && act == p.eval.Current() {
		// Built for the serving activation only: a check still on the
		// one before a swap parses its result rather than rebuild.
		t = newResultTerms(act, &p.inputOpts)
		p.resultTerms.Store(t)
	}
	if t != nil && t.act == act {
		if pr, ok := t.parsed[v]; ok {
			return *pr, nil
		}
	}
	pr, err := parseResult(v)
	if err == nil {
		err = pr.namesDeputys(&p.inputOpts)
	}
	return pr, err
}
