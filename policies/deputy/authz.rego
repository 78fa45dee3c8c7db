# METADATA
# title: Deputy check decision
# description: >-
#   The decision for every request Envoy asks about. Deny by default. When a
#   request acts on someone's behalf, the package of that delegation mode
#   decides; otherwise allow what data marks public, and the routes data
#   opens to signed-in callers.
# related_resources:
#   - description: data beside this file
#     ref: ./authz/data.json
package deputy.authz

# METADATA
# entrypoint: true
# description: OPA-Envoy-shaped result object with a machine-readable reason.
default decision := {"allowed": false, "http_status": 403, "reason": "no_rule_matched"}

decision := {"allowed": true, "reason": "deputy_route"} if {
	# Deputy's own API and key endpoints authenticate and authorize callers
	# themselves (data.deputy.manage).
	_route_in(data.deputy.authz.deputy_routes)
} else := _delegated if {
	input.delegation
} else := {"allowed": true, "reason": "public_route"} if {
	_route_in(data.deputy.authz.public_routes)
} else := {"allowed": false, "http_status": 403, "reason": input.delegation_error} if {
	input.delegation_error
} else := {"allowed": false, "http_status": 401, "reason": "identity_refused"} if {
	input.identity_error
} else := {"allowed": true, "reason": "authenticated_route"} if {
	input.identity.sub
	_route_in(data.deputy.authz.authenticated_routes)
} else := {"allowed": false, "http_status": 401, "reason": "authentication_required"} if {
	not input.identity
	_route_in(data.deputy.authz.authenticated_routes)
}

# A delegated request is decided by the package of its mode; a mode with no
# package is denied rather than falling through to the signed-in routes.
default _delegated := {"allowed": false, "http_status": 403, "reason": "no_policy_for_mode"}

_delegated := data.deputy.impersonation.decision if input.delegation.mode == "impersonation"

_delegated := data.deputy.partner.decision if input.delegation.mode == "partner"

_delegated := data.deputy.reseller.decision if input.delegation.mode == "reseller"

_method := input.attributes.request.http.method

_path := split(input.attributes.request.http.path, "?")[0]

_route_in(routes) if {
	some route in routes
	_method_matches(route)
	_path_matches(route)
}

_method_matches(route) if not route.methods

_method_matches(route) if _method in route.methods

_path_matches(route) if _path == route.path

_path_matches(route) if startswith(_path, route.prefix)
