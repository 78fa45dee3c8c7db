# METADATA
# title: Reseller access
# description: |
#   Decides whether reseller staff may act for a customer of their domain.
#   Staff need an admin or legacy role, or both required privileges, held
#   directly in the token or through a custom role in role_privileges.
#   The resolver only hands over customers assigned to the caller's own
#   domain; the policy checks that again so a resolver bug cannot cross domains.
package deputy.reseller

import data.deputy.lib

# METADATA
# description: OPA-Envoy shaped result for reseller staff acting for a customer.
# entrypoint: true
default decision := {"allowed": false, "reason": "customer_not_in_domain", "http_status": 403}

# The common request first: an admin role, a customer of the caller's own
# domain and a path naming no customers/{customer} template anywhere,
# allowed in one body. Each helper rule read (staff, _same_domain) and each
# negation costs OPA allocations on every check, so this branch spells
# them out; what it does not allow falls through to the chain below, which
# decides every request exactly as before. Before it, a request asking to
# switch protocols is refused: after the 101 the connection is a tunnel
# Deputy is never asked about again, which carries requests no rule
# judged and outlives the assignment.
decision := lib.deny(403, "delegated_upgrade") if {
	input.deputy.request.upgrade
	input.delegation.mode == "reseller"
} else := {"allowed": true, "reason": "reseller_domain_customer"} if {
	input.delegation.mode == "reseller"
	not data.deputy.partner.customer_path_prefix in input.deputy.request.route_segments
	input.identity.domain != ""
	input.delegation.domain == input.identity.domain
	_admin(input.identity.roles)
} else := lib.deny(403, sprintf("missing_privilege:%s", [concat(",", missing_privileges)])) if {
	# Checked in this order; staff of the right mode whose customer is not
	# in their own domain get the default denial.
	not staff
} else := lib.deny(403, "not_reseller_delegation") if {
	not input.delegation.mode == "reseller"
} else := lib.deny(403, "path_names_another_customer") if {
	# A path under the partner portal's customers/{customer} template names
	# the customer it acts on: it must be the one acted for, as the partner
	# policy requires too. Both are read in the route form, as upstream
	# routers read them. The template counts wherever it stands: a portal
	# that puts a locale, a store code or a mount point in front of every
	# URL serves /fr/customers/globex/ as globex's, and a path naming the
	# template again further down may be routed on that one.
	some i, segment in input.deputy.request.route_segments
	segment == data.deputy.partner.customer_path_prefix
	not lib.route_segment_is(i + 1, input.delegation.subject)
} else := {"allowed": true, "reason": "reseller_domain_customer"} if {
	_same_domain
}

# METADATA
# scope: document
# description: Whether the caller is reseller customer-care staff.
staff if _admin(input.identity.roles)

staff if {
	some role in input.identity.roles
	role in data.deputy.reseller.legacy_roles
}

# An empty (or absent) list of required privileges makes nobody staff by
# privileges: a data mistake must not open every domain.
staff if {
	count(data.deputy.reseller.required_privileges) > 0
	count(missing_privileges) == 0
}

# METADATA
# description: |
#   Whether one of roles is an admin role. The answer depends on the roles
#   and this data alone, so Deputy keeps it across checks (deputy_memo):
#   a caller's requests bring the same roles, and the iteration and
#   membership test cost allocations on every reseller check.
# custom:
#   deputy_memo: true
_admin(roles) if {
	some role in roles
	role in data.deputy.reseller.admin_roles
}

# METADATA
# description: The required privileges the caller lacks, sorted, for the denial reason.
missing_privileges := sort([p |
	some p in data.deputy.reseller.required_privileges
	not p in _privileges
])

# METADATA
# description: Whether the caller is a super admin who manages domain assignments.
super_admin if {
	some role in input.identity.roles
	role in data.deputy.reseller.super_admin_roles
}

_privileges contains p if some p in input.identity.privileges

_privileges contains p if {
	some role in input.identity.roles
	some p in data.deputy.reseller.role_privileges[role]
}

_same_domain if {
	input.identity.domain != ""
	input.delegation.domain == input.identity.domain
}
