# METADATA
# title: Partner access
# description: |
#   Decides what a partner user acting for a customer organisation may do,
#   from the effective grant level the resolver put in input.delegation.
#   Precedence (individual grant before organisation grant, expired counts
#   as absent) is decided when the grant is resolved; this policy sees only
#   the effective grant and never reads x-deputy-* request headers, which
#   the pipeline strips before evaluation. Expiry is enforced there too: an
#   expired grant never reaches input.delegation (the resolver reports
#   no_live_grant), so the check path does not pay for parsing times here.
package deputy.partner

import data.deputy.lib

# METADATA
# description: |
#   OPA-Envoy shaped result for a request made on behalf of a customer by a
#   partner user. The minimum level is looked up, never scanned: by the
#   path's first segment (a section of the support portal), whether the path
#   names the section's collection or an item in it, and the method ("*"
#   for any), on the route form of the request (as upstream routers read
#   it: lower-cased and folded, slashes merged, ;params, front controllers
#   and formats dropped). Every method the request may run as (overrides
#   included) must be allowed at the grant's level. cc may only read items
#   listed in cc_item_methods that were shared with the partner user.
#   The common requests are branches of this one rule, each spelled out
#   rather than reading helper rules (the level check is a function Deputy
#   keeps the answers of), so it is longer than Regal likes.
# entrypoint: true
decision := lib.deny(403, "delegated_upgrade") if { # regal ignore:rule-length
	# A request asking to switch protocols (a WebSocket): after the 101
	# the connection is a tunnel to the portal that Deputy is never asked
	# about again, so what runs on it (update or create commands on a
	# socket a look grant opened) is never judged, and it outlives a
	# revocation. The field is absent on every other request, so the
	# common check fails here at once.
	input.deputy.request.upgrade
	input.delegation.mode == "partner"
} else := {"allowed": true, "reason": "partner_level_sufficient"} if {
	# The commonest request of all, one method on an item under the
	# customer's own path template, in one body: what _at's first branch
	# and the branch below decide for it, without reading _at (a rule read
	# costs OPA allocations on every check). The tests that fail cheapest
	# come first. The customer segment is compared without lower(): a route
	# segment is its own lower-case form (Deputy lower-cases before it
	# folds, to lower-case letters or ASCII), so a route segment equal to
	# the subject is lower(subject). A subject with upper-case letters
	# fails here and is decided by the chain below, as before; the builtin
	# cost two to three microseconds on every partner request.
	# No branch allowing by rank tests for cc: Deputy refuses route tables
	# where a route needs no more than cc's rank
	# (data.deputy.partner.sections.<section>.<kind>.<method>), so a cc
	# grant never reaches one by rank and is decided by the cc branch. The
	# test cost about a microsecond on every partner request. No other
	# customers/{customer} template may follow (path_names_another_customer
	# below): one membership test here spares the commonest request that
	# branch's walk of the segments. The segments after the first are
	# sliced to a stop no path reaches (array.slice clamps it to the
	# length): counting them first cost two more expressions of OPA's
	# evaluator, some fifteen thousand instructions a partner check.
	input.delegation.mode == "partner"
	input.deputy.request.route_segments[0] == data.deputy.partner.customer_path_prefix
	input.deputy.request.spelled_route_segments[1] == input.delegation.subject
	input.deputy.request.route_segments[3]
	input.deputy.request.route_segments[1] == input.delegation.subject
	not data.deputy.partner.customer_path_prefix in array.slice(input.deputy.request.route_segments, 1, 1000000000)
	_item_level_allows(input.deputy.request.route_segments[2], input.delegation.level, input.deputy.request.sole_method)
} else := lib.deny(403, "path_names_another_customer") if {
	# Every customers/{customer} template in the path must name the
	# customer acted for, wherever it stands, as the reseller policy
	# requires: the branches below read the path from its first segments
	# only, and a portal router that matches a later template
	# (/service-requests/1/customers/globex) serves that customer. The
	# commonest request, above, has the template at its start alone.
	input.delegation.mode == "partner"
	some i, segment in input.deputy.request.route_segments
	segment == data.deputy.partner.customer_path_prefix
	not lib.route_segment_is(i + 1, input.delegation.subject)
} else := {"allowed": true, "reason": "partner_level_sufficient"} if {
	# The same for an item of a section at the root of the path, the
	# customer named by the header alone: _at's last branch, spelled out.
	input.delegation.mode == "partner"
	input.deputy.request.route_segments[0] != data.deputy.partner.customer_path_prefix
	input.deputy.request.route_segments[1]
	_item_level_allows(input.deputy.request.route_segments[0], input.delegation.level, input.deputy.request.sole_method)
} else := {"allowed": true, "reason": "partner_level_sufficient"} if {
	# The common request, one method (sole_method, present only when no
	# override names another) and a route naming it, allowed without a
	# helper call: what the next branch decides for it, at a fifth less
	# cost per check. Anything else falls through to it. The route is
	# _route's lookup, written out: a rule's value costs more to read than
	# the lookup itself.
	input.delegation.mode == "partner"
	rank := data.deputy.partner.level_rank
	route := data.deputy.partner.sections[input.deputy.request.route_segments[_at.section]][_at.kind]
	rank[input.delegation.level] >= rank[route[input.deputy.request.sole_method]]
} else := {"allowed": true, "reason": "partner_level_sufficient"} if {
	input.delegation.mode == "partner"
	have := data.deputy.partner.level_rank[input.delegation.level]
	every method in input.deputy.request.methods {
		have >= data.deputy.partner.level_rank[_level_for(_route, method)]
	}
} else := {"allowed": true, "reason": "partner_cc_shared_resource"} if {
	input.delegation.mode == "partner"
	input.delegation.level == "cc"
	_cc_shared
} else := lib.deny(403, _denial)

# Why a request is denied, checked in this order. Only reached on denial,
# so an allowed request pays for none of it.
_denial := "not_partner_delegation" if {
	not _is_partner
} else := "unknown_level" if {
	not data.deputy.partner.level_rank[input.delegation.level]
} else := "route_not_mapped" if {
	not _route
} else := "route_not_mapped" if {
	some method in input.deputy.request.methods
	not _level_for(_route, method)
} else := "cc_resource_not_shared" if {
	input.delegation.level == "cc"
} else := sprintf("level_too_low:%s", [_required_level])

# METADATA
# description: Whether level a is at least level b (both must be known).
at_least(a, b) if data.deputy.partner.level_rank[a] >= data.deputy.partner.level_rank[b]

_is_partner if input.delegation.mode == "partner"

# Where the path relative to the customer starts, and where an item after
# its section would be: /customers/{customer}/x/y reads as x/y when the
# path template names the customer acted for. The path is read in the
# route form, the one upstream routers act on (as the reseller policy
# reads it): the template's words compare as routers fold them; the
# customer id exactly. Both indexes are written out rather than one added
# to: arithmetic costs OPA more than a lookup, on every partner request.
# A path naming something after the section (an id) is an item; the
# section alone, with or without a trailing slash, is the collection, so
# "/service-requests/" cannot pass for an item to change the level needed.
# Where and what kind are one rule: each rule read costs about a
# microsecond and a half on every partner request. The customer segment
# is compared as lib.route_segment_is(1, subject) does, written out: the
# function call cost five allocations on every partner request.
default _at := {"section": 0, "item": 1, "kind": "collection"}

_at := {"section": 2, "item": 3, "kind": "item"} if {
	input.deputy.request.route_segments[0] == data.deputy.partner.customer_path_prefix
	input.deputy.request.route_segments[1] == lower(input.delegation.subject)
	input.deputy.request.spelled_route_segments[1] == input.delegation.subject
	input.deputy.request.route_segments[3]
} else := {"section": 2, "item": 3, "kind": "collection"} if {
	input.deputy.request.route_segments[0] == data.deputy.partner.customer_path_prefix
	input.deputy.request.route_segments[1] == lower(input.delegation.subject)
	input.deputy.request.spelled_route_segments[1] == input.delegation.subject
} else := {"section": 0, "item": 1, "kind": "item"} if {
	input.deputy.request.route_segments[1]
}

_section := data.deputy.partner.sections[input.deputy.request.route_segments[_at.section]]

# METADATA
# description: |
#   Whether a grant of level may run method on an item of section: the
#   level the section's item route names for the method (no "*" here: the
#   chain below reads it) is at most level, by rank. The answer depends on
#   the three values and this data alone, so Deputy keeps it across checks
#   (deputy_memo): the rank lookups and their comparison, a fifth of every
#   partner check, run once per activation for each section, level and
#   method a portal's requests bring, not on every request.
# custom:
#   deputy_memo: true
_item_level_allows(section, level, method) if {
	rank := data.deputy.partner.level_rank
	rank[level] >= rank[data.deputy.partner.sections[section].item[method]]
}

# The levels this route's methods need ({"GET": "look", "*": ...}). The
# lookup is inline rather than through _section: every helper rule costs
# about a microsecond on every partner request.
_route := data.deputy.partner.sections[input.deputy.request.route_segments[_at.section]][_at.kind]

# The level a method needs on a route.
_level_for(route, method) := route[method]

_level_for(route, method) := route["*"] if not route[method]

# The highest level the request's methods need, for the denial reason.
_required_level := level if {
	levels := [l | some method in input.deputy.request.methods; l := _level_for(_route, method)]
	some level in levels
	every other in levels {
		data.deputy.partner.level_rank[level] >= data.deputy.partner.level_rank[other]
	}
}

_cc_shared if {
	_at.kind == "item"
	some id in input.delegation.attributes.shared_resources
	lib.route_segment_is(_at.item, id)
	readable := _section.cc_item_methods
	every method in input.deputy.request.methods {
		method in readable
	}
}
