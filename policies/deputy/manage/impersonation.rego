# Login as Customer management actions: starting, ending, listing and
# auditing impersonation sessions, consent, and the host application's
# customer profile sync. The caller's permissions come from
# data.deputy.impersonation.role_permissions.
package deputy.manage

import data.deputy.lib

_imp := data.deputy.impersonation

_perms := data.deputy.impersonation.permissions

_self if input.identity.sub == input.target.customer_id

known_actions contains a if {
	some a in {
		"impersonation.start", "impersonation.end", "impersonation.list",
		"impersonation.log", "impersonation.redeem", "consent.set_self",
		"consent.set_for_customer", "consent.get", "consent.history", "customer.put",
		"customer.delete",
	}
}

# A caller whose roles grant any Login as Customer permission is staff:
# every action allowed to it records its subject as staff, so its own
# storefront account can never be impersonated, with no data entry.
default _staff := false

_staff if count(_perms) > 0

# --- who may do what ---------------------------------------------------------

allow contains "impersonation.start" if "login_as_customer" in _perms

# impersonation.redeem: the code is the credential.
allow contains "impersonation.redeem"

allow contains "impersonation.end" if {
	input.target.session.actor == input.identity.sub
	"login_as_customer" in _perms
}

# The customer acted for may always end it.
allow contains "impersonation.end" if input.target.session.subject == input.identity.sub

allow contains "impersonation.end" if "end_any_login_as_customer" in _perms

# impersonation.list: own sessions, or anyone's with the log permission.
allow contains "impersonation.list" if {
	input.target.actor == input.identity.sub
	"login_as_customer" in _perms
}

allow contains "impersonation.list" if "view_login_as_customer_log" in _perms

allow contains "impersonation.log" if "view_login_as_customer_log" in _perms

allow contains "consent.set_self" if _self

allow contains "consent.set_for_customer" if "allow_remote_shopping_assistance" in _perms

allow contains "consent.get" if _self

allow contains "consent.get" if "login_as_customer" in _perms

allow contains "consent.get" if "allow_remote_shopping_assistance" in _perms

# The consent history says who set a customer's consent and when: the
# customer's own record, and the log's (view_login_as_customer_log), and
# theirs who set it on the customer's behalf. Starting sessions needs the
# consent in force only (consent.get).
allow contains "consent.history" if _self

allow contains "consent.history" if "view_login_as_customer_log" in _perms

allow contains "consent.history" if "allow_remote_shopping_assistance" in _perms

# Customer profile sync from the host application.
allow contains "customer.put" if "manage_customers" in _perms

# Deleting a profile ends the customer's live sessions: it belongs to the
# same sync, not to anyone who may end sessions.
allow contains "customer.delete" if "manage_customers" in _perms

# --- why not -----------------------------------------------------------------

deny contains "impersonation_disabled" if {
	input.action in {"impersonation.start", "impersonation.redeem"}

	# Only true turns it on: a switch left out or not a boolean is off, as
	# Deputy's Go code reads it.
	not _imp.enabled == true
}

deny contains "missing_permission" if {
	input.action == "impersonation.start"
	not "login_as_customer" in _perms
}

deny contains "missing_permission" if {
	input.action == "consent.set_for_customer"
	not "allow_remote_shopping_assistance" in _perms
}

deny contains "missing_permission" if {
	input.action in {"customer.put", "customer.delete", "impersonation.log"}
	not input.action in allow
}

# Staff who may not see a session, and other customers, are refused as
# not_party, which the API answers exactly as an unknown session id.
deny contains "not_party" if {
	input.action in {"impersonation.end", "impersonation.list"}
	input.target.session
	not input.action in allow
	not _session_party
}

deny contains "not_self" if {
	input.action == "consent.set_self"
	not _self
}

# Facts about the customer are only judged for callers allowed to start
# sessions at all (see _starting), so nobody learns which customers exist.
deny contains "customer_not_found" if {
	_starting
	not input.target.customer.exists
}

deny contains "customer_protected" if {
	_starting
	input.target.customer.exists
	_protected(input.target.customer)
}

deny contains "self_impersonation" if {
	_starting
	input.target.customer_id == input.identity.sub
}

# A protected account is refused as protected, whatever its consent says.
deny contains "consent_required" if {
	_starting
	input.target.customer.exists
	not _protected(input.target.customer)
	not input.target.consent.live
}

deny contains "reason_required" if {
	_starting
	_imp.require_reason

	# Deputy sends a reason that has no visible character (white space,
	# zero-width and other format characters, fillers) as "", as it stores
	# it: what counts as blank is judged once, with the text's other rules.
	object.get(input.target, "reason", "") == ""
}

deny contains "store_view_required" if {
	_starting
	_imp.store_view_selection == "manual"
	object.get(input.target, "store_view", "") == ""
}

deny contains "store_view_not_allowed" if {
	_starting
	input.target.customer.exists
	sv := object.get(input.target, "store_view", "")
	sv != ""
	not _store_view_allowed(sv)
}

_session_party if input.identity.sub in {input.target.session.actor, input.target.session.subject}

_session_party if "view_login_as_customer_log" in _perms

_starting if {
	input.action == "impersonation.start"
	_imp.enabled == true
	"login_as_customer" in _perms
}

# An account is protected when it is by itself, or when another spelling
# of its id (c.spellings: the ids equal up to letter case that have a
# profile or a staff mark) is: an upstream that looks customers up without
# regard to case serves "STAFF-1" as "staff-1".
_protected(c) if _protected_as(c)

_protected(c) if {
	some s in c.spellings
	_protected_as(s)
}

_protected_as(c) if c.protected == true

_protected_as(c) if {
	some role in c.roles
	role in _imp.protected_roles
}

_protected_as(c) if lib.fold_id(c.id) in {lib.fold_id(id) | some id in _imp.protected_customers}

# manual: any of the customer's store views; default: only its default one.
_store_view_allowed(sv) if {
	_imp.store_view_selection == "manual"
	sv in input.target.customer.store_views
}

_store_view_allowed(sv) if {
	_imp.store_view_selection != "manual"
	sv == input.target.customer.default_store_view
}

# --- how reasons surface through the API ------------------------------------

reason_info["customer_not_found"] := {"http_status": 404, "field": "customer_id"}

reason_info["reason_required"] := {"http_status": 400, "field": "reason"}

reason_info["store_view_required"] := {"http_status": 400, "field": "store_view"}

reason_info["store_view_not_allowed"] := {"http_status": 400, "field": "store_view"}

reason_info["unauthenticated"] := {"http_status": 401}
