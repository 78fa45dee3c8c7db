package deputy.manage_test

import data.deputy.manage

_partner_user := {"sub": "pat", "org": "partnerco", "roles": ["partner_user"]}

_contact_manager := {"sub": "cora", "org": "acme", "roles": ["contact_manager"]}

_acme_employee := {"sub": "eve", "org": "acme", "roles": ["support_agent"]}

_other_contact_manager := {"sub": "gil", "org": "globex", "roles": ["contact_manager"]}

_mailer := {"sub": "mail", "roles": ["mailer"]}

_acme_target := {"customer": "acme", "partner_org": "partnerco"}

test_partner_actions[note] if {
	cases := [
		{"note": "partner user requests access", "action": "partner.request", "identity": _partner_user, "allowed": true, "reason": "ok"},
		{"note": "request for another partner org", "action": "partner.request", "identity": _partner_user, "target": {"customer": "acme", "partner_org": "otherco"}, "allowed": false, "reason": "not_permitted"},
		{"note": "request for own org", "action": "partner.request", "identity": {"sub": "cora", "org": "acme"}, "target": {"customer": "acme", "partner_org": "acme"}, "allowed": false, "reason": "cannot_request_own_org"},
		{"note": "request without an org", "action": "partner.request", "identity": {"sub": "nobody"}, "target": {"customer": "acme", "partner_org": ""}, "allowed": false, "reason": "not_permitted"},
		{"note": "contact manager approves", "action": "partner.approve", "identity": _contact_manager, "allowed": true, "reason": "ok"},
		{"note": "contact manager rejects", "action": "partner.reject", "identity": _contact_manager, "allowed": true, "reason": "ok"},
		{"note": "partner cannot approve its own request", "action": "partner.approve", "identity": _partner_user, "allowed": false, "reason": "not_permitted"},
		{"note": "customer employee without the role cannot approve", "action": "partner.approve", "identity": _acme_employee, "allowed": false, "reason": "not_permitted"},
		{"note": "another customer's contact manager cannot approve", "action": "partner.approve", "identity": _other_contact_manager, "allowed": false, "reason": "not_permitted"},
		{"note": "anonymous cannot approve", "action": "partner.approve", "identity": null, "allowed": false, "reason": "unauthenticated"},
		{"note": "contact manager revokes", "action": "partner.revoke", "identity": _contact_manager, "allowed": true, "reason": "ok"},
		{"note": "partner revokes", "action": "partner.revoke", "identity": _partner_user, "allowed": true, "reason": "ok"},
		{"note": "another partner cannot revoke", "action": "partner.revoke", "identity": {"sub": "oz", "org": "otherco"}, "allowed": false, "reason": "not_permitted"},
		{"note": "partner lists its customers", "action": "partner.list_customers", "identity": _partner_user, "allowed": true, "reason": "ok"},
		{"note": "contact manager lists partners", "action": "partner.list_partners", "identity": _contact_manager, "allowed": true, "reason": "ok"},
		{"note": "partner cannot list the customer's partners", "action": "partner.list_partners", "identity": _partner_user, "allowed": false, "reason": "not_permitted"},
		{"note": "contact manager lists subscribers", "action": "partner.list_subscribers", "identity": _contact_manager, "allowed": true, "reason": "ok"},
		{"note": "mailer lists subscribers", "action": "partner.list_subscribers", "identity": _mailer, "allowed": true, "reason": "ok"},
		{"note": "mailer cannot list the customer's partners", "action": "partner.list_partners", "identity": _mailer, "allowed": false, "reason": "not_permitted"},
		{"note": "partner cannot list the customer's subscribers", "action": "partner.list_subscribers", "identity": _partner_user, "allowed": false, "reason": "not_permitted"},
		{"note": "another customer's contact manager cannot list subscribers", "action": "partner.list_subscribers", "identity": _other_contact_manager, "allowed": false, "reason": "not_permitted"},
		{"note": "customer employee without the role cannot list subscribers", "action": "partner.list_subscribers", "identity": _acme_employee, "allowed": false, "reason": "not_permitted"},
		{"note": "contact manager shares", "action": "share.put", "identity": _contact_manager, "allowed": true, "reason": "ok"},
		{"note": "contact manager unshares", "action": "share.delete", "identity": _contact_manager, "allowed": true, "reason": "ok"},
		{"note": "partner cannot share to itself", "action": "share.put", "identity": _partner_user, "allowed": false, "reason": "not_permitted"},
		{"note": "partner lists requests", "action": "partner.list_requests", "identity": _partner_user, "allowed": true, "reason": "ok"},
		{"note": "contact manager lists requests", "action": "partner.list_requests", "identity": _contact_manager, "allowed": true, "reason": "ok"},
	]
	some tc in cases
	note := tc.note
	d := manage.decision with input as _partner_input(tc)
	d.allowed == tc.allowed
	d.reason == tc.reason
}

test_partner_subscriptions[note] if {
	cases := [
		{"note": "look subscribes", "grant": {"level": "look"}, "allowed": true, "reason": "ok"},
		{"note": "full_admin subscribes", "grant": {"level": "full_admin"}, "allowed": true, "reason": "ok"},
		{"note": "cc is below the minimum", "grant": {"level": "cc"}, "allowed": false, "reason": "level_below_minimum:look"},
		{"note": "no live grant", "grant": null, "allowed": false, "reason": "no_live_grant"},
		{"note": "a grant sent outside the target does not count", "delegation": {"mode": "partner", "level": "full_admin"}, "grant": null, "allowed": false, "reason": "no_live_grant"},
	]
	some tc in cases
	note := tc.note
	target := {"customer": "acme", "kind": "notifications", "grant": tc.grant}
	req := {"action": "subscription.put", "identity": _partner_user, "target": object.filter(target, [k | some k, v in target; v != null]), "delegation": object.get(tc, "delegation", null)}
	d := manage.decision with input as object.filter(req, [k | some k, v in req; v != null])
	d.allowed == tc.allowed
	d.reason == tc.reason
}

test_partner_subscription_minimum_from_data if {
	req := {"action": "subscription.put", "identity": _partner_user, "target": {"customer": "acme", "grant": {"level": "look"}}}
	d := manage.decision with input as req with data.deputy.partner.subscription_min_level as "update"
	not d.allowed
	d.reason == "level_below_minimum:update"
}

_partner_input(tc) := object.filter(req, [k | some k, v in req; v != null]) if {
	req := {"action": tc.action, "identity": tc.identity, "target": object.get(tc, "target", _acme_target)}
}

# Who is refused a stored request or grant as no party to it, which the
# API answers as an unknown id, and who as not permitted.
test_record_parties[note] if {
	request := {"customer": "acme", "partner_org": "partnerco", "request_id": "r1"}
	grant := {"customer": "acme", "partner_org": "partnerco", "user": "", "grant_id": "g1"}
	some note, tc in {
		"other org reads a request": {"action": "partner.list_requests", "identity": {"sub": "bob", "org": "otherco"}, "target": request, "reason": "not_party"},
		"customer employee reads a request": {"action": "partner.list_requests", "identity": _acme_employee, "target": request, "reason": "not_party"},
		"other org lists by customer": {"action": "partner.list_requests", "identity": {"sub": "bob", "org": "otherco"}, "target": {"customer": "acme"}, "reason": "not_permitted"},
		"partner approves own request": {"action": "partner.approve", "identity": _partner_user, "target": request, "reason": "not_permitted"},
		"other contact manager approves": {"action": "partner.approve", "identity": _other_contact_manager, "target": request, "reason": "not_party"},
		"other contact manager rejects": {"action": "partner.reject", "identity": _other_contact_manager, "target": request, "reason": "not_party"},
		"other org revokes": {"action": "partner.revoke", "identity": {"sub": "oz", "org": "otherco"}, "target": grant, "reason": "not_party"},
		"customer employee revokes": {"action": "partner.revoke", "identity": _acme_employee, "target": grant, "reason": "not_party"},
		"caller without an org revokes": {"action": "partner.revoke", "identity": {"sub": "nobody"}, "target": grant, "reason": "not_party"},
		"partner revokes": {"action": "partner.revoke", "identity": _partner_user, "target": grant, "reason": "ok"},
	}
	d := manage.decision with input as {"action": tc.action, "identity": tc.identity, "target": tc.target}
	d.reason == tc.reason
}
