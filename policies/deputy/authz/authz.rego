# METADATA
# title: Deputy check decision
# description: >-
#   The decision for every request Envoy asks about. Deny by default. When a
#   request acts on someone's behalf, the package of that delegation mode
#   decides, unless it presents a credential Deputy refused (denied, as
#   identity_refused); otherwise allow what data marks public, and the routes data
#   opens to signed-in callers. Routes are matched on the canonical request
#   (input.deputy.request): lower-cased, slashes merged, ;params dropped,
#   and every method the request may run as (method overrides included)
#   must be allowed.
# related_resources:
#   - description: data beside this file
#     ref: ./data.json
package deputy.authz

import data.deputy.lib

# METADATA
# entrypoint: true
# description: OPA-Envoy-shaped result object with a machine-readable reason.
default decision := {"allowed": false, "http_status": 403, "reason": "no_rule_matched"}

# Routes are looked up, never scanned: by first path segment (a
# storefront's sections: catalog, customer, checkout, ...) or by exact path,
# then by method. A route allows a request when it allows "*", or every
# method the request may run as (a GET that names POST in an override is a
# POST to an upstream that honours it). A route's table lists the methods
# it opens: Deputy refuses at activation any value but true (a false or
# "false" would read here as open) and any key but an upper-case method or
# "*", so these lookups test nothing more on every public page. A request without an override
# (sole_method) takes the first two branches of each route, its method
# then "*", each one lookup with no "some ... in [...]" (the membership
# builtin and the array it reads cost three allocations and about two
# microseconds on every public page); the other two start with a test of
# input alone, so it never pays for their lookups. The
# lookups and the dispatch to the delegation packages sit in the branches
# themselves, with no helper function: every call is one more evaluation on
# every check, but one: the chain is cut in two after the commonest
# routes, a section or a path opened to the request's one method (a
# catalog page, the home page). OPA's rule index checks every branch of a
# chain before it evaluates the first, so each branch below the one that
# decides costs a check evaluation never needed: a delegated request or
# such a page pays for the branches above the cut, not for the whole
# chain. Every other request pays one more rule evaluation to reach
# _undelegated_decision, where the chain goes on in the same order. The
# public branches all give one value, so their order among themselves
# does not change a decision.
# Deputy's own paths (/deputy/v1/, /.well-known/) have no rule here: the
# shipped proxies send them to Deputy without a check, and any path that
# reaches the check is the application's, so "/Deputy/v1/x" or
# "//deputy/x" is decided like every other application path.
# regal ignore:rule-length
decision := lib.deny(401, "identity_refused") if {
	# No delegation applies to a request presenting a credential Deputy
	# refused: the upstream may read that credential's holder from the
	# request (a header, the query) while the delegation's people are
	# injected. deputy serve
	# resolves none for it; a replayed record or a resolver of one's own
	# may still put both here. Every delegation has a mode: the mode is
	# read, not input.delegation whole, which Deputy would then build in
	# full into every delegated check's input.
	input.identity_error
	input.delegation.mode
} else := data.deputy.impersonation.decision if {
	# A delegated request is decided by the package of its mode.
	input.delegation.mode == "impersonation"
} else := lib.deny(403, reason) if {
	# A route impersonation refuses as too sensitive for anyone acting for
	# a customer (a password change, a payment method, the vault) is
	# refused in every other delegated mode too, with the same reason: a
	# partner or reseller request reaching the storefront acts for the
	# customer as much as a session does.
	# Whether any route is met comes first, kept across checks: most
	# delegated requests meet none, and pay no rule evaluation for the
	# reason.
	input.delegation.mode
	data.deputy.impersonation.forbidden_route_met(input.deputy.request.route_segments, input.deputy.request.route_dirs)
	reason := data.deputy.impersonation.forbidden_route_reason
} else := data.deputy.partner.decision if {
	input.delegation.mode == "partner"
} else := data.deputy.reseller.decision if {
	input.delegation.mode == "reseller"
} else := lib.deny(403, "no_policy_for_mode") if {
	# A mode with no package is denied rather than falling through to the
	# signed-in routes.
	input.delegation.mode
} else := {"allowed": true, "reason": "public_route"} if {
	data.deputy.authz.public.sections[input.deputy.request.lower_segments[0]][input.deputy.request.sole_method]
} else := {"allowed": true, "reason": "public_route"} if {
	data.deputy.authz.public.paths[input.deputy.request.lower_path][input.deputy.request.sole_method]
} else := _undelegated_decision

# The rest of decision's chain, in the same order: a request that acts on
# no one's behalf and is neither a section nor a path opened to its one
# method.
# regal ignore:rule-length
_undelegated_decision := {"allowed": true, "reason": "public_route"} if {
	input.deputy.request.sole_method
	data.deputy.authz.public.sections[input.deputy.request.lower_segments[0]]["*"]
} else := {"allowed": true, "reason": "public_route"} if {
	input.deputy.request.methods[1]
	data.deputy.authz.public.sections[input.deputy.request.lower_segments[0]]["*"]
} else := {"allowed": true, "reason": "public_route"} if {
	input.deputy.request.methods[1]
	methods := data.deputy.authz.public.sections[input.deputy.request.lower_segments[0]]
	every method in input.deputy.request.methods {
		methods[method]
	}
} else := {"allowed": true, "reason": "public_route"} if {
	input.deputy.request.sole_method
	data.deputy.authz.public.paths[input.deputy.request.lower_path]["*"]
} else := {"allowed": true, "reason": "public_route"} if {
	input.deputy.request.methods[1]
	data.deputy.authz.public.paths[input.deputy.request.lower_path]["*"]
} else := {"allowed": true, "reason": "public_route"} if {
	input.deputy.request.methods[1]
	methods := data.deputy.authz.public.paths[input.deputy.request.lower_path]
	every method in input.deputy.request.methods {
		methods[method]
	}
} else := lib.deny(403, input.delegation_error) if {
	input.delegation_error
} else := lib.deny(401, "identity_refused") if {
	input.identity_error
} else := {"allowed": true, "reason": "authenticated_route"} if {
	input.identity.sub
	_authenticated_route
} else := lib.deny(401, "authentication_required") if {
	not input.identity.sub
	_authenticated_route
}

# Routes open to any signed-in caller, by section or exact path, each
# checked as the decision's routes are.
_authenticated_route if {
	data.deputy.authz.authenticated.sections[input.deputy.request.lower_segments[0]][input.deputy.request.sole_method]
}

_authenticated_route if {
	input.deputy.request.sole_method
	data.deputy.authz.authenticated.sections[input.deputy.request.lower_segments[0]]["*"]
}

_authenticated_route if {
	input.deputy.request.methods[1]
	data.deputy.authz.authenticated.sections[input.deputy.request.lower_segments[0]]["*"]
}

_authenticated_route if {
	input.deputy.request.methods[1]
	methods := data.deputy.authz.authenticated.sections[input.deputy.request.lower_segments[0]]
	every method in input.deputy.request.methods {
		methods[method]
	}
}

_authenticated_route if {
	data.deputy.authz.authenticated.paths[input.deputy.request.lower_path][input.deputy.request.sole_method]
}

_authenticated_route if {
	input.deputy.request.sole_method
	data.deputy.authz.authenticated.paths[input.deputy.request.lower_path]["*"]
}

_authenticated_route if {
	input.deputy.request.methods[1]
	data.deputy.authz.authenticated.paths[input.deputy.request.lower_path]["*"]
}

_authenticated_route if {
	input.deputy.request.methods[1]
	methods := data.deputy.authz.authenticated.paths[input.deputy.request.lower_path]
	every method in input.deputy.request.methods {
		methods[method]
	}
}
