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
	_deputy_route
} else := _delegated if {
	input.delegation
} else := {"allowed": true, "reason": "public_route"} if {
	_public_route
} else := {"allowed": false, "http_status": 403, "reason": input.delegation_error} if {
	input.delegation_error
} else := {"allowed": false, "http_status": 401, "reason": "identity_refused"} if {
	input.identity_error
} else := {"allowed": true, "reason": "authenticated_route"} if {
	input.identity.sub
	_authenticated_route
} else := {"allowed": false, "http_status": 401, "reason": "authentication_required"} if {
	not input.identity
	_authenticated_route
}

# A delegated request is decided by the package of its mode; a mode with no
# package is denied rather than falling through to the signed-in routes.
default _delegated := {"allowed": false, "http_status": 403, "reason": "no_policy_for_mode"}

_delegated := data.deputy.impersonation.decision if input.delegation.mode == "impersonation"

_delegated := data.deputy.partner.decision if input.delegation.mode == "partner"

_delegated := data.deputy.reseller.decision if input.delegation.mode == "reseller"

_method := input.attributes.request.http.method

# Routes are looked up, never scanned: by first path segment (a
# storefront's sections: catalog, customer, checkout, ...) or exact path,
# then by method or "*". Rules, not functions, so OPA caches each answer
# and a check's cost stays flat however many routes data lists.
_section := input.parsed_path[0]

_path := split(input.attributes.request.http.path, "?")[0]

_deputy_route if data.deputy.authz.deputy.sections[_section][_method]

_deputy_route if data.deputy.authz.deputy.sections[_section]["*"]

_public_route if data.deputy.authz.public.sections[_section][_method]

_public_route if data.deputy.authz.public.sections[_section]["*"]

_public_route if data.deputy.authz.public.paths[_path][_method]

_public_route if data.deputy.authz.public.paths[_path]["*"]

_authenticated_route if data.deputy.authz.authenticated.sections[_section][_method]

_authenticated_route if data.deputy.authz.authenticated.sections[_section]["*"]

_authenticated_route if data.deputy.authz.authenticated.paths[_path][_method]

_authenticated_route if data.deputy.authz.authenticated.paths[_path]["*"]
