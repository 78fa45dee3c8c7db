package authz

import (
	"strings"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar/policy"
)

const (
	// requestTermsSize bounds the canonical requests whose input.deputy
	// is kept. A term holds about 2 KB under the shipped policies, so
	// some megabyte in all, as each policy memo may: with a new page on
	// every check, 2,048 of them held Deputy's resident set 9 MB higher.
	requestTermsSize = 512
	// requestTermMaxPath is the longest canonical path kept: a longer one
	// is built on every check, so a client cannot fill the cache with
	// large paths.
	requestTermMaxPath = 256
)

// requestTerms keeps input.deputy (the activation's facts a rule can read
// plus the canonical request) of checks that stripped no owned header, by
// host name, canonical path and methods: pages are asked about again and
// again, and the term (some twenty-five allocations to build) is a
// function of those three and of the activation alone. Policy never
// changes input, so the term is shared as the activation's facts are.
type requestTerms struct {
	cache *lru.Cache[requestKey, requestTerm]
}

// requestKey is a canonical request: its host's name, its path, and its
// methods joined by a space, which no method name holds (isToken).
type requestKey struct {
	host, path, methods string
}

type requestTerm struct {
	act  *policy.Activation // the activation it was built for
	term *ast.Term
}

func newRequestTerms() requestTerms {
	c, _ := lru.New[requestKey, requestTerm](requestTermsSize) // fails only for a size <= 0
	return requestTerms{cache: c}
}

// key returns the key of c, and false for a request not kept: one asking
// to upgrade is not (its term holds what it asks for).
func (requestTerms) key(c *canonicalRequest) (requestKey, bool) {
	// An upgrade is rare, and its term is not the plain request's.
	if len(c.path) > requestTermMaxPath || len(c.methods) == 0 || c.upgrading {
		return requestKey{}, false
	}
	k := requestKey{host: c.host.Name, path: c.path, methods: c.methods[0]}
	if len(c.methods) > 1 {
		k.methods = strings.Join(c.methods, " ")
	}
	return k, true
}

// deputyTerm returns input.deputy for a check of c that stripped nothing
// under act, whose request needs are rn.
func (p *Pipeline) deputyTerm(act *policy.Activation, need, rn *policy.InputNeeds, c *canonicalRequest) *ast.Term {
	k, keep := p.requests.key(c)
	if keep {
		if e, ok := p.requests.cache.Peek(k); ok && e.act == act {
			return e.term
		}
	}
	read := p.activationFacts(act, need).read
	facts := ast.NewObjectWithCapacity(len(read) + 1)
	for _, kv := range read {
		facts.Insert(kv[0], kv[1])
	}
	facts.Insert(keyTerm("request"), c.requestTerm(rn))
	term := ast.NewTerm(facts)
	if keep {
		p.requests.cache.Add(k, requestTerm{act: act, term: term})
	}
	return term
}
