package authz

import (
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// identityTermsSize bounds the identities whose input.identity is kept.
const identityTermsSize = 4096

// identityTerms keeps input.identity for the identities a verifier hands
// out again: a verifier caches its verdicts, so a caller's next request
// with the same token brings the same *sidecar.Identity, and its term
// (some fifteen allocations to build) is built once, not on every check.
// An identity is immutable once verified and policy never changes input,
// so the term is shared as the activation's facts are. Entries hold
// their identity, so an address cannot be reused while it is a key.
type identityTerms struct {
	cache *lru.Cache[*sidecar.Identity, identityTerm]
}

type identityTerm struct {
	need *policy.InputNeeds // the activation's needs it was built for
	term *ast.Term
}

func newIdentityTerms() identityTerms {
	c, _ := lru.New[*sidecar.Identity, identityTerm](identityTermsSize) // fails only for a size <= 0
	return identityTerms{cache: c}
}

// term returns input.identity of id with the fields need names.
func (t identityTerms) term(id *sidecar.Identity, need *policy.InputNeeds) *ast.Term {
	if e, ok := t.cache.Peek(id); ok && e.need == need {
		return e.term
	}
	term := ast.NewTerm(identityToAST(id, need))
	t.cache.Add(id, identityTerm{need: need, term: term})
	return term
}
