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

decision := {"allowed": false, "reason": "impersonation_disabled", "http_status": 403} if {
	input.delegation.mode == "impersonation"
	not data.deputy.impersonation.enabled
} else := {"allowed": false, "reason": _forbidden_reason, "http_status": 403} if {
	input.delegation.mode == "impersonation"
} else := _allow if {
	input.delegation.mode == "impersonation"
}

# METADATA
# description: Permissions the caller's roles grant (roles → permissions in data).
permissions contains p if {
	some role in input.identity.roles
	some p in data.deputy.impersonation.role_permissions[role]
}

default _method := ""

# Read by name (not object.get on input) so Deputy builds only this field.
_method := upper(input.attributes.request.http.method)

default _path := ""

_path := p if {
	raw := input.attributes.request.http.path
	p := split(raw, "?")[0]
} else := concat("", ["/", concat("/", input.parsed_path)]) if {
	input.parsed_path
}

_section := s if {
	s := input.parsed_path[0]
} else := split(trim_left(_path, "/"), "/")[0]

# The first forbidden route that matches, in data order, so the reason is
# stable. Routes are grouped by first path segment, so a request only meets
# the few routes of its own section (none, for most storefront pages), and
# the method is only looked at once the path matched. A route's prefix ends
# with "/": it forbids that path and everything under it.
_forbidden_reason := reasons[0] if {
	reasons := [r.reason |
		some r in data.deputy.impersonation.forbidden_routes[_section]
		startswith(_path_slash, r.prefix)
		_method_forbidden(r)
	]
	count(reasons) > 0
}

# The path with one trailing slash, so /a/b is under /a/b and /a, not /a/bc.
_path_slash := concat("", [trim_suffix(_path, "/"), "/"])

_method_forbidden(r) if not r.methods

_method_forbidden(r) if _method in r.methods

default _allow := {"allowed": true, "reason": "impersonation"}

_allow := {
	"allowed": true,
	"reason": "impersonation",
	"headers": {"cache-control": "no-cache"},
	"response_headers_to_add": {"cache-control": "private, no-store"},
} if {
	data.deputy.impersonation.disable_page_cache
}
