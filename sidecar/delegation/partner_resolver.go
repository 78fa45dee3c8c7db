package delegation

import (
	"context"
	"strings"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// GrantLookup is what the check path reads for partner access. The
// delegation cache provides it in front of the store, so a steady stream
// of checks for the same customer costs no store round trip.
type GrantLookup interface {
	EffectiveGrants(ctx context.Context, customer, partnerOrg, user string) (sidecar.EffectiveGrants, error)
	SharesFor(ctx context.Context, customer, user string) ([]string, error)
}

// AssignmentLookup is what the check path reads for reseller access.
type AssignmentLookup interface {
	GetAssignment(ctx context.Context, customer string) (*sidecar.Assignment, error)
}

// Reasons the on-behalf resolver refuses a delegation. They reach policy
// as input.delegation_error and the decision log as the reason.
const (
	ReasonIdentityRequired     = "identity_required"
	ReasonInvalidOnBehalfOf    = "invalid_on_behalf_of"
	ReasonNoPartnerOrg         = "no_partner_org"
	ReasonNoLiveGrant          = "no_live_grant"
	ReasonGrantExpired         = "grant_expired"
	ReasonCustomerNotInDomain  = "customer_not_in_domain"
	ReasonMissingPrivilegePref = "missing_privilege:"
	ReasonResellerRulesMissing = "reseller_rules_missing"
)

// OnBehalfResolver resolves requests that name a customer — by the
// on-behalf-of header or the configured path template — into a partner
// grant or a reseller assignment. Callers whose token carries a domain are
// reseller staff (customer-care portal); other callers with an org are
// partner users (support portal). A request naming no customer, or the
// caller's own organisation, acts as the caller: no delegation.
type OnBehalfResolver struct {
	grants      GrantLookup
	assignments AssignmentLookup
	header      string
	tmpl        *pathTemplate
	rules       *ruleBook
	clock       sidecar.Clock
}

var _ sidecar.DelegationResolver = (*OnBehalfResolver)(nil)

// ResolverOption configures an OnBehalfResolver.
type ResolverOption func(*OnBehalfResolver)

// WithResolverClock sets the clock (default time.Now).
func WithResolverClock(c sidecar.Clock) ResolverOption {
	return func(r *OnBehalfResolver) { r.clock = c }
}

// NewOnBehalfResolver returns the resolver. data is the active policy
// data, whose reseller rules tell staff apart (the same the reseller policy
// reads); partner supplies the header name and path template. It fails
// only on an invalid path template.
func NewOnBehalfResolver(grants GrantLookup, assignments AssignmentLookup, data PolicyData, partner PartnerConfig, opts ...ResolverOption) (*OnBehalfResolver, error) {
	partner = partner.WithDefaults()
	r := &OnBehalfResolver{
		grants:      grants,
		assignments: assignments,
		header:      strings.ToLower(partner.OnBehalfOfHeader),
		rules:       newRuleBook(data),
		clock:       time.Now,
	}
	if partner.PathTemplate != "" {
		t, err := parsePathTemplate(partner.PathTemplate)
		if err != nil {
			return nil, err
		}
		r.tmpl = t
	}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// Customer returns the customer a request names, "" when none. The header
// wins over the path.
func (r *OnBehalfResolver) Customer(req *sidecar.Request) (string, error) {
	if v := strings.TrimSpace(req.Header(r.header)); v != "" {
		if validRef(r.header, v) != nil {
			return "", sidecar.Refused(sidecar.EINVALID, ReasonInvalidOnBehalfOf, nil)
		}
		return v, nil
	}
	if r.tmpl == nil {
		return "", nil
	}
	c, ok := r.tmpl.match(req.Path)
	if !ok {
		return "", nil
	}
	if validRef("customer", c) != nil {
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
	if id == nil {
		return nil, sidecar.Refused(sidecar.EFORBIDDEN, ReasonIdentityRequired, nil)
	}
	if id.Domain != "" {
		return r.resolveReseller(ctx, customer, id)
	}
	return r.resolvePartner(ctx, customer, id)
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
	g := effectiveAt(e, now)
	if g == nil {
		if e.Individual != nil || e.Organisation != nil {
			return nil, sidecar.Refused(sidecar.EFORBIDDEN, ReasonGrantExpired, nil)
		}
		return nil, sidecar.Refused(sidecar.EFORBIDDEN, ReasonNoLiveGrant, nil)
	}
	attrs := map[string]any{"precedence": g.Scope()}
	if g.Level == sidecar.LevelCC {
		shared, err := r.grants.SharesFor(ctx, customer, id.Subject)
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

// pathTemplate is a path prefix with one {customer} segment, e.g.
// "/customers/{customer}/". Its literal segments are kept lower-cased.
type pathTemplate struct {
	segments []string
	at       int
}

func parsePathTemplate(s string) (*pathTemplate, error) {
	if !strings.HasPrefix(s, "/") {
		return nil, sidecar.Invalid("path_template", "must start with /")
	}
	s = strings.TrimSuffix(strings.TrimSuffix(s, "..."), "*")
	s = strings.Trim(s, "/")
	t := &pathTemplate{segments: strings.Split(strings.ToLower(s), "/"), at: -1}
	for i, seg := range t.segments {
		switch {
		case seg == "{customer}" && t.at < 0:
			t.at = i
		case seg == "{customer}":
			return nil, sidecar.Invalid("path_template", "names {customer} twice")
		case seg == "" || strings.ContainsAny(seg, "{}"):
			return nil, sidecar.Invalid("path_template", "segment %q is neither a literal nor {customer}", seg)
		}
	}
	if t.at < 0 {
		return nil, sidecar.Invalid("path_template", "must contain a {customer} segment")
	}
	return t, nil
}

// match returns the customer segment of path. path is the canonical path
// the check decides on (decoded once, slashes merged, ";params" dropped):
// read as the policies read it, literal segments case-insensitively (as
// input.deputy.request.lower_segments) and the customer as sent (as
// input.deputy.request.segments), it is never decoded again, so the
// customer resolved is the one the policies compare.
func (t *pathTemplate) match(path string) (string, bool) {
	var customer string
	for i, seg := range t.segments {
		var cur string
		for cur == "" && path != "" {
			cur, path, _ = strings.Cut(strings.TrimPrefix(path, "/"), "/")
		}
		switch {
		case cur == "":
			return "", false
		case i == t.at:
			customer = cur
		case strings.ToLower(cur) != seg:
			return "", false
		}
	}
	return customer, true
}
