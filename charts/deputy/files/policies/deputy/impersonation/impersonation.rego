# METADATA
# title: Login as Customer
# description: |
#   Storefront requests made inside a live impersonation session. Switches,
#   role permissions and staff-forbidden routes are data in
#   impersonation/data.json so security teams change them without code.
package deputy.impersonation

import data.deputy.lib

# METADATA
# description: |
#   The decision for a request carrying a live impersonation session, in
#   OPA-Envoy result shape. The pipeline adds the x-deputy-* headers and the
#   actor token itself.
# entrypoint: true
default decision := {"allowed": false, "reason": "not_impersonating", "http_status": 403}

# One rule with an else chain, not a helper per step: every rule OPA
# evaluates costs about a microsecond on every impersonated request, so
# this rule is longer than Regal's default limit on purpose.
# The switch comes first in meaning, last in the chain: every branch that
# would deny for another reason, or allow, holds only while enabled is
# true, and impersonation_disabled is decided after them all. So a session
# with the switch off is denied for that reason alone, as if it were
# tested first, while an allowed request reads the switch as data (a
# lookup) rather than paying for a negation on every check. Only true
# turns it on: a switch left out or not a boolean is off, as Deputy's Go
# code reads it.
# regal ignore:rule-length
decision := lib.deny(403, "delegated_upgrade") if {
	# A request asking to switch protocols (a WebSocket, h2c): after the
	# 101 the connection is a tunnel to the storefront that Deputy is
	# never asked about again. What runs on it (a GraphQL mutation sent as
	# a socket message) is never judged, whatever the handshake's URL
	# said, and it keeps the customer's identity after the session ends,
	# consent is withdrawn or the actor token expires. The field is absent
	# on every other request, so the common check fails here at once.
	input.deputy.request.upgrade
	input.delegation.mode == "impersonation"
	data.deputy.impersonation.enabled == true
} else := lib.deny(403, "customer_protected") if {
	# The customer's account as of this request (Deputy reads it with the
	# consent on every impersonated check): protected by its profile, or
	# its subject known as staff...
	input.delegation.mode == "impersonation"
	input.delegation.subject_protected
	data.deputy.impersonation.enabled == true
} else := lib.deny(403, "customer_protected") if {
	# ...or by this data, so a change here applies to live sessions on
	# their next request. Each branch first tests what is usually absent
	# (roles on the profile, customers in the list): iterating costs
	# allocations on every impersonated request.
	input.delegation.mode == "impersonation"
	input.delegation.subject_roles
	some role in input.delegation.subject_roles
	role in data.deputy.impersonation.protected_roles
	data.deputy.impersonation.enabled == true
} else := lib.deny(403, "customer_protected") if {
	# Listed up to letter case, as the stores read ids (lib.fold_id).
	data.deputy.impersonation.protected_customers[0]
	input.delegation.mode == "impersonation"
	lib.fold_id(input.delegation.subject) in {lib.fold_id(c) | some c in data.deputy.impersonation.protected_customers}
	data.deputy.impersonation.enabled == true
} else := {
	"allowed": true,
	"reason": "impersonation",
	"headers": {"cache-control": "no-cache"},
	"response_headers_to_add": {"cache-control": "private, no-store"},
} if {
	# The common request meets no forbidden route at all: it is decided
	# here, by the allows further down spelled out for that case, so it is
	# evaluated as one branch rather than as the forbidden-route branch
	# failing and then an allow (each branch OPA tries costs allocations
	# on every impersonated check). A request meeting a forbidden route
	# fails here and goes on to the forbidden-route branch as before.
	input.delegation.mode == "impersonation"
	_forbidden_routes(input.deputy.request.route_segments, input.deputy.request.route_dirs) == []
	_may_impersonate(input.delegation.actor_roles, [[role | some role in input.identity.roles] | input.identity.sub])
	data.deputy.impersonation.disable_page_cache
} else := {"allowed": true, "reason": "impersonation"} if {
	input.delegation.mode == "impersonation"
	_forbidden_routes(input.deputy.request.route_segments, input.deputy.request.route_dirs) == []
	_may_impersonate(input.delegation.actor_roles, [[role | some role in input.identity.roles] | input.identity.sub])
} else := lib.deny(403, reason) if {
	input.delegation.mode == "impersonation"

	# The forbidden routes the request's route meets (see
	# _forbidden_routes), then the first of them whose reason holds for
	# this request's methods or body, in data order within a section, the
	# shallowest first, so the reason is stable. Most storefront pages
	# meet none: the branch ends at matches[0].
	matches := _forbidden_routes(input.deputy.request.route_segments, input.deputy.request.route_dirs)
	matches[0]
	reasons := [why |
		some route in matches
		why := _route_reason(route)
	]

	# The first reason, whatever its value: a lookup, where count(reasons)
	# > 0 would be two more builtin calls.
	reason := reasons[0]
	data.deputy.impersonation.enabled == true
} else := {
	"allowed": true,
	"reason": "impersonation",
	"headers": {"cache-control": "no-cache"},
	"response_headers_to_add": {"cache-control": "private, no-store"},
} if {
	# Allowed only while one of the staff member's roles as of the
	# session's start still grants login_as_customer in the live
	# role_permissions, and, when the request carries their verified
	# token, one of the roles it gives them now does too (none when it
	# names none): taking the permission from a role ends its sessions on
	# their next request, taking the role from the staff member ends
	# theirs on the next request that shows their token, and a session
	# recorded without roles is never allowed. A request with the
	# session's cookie alone tells nothing new of the staff member and is
	# judged on the recorded roles. Deputy refuses a token naming anyone
	# but the session's actor before policy, and verifies none without a
	# subject. The roles now are passed as a list of at most one list,
	# empty without a token, built in the allow itself: a helper rule
	# saying which roles to judge would be one more rule evaluation on
	# every impersonated check. The test is part of each allow, not a
	# denial before them: a negation of a helper rule cost a fifth of
	# every impersonated check.
	input.delegation.mode == "impersonation"
	input.deputy.request.route_dirs
	_may_impersonate(input.delegation.actor_roles, [[role | some role in input.identity.roles] | input.identity.sub])
	data.deputy.impersonation.disable_page_cache
} else := {"allowed": true, "reason": "impersonation"} if {
	input.delegation.mode == "impersonation"
	input.deputy.request.route_dirs
	_may_impersonate(input.delegation.actor_roles, [[role | some role in input.identity.roles] | input.identity.sub])
} else := lib.deny(403, "actor_not_permitted") if {
	# What the allows above refused with the switch on and the canonical
	# request present: the staff member's roles, as recorded or as now.
	input.delegation.mode == "impersonation"
	input.deputy.request.route_dirs
	data.deputy.impersonation.enabled == true
} else := lib.deny(403, "impersonation_disabled") if {
	input.delegation.mode == "impersonation"
	not data.deputy.impersonation.enabled == true
} else := lib.deny(403, "path_missing") if {
	# Forbidden routes are matched on the canonical request: without it,
	# deny rather than let every route through.
	input.delegation.mode == "impersonation"
}

# METADATA
# description: |
#   Why this request meets a route too sensitive for anyone acting for a
#   customer (forbidden_routes, and forbidden_graphql_fields on a GraphQL
#   endpoint), as a live session's request is refused; undefined when it
#   meets none. The check refuses such a request in every other delegated
#   mode too (deputy.authz), partner and reseller included: the shipped
#   routes are the storefront's, which no portal route reaches.
forbidden_route_reason := reason if {
	forbidden_route_met(input.deputy.request.route_segments, input.deputy.request.route_dirs)
	matches := _forbidden_routes(input.deputy.request.route_segments, input.deputy.request.route_dirs)
	reasons := [why |
		some route in matches
		why := _route_reason(route)
	]
	reason := reasons[0]
}

# METADATA
# description: |
#   Whether a route meets any forbidden route (_forbidden_routes), for
#   the check of the other delegated modes: most of their requests meet
#   none, and this answer, kept across checks (deputy_memo), tells so
#   before any rule reads the request's methods or body. A boolean, so
#   the check tests it in one expression: binding the list of routes met
#   and testing its first element cost some six thousand instructions on
#   every partner and reseller check. It is false, not undefined, when
#   none is met: an undefined answer is not kept across checks.
# custom:
#   deputy_memo: true
forbidden_route_met(segments, dirs) := count(_forbidden_routes(segments, dirs)) > 0 # regal ignore:boolean-assignment

# METADATA
# description: |
#   The forbidden routes a route meets, in data order within a section,
#   the shallowest first. Matching is on the route form of the canonical
#   request (case folded, format suffix and front controller dropped), so
#   every spelling an upstream router runs a forbidden action for is met.
#   A route matches from any segment of the path on: storefronts that put
#   a store code (Magento's "Add Store Code to Urls"), a locale or a mount
#   point in front of every URL run /fr/customer/account/password/ as the
#   password page. Routes are grouped by their first segment, so each
#   segment of the path is one lookup, and a request meets only the few
#   routes of a section it names. dirs[i] is the route from segment i on
#   as a directory ("/a/b/" for /x/a/b at 1), so a route prefix "/a/b/"
#   (in the route form and ending in "/", as Deputy requires of this data)
#   matches /a/b, /a/b.json and everything under /a/b, but not /a/bc.
#   (Deputy refuses dot segments before policy runs.)
#   When the route's last segment had dots, dirs goes on with the route's
#   directories again for each other form of it (cut at each dot, and
#   whole), so a prefix naming a page with its dot ("/vault/cards.html/")
#   meets /vault/cards.html and /vault/cards.html.json, whose route is
#   /vault/cards. Those are matched from their own first segment, their
#   section; most requests have none, and pay two counts and a slice.
#   The answer depends on the route and this data alone, never on the
#   request's methods or body, so Deputy keeps it across checks
#   (deputy_memo): a storefront's pages repeat, and each route is matched
#   against the table once per policy activation, not on every check.
# custom:
#   deputy_memo: true
_forbidden_routes(segments, dirs) := array.concat(
	[route |
		some i, section in segments
		routes := data.deputy.impersonation.forbidden_routes[section]
		startswith(dirs[i], routes[k].prefix)
		route := routes[k]
	],
	[route |
		some dir in array.slice(dirs, count(segments), count(dirs))
		routes := data.deputy.impersonation.forbidden_routes[split(dir, "/")[1]]
		startswith(dir, routes[k].prefix)
		route := routes[k]
	],
)

# METADATA
# description: |
#   Whether a staff member whose session recorded these roles may go on
#   impersonating: the switch is on, one of the roles grants
#   login_as_customer in the live role_permissions, and so does one of
#   the roles in each list of now (their roles as their verified token
#   gives them on this request; no list without a token). The answer depends on the roles and this data alone,
#   so Deputy keeps it across checks (deputy_memo): a session's requests
#   bring the same roles, and the iteration and membership tests cost
#   allocations on every impersonated check. A change of the data is a new
#   activation, which starts afresh, so taking the permission from a role
#   still ends its sessions on their next request.
# custom:
#   deputy_memo: true
_may_impersonate(recorded, now) if {
	data.deputy.impersonation.enabled == true
	some role in recorded
	"login_as_customer" in data.deputy.impersonation.role_permissions[role]
	every roles in now {
		some current in roles
		"login_as_customer" in data.deputy.impersonation.role_permissions[current]
	}
}

# METADATA
# description: Permissions the caller's roles grant (roles → permissions in data).
permissions contains p if {
	some role in input.identity.roles
	some p in data.deputy.impersonation.role_permissions[role]
}

# A route's reason, once the request may run as a method it forbids.
_route_reason(r) := r.reason if _method_forbidden(r)

# A GraphQL endpoint is forbidden for the operations the request names
# (a route marked graphql has no reason of its own: Deputy refuses data
# that gives it one).
_route_reason(r) := _graphql_denial if r.graphql

_method_forbidden(r) if not r.methods

# Any method the request may run as (its own, upper-cased, and those its
# overrides name) that the route forbids.
_method_forbidden(r) if {
	some method in input.deputy.request.methods
	method in r.methods
}

# Why a request to a GraphQL endpoint is denied during impersonation;
# undefined when it names no forbidden field and Deputy saw all of it.
# A field name is a GraphQL name ([_A-Za-z][_0-9A-Za-z]*): no comment,
# escape or whitespace splits it, and an alias (x: updateCustomerV2), a
# fragment, a batch or an operationName leaves it spelled out, so it is
# matched as a whole word (in any case) in every string of the body and
# of the query parameter, as Deputy decoded them once, as servers do
# (JSON escapes in parsed_body, percent escapes in parsed_query): a
# match over the raw body would miss "\u0075pdateCustomerV2".
# A request that runs as a method whose body servers read fails closed
# when Deputy has not parsed its body: not sent (nginx's auth_request and
# Caddy's forward_auth send none, so behind them a POST to the endpoint
# is always denied), truncated at Envoy's with_request_body limit (input.
# truncated_body: Deputy then parses nothing), of a type it does not
# parse, or with check.parse_body off (parsed_body absent).
_graphql_denial := "graphql_body_unread" if {
	_graphql_runs_body
	not _graphql_body_parsed
} else := reason if {
	# The first forbidden field in data order, for a stable reason.
	reasons := [f.reason |
		some f in data.deputy.impersonation.forbidden_graphql_fields
		some text in _graphql_strings
		regex.match(concat("", [`(?i)\b`, f.field, `\b`]), text)
	]
	reason := reasons[0]
} else := "graphql_query_unreadable" if {
	# Every operation must carry its document as the string `query`,
	# so that the check above saw what the server runs: a persisted
	# query (only a hash or an id), a form or multipart body (which Envoy
	# may send cut without a content-length that says so) or a request
	# without a document is not judged.
	not _graphql_query_carried
}

# A method other than these makes GraphQL servers read the operation from
# the body: any method the request may run as (overrides included).
_graphql_runs_body if {
	some method in input.deputy.request.methods
	not method in {"GET", "HEAD", "OPTIONS"}
}

_graphql_body_parsed if is_object(input.parsed_body)

_graphql_body_parsed if is_array(input.parsed_body)

# Every string of the query parameters and of the parsed body.
_graphql_strings contains text if {
	some text in input.parsed_query.query
}

_graphql_strings contains text if {
	walk(input.parsed_body, [_, text])
	is_string(text)
}

# A JSON body's operation, or each of a batch of them, names its document.
_graphql_query_carried if {
	_graphql_runs_body
	is_string(input.parsed_body.query)
}

_graphql_query_carried if {
	_graphql_runs_body
	is_array(input.parsed_body)
	count(input.parsed_body) > 0
	every op in input.parsed_body {
		is_string(op.query)
	}
}

# Without a body method, the document is in the query parameter.
_graphql_query_carried if {
	not _graphql_runs_body
	input.parsed_query.query
}
