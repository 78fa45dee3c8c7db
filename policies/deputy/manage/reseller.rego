# Reseller domain assignments
# Reseller super admins manage which customers belong to the domain they
# signed in through, and only that domain; customer-care staff may read
# them. A customer assigned to another domain cannot be read, moved or
# deleted from here. The API passes the
# domain the call is about as input.target.domain, the customer's current
# domain as input.target.current_domain and, for imports, every domain the
# file names as input.target.domains. It passes the customer's profile as
# Login as Customer judges it as input.target.profile (for imports, every
# row's as input.target.profiles).
package deputy.manage

import data.deputy.reseller

known_actions contains action if some action in _reseller_actions

_reseller_actions := {
	"reseller.assignment.get",
	"reseller.assignment.put",
	"reseller.assignment.delete",
	"reseller.assignment.list",
	"reseller.assignment.import",
}

allow contains action if some action in _reseller_permitted

# Super admins manage their domain's assignments; customer-care staff may
# read them, to list the customers they can act for.
_reseller_permitted contains action if {
	_reseller_super_admin
	some action in _reseller_actions
}

_reseller_permitted contains action if {
	input.identity.domain != ""
	reseller.staff
	some action in {"reseller.assignment.get", "reseller.assignment.list"}
}

deny contains "customer_not_in_domain" if {
	input.action in _reseller_permitted
	some domain in _reseller_target_domains
	domain != input.identity.domain
}

# An account Login as Customer holds protected (_protected: its profile
# says so or holds a protected role, it is listed, or its subject acted
# as staff) is put into no domain, one by one or by import: reseller
# staff would act for it on the check path, where Deputy refuses it at
# every request anyway. Refused here so the super admin learns why. A
# customer of another domain is refused as customer_not_in_domain first
# (the smallest reason wins), so this tells nothing of other domains'.
deny contains "customer_protected" if {
	input.action in _reseller_permitted
	input.action in {"reseller.assignment.put", "reseller.assignment.import"}
	some profile in _reseller_target_profiles
	_protected(profile)
}

_reseller_target_profiles contains input.target.profile

_reseller_target_profiles contains profile if some profile in input.target.profiles

_reseller_target_domains contains input.target.domain

_reseller_target_domains contains input.target.current_domain

_reseller_target_domains contains domain if some domain in input.target.domains

_reseller_super_admin if {
	input.identity.domain != ""
	reseller.super_admin
}
