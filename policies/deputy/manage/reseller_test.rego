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
