# METADATA
# title: Reseller access
# description: |
#   Decides whether reseller staff may act for a customer of their domain.
#   Staff need an admin or legacy role, or both required privileges, held
#   directly in the token or through a custom role in role_privileges.
#   The resolver only hands over customers assigned to the caller's own
#   domain; the policy checks that again so a resolver bug cannot cross domains.
#   Where domain_hosts binds domains to the portal hosts their staff sign
#   in through, a request is allowed only on one of its domain's hosts.
package deputy.reseller

import data.deputy.lib

# METADATA
# description: OPA-Envoy shaped result for reseller staff acting for a customer.
# entrypoint: true
default decision := {"allowed": false, "reason": "customer_not_in_domain", "http_status": 403}

# The common request first: an admin role, a customer of the caller's own
# domain and a path naming no customers/{customer} template anywhere,
# allowed in one body (in the second, where domain_hosts binds domains
# to their portal hosts, on one of its domain's hosts). Each helper rule
# read (staff, _same_domain) and each negation costs OPA allocations on
# every check, so this branch spells them out; what it does not allow falls through to the chain below, which
# decides every request exactly as before. Before it, a request asking to
# switch protocols is refused: after the 101 the connection is a tunnel
# Deputy is never asked about again, which carries requests no rule
# judged and outlives the assignment.
# regal ignore:rule-length
decision := lib.deny(403, "delegated_upgrade") if {
	input.deputy.request.upgrade
	input.delegation.mode == "reseller"
} else := {"allowed": true, "reason": "reseller_domain_customer"} if {
	input.delegation.mode == "reseller"
	not data.deputy.partner.customer_path_prefix in input.deputy.request.route_segments
	input.identity.domain != ""
	input.delegation.domain == input.identity.domain
	_admin_on_any_host(input.identity.roles)
} else := {"allowed": true, "reason": "reseller_domain_customer"} if {
	# The same request where domain_hosts binds domains to their portal
	# hosts, on one of its domain's: never evaluated while it binds none.
	input.delegation.mode == "reseller"
	not data.deputy.partner.customer_path_prefix in input.deputy.request.route_segments
	input.identity.domain != ""
	input.delegation.domain == input.identity.domain
	_admin_on_host(input.identity.roles, input.identity.domain, input.deputy.request.host)
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
} else := lib.deny(403, "domain_hosts_unlisted") if {
	# Once domain_hosts binds any domain to its portal hosts, a domain it
	# leaves out acts on none: a domain added to the identity provider
	# is not let in on every host until someone lists its portals.
	_same_domain
	_domain_hosts_bound
	not data.deputy.reseller.domain_hosts[input.identity.domain]
} else := lib.deny(403, "domain_host_mismatch") if {
	# The token names the domain its holder signed in through; the host
	# names the domain's portal the upstream acts on. Where one identity
	# provider client serves every domain's portal, a token of one domain
	# is accepted on another's, and the upstream, told nothing of the
	# domain, serves the customer there. A check naming no host is on
	# none of the domain's hosts: read through a rule, as "not host in
	# hosts" fails, rather than holds, where the host is missing.
	_same_domain
	_domain_hosts_bound
	not _on_domain_host
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
# description: |
#   Whether one of roles is an admin role and domain_hosts binds no
#   domain to its hosts (as shipped): the common request's branch, which
#   then need not read the host. Kept across checks (deputy_memo) as
#   _admin is, so the common check pays one call for both, as before
#   domain_hosts existed (reading the host costs allocations on every
#   check); once it binds a domain, the next branch decides instead.
# custom:
#   deputy_memo: true
_admin_on_any_host(roles) if {
	_admin(roles)
	not _domain_hosts_bound
}

# METADATA
# description: |
#   Whether one of roles is an admin role and host (lower case, no
#   trailing dot, no port) is one domain_hosts lists for domain. Kept
#   across checks (deputy_memo): a portal's checks bring the same few
#   triples.
# custom:
#   deputy_memo: true
_admin_on_host(roles, domain, host) if {
	_admin(roles)
	host in data.deputy.reseller.domain_hosts[domain]
}

_on_domain_host if input.deputy.request.host in data.deputy.reseller.domain_hosts[input.identity.domain]

# Whether domain_hosts binds any domain; absent (data from before it)
# binds none.
_domain_hosts_bound if count(data.deputy.reseller.domain_hosts) > 0

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
