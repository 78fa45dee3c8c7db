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

# Routes are looked up, never scanned: by first path segment (a
# storefront's sections: catalog, customer, checkout, ...) or by exact path,
# then by method or "*". The lookups and the dispatch to the delegation
# packages sit in the branches themselves: every helper rule is one more
# evaluation on every check, so this one chain is longer than Regal likes.
# regal ignore:rule-length
decision := {"allowed": true, "reason": "deputy_route"} if {
	# Deputy's own API and key endpoints authenticate and authorize callers
	# themselves (data.deputy.manage). Any other path fails at the first
	# lookup, before the method is looked at.
	methods := data.deputy.authz.deputy.sections[input.parsed_path[0]]
	some method in [input.attributes.request.http.method, "*"]
	methods[method]
} else := data.deputy.impersonation.decision if {
	# A delegated request is decided by the package of its mode.
	input.delegation.mode == "impersonation"
} else := data.deputy.partner.decision if {
	input.delegation.mode == "partner"
} else := data.deputy.reseller.decision if {
	input.delegation.mode == "reseller"
} else := {"allowed": false, "http_status": 403, "reason": "no_policy_for_mode"} if {
	# A mode with no package is denied rather than falling through to the
	# signed-in routes.
	input.delegation.mode
} else := {"allowed": true, "reason": "public_route"} if {
	methods := data.deputy.authz.public.sections[input.parsed_path[0]]
	some method in [input.attributes.request.http.method, "*"]
	methods[method]
} else := {"allowed": true, "reason": "public_route"} if {
	methods := data.deputy.authz.public.paths[_path]
	some method in [input.attributes.request.http.method, "*"]
	methods[method]
} else := {"allowed": false, "http_status": 403, "reason": input.delegation_error} if {
	input.delegation_error
} else := {"allowed": false, "http_status": 401, "reason": "identity_refused"} if {
	input.identity_error
} else := {"allowed": true, "reason": "authenticated_route"} if {
	input.identity.sub
	_authenticated_route
} else := {"allowed": false, "http_status": 401, "reason": "authentication_required"} if {
	not input.identity.sub
	_authenticated_route
}

_path := split(input.attributes.request.http.path, "?")[0]

# Routes open to any signed-in caller, by section or exact path, for the
# request's method or "*".
_authenticated_route if {
	methods := data.deputy.authz.authenticated.sections[input.parsed_path[0]]
	some method in [input.attributes.request.http.method, "*"]
	methods[method]
}

_authenticated_route if {
	methods := data.deputy.authz.authenticated.paths[_path]
	some method in [input.attributes.request.http.method, "*"]
	methods[method]
}
