package authz

import (
	"hash/maphash"
	"net/url"
	"slices"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// delegationTermsSize bounds the delegations whose input.delegation and
// identity headers are kept.
const delegationTermsSize = 4096

// delegationTerms keeps what a check derives from a delegation alone, for
// the delegations resolvers hand out again: a partner or reseller resolves
// to the same facts on every request it makes for a customer, a session to
// the same facts on every request of the session. input.delegation (some
// ten allocations to build) and the identity headers injected upstream
// are built once per delegation, not on every check. Resolvers return a
// new *sidecar.Delegation each time, so the key is the facts themselves;
// the actor's and the subject's roles are keyed by a hash, and a kept
// term is used only if its entry's copy of the roles equals them. A
// delegation with attributes policy reads has its input.delegation built
// every time (its key would have to hold their values); its headers do
// not read them and are kept. Policy never changes input and adapters
// never change a response's headers, so both are shared as the
// activation's facts are.
type delegationTerms struct {
	cache *lru.Cache[delegationKey, *delegationEntry]
	seed  maphash.Seed // of the roles hash
	names headerNames
	// onBehalfOf is the on-behalf-of header, set to the customer a
	// partner or reseller delegation acts for.
	onBehalfOf string
}

// delegationKey is every field of sidecar.Delegation that delegationToAST
// and identityHeaders read, the role lists by a hash (see rolesHash), but
// the attributes (see delegationTerms).
type delegationKey struct {
	mode, id, actor, actorName, actorOrg, subject, subjectName string
	level, scope, storeView, domain, reason, ticket            string
	expiresAt                                                  time.Time
	subjectProtected                                           bool
	roles                                                      uint64
}

// delegationEntry is what is kept of one delegation. Only signed changes
// once the entry is kept.
type delegationEntry struct {
	need *policy.InputNeeds // the activation's needs term was built for
	term *ast.Term          // nil when built for no needs
	// actorRoles and subjectRoles are copies of the roles term was built
	// with: the key holds only their hash.
	actorRoles, subjectRoles []string
	// headers are the identity headers but the actor token, at full
	// capacity, so appending to them copies.
	headers []Header
	// signed is headers with the last actor token signed for the
	// delegation, reused while the signer hands out that same token.
	signed atomic.Pointer[signedHeaders]
}

type signedHeaders struct {
	token   string
	headers []Header
}

func newDelegationTerms(names headerNames, onBehalfOf string) delegationTerms {
	c, _ := lru.New[delegationKey, *delegationEntry](delegationTermsSize) // fails only for a size <= 0
	return delegationTerms{cache: c, seed: maphash.MakeSeed(), names: names, onBehalfOf: onBehalfOf}
}

// lookup returns the kept entry of d and, when need (the activation's
// needs of input.delegation) is not nil, input.delegation of d with the
// fields need names.
func (t delegationTerms) lookup(d *sidecar.Delegation, need *policy.InputNeeds) (*delegationEntry, *ast.Term) {
	k := delegationKey{
		mode: d.Mode, id: d.ID, actor: d.Actor, actorName: d.ActorName, actorOrg: d.ActorOrg,
		subject: d.Subject, subjectName: d.SubjectName, level: d.Level, scope: d.Scope,
		storeView: d.StoreView, domain: d.Domain, reason: d.Reason, ticket: d.Ticket,
		expiresAt: d.ExpiresAt, subjectProtected: d.SubjectProtected, roles: t.rolesHash(d),
	}
	keep := need != nil && keyable(d, need)
	e, ok := t.cache.Peek(k)
	if ok && (!keep || e.need == need && slices.Equal(e.actorRoles, d.ActorRoles) && slices.Equal(e.subjectRoles, d.SubjectRoles)) {
		return e, t.termOf(e, d, need, keep)
	}
	ne := &delegationEntry{}
	if ok {
		ne.headers = e.headers
	} else {
		ne.headers = t.identityHeaders(d)
	}
	if keep {
		ne.need, ne.term = need, ast.NewTerm(delegationToAST(d, need))
		ne.actorRoles, ne.subjectRoles = slices.Clone(d.ActorRoles), slices.Clone(d.SubjectRoles)
	}
	t.cache.Add(k, ne)
	return ne, t.termOf(ne, d, need, keep)
}

// termOf is input.delegation of d from e when e keeps it for need.
func (delegationTerms) termOf(e *delegationEntry, d *sidecar.Delegation, need *policy.InputNeeds, keep bool) *ast.Term {
	switch {
	case need == nil:
		return nil
	case keep:
		return e.term
	default:
		return ast.NewTerm(delegationToAST(d, need))
	}
}

// rolesHash is the key of d's role lists, 0 when it has none. Equal
// lists hash alike; lists that are not equal and hash alike are told
// apart by the entry's copies.
func (t delegationTerms) rolesHash(d *sidecar.Delegation) uint64 {
	if len(d.ActorRoles) == 0 && len(d.SubjectRoles) == 0 {
		return 0
	}
	var h maphash.Hash
	h.SetSeed(t.seed)
	for _, r := range d.ActorRoles {
		h.WriteString(r)
		h.WriteByte(0)
	}
	h.WriteByte(1) // where the actor's list ends
	for _, r := range d.SubjectRoles {
		h.WriteString(r)
		h.WriteByte(0)
	}
	return h.Sum64()
}

// keyable reports whether input.delegation of d depends on delegationKey's
// fields and the roles alone.
func keyable(d *sidecar.Delegation, need *policy.InputNeeds) bool {
	if n := need.Child("attributes"); n != nil {
		for k := range d.Attributes {
			if n.Child(k) != nil {
				return false
			}
		}
	}
	return true
}

// identityHeaders are the headers injected upstream for d, but the actor
// token.
func (t delegationTerms) identityHeaders(d *sidecar.Delegation) []Header {
	h := make([]Header, 0, 8)
	for _, f := range [...]struct {
		name  *string
		value string
	}{
		{&t.names.subject, d.Subject}, {&t.names.actor, d.Actor}, {&t.names.mode, d.Mode},
		{&t.names.level, d.Level}, {&t.names.session, d.ID}, {&t.names.storeView, d.StoreView},
		{&t.onBehalfOf, onBehalfOf(d)},
	} {
		if f.value != "" {
			h = append(h, Header{*f.name, f.value})
		}
	}
	if d.SubjectName != "" {
		h = append(h, Header{t.names.subjectName, url.PathEscape(d.SubjectName)})
	}
	return slices.Clip(h)
}

// withToken is e's headers with the actor token token (the one signed
// for this check) in tokenHeader.
func (e *delegationEntry) withToken(tokenHeader, token string) []Header {
	if s := e.signed.Load(); s != nil && s.token == token {
		return s.headers
	}
	h := slices.Clip(append(e.headers, Header{tokenHeader, token})) // e.headers is at capacity: a copy
	e.signed.Store(&signedHeaders{token: token, headers: h})
	return h
}

// onBehalfOf is the customer a partner or reseller delegation acts for,
// the one value of the on-behalf-of header the upstream may see.
func onBehalfOf(del *sidecar.Delegation) string {
	if del.Mode == sidecar.ModePartner || del.Mode == sidecar.ModeReseller {
		return del.Subject
	}
	return ""
}
