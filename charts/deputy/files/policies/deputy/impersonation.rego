# METADATA
# title: Login as Customer
# description: |
#   Storefront requests made inside a live impersonation session. Switches,
#   role permissions and staff-forbidden routes are data in
#   impersonation/data.json so security teams change them without code.
package deputy.impersonation

# METADATA
# description: |
#   The decision for a request carrying a live impersonation session, in
#   OPA-Envoy result shape. The pipeline adds the x-deputy-* headers and the
#   actor token itself.
# entrypoint: true
default decision := {"allowed": false, "reason": "not_impersonating", "http_status": 403}

# One rule with an else chain, not a helper per step: every rule OPA
# evaluates costs about a microsecond on every impersonated request.
decision := {"allowed": false, "reason": "impersonation_disabled", "http_status": 403} if {
	input.delegation.mode == "impersonation"
	not data.deputy.impersonation.enabled
} else := {"allowed": false, "reason": reasons[0], "http_status": 403} if {
	input.delegation.mode == "impersonation"

	# The first forbidden route that matches, in data order, so the reason
	# is stable. Routes are grouped by first path segment, so a request only
	# meets the few routes of its own section (none, for most storefront
	# pages), and the method is only looked at once the path matched.
	reasons := [r.reason |
		some r in data.deputy.impersonation.forbidden_routes[input.parsed_path[0]]
		startswith(_path_slash, r.prefix)
		_method_forbidden(r)
	]
	count(reasons) > 0
} else := {
	"allowed": true,
	"reason": "impersonation",
	"headers": {"cache-control": "no-cache"},
	"response_headers_to_add": {"cache-control": "private, no-store"},
} if {
	input.delegation.mode == "impersonation"
	input.parsed_path
	data.deputy.impersonation.disable_page_cache
} else := {"allowed": true, "reason": "impersonation"} if {
	input.delegation.mode == "impersonation"
	input.parsed_path
} else := {"allowed": false, "reason": "path_missing", "http_status": 403} if {
	# Forbidden routes are matched on parsed_path: without it, deny rather
	# than let every route through.
	input.delegation.mode == "impersonation"
}

# METADATA
# description: Permissions the caller's roles grant (roles → permissions in data).
permissions contains p if {
	some role in input.identity.roles
	some p in data.deputy.impersonation.role_permissions[role]
}

# The decoded path, from OPA-Envoy's parsed_path, with one leading and one
# trailing slash, so a route prefix "/a/b/" matches /a/b and everything
# under it, but not /a/bc. A route's prefix ends with "/". Repeated slashes
# count as one, as most upstreams read them: /a//b is /a/b. (Deputy refuses
# dot segments before policy runs.)
_path_slash := concat("", ["/", concat("/", [s | some s in input.parsed_path; s != ""]), "/"])

_method_forbidden(r) if not r.methods

# Methods are compared in upper case: some upstreams accept "post" as POST.
_method_forbidden(r) if upper(input.attributes.request.http.method) in r.methods
