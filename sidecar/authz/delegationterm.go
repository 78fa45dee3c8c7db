package authz

import (
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// delegationTermsSize bounds the delegations whose input.delegation is kept.
const delegationTermsSize = 4096

// delegationTerms keeps input.delegation for the delegations resolvers
// hand out again: a partner or reseller resolves to the same facts on
// every request it makes for a customer, and its term (some ten
// allocations to build) is built once, not on every check. Resolvers
// return a new *sidecar.Delegation each time, so the key is the facts
// themselves. A delegation with roles, or with attributes policy reads,
// is built every time: its key would have to hold lists and values.
// Policy never changes input, so the term is shared as the activation's
// facts are.
type delegationTerms struct {
	cache *lru.Cache[delegationKey, delegationTerm]
}

// delegationKey is every field of sidecar.Delegation that delegationToAST
// reads, but the lists and the attributes (see delegationTerms).
type delegationKey struct {
	mode, id, actor, actorName, actorOrg, subject, subjectName string
	level, scope, storeView, domain, reason, ticket            string
	expiresAt                                                  time.Time
	subjectProtected                                           bool
}

type delegationTerm struct {
	need *policy.InputNeeds // the activation's needs it was built for
	term *ast.Term
}

func newDelegationTerms() delegationTerms {
	c, _ := lru.New[delegationKey, delegationTerm](delegationTermsSize) // fails only for a size <= 0
	return delegationTerms{cache: c}
}

// term returns input.delegation of d with the fields need names.
func (t delegationTerms) term(d *sidecar.Delegation, need *policy.InputNeeds) *ast.Term {
	if !keyable(d, need) {
		return ast.NewTerm(delegationToAST(d, need))
	}
	k := delegationKey{
		mode: d.Mode, id: d.ID, actor: d.Actor, actorName: d.ActorName, actorOrg: d.ActorOrg,
		subject: d.Subject, subjectName: d.SubjectName, level: d.Level, scope: d.Scope,
		storeView: d.StoreView, domain: d.Domain, reason: d.Reason, ticket: d.Ticket,
		expiresAt: d.ExpiresAt, subjectProtected: d.SubjectProtected,
	}
	if e, ok := t.cache.Peek(k); ok && e.need == need {
		return e.term
	}
	term := ast.NewTerm(delegationToAST(d, need))
	t.cache.Add(k, delegationTerm{need: need, term: term})
	return term
}

// keyable reports whether input.delegation of d depends on delegationKey's
// fields alone.
func keyable(d *sidecar.Delegation, need *policy.InputNeeds) bool {
	if len(d.ActorRoles) > 0 || len(d.SubjectRoles) > 0 {
		return false
	}
	if n := need.Child("attributes"); n != nil {
		for k := range d.Attributes {
			if n.Child(k) != nil {
				return false
			}
		}
	}
	return true
}
