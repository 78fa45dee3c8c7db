package deputy.reseller_test

import data.deputy.lib_test
import data.deputy.reseller

_request(identity, delegation) := object.union(
	lib_test.request(["GET"], "/cases"),
	{"identity": identity, "delegation": delegation},
)

_staff(roles, privileges) := {"sub": "rita", "org": "resellerco", "domain": "shop-a.example", "roles": roles, "privileges": privileges}

_assigned(domain) := {"mode": "reseller", "actor": "rita", "subject": "acme", "domain": domain}

test_roles_and_privileges[note] if {
	cases := [
		{"note": "reseller_admin", "roles": ["reseller_admin"], "privileges": [], "allowed": true, "reason": "reseller_domain_customer"},
		{"note": "legacy enterprise support", "roles": ["legacy_enterprise_support"], "privileges": [], "allowed": true, "reason": "reseller_domain_customer"},
		{"note": "legacy reseller enterprise support", "roles": ["legacy_reseller_enterprise_support"], "privileges": [], "allowed": true, "reason": "reseller_domain_customer"},
		{"note": "both privileges in the token", "roles": ["custom"], "privileges": ["view_customers", "access_support_cases"], "allowed": true, "reason": "reseller_domain_customer"},
		{"note": "custom role granting both privileges", "roles": ["reseller_support"], "privileges": [], "allowed": true, "reason": "reseller_domain_customer"},
		{"note": "privileges split across role and token", "roles": ["reseller_viewer"], "privileges": ["access_support_cases"], "allowed": true, "reason": "reseller_domain_customer"},
		{"note": "only view_customers", "roles": ["reseller_viewer"], "privileges": [], "allowed": false, "reason": "missing_privilege:access_support_cases"},
		{"note": "only access_support_cases", "roles": [], "privileges": ["access_support_cases"], "allowed": false, "reason": "missing_privilege:view_customers"},
		{"note": "nothing", "roles": ["customer"], "privileges": [], "allowed": false, "reason": "missing_privilege:access_support_cases,view_customers"},
		{"note": "super admin alone does not act for customers", "roles": ["reseller_super_admin"], "privileges": [], "allowed": false, "reason": "missing_privilege:access_support_cases,view_customers"},
	]
	some tc in cases
	note := tc.note
	d := reseller.decision with input as _request(_staff(tc.roles, tc.privileges), _assigned("shop-a.example"))
	d.allowed == tc.allowed
	d.reason == tc.reason
}

test_domain_isolation[note] if {
	cases := {
		"customer of another domain of the same reseller": {"delegation": _assigned("shop-b.example"), "reason": "customer_not_in_domain"},
		"delegation without a domain": {"delegation": {"mode": "reseller", "subject": "acme"}, "reason": "customer_not_in_domain"},
		"partner delegation": {"delegation": object.union(_assigned("shop-a.example"), {"mode": "partner"}), "reason": "not_reseller_delegation"},
	}
	some note, tc in cases
	d := reseller.decision with input as _request(_staff(["reseller_admin"], []), tc.delegation)
	not d.allowed
	d.reason == tc.reason
	d.http_status == 403
}

test_identity_without_domain if {
	identity := object.remove(_staff(["reseller_admin"], []), ["domain"])
	d := reseller.decision with input as _request(identity, _assigned("shop-a.example"))
	not d.allowed
	d.reason == "customer_not_in_domain"
}

test_anonymous if {
	d := reseller.decision with input as {"delegation": _assigned("shop-a.example")}
	not d.allowed
	d.reason == "missing_privilege:access_support_cases,view_customers"
}

test_no_required_privileges_makes_nobody_staff if {
	d := reseller.decision with input as _request(_staff(["customer"], []), _assigned("shop-a.example"))
		with reseller.required_privileges as []
	not d.allowed
}

test_super_admin if {
	reseller.super_admin with input as {"identity": _staff(["reseller_super_admin"], [])}
}

test_reseller_admin_is_not_super_admin if {
	not reseller.super_admin with input as {"identity": _staff(["reseller_admin"], [])}
}

# A path that names a customer must name the one acted for, in every form.
test_path_names_the_customer_acted_for[note] if {
	some note, tc in {
		"own customer": {"path": "/customers/acme/cases", "allowed": true, "reason": "reseller_domain_customer"},
		"own customer, upper-case template": {"path": "/Customers/acme/cases", "allowed": true, "reason": "reseller_domain_customer"},
		"another customer": {"path": "/customers/globex/cases", "allowed": false, "reason": "path_names_another_customer"},
		"another customer, upper-case template": {"path": "/CUSTOMERS/globex", "allowed": false, "reason": "path_names_another_customer"},
		"another customer behind a double slash": {"path": "//customers/globex/cases", "allowed": false, "reason": "path_names_another_customer"},
		"another customer with a parameter": {"path": "/customers;x/globex;y/cases", "allowed": false, "reason": "path_names_another_customer"},
		"customer id compares exactly": {"path": "/customers/ACME/cases", "allowed": false, "reason": "path_names_another_customer"},
		"no customer in the path": {"path": "/cases/1", "allowed": true, "reason": "reseller_domain_customer"},
		"another customer behind a front controller": {"path": "/index.php/customers/globex/cases", "allowed": false, "reason": "path_names_another_customer"},
		"another customer behind a template with a trailing dot": {"path": "/customers./globex/cases", "allowed": false, "reason": "path_names_another_customer"},
		"another customer behind a template with a trailing space": {"path": "/customers /globex/cases", "allowed": false, "reason": "path_names_another_customer"},
		"another customer with a trailing dot": {"path": "/customers/globex./cases", "allowed": false, "reason": "path_names_another_customer"},
		"own customer behind a front controller": {"path": "/index.php/customers/acme/cases", "allowed": true, "reason": "reseller_domain_customer"},
		"own customer with a blank segment after it": {"path": "/customers/acme/ /cases", "allowed": true, "reason": "reseller_domain_customer"},
		"another case, a later own id lined up by blank segments": {"path": "/customers/ACME/orders/acme/ / ", "allowed": false, "reason": "path_names_another_customer"},
		"own customer behind a front controller below the template": {"path": "/customers/index.php/acme/cases", "allowed": true, "reason": "reseller_domain_customer"},
		"another customer behind a front controller below the template": {"path": "/customers/index.php/globex/cases", "allowed": false, "reason": "path_names_another_customer"},
		# A locale, a store code or a mount point in front of the template:
		# the portal serves globex's cases there too.
		"another customer behind a locale": {"path": "/fr/customers/globex/cases", "allowed": false, "reason": "path_names_another_customer"},
		"another customer behind a mount point and a front controller": {"path": "/portal/index.php/en-gb/customers/globex", "allowed": false, "reason": "path_names_another_customer"},
		"another customer after the own one": {"path": "/customers/acme/links/customers/globex/cases", "allowed": false, "reason": "path_names_another_customer"},
		"every customer behind a locale": {"path": "/fr/customers", "allowed": false, "reason": "path_names_another_customer"},
		"own customer behind a locale": {"path": "/fr/customers/acme/cases", "allowed": true, "reason": "reseller_domain_customer"},
		"no customer behind a locale": {"path": "/fr/cases/1", "allowed": true, "reason": "reseller_domain_customer"},
	}
	req := object.union(lib_test.request(["GET"], tc.path), {
		"identity": _staff(["reseller_admin"], []),
		"delegation": _assigned("shop-a.example"),
	})
	d := reseller.decision with input as req
	d.allowed == tc.allowed
	d.reason == tc.reason
}

# The route form folds Unicode ("ſ" is "s") in Go, which the model in
# lib_test does not: the canonicaliser's output is spelled out here.
test_folded_template_names_another_customer if {
	req := object.union(lib_test.request(["GET"], "/cuſtomers/globex/cases"), {
		"identity": _staff(["reseller_admin"], []),
		"delegation": _assigned("shop-a.example"),
		"deputy": {"request": {"route": "/customers/globex/cases", "route_segments": ["customers", "globex", "cases"]}},
	})
	d := reseller.decision with input as req
	not d.allowed
	d.reason == "path_names_another_customer"
}

# The one-body branch for the common request and the chain behind it
# decide alike at their seams: whatever the first does not allow, the
# chain decides as it did before the branch existed.
test_admin_branch_seams[note] if {
	some note, tc in {
		"admin and legacy role": {"roles": ["reseller_admin", "legacy_enterprise_support"], "input": {}, "with_admin_roles": ["reseller_admin"], "allowed": true, "reason": "reseller_domain_customer"},
		"admin role removed from data": {"roles": ["reseller_admin"], "input": {}, "with_admin_roles": [], "allowed": false, "reason": "missing_privilege:access_support_cases,view_customers"},
		"empty domains on both sides": {"roles": ["reseller_admin"], "input": {"identity": {"domain": ""}, "delegation": {"domain": ""}}, "with_admin_roles": ["reseller_admin"], "allowed": false, "reason": "customer_not_in_domain"},
		"no canonical request": {"roles": ["reseller_admin"], "input": {"deputy": null}, "with_admin_roles": ["reseller_admin"], "allowed": true, "reason": "reseller_domain_customer"},
		"root path": {"roles": ["reseller_admin"], "input": {"deputy": lib_test.request(["GET"], "/").deputy}, "with_admin_roles": ["reseller_admin"], "allowed": true, "reason": "reseller_domain_customer"},
		"reseller mode in another case": {"roles": ["reseller_admin"], "input": {"delegation": {"mode": "Reseller"}}, "with_admin_roles": ["reseller_admin"], "allowed": false, "reason": "not_reseller_delegation"},
	}
	req := object.union(_request(_staff(tc.roles, []), _assigned("shop-a.example")), tc.input)
	d := reseller.decision with input as req
		with reseller.admin_roles as tc.with_admin_roles
	d.allowed == tc.allowed
	d.reason == tc.reason
}

# Without the partner data that names the customers/{customer} template,
# no path names a customer: the admin is allowed, as by the chain.
test_admin_without_partner_template if {
	d := reseller.decision with input as object.union(_request(_staff(["reseller_admin"], []), _assigned("shop-a.example")), {"deputy": lib_test.request(["GET"], "/customers/globex/cases").deputy})
		with data.deputy.partner as {}
	d.allowed
	d.reason == "reseller_domain_customer"
}

# A socket opened for a customer of the domain outlives the assignment
# and carries requests Deputy never sees: no upgrade while acting for a
# customer.
test_upgrade_refused[note] if {
	some note, protocols in {"websocket": ["websocket"], "Connection upgrade with no protocol": []}
	d := reseller.decision with input as lib_test.upgrade(_request(_staff(["reseller_admin"], []), _assigned("shop-a.example")), protocols)
	not d.allowed
	d.reason == "delegated_upgrade"
	d.http_status == 403
}

test_upgrade_of_another_mode_is_not_reseller_delegation if {
	d := reseller.decision with input as lib_test.upgrade(
		_request(_staff(["reseller_admin"], []), object.union(_assigned("shop-a.example"), {"mode": "partner"})),
		["websocket"],
	)
	not d.allowed
	d.reason == "not_reseller_delegation"
}

# domain_hosts binds each domain to the portal hosts its staff sign in
# through. With any entry, a request is allowed only on a host of its
# domain: a token of shop-a.example used on shop-b.example's portal acts
# there for no one, whatever role lets it in.
_domain_hosts := {
	"shop-a.example": ["portal.shop-a.example", "care.shop-a.example"],
	"shop-b.example": ["portal.shop-b.example"],
}

_on_host(req, "") := req

_on_host(req, host) := object.union(req, {"deputy": {"request": {"host": host}}}) if host != ""

test_domain_hosts[note] if {
	some note, tc in {
		"own domain's portal": {"roles": ["reseller_admin"], "host": "portal.shop-a.example", "domain_hosts": _domain_hosts, "allowed": true, "reason": "reseller_domain_customer"},
		"own domain's second portal": {"roles": ["reseller_admin"], "host": "care.shop-a.example", "domain_hosts": _domain_hosts, "allowed": true, "reason": "reseller_domain_customer"},
		"custom role on the own domain's portal": {"roles": ["reseller_support"], "host": "portal.shop-a.example", "domain_hosts": _domain_hosts, "allowed": true, "reason": "reseller_domain_customer"},
		"the reseller's other domain's portal": {"roles": ["reseller_admin"], "host": "portal.shop-b.example", "domain_hosts": _domain_hosts, "allowed": false, "reason": "domain_host_mismatch"},
		"custom role on the other domain's portal": {"roles": ["reseller_support"], "host": "portal.shop-b.example", "domain_hosts": _domain_hosts, "allowed": false, "reason": "domain_host_mismatch"},
		"legacy role on the other domain's portal": {"roles": ["legacy_enterprise_support"], "host": "portal.shop-b.example", "domain_hosts": _domain_hosts, "allowed": false, "reason": "domain_host_mismatch"},
		"a host no domain lists": {"roles": ["reseller_admin"], "host": "shop-a.example", "domain_hosts": _domain_hosts, "allowed": false, "reason": "domain_host_mismatch"},
		"a check naming no host": {"roles": ["reseller_admin"], "host": "", "domain_hosts": _domain_hosts, "allowed": false, "reason": "domain_host_mismatch"},
		"domain missing from the map": {"roles": ["reseller_admin"], "host": "portal.shop-a.example", "domain_hosts": {"shop-b.example": ["portal.shop-b.example"]}, "allowed": false, "reason": "domain_hosts_unlisted"},
		"domain missing, custom role": {"roles": ["reseller_support"], "host": "portal.shop-a.example", "domain_hosts": {"shop-b.example": ["portal.shop-b.example"]}, "allowed": false, "reason": "domain_hosts_unlisted"},
		# Empty, as shipped: every host, as before the map existed.
		"empty map, the other domain's portal": {"roles": ["reseller_admin"], "host": "portal.shop-b.example", "domain_hosts": {}, "allowed": true, "reason": "reseller_domain_customer"},
		"empty map, no host": {"roles": ["reseller_admin"], "host": "", "domain_hosts": {}, "allowed": true, "reason": "reseller_domain_customer"},
		"empty map, custom role, no host": {"roles": ["reseller_support"], "host": "", "domain_hosts": {}, "allowed": true, "reason": "reseller_domain_customer"},
	}
	req := _on_host(_request(_staff(tc.roles, []), _assigned("shop-a.example")), tc.host)
	d := reseller.decision with input as req
		with reseller.domain_hosts as tc.domain_hosts
	d.allowed == tc.allowed
	d.reason == tc.reason
}

# The host check comes after the customer's: a customer of another
# domain, or a path naming another customer, is refused for that on any
# host.
test_domain_hosts_after_customer_checks[note] if {
	some note, tc in {
		"customer of another domain": {"delegation": _assigned("shop-b.example"), "path": "/cases", "reason": "customer_not_in_domain"},
		"path naming another customer": {"delegation": _assigned("shop-a.example"), "path": "/customers/globex/cases", "reason": "path_names_another_customer"},
	}
	req := object.union(_on_host(_request(_staff(["reseller_admin"], []), tc.delegation), "portal.shop-b.example"), {"deputy": lib_test.request(["GET"], tc.path).deputy})
	d := reseller.decision with input as req
		with reseller.domain_hosts as _domain_hosts
	not d.allowed
	d.reason == tc.reason
}
