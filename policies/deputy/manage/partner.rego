# Partner access management
# Who may request, approve, reject and revoke partner access, list "My
# Customers" / "My Partners", share resources with cc-level partner users
# and subscribe to a customer's notifications. The partner lifecycle passes
# the facts as stored in input.target (customer, partner_org, ...) and, for
# subscriptions, the caller's effective grant as input.target.grant.
package deputy.manage

import data.deputy.partner

known_actions contains action if some action in _partner_actions

_partner_actions := {
	"partner.request",
	"partner.approve",
	"partner.reject",
	"partner.revoke",
	"partner.list_requests",
	"partner.list_customers",
	"partner.list_partners",
	"partner.list_subscribers",
	"share.put",
	"share.delete",
	"share.list",
	"subscription.put",
	"subscription.delete",
	"subscription.list",
}

# A partner user asks for access on behalf of their own organisation.
allow contains "partner.request" if {
	_partner_member
	input.target.partner_org == input.identity.org
}

# Only the customer's contact manager decides, sees its partners and shares.
allow contains action if {
	_contact_manager
	some action in {
		"partner.approve", "partner.reject", "partner.list_partners",
		"share.put", "share.delete", "share.list",
	}
}

# Either side may revoke.
allow contains "partner.revoke" if _contact_manager

allow contains "partner.revoke" if {
	_partner_member
	input.target.partner_org == input.identity.org
}

allow contains "partner.list_requests" if _contact_manager

allow contains "partner.list_requests" if {
	_partner_member
	input.target.partner_org == input.identity.org
}

allow contains "partner.list_customers" if _partner_member

# Whose subscriptions to the customer count: the contact manager sees them
# beside its partners, and the host's mailer (read_events, as for the
# events stream) reads them to know whom to notify of the customer's
# events. The mailer is not shown the customer's grants.
allow contains "partner.list_subscribers" if _contact_manager

allow contains "partner.list_subscribers" if "read_events" in _perms

allow contains action if {
	_partner_member
	some action in {"subscription.put", "subscription.delete", "subscription.list"}
}

deny contains "cannot_request_own_org" if {
	input.action == "partner.request"
	_partner_member
	input.identity.org == input.target.customer
}

deny contains "no_live_grant" if {
	input.action == "subscription.put"
	_partner_member
	not input.target.grant.level
}

deny contains sprintf("level_below_minimum:%s", [partner.subscription_min_level]) if {
	input.action == "subscription.put"
	_partner_member
	input.target.grant.level
	not partner.at_least(input.target.grant.level, partner.subscription_min_level)
}

# A caller who is no party to the stored request or grant an action names
# by id is refused as not_party, which the API answers exactly as an
# unknown id: no one learns which ids exist. A party who may not take the
# action (a partner approving its own request) is refused as not_permitted.
deny contains "not_party" if {
	input.action in {"partner.list_requests", "partner.approve", "partner.reject", "partner.revoke"}
	_names_record
	not input.action in allow
	not _record_party
}

_names_record if input.target.request_id

_names_record if input.target.grant_id

_record_party if _contact_manager

_record_party if {
	_partner_member
	input.identity.org == input.target.partner_org
}

_partner_member if input.identity.org != ""

_contact_manager if {
	input.identity.org != ""
	input.identity.org == input.target.customer
	some role in input.identity.roles
	role in partner.contact_manager_roles
}
