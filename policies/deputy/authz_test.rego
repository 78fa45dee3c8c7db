package deputy.authz_test

import data.deputy.authz

_req(method, path) := {
	"attributes": {"request": {"http": {"method": method, "path": path}}},
	"parsed_path": split(trim_left(split(path, "?")[0], "/"), "/"),
}

test_routes[note] if {
	some note, tc in {
		"root is public": {"in": _req("GET", "/"), "allowed": true, "reason": "public_route"},
		"catalog is public": {"in": _req("GET", "/catalog/shoes?size=9"), "allowed": true, "reason": "public_route"},
		"catalog POST is not": {"in": _req("POST", "/catalog/shoes"), "allowed": false, "reason": "no_rule_matched"},
		"unknown path denied": {"in": _req("GET", "/admin"), "allowed": false, "reason": "no_rule_matched"},
		"exact path is not a section": {"in": _req("GET", "/health/deep"), "allowed": false, "reason": "no_rule_matched"},
		"exact path with query": {"in": _req("GET", "/health?verbose=1"), "allowed": true, "reason": "public_route"},
		"JWKS is Deputy's": {"in": _req("GET", "/.well-known/jwks.json"), "allowed": true, "reason": "deputy_route"},
		"account needs sign-in": {"in": _req("GET", "/customer/account"), "allowed": false, "reason": "authentication_required"},
		"account with identity": {
			"in": object.union(_req("GET", "/customer/account"), {"identity": {"sub": "c1"}}),
			"allowed": true, "reason": "authenticated_route",
		},
		"refused token": {
			"in": object.union(_req("GET", "/customer/account"), {"identity_error": "token_expired"}),
			"allowed": false, "reason": "identity_refused",
		},
		"delegation error denies": {
			"in": object.union(_req("GET", "/customer/account"), {"identity": {"sub": "s1"}, "delegation_error": "session_ended"}),
			"allowed": false, "reason": "session_ended",
		},
		"management API reaches Deputy": {"in": _req("POST", "/deputy/v1/impersonation/sessions"), "allowed": true, "reason": "deputy_route"},
	}
	d := authz.decision with input as tc.in
	d.allowed == tc.allowed
	d.reason == tc.reason
}

test_data_switches_routes if {
	d := authz.decision with input as _req("GET", "/admin")
		with authz.public as {"paths": {}, "sections": {"admin": {"GET": true}}}
	d.allowed
}

test_delegated_mode_without_policy_is_denied if {
	d := authz.decision with input as object.union(
		_req("GET", "/customer/account"),
		{"identity": {"sub": "s1"}, "delegation": {"mode": "unknown", "subject": "c1"}},
	)
	not d.allowed
	d.reason == "no_policy_for_mode"
}
