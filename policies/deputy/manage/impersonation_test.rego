package deputy.manage_test

import data.deputy.manage

_agent := {"sub": "alice", "roles": ["support_agent"]}

_lead := {"sub": "lee", "roles": ["support_lead"]}

_admin := {"sub": "ada", "roles": ["admin"]}

_customer := {"sub": "c42", "roles": ["customer"]}

_profile := {"id": "c42", "exists": true, "store_views": ["default", "fr"], "default_store_view": "default", "roles": ["customer"]}

_start(extra) := object.union(
	{"customer_id": "c42", "customer": _profile, "consent": {"live": true}},
	extra,
)

test_start[note] if {
	some note, tc in {
		"agent with consent": {"id": _agent, "target": _start({}), "reason": "ok"},
		"no permission": {"id": _customer, "target": _start({}), "reason": "missing_permission"},
		"no permission hides unknown customer": {"id": _customer, "target": _start({"customer": {"exists": false}}), "reason": "missing_permission"},
		"unknown customer": {"id": _agent, "target": _start({"customer": {"exists": false}}), "reason": "customer_not_found"},
		"no consent": {"id": _agent, "target": _start({"consent": {"live": false}}), "reason": "consent_required"},
		"protected by flag": {"id": _agent, "target": _start({"customer": object.union(_profile, {"protected": true})}), "reason": "customer_protected"},
		"protected without consent": {"id": _agent, "target": _start({"consent": {"live": false}, "customer": object.union(_profile, {"protected": true})}), "reason": "customer_protected"},
		"another spelling protected": {"id": _agent, "target": _start({"customer": object.union(_profile, {"spellings": [{"id": "C42", "protected": true, "roles": []}]})}), "reason": "customer_protected"},
		"another spelling protected by role": {"id": _agent, "target": _start({"customer": object.union(_profile, {"spellings": [{"id": "C42", "protected": false, "roles": ["admin"]}]})}), "reason": "customer_protected"},
		"protected by role": {"id": _agent, "target": _start({"customer": object.union(_profile, {"roles": ["admin"]})}), "reason": "customer_protected"},
		"self": {"id": {"sub": "c42", "roles": ["support_agent"]}, "target": _start({}), "reason": "self_impersonation"},
		"default store view given": {"id": _agent, "target": _start({"store_view": "default"}), "reason": "ok"},
		"other store view in default mode": {"id": _agent, "target": _start({"store_view": "fr"}), "reason": "store_view_not_allowed"},
	}
	d := manage.decision with input as {"action": "impersonation.start", "identity": tc.id, "target": tc.target}
	d.reason == tc.reason
}

test_start_switches[note] if {
	some note, tc in {
		"manual needs a store view": {"data": {"store_view_selection": "manual"}, "target": _start({}), "reason": "store_view_required", "field": "store_view"},
		"manual with a customer store view": {"data": {"store_view_selection": "manual"}, "target": _start({"store_view": "fr"}), "reason": "ok"},
		"manual with a foreign store view": {"data": {"store_view_selection": "manual"}, "target": _start({"store_view": "de"}), "reason": "store_view_not_allowed", "field": "store_view"},
		"reason required and missing": {"data": {"require_reason": true}, "target": _start({}), "reason": "reason_required", "field": "reason"},
		"reason required and empty": {"data": {"require_reason": true}, "target": _start({"reason": ""}), "reason": "reason_required", "field": "reason"},
		"reason required and given": {"data": {"require_reason": true}, "target": _start({"reason": "order 1234 stuck", "ticket": "SR-1"}), "reason": "ok"},
		"feature off": {"data": {"enabled": false}, "target": _start({}), "reason": "impersonation_disabled"},
		"protected customer id": {"data": {"protected_customers": ["c42"]}, "target": _start({}), "reason": "customer_protected"},
		"protected customer id in other letter case": {"data": {"protected_customers": ["C42"]}, "target": _start({}), "reason": "customer_protected"},
	}
	d := manage.decision with input as {"action": "impersonation.start", "identity": _agent, "target": tc.target}
		with data.deputy.impersonation.store_view_selection as object.get(tc.data, "store_view_selection", "default")
		with data.deputy.impersonation.require_reason as object.get(tc.data, "require_reason", false)
		with data.deputy.impersonation.enabled as object.get(tc.data, "enabled", true)
		with data.deputy.impersonation.protected_customers as object.get(tc.data, "protected_customers", [])
	d.reason == tc.reason
	object.get(d, "field", "") == object.get(tc, "field", "")
}

# Data without the impersonation section turns impersonation off, as
# Deputy's Go code reads the same data (delegation.ReadSwitches).
test_no_impersonation_data_turns_it_off[action] if {
	some action in ["impersonation.start", "impersonation.redeem"]
	d := manage.decision with input as {"action": action, "identity": _admin, "target": _start({})}
		with data.deputy.impersonation as {}
	d.reason == "impersonation_disabled"
}

# Only the boolean true turns impersonation on.
test_switch_not_true_is_off[note] if {
	some note, value in {"null": null, "string": "yes", "number": 1}
	some action in ["impersonation.start", "impersonation.redeem"]
	d := manage.decision with input as {"action": action, "identity": _admin, "target": _start({})}
		with data.deputy.impersonation.enabled as value
	d.reason == "impersonation_disabled"
}

test_other_actions[note] if {
	some note, tc in {
		"end own session": {"action": "impersonation.end", "id": _agent, "target": {"session": {"actor": "alice", "subject": "c42"}}, "allowed": true},
		"end someone else's": {"action": "impersonation.end", "id": _agent, "target": {"session": {"actor": "bob", "subject": "c42"}}, "allowed": false},
		"customer ends session on them": {"action": "impersonation.end", "id": _customer, "target": {"session": {"actor": "bob", "subject": "c42"}}, "allowed": true},
		"admin ends any": {"action": "impersonation.end", "id": _admin, "target": {"session": {"actor": "bob", "subject": "c1"}}, "allowed": true},
		"list own": {"action": "impersonation.list", "id": _agent, "target": {"actor": "alice"}, "allowed": true},
		"list all as agent": {"action": "impersonation.list", "id": _agent, "target": {"actor": ""}, "allowed": false},
		"list all as lead": {"action": "impersonation.list", "id": _lead, "target": {"actor": ""}, "allowed": true},
		"log as agent": {"action": "impersonation.log", "id": _agent, "target": {}, "allowed": false},
		"log as lead": {"action": "impersonation.log", "id": _lead, "target": {}, "allowed": true},
		"consent for self": {"action": "consent.set_self", "id": _customer, "target": {"customer_id": "c42"}, "allowed": true},
		"consent self for another": {"action": "consent.set_self", "id": _customer, "target": {"customer_id": "c7"}, "allowed": false},
		"consent on behalf as agent": {"action": "consent.set_for_customer", "id": _agent, "target": {"customer_id": "c42"}, "allowed": false},
		"consent on behalf as lead": {"action": "consent.set_for_customer", "id": _lead, "target": {"customer_id": "c42"}, "allowed": true},
		"read own consent": {"action": "consent.get", "id": _customer, "target": {"customer_id": "c42"}, "allowed": true},
		"read other's consent": {"action": "consent.get", "id": _customer, "target": {"customer_id": "c7"}, "allowed": false},
		"agent reads consent": {"action": "consent.get", "id": _agent, "target": {"customer_id": "c7"}, "allowed": true},
		"read own consent history": {"action": "consent.history", "id": _customer, "target": {"customer_id": "c42"}, "allowed": true},
		"read other's consent history": {"action": "consent.history", "id": _customer, "target": {"customer_id": "c7"}, "allowed": false},
		"agent reads consent history": {"action": "consent.history", "id": _agent, "target": {"customer_id": "c7"}, "allowed": false},
		"lead reads consent history": {"action": "consent.history", "id": _lead, "target": {"customer_id": "c7"}, "allowed": true},
		"auditor reads consent history": {"action": "consent.history", "id": {"sub": "aud", "roles": ["auditor"]}, "target": {"customer_id": "c7"}, "allowed": true},
		"sync customers as agent": {"action": "customer.put", "id": _agent, "target": {"customer_id": "c7"}, "allowed": false},
		"sync customers as admin": {"action": "customer.put", "id": _admin, "target": {"customer_id": "c7"}, "allowed": true},
		"delete customer as agent": {"action": "customer.delete", "id": _agent, "target": {"customer_id": "c7"}, "allowed": false},
		"delete customer as lead": {"action": "customer.delete", "id": _lead, "target": {"customer_id": "c7"}, "allowed": false},
		"delete customer as admin": {"action": "customer.delete", "id": _admin, "target": {"customer_id": "c7"}, "allowed": true},
	}
	d := manage.decision with input as {"action": tc.action, "identity": tc.id, "target": tc.target}
	d.allowed == tc.allowed
}

test_generic[note] if {
	some note, tc in {
		"anonymous": {"input": {"action": "impersonation.start", "target": {}}, "reason": "unauthenticated"},
		"redeem is public": {"input": {"action": "impersonation.redeem", "target": {}}, "reason": "ok"},
		"unknown action": {"input": {"action": "rockets.launch", "identity": _admin, "target": {}}, "reason": "no_rule"},
		"known action not permitted": {"input": {"action": "impersonation.log", "identity": _customer, "target": {}}, "reason": "missing_permission"},
		"known action not permitted to a party": {"input": {"action": "impersonation.end", "identity": _lead, "target": {"session": {"actor": "x"}}}, "reason": "not_permitted"},
		"missing permission names it": {"input": {"action": "impersonation.log", "identity": _agent, "target": {}}, "reason": "missing_permission"},
	}
	d := manage.decision with input as tc.input
	d.reason == tc.reason
}

test_status_hints if {
	d := manage.decision with input as {"action": "impersonation.start", "identity": _agent, "target": _start({"customer": {"exists": false}})}
	d.http_status == 404
	d.field == "customer_id"
}

# An allowed action says whether the caller acted as staff: Deputy records
# that subject as staff, with no data entry.
test_staff_flag[note] if {
	some note, tc in {
		"agent lists own sessions": {"action": "impersonation.list", "id": _agent, "target": {"actor": "alice"}, "staff": true},
		"lead sets consent on behalf": {"action": "consent.set_for_customer", "id": _lead, "target": {"customer_id": "c42"}, "staff": true},
		"customer sets own consent": {"action": "consent.set_self", "id": _customer, "target": {"customer_id": "c42"}, "staff": false},
		"customer ends a session on them": {"action": "impersonation.end", "id": _customer, "target": {"session": {"actor": "bob", "subject": "c42"}}, "staff": false},
		"mailer reads events": {"action": "events.read", "id": {"sub": "m", "roles": ["mailer"]}, "target": {}, "staff": true},
	}
	d := manage.decision with input as {"action": tc.action, "identity": tc.id, "target": tc.target}
	d.allowed
	d.staff == tc.staff
}

# Who is refused a session as no party to it, which the API answers as an
# unknown session id, and who as not permitted.
test_session_parties[note] if {
	session := {"id": "imp_1", "actor": "alice", "subject": "c42"}
	some note, tc in {
		"actor ends": {"action": "impersonation.end", "id": _agent, "reason": "ok"},
		"customer acted for ends": {"action": "impersonation.end", "id": _customer, "reason": "ok"},
		"admin ends anyone's": {"action": "impersonation.end", "id": _admin, "reason": "ok"},
		"other agent ends": {"action": "impersonation.end", "id": {"sub": "bob", "roles": ["support_agent"]}, "reason": "not_party"},
		"other customer ends": {"action": "impersonation.end", "id": {"sub": "c7", "roles": ["customer"]}, "reason": "not_party"},
		"log reader may see it, not end it": {"action": "impersonation.end", "id": _lead, "reason": "not_permitted"},
		"other agent reads": {"action": "impersonation.list", "id": {"sub": "bob", "roles": ["support_agent"]}, "reason": "not_party"},
		"customer acted for reads": {"action": "impersonation.list", "id": _customer, "reason": "not_permitted"},
	}
	target := {"actor": "alice", "session": session}
	d := manage.decision with input as {"action": tc.action, "identity": tc.id, "target": target}
	d.reason == tc.reason
}
