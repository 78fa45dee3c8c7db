package deputy.manage_test

import data.deputy.manage

_super_admin := {"sub": "sam", "org": "resellerco", "domain": "shop-a.example", "roles": ["reseller_super_admin"]}

test_reseller_assignment_actions[note] if {
	cases := [
		{"note": "super admin reads own domain", "action": "reseller.assignment.get", "identity": _super_admin, "target": {"customer": "acme", "current_domain": "shop-a.example"}, "allowed": true, "reason": "ok"},
		{"note": "super admin reads unassigned customer", "action": "reseller.assignment.get", "identity": _super_admin, "target": {"customer": "acme"}, "allowed": true, "reason": "ok"},
		{"note": "super admin cannot read another domain's customer", "action": "reseller.assignment.get", "identity": _super_admin, "target": {"customer": "acme", "current_domain": "shop-b.example"}, "allowed": false, "reason": "customer_not_in_domain"},
		{"note": "super admin assigns to own domain", "action": "reseller.assignment.put", "identity": _super_admin, "target": {"customer": "acme", "domain": "shop-a.example"}, "allowed": true, "reason": "ok"},
		{"note": "super admin cannot assign to another domain", "action": "reseller.assignment.put", "identity": _super_admin, "target": {"customer": "acme", "domain": "shop-b.example"}, "allowed": false, "reason": "customer_not_in_domain"},
		{"note": "super admin cannot take another domain's customer", "action": "reseller.assignment.put", "identity": _super_admin, "target": {"customer": "acme", "domain": "shop-a.example", "current_domain": "shop-b.example"}, "allowed": false, "reason": "customer_not_in_domain"},
		{"note": "super admin deletes own", "action": "reseller.assignment.delete", "identity": _super_admin, "target": {"customer": "acme", "current_domain": "shop-a.example"}, "allowed": true, "reason": "ok"},
		{"note": "super admin lists own domain", "action": "reseller.assignment.list", "identity": _super_admin, "target": {"domain": "shop-a.example"}, "allowed": true, "reason": "ok"},
		{"note": "super admin imports own domain", "action": "reseller.assignment.import", "identity": _super_admin, "target": {"domain": "shop-a.example", "domains": ["shop-a.example"]}, "allowed": true, "reason": "ok"},
		{"note": "import naming another domain", "action": "reseller.assignment.import", "identity": _super_admin, "target": {"domain": "shop-a.example", "domains": ["shop-a.example", "shop-b.example"]}, "allowed": false, "reason": "customer_not_in_domain"},
		{"note": "reseller admin is not a super admin", "action": "reseller.assignment.put", "identity": object.union(_super_admin, {"roles": ["reseller_admin"]}), "target": {"customer": "acme", "domain": "shop-a.example"}, "allowed": false, "reason": "not_permitted"},
		{"note": "staff lists own domain", "action": "reseller.assignment.list", "identity": object.union(_super_admin, {"roles": ["reseller_admin"]}), "target": {"domain": "shop-a.example"}, "allowed": true, "reason": "ok"},
		{"note": "staff with privileges reads own domain's customer", "action": "reseller.assignment.get", "identity": object.union(_super_admin, {"roles": [], "privileges": ["view_customers", "access_support_cases"]}), "target": {"customer": "acme", "current_domain": "shop-a.example"}, "allowed": true, "reason": "ok"},
		{"note": "staff cannot read another domain's customer", "action": "reseller.assignment.get", "identity": object.union(_super_admin, {"roles": ["reseller_admin"]}), "target": {"customer": "acme", "current_domain": "shop-b.example"}, "allowed": false, "reason": "customer_not_in_domain"},
		{"note": "staff cannot import", "action": "reseller.assignment.import", "identity": object.union(_super_admin, {"roles": ["reseller_admin"]}), "target": {"domain": "shop-a.example", "domains": ["shop-b.example"]}, "allowed": false, "reason": "not_permitted"},
		{"note": "viewer without support privilege cannot list", "action": "reseller.assignment.list", "identity": object.union(_super_admin, {"roles": ["reseller_viewer"]}), "target": {"domain": "shop-a.example"}, "allowed": false, "reason": "not_permitted"},
		{"note": "super admin without a domain", "action": "reseller.assignment.list", "identity": object.remove(_super_admin, ["domain"]), "target": {"domain": ""}, "allowed": false, "reason": "not_permitted"},
	]
	some tc in cases
	note := tc.note
	d := manage.decision with input as {"action": tc.action, "identity": tc.identity, "target": tc.target}
	d.allowed == tc.allowed
	d.reason == tc.reason
}

# A protected account (as Login as Customer judges it) is put into no
# domain, one by one or by import; an unprotected one is.
test_reseller_assignment_of_protected_customers[note] if {
	some note, tc in {
		"profile says protected": {"action": "reseller.assignment.put", "target": {"customer": "staff-1", "domain": "shop-a.example", "profile": {"id": "staff-1", "exists": true, "protected": true, "roles": []}}, "reason": "customer_protected"},
		"protected role": {"action": "reseller.assignment.put", "target": {"customer": "ann", "domain": "shop-a.example", "profile": {"id": "ann", "exists": true, "protected": false, "roles": ["customer", "support_agent"]}}, "reason": "customer_protected"},
		"staff without a profile": {"action": "reseller.assignment.put", "target": {"customer": "staff-2", "domain": "shop-a.example", "profile": {"id": "staff-2", "exists": false, "protected": true}}, "reason": "customer_protected"},
		"listed customer": {"action": "reseller.assignment.put", "target": {"customer": "vip", "domain": "shop-a.example", "profile": {"id": "vip", "exists": false, "protected": false}}, "reason": "customer_protected", "listed": ["vip"]},
		"listed in other letter case": {"action": "reseller.assignment.put", "target": {"customer": "VIP", "domain": "shop-a.example", "profile": {"id": "VIP", "exists": false, "protected": false}}, "reason": "customer_protected", "listed": ["vip"]},
		"another spelling's profile says protected": {"action": "reseller.assignment.put", "target": {"customer": "STAFF-1", "domain": "shop-a.example", "profile": {"id": "STAFF-1", "exists": false, "protected": false, "spellings": [{"id": "staff-1", "protected": true, "roles": []}]}}, "reason": "customer_protected"},
		"another spelling's protected role": {"action": "reseller.assignment.put", "target": {"customer": "Ann", "domain": "shop-a.example", "profile": {"id": "Ann", "exists": true, "protected": false, "roles": ["customer"], "spellings": [{"id": "ann", "protected": false, "roles": ["support_agent"]}]}}, "reason": "customer_protected"},
		"another spelling unprotected": {"action": "reseller.assignment.put", "target": {"customer": "ACME", "domain": "shop-a.example", "profile": {"id": "ACME", "exists": false, "protected": false, "spellings": [{"id": "acme", "protected": false, "roles": ["customer"]}]}}, "reason": "ok"},
		"unprotected profile": {"action": "reseller.assignment.put", "target": {"customer": "acme", "domain": "shop-a.example", "profile": {"id": "acme", "exists": true, "protected": false, "roles": ["customer"]}}, "reason": "ok"},
		"no profile": {"action": "reseller.assignment.put", "target": {"customer": "acme", "domain": "shop-a.example", "profile": {"id": "acme", "exists": false, "protected": false}}, "reason": "ok"},
		"import with a protected row": {"action": "reseller.assignment.import", "target": {"domain": "shop-a.example", "domains": ["shop-a.example"], "profiles": [{"id": "acme", "exists": false, "protected": false}, {"id": "staff-1", "exists": true, "protected": true, "roles": []}]}, "reason": "customer_protected"},
		"import of unprotected rows": {"action": "reseller.assignment.import", "target": {"domain": "shop-a.example", "domains": ["shop-a.example"], "profiles": [{"id": "acme", "exists": false, "protected": false}]}, "reason": "ok"},
		"another domain's protected customer": {"action": "reseller.assignment.put", "target": {"customer": "staff-1", "domain": "shop-a.example", "current_domain": "shop-b.example", "profile": {"id": "staff-1", "exists": true, "protected": true, "roles": []}}, "reason": "customer_not_in_domain"},
		"not permitted at all": {"action": "reseller.assignment.put", "identity": object.union(_super_admin, {"roles": ["reseller_admin"]}), "target": {"customer": "staff-1", "domain": "shop-a.example", "profile": {"id": "staff-1", "exists": true, "protected": true, "roles": []}}, "reason": "not_permitted"},
	}
	d := manage.decision with input as {"action": tc.action, "identity": object.get(tc, "identity", _super_admin), "target": tc.target}
		with data.deputy.impersonation.protected_customers as object.get(tc, "listed", [])
	d.reason == tc.reason
	allowed := tc.reason == "ok"
	d.allowed == allowed
}
