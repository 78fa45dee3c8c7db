package deputy.impersonation_test

import data.deputy.impersonation
import data.deputy.lib_test

# A request that carries the staff member's verified token (Deputy has
# refused it already when it names anyone but the session's actor) is
# judged on their roles now as well: the identity provider taking away
# the role that granted login_as_customer ends the session's access on
# that request. A request with the cookie alone is judged on the roles
# recorded at start.
test_actor_current_roles[note] if {
	perms := {"support_agent": ["login_as_customer"], "support_lead": ["login_as_customer"], "auditor": ["view_login_as_customer_log"]}
	some note, tc in {
		"current roles grant it": {"recorded": ["support_agent"], "identity": {"sub": "alice", "roles": ["support_agent"]}, "allowed": true, "reason": "impersonation"},
		"another current role grants it": {"recorded": ["support_agent"], "identity": {"sub": "alice", "roles": ["customer", "support_lead"]}, "allowed": true, "reason": "impersonation"},
		"current roles do not grant it": {"recorded": ["support_agent"], "identity": {"sub": "alice", "roles": ["auditor"]}, "allowed": false, "reason": "actor_not_permitted"},
		"no current roles": {"recorded": ["support_agent"], "identity": {"sub": "alice", "roles": []}, "allowed": false, "reason": "actor_not_permitted"},
		"identity without roles": {"recorded": ["support_agent"], "identity": {"sub": "alice"}, "allowed": false, "reason": "actor_not_permitted"},
		"current roles not a list": {"recorded": ["support_agent"], "identity": {"sub": "alice", "roles": "support_agent"}, "allowed": false, "reason": "actor_not_permitted"},
		"recorded roles do not grant it": {"recorded": ["auditor"], "identity": {"sub": "alice", "roles": ["support_lead"]}, "allowed": false, "reason": "actor_not_permitted"},
		"no identity": {"recorded": ["support_agent"], "allowed": true, "reason": "impersonation"},
		"no identity, recorded roles do not grant it": {"recorded": ["auditor"], "allowed": false, "reason": "actor_not_permitted"},
	}

	# Every allow: a page that meets no forbidden route, and one that
	# meets a route forbidding other methods, each with the page cache
	# bypass on and off.
	every path in ["/catalog/shoes", "/customer/account/edit"] {
		every cache in [true, false] {
			req := object.union(lib_test.request(["GET"], path), {"delegation": object.union(_session, {"actor_roles": tc.recorded})})
			d := impersonation.decision with input as object.union(req, object.filter(tc, ["identity"]))
				with impersonation.role_permissions as perms
				with impersonation.disable_page_cache as cache
			d.allowed == tc.allowed
			d.reason == tc.reason
		}
	}
}

# A forbidden route is refused for its own reason whatever the roles: the
# current roles are judged only where the request would be allowed.
test_forbidden_route_reason_whatever_the_current_roles if {
	req := object.union(lib_test.request(["GET"], "/customer/account/password"), {"delegation": _session, "identity": {"sub": "alice", "roles": ["auditor"]}})
	d := impersonation.decision with input as req
	d.reason == "password_change_forbidden"
}
