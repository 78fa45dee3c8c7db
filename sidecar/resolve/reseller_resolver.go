package resolve

import (
	"context"
	"strings"

	"github.com/deputyhq/deputy/sidecar"
)

// resolveReseller hands over a customer only when it is assigned to the
// exact domain the caller signed in through: another domain of the same
// reseller is as foreign as another reseller's. And only under the
// spelling it was assigned as: the store finds the assignment of every
// id that folds alike (sidecar.FoldID), but the upstream routes on the
// spelling the request carries, and one that tells case apart may hold
// ACME as another customer than acme; so a variant is refused, as an
// unassigned customer is, and what reaches the upstream names the
// customer exactly as assigned. A customer id outside the assignable set
// (sidecar.ValidAssignedID) is refused before any lookup: no assignment
// holds one, and an upstream's collation may read it as an assigned id.
func (r *OnBehalfResolver) resolveReseller(ctx context.Context, data map[string]any, customer string, id *sidecar.Identity) (*sidecar.Delegation, error) {
	if sidecar.ValidAssignedID("customer", customer) != nil {
		return nil, sidecar.Refused(sidecar.EINVALID, ReasonCustomerIDNotAllowed, nil)
	}
	rules, err := r.rules.Reseller(data)
	if err != nil {
		// Without rules nobody is staff: deny, never fall through.
		return nil, sidecar.Refused(sidecar.EFORBIDDEN, ReasonResellerRulesMissing, err)
	}
	if missing := rules.MissingPrivileges(id); len(missing) > 0 {
		return nil, sidecar.Refused(sidecar.EFORBIDDEN, ReasonMissingPrivilegePref+strings.Join(missing, ","), nil)
	}
	a, err := r.assignments.GetAssignment(ctx, customer)
	switch {
	case sidecar.ErrorCode(err) == sidecar.ENOTFOUND:
		return nil, sidecar.Refused(sidecar.EFORBIDDEN, ReasonCustomerNotInDomain, nil)
	case err != nil:
		return nil, err
	case a.Domain != id.Domain, a.Customer != customer:
		return nil, sidecar.Refused(sidecar.EFORBIDDEN, ReasonCustomerNotInDomain, nil)
	}
	return &sidecar.Delegation{
		Mode:      sidecar.ModeReseller,
		ID:        a.Domain + "/" + a.Customer,
		Actor:     id.Subject,
		ActorName: id.Name,
		ActorOrg:  id.Org,
		Subject:   a.Customer,
		Domain:    id.Domain,
	}, nil
}
