package resolve

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// GrantLookup is what the check path reads for partner access. The
// delegation cache provides it in front of the store, so a steady stream
// of checks for the same customer costs no store round trip.
type GrantLookup interface {
	EffectiveGrants(ctx context.Context, customer, partnerOrg, user string) (sidecar.EffectiveGrants, error)
	SharesFor(ctx context.Context, customer, partnerOrg, user string) ([]string, error)
}

// AssignmentLookup is what the check path reads for reseller access, and,
// for every delegation it resolves, whether the customer's account is
// protected: its profile and staff mark (GetCustomerState; the consent it
// may carry is not read here).
type AssignmentLookup interface {
	GetAssignment(ctx context.Context, customer string) (*sidecar.Assignment, error)
	GetCustomerState(ctx context.Context, customer string) (*sidecar.CustomerState, error)
}

// Reasons the on-behalf resolver refuses a delegation. They reach policy
// as input.delegation_error and the decision log as the reason.
const (
	ReasonIdentityRequired     = "identity_required"
	ReasonInvalidOnBehalfOf    = "invalid_on_behalf_of"
	ReasonOnBehalfOfAmbiguous  = "on_behalf_of_ambiguous"
	ReasonNoPartnerOrg         = "no_partner_org"
	ReasonNoLiveGrant          = "no_live_grant"
	ReasonGrantExpired         = "grant_expired"
	ReasonCustomerNotInDomain  = "customer_not_in_domain"
	ReasonMissingPrivilegePref = "missing_privilege:"
	ReasonResellerRulesMissing = "reseller_rules_missing"
	ReasonCustomerIDNotAllowed = "customer_id_not_allowed"
	ReasonCustomerProtected    = sidecar.EndCustomerProtected
	ReasonOnStorefrontHost     = "on_behalf_of_storefront_host"
)

// OnBehalfResolver resolves requests that name a customer — by the
// on-behalf-of header or the path in policy data
// (data.deputy.partner.customer_path_prefix) — into a partner
// grant or a reseller assignment. Callers whose token carries a domain are
// reseller staff (customer-care portal); other callers with an org are
// partner users (support portal). A request naming no customer, or the
// caller's own organisation, acts as the caller: no delegation.
//
// Neither acts for a protected account: one whose profile says so, holds
// a role of impersonation.protected_roles, is listed in
// protected_customers, or whose subject acted as staff, as impersonation
// judges it (sidecar.Protection). That is read at every request, after
// the grant or assignment is found (so only a caller who could otherwise
// act learns it), through the same evicted lookups, so a customer
// protected after the grant or assignment is refused at its next request
// on every replica (customer_protected).
//
// On the storefront hosts (impersonation.storefront_hosts) no customer is
// acted for this way: there the consented impersonation session is the
// only one (on_behalf_of_storefront_host).
type OnBehalfResolver struct {
	grants      GrantLookup
	assignments AssignmentLookup
	header      string
	rules       *delegation.RuleBook
	clock       sidecar.Clock
	storefronts []string // impersonation.storefront_hosts
	// precedence holds the attributes of a partner delegation above cc,
	// one map for each scope, handed out with every such delegation
	// instead of a new map per check: attributes are only ever read.
	precedence map[string]map[string]any
}

var _ sidecar.DelegationResolver = (*OnBehalfResolver)(nil)

// ResolverOption configures an OnBehalfResolver.
type ResolverOption func(*OnBehalfResolver)

// WithResolverClock sets the clock (default time.Now).
func WithResolverClock(c sidecar.Clock) ResolverOption {
	return func(r *OnBehalfResolver) { r.clock = c }
}

// WithStorefrontHosts sets the storefront hosts
// (impersonation.storefront_hosts), where no customer is acted for by
// header or path: a request naming one there is refused.
func WithStorefrontHosts(hosts []string) ResolverOption {
	return func(r *OnBehalfResolver) { r.storefronts = slices.Clone(hosts) }
}

// NewOnBehalfResolver returns the resolver. data is the active policy
// data: its partner rules name the path that names the customer and its
// reseller rules tell staff apart (the same the policies read); partner
// supplies the header name. It fails on an invalid partner section.
func NewOnBehalfResolver(grants GrantLookup, assignments AssignmentLookup, data delegation.PolicyData, partner delegation.PartnerConfig, opts ...ResolverOption) (*OnBehalfResolver, error) {
	partner = partner.WithDefaults()
	if err := partner.Validate(); err != nil {
		return nil, err
	}
	r := &OnBehalfResolver{
		grants:      grants,
		assignments: assignments,
		header:      sidecar.HeaderName(partner.OnBehalfOfHeader),
		rules:       delegation.NewRuleBook(data),
		clock:       time.Now,
		precedence: map[string]map[string]any{
			sidecar.ScopeIndividual:   {"precedence": sidecar.ScopeIndividual},
			sidecar.ScopeOrganisation: {"precedence": sidecar.ScopeOrganisation},
		},
	}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// Customer returns the customer a request names, "" when none. It is read
// in every spelling an upstream reads the header as (any case, "_" for "-";
// PHP keeps the last of X-On-Behalf-Of and X_On_Behalf_Of) and from the
// customer path: spellings, repeated values, or a header and a path that
// name different customers are refused, so the customer whose grant is
// used is the one the request's path acts on. Only HTTP's optional
// whitespace (space, tab) is trimmed: an upstream reads "acme\u00a0" as
// it stands, or, comparing with a PAD SPACE collation, as acme.
func (r *OnBehalfResolver) Customer(req *sidecar.Request) (string, error) {
	var v string
	var buf [2]string
	for i, s := range req.AppendHeaderValues(buf[:0], r.header) {
		if s = strings.Trim(s, " \t"); i > 0 && s != v {
			return "", sidecar.Refused(sidecar.EINVALID, ReasonOnBehalfOfAmbiguous, nil)
		}
		v = s
	}
	if v != "" && delegation.ValidRef(r.header, v) != nil {
		return "", sidecar.Refused(sidecar.EINVALID, ReasonInvalidOnBehalfOf, nil)
	}
	// Parsed once per policy activation, so the path costs a pointer
	// comparison here.
	tmpl := r.rules.CustomerPath(req.PolicyData)
	if tmpl == nil {
		return v, nil
	}
	c, ok := tmpl.Match(req.Path)
	switch {
	case !ok:
		return v, nil
	case v != "" && c != v:
		return "", sidecar.Refused(sidecar.EINVALID, ReasonOnBehalfOfAmbiguous, nil)
	case v != "":
		return v, nil
	}
	// c is a slice of the request's path, which may be far longer: the
	// state cache keeps it as a key, so it keeps a copy of c alone.
	c = strings.Clone(c)
	if delegation.ValidRef("customer", c) != nil {
		return "", sidecar.Refused(sidecar.EINVALID, ReasonInvalidOnBehalfOf, nil)
	}
	return c, nil
}

// Resolve implements sidecar.DelegationResolver.
func (r *OnBehalfResolver) Resolve(ctx context.Context, req *sidecar.Request, id *sidecar.Identity) (*sidecar.Delegation, error) {
	customer, err := r.Customer(req)
	if err != nil || customer == "" {
		return nil, err
	}
	var d *sidecar.Delegation
	switch {
	case len(r.storefronts) > 0 && delegation.HostIn(req.Host, r.storefronts):
		err = sidecar.Refused(sidecar.EFORBIDDEN, ReasonOnStorefrontHost, nil)
	case id == nil:
		err = sidecar.Refused(sidecar.EFORBIDDEN, ReasonIdentityRequired, nil)
	case id.Domain != "":
		d, err = r.resolveReseller(ctx, req.PolicyData, customer, id)
	default:
		d, err = r.resolvePartner(ctx, customer, id)
	}
	if err == nil && d != nil {
		err = r.unprotected(ctx, req.PolicyData, d.Subject)
	}
	if err != nil {
		// The customer it tried to act for, for the decision record:
		// the caller acts as themselves, and that alone would not say.
		return nil, sidecar.WithAttempt(err, sidecar.Attempt{OnBehalfOf: customer})
	}
	return d, nil
}

// unprotected refuses customer's account when it is protected as
// impersonation judges it: by its profile or staff mark, read now, and by
// the protected roles and customers of data, the policy data deciding
// the check.
func (r *OnBehalfResolver) unprotected(ctx context.Context, data map[string]any, customer string) error {
	p, err := r.rules.Protection(data)
	if err != nil { // refused at activation; never served
		return sidecar.Refused(sidecar.EUNAVAILABLE, "policy_data_malformed", err)
	}
	cs, err := r.assignments.GetCustomerState(ctx, customer)
	if err != nil {
		return err
	}
	if p.ProtectsState(customer, cs) {
		return sidecar.Refused(sidecar.EFORBIDDEN, ReasonCustomerProtected, nil)
	}
	return nil
}

func (r *OnBehalfResolver) resolvePartner(ctx context.Context, customer string, id *sidecar.Identity) (*sidecar.Delegation, error) {
	if id.Org == "" {
		return nil, sidecar.Refused(sidecar.EFORBIDDEN, ReasonNoPartnerOrg, nil)
	}
	if id.Org == customer {
		return nil, nil
	}
	e, err := r.grants.EffectiveGrants(ctx, customer, id.Org, id.Subject)
	if err != nil {
		if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
			return nil, sidecar.Refused(sidecar.EFORBIDDEN, ReasonNoLiveGrant, nil)
		}
		return nil, err
	}
	// Precedence is applied at read time, so a cached pair of grants still
	// honours each one's expiry: a lapsed individual grant lets the
	// organisation's apply, as if it were absent.
	now := r.clock()
	g := delegation.EffectiveAt(e, now)
	if g == nil {
		// Held back by a revoked or replaced individual grant, the user
		// has no grant that applies, as after a revocation of the
		// organisation's.
		if !e.HeldBack(now) && (e.Individual != nil || e.Organisation != nil) {
			return nil, sidecar.Refused(sidecar.EFORBIDDEN, ReasonGrantExpired, nil)
		}
		return nil, sidecar.Refused(sidecar.EFORBIDDEN, ReasonNoLiveGrant, nil)
	}
	attrs := r.precedence[g.Scope()]
	if g.Level == sidecar.LevelCC {
		attrs = map[string]any{"precedence": g.Scope()}
		shared, err := r.grants.SharesFor(ctx, customer, id.Org, id.Subject)
		if err != nil && sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
			return nil, err
		}
		list := make([]any, len(shared))
		for i, s := range shared {
			list[i] = s
		}
		attrs["shared_resources"] = list
	}
	return &sidecar.Delegation{
		Mode:       sidecar.ModePartner,
		ID:         g.ID,
		Actor:      id.Subject,
		ActorName:  id.Name,
		ActorOrg:   id.Org,
		Subject:    customer,
		Level:      string(g.Level),
		Scope:      g.Scope(),
		ExpiresAt:  g.ExpiresAt,
		Attributes: attrs,
	}, nil
}
