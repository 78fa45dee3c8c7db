package deputy.authz_test

import data.deputy.authz
import data.deputy.lib_test

_req(method, path) := lib_test.request([method], path)

test_routes[note] if {
	some note, tc in {
		"root is public": {"in": _req("GET", "/"), "allowed": true, "reason": "public_route"},
		"catalog is public": {"in": _req("GET", "/catalog/shoes?size=9"), "allowed": true, "reason": "public_route"},
		"catalog POST is not": {"in": _req("POST", "/catalog/shoes"), "allowed": false, "reason": "no_rule_matched"},
		"unknown path denied": {"in": _req("GET", "/admin"), "allowed": false, "reason": "no_rule_matched"},
		"exact path is not a section": {"in": _req("GET", "/health/deep"), "allowed": false, "reason": "no_rule_matched"},
		"exact path with query": {"in": _req("GET", "/health?verbose=1"), "allowed": true, "reason": "public_route"},
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
	}
	d := authz.decision with input as tc.in
	d.allowed == tc.allowed
	d.reason == tc.reason
}

# A delegation never applies to a request presenting a credential Deputy
# refused: the upstream may read that credential's holder from the header
# while Deputy injects the delegation's people. deputy serve resolves no
# delegation for such a request; a replayed decision-log record, or a
# resolver of one's own, can still put both in the input.
test_refused_credential_with_delegation[note] if {
	some note, tc in {
		"impersonation session": {"delegation": {"mode": "impersonation", "actor": "staff1", "subject": "cust1"}, "path": "/customer/account"},
		"on a public route": {"delegation": {"mode": "impersonation", "actor": "staff1", "subject": "cust1"}, "path": "/catalog/shoes"},
		"partner grant": {"delegation": {"mode": "partner", "actor": "pat", "subject": "acme", "level": "full_admin"}, "path": "/customers/acme/service-requests"},
		"reseller assignment": {"delegation": {"mode": "reseller", "actor": "rita", "subject": "acme"}, "path": "/support/cases"},
		"a mode with no package": {"delegation": {"mode": "unknown", "subject": "c1"}, "path": "/customer/account"},
	}
	some refusal in ["malformed_token", "token_expired", "audience_mismatch"]
	d := authz.decision with input as object.union(_req("GET", tc.path), {"identity_error": refusal, "delegation": tc.delegation})
	not d.allowed
	d.http_status == 401
	d.reason == "identity_refused"
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

# Routes are decided on the canonical request: an upstream that merges
# slashes, drops ;params, routes case-insensitively or honours method
# overrides serves these as the route they name.
test_tricky_forms[note] if {
	some note, tc in {
		"leading double slash": {"in": lib_test.request(["GET"], "//customer/account"), "allowed": false, "reason": "authentication_required"},
		"upper case section": {"in": lib_test.request(["GET"], "/Customer/Account"), "allowed": false, "reason": "authentication_required"},
		"parameter on the section": {"in": lib_test.request(["POST"], "/customer;x/account"), "allowed": false, "reason": "authentication_required"},
		"upper case public section": {"in": lib_test.request(["GET"], "/CATALOG/shoes"), "allowed": true, "reason": "public_route"},
		"upper case public path": {"in": lib_test.request(["GET"], "/Health"), "allowed": true, "reason": "public_route"},
		"override turns a public GET into a POST": {"in": lib_test.request(["GET", "POST"], "/catalog/shoes"), "allowed": false, "reason": "no_rule_matched"},
		"override on a public path": {"in": lib_test.request(["GET", "DELETE"], "/health"), "allowed": false, "reason": "no_rule_matched"},
		"override on a signed-in route": {
			"in": object.union(lib_test.request(["GET", "DELETE"], "/customer/account"), {"identity": {"sub": "c1"}}),
			"allowed": true, "reason": "authenticated_route",
		},
		"override within the allowed methods": {"in": lib_test.request(["GET", "HEAD"], "/catalog/shoes"), "allowed": true, "reason": "public_route"},
	}
	d := authz.decision with input as tc.in
	d.allowed == tc.allowed
	d.reason == tc.reason
}

# Deputy's own paths never reach the check through the shipped proxies;
# a path that does is the application's, and no spelling of /deputy/ or
# /.well-known/ opens it.
test_deputy_paths_open_nothing[note] if {
	some note, tc in {
		"management API path": {"in": _req("POST", "/deputy/v1/impersonation/sessions"), "reason": "no_rule_matched"},
		"any method under /deputy/": {"in": _req("DELETE", "/deputy/x/admin"), "reason": "no_rule_matched"},
		"upper case": {"in": _req("POST", "/DEPUTY/customer/account/password/"), "reason": "no_rule_matched"},
		"mixed case": {"in": _req("GET", "/Deputy/v1/anything"), "reason": "no_rule_matched"},
		"keys path": {"in": _req("GET", "/.well-known/jwks.json"), "reason": "no_rule_matched"},
		"signed in": {"in": object.union(_req("DELETE", "/deputy/x/admin"), {"identity": {"sub": "c1"}}), "reason": "no_rule_matched"},
	}
	d := authz.decision with input as tc.in
	not d.allowed
	d.reason == tc.reason
}

test_without_canonical_request_nothing_is_open if {
	d := authz.decision with input as {"attributes": {"request": {"http": {"method": "GET", "path": "/catalog"}}}, "parsed_path": ["catalog"]}
	not d.allowed
}

# A route is looked up by the request's sole method, then by "*", each in
# a branch of its own: a method marked false does not hide "*", "*" serves
# every sole method and an override alike, and an input without
# sole_method takes neither branch.
test_route_method_lookup[note] if {
	routes := {
		"sections": {"open": {"*": true}, "shut": {"GET": false}, "mixed": {"GET": false, "*": true}, "get": {"GET": true}},
		"paths": {"/open": {"*": true}, "/shut": {"GET": false}, "/mixed": {"GET": false, "*": true}, "/get": {"GET": true}},
	}
	no_sole := json.remove(_req("GET", "/get/x"), ["deputy/request/sole_method"])
	some note, tc in {
		"section *": {"in": _req("DELETE", "/open/x"), "allowed": true},
		"section * with an override": {"in": lib_test.request(["GET", "DELETE"], "/open/x"), "allowed": true},
		"section method false": {"in": _req("GET", "/shut/x"), "allowed": false},
		"section method false beside *": {"in": _req("GET", "/mixed/x"), "allowed": true},
		"section method": {"in": _req("GET", "/get/x"), "allowed": true},
		"section other method": {"in": _req("POST", "/get/x"), "allowed": false},
		"section without sole_method": {"in": no_sole, "allowed": false},
		"path *": {"in": _req("PATCH", "/open"), "allowed": true},
		"path method false": {"in": _req("GET", "/shut"), "allowed": false},
		"path method false beside *": {"in": _req("GET", "/mixed"), "allowed": true},
		"path method": {"in": _req("GET", "/get"), "allowed": true},
		"path without sole_method": {"in": json.remove(_req("GET", "/get"), ["deputy/request/sole_method"]), "allowed": false},
	}
	pub := authz.decision with input as tc.in
		with authz.public as routes
		with authz.authenticated as {"paths": {}, "sections": {}}
	pub.allowed == tc.allowed
	signed := authz.decision with input as object.union(tc.in, {"identity": {"sub": "c1"}})
		with authz.public as {"paths": {}, "sections": {}}
		with authz.authenticated as routes
	signed.allowed == tc.allowed
}

# A delegated request never switches protocols, whichever mode decides it;
# a request acting for no one upgrades as its route allows (a signed-in
# customer's own socket, a public page).
test_upgrades[note] if {
	some note, tc in {
		"impersonation": {"in": object.union(_req("GET", "/customer/account"), {"identity": {"sub": "alice"}, "delegation": {"mode": "impersonation", "actor": "alice", "actor_roles": ["support_agent"], "subject": "c42"}}), "allowed": false, "reason": "delegated_upgrade"},
		"partner": {"in": object.union(_req("GET", "/customers/acme/service-requests"), {"identity": {"sub": "pat", "org": "partnerco"}, "delegation": {"mode": "partner", "actor": "pat", "subject": "acme", "level": "look"}}), "allowed": false, "reason": "delegated_upgrade"},
		"reseller": {"in": object.union(_req("GET", "/support/cases"), {"identity": {"sub": "rita", "domain": "shop-a.example", "roles": ["reseller_admin"]}, "delegation": {"mode": "reseller", "actor": "rita", "subject": "acme", "domain": "shop-a.example"}}), "allowed": false, "reason": "delegated_upgrade"},
		"signed-in customer's own socket": {"in": object.union(_req("GET", "/customer/account"), {"identity": {"sub": "c42"}}), "allowed": true, "reason": "authenticated_route"},
		"public page": {"in": _req("GET", "/catalog/live"), "allowed": true, "reason": "public_route"},
		"signed-in route without a token": {"in": _req("GET", "/customer/account"), "allowed": false, "reason": "authentication_required"},
	}
	d := authz.decision with input as lib_test.upgrade(tc.in, ["websocket"])
	d.allowed == tc.allowed
	d.reason == tc.reason
}

# What impersonation refuses as too sensitive is refused in every other
# delegated mode, with the same reason; other routes are decided by the
# mode's package as before.
test_forbidden_routes_in_every_delegated_mode[note] if {
	partner := {"identity": {"sub": "pat", "org": "partnerco"}, "delegation": {"mode": "partner", "actor": "pat", "subject": "acme", "level": "full_admin"}}
	reseller := {"identity": {"sub": "rita", "domain": "shop-a.example", "roles": ["reseller_admin"]}, "delegation": {"mode": "reseller", "actor": "rita", "subject": "acme", "domain": "shop-a.example"}}
	some note, tc in {
		"reseller, password change": {"who": reseller, "method": "POST", "path": "/customer/account/password/", "allowed": false, "reason": "password_change_forbidden"},
		"reseller, account edit": {"who": reseller, "method": "POST", "path": "/customer/account/editPost/", "allowed": false, "reason": "account_change_forbidden"},
		"reseller, payment method": {"who": reseller, "method": "POST", "path": "/customer/payment/1", "allowed": false, "reason": "payment_method_change_forbidden"},
		"reseller, vault": {"who": reseller, "method": "DELETE", "path": "/vault/cards/1", "allowed": false, "reason": "payment_method_change_forbidden"},
		"reseller, behind a store code": {"who": reseller, "method": "GET", "path": "/fr/customer/account/password/", "allowed": false, "reason": "password_change_forbidden"},
		"reseller, account read": {"who": reseller, "method": "GET", "path": "/customer/account/edit/", "allowed": true, "reason": "reseller_domain_customer"},
		"reseller, portal route": {"who": reseller, "method": "GET", "path": "/support/cases", "allowed": true, "reason": "reseller_domain_customer"},
		"partner, under a mapped section": {"who": partner, "method": "GET", "path": "/service-requests/1/customer/account/password/", "allowed": false, "reason": "password_change_forbidden"},
		"partner, contacts at full_admin": {"who": partner, "method": "DELETE", "path": "/customers/acme/contacts/1", "allowed": true, "reason": "partner_level_sufficient"},
		"partner, access requests": {"who": partner, "method": "POST", "path": "/customers/acme/access-requests/1", "allowed": true, "reason": "partner_level_sufficient"},
	}
	d := authz.decision with input as object.union(_req(tc.method, tc.path), tc.who)
	d.allowed == tc.allowed
	d.reason == tc.reason
}
