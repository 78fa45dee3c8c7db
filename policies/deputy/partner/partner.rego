# METADATA
# title: Partner access
# description: |
#   Decides what a partner user acting for a customer organisation may do,
#   from the effective grant level the resolver put in input.delegation.
#   Precedence (individual grant before organisation grant, expired counts
#   as absent) is decided when the grant is resolved; this policy sees only
#   the effective grant and never reads x-deputy-* request headers, which
#   the pipeline strips before evaluation.
package deputy.partner

# METADATA
# description: |
#   OPA-Envoy shaped result for a request made on behalf of a customer by a
#   partner user. The route's minimum level comes from data.deputy.partner.routes;
#   cc may only read service requests shared with the partner user.
# entrypoint: true
decision := _deny("not_partner_delegation") if {
	not _is_partner
} else := _deny("unknown_level") if {
	not rank[input.delegation.level]
} else := _deny("grant_expired") if {
	_expired
} else := _deny("route_not_mapped") if {
	count(_routes) == 0
} else := _cc_decision if {
	input.delegation.level == "cc"
} else := _deny(sprintf("level_too_low:%s", [_required_level])) if {
	rank[input.delegation.level] < rank[_required_level]
} else := {"allowed": true, "reason": "partner_level_sufficient"}

# METADATA
# description: Rank of each level, lowest first, for comparisons.
rank := {level: i | some i, level in data.deputy.partner.levels}

# METADATA
# description: Whether level a is at least level b (both must be known).
at_least(a, b) if rank[a] >= rank[b]

_is_partner if input.delegation.mode == "partner"

_expired if {
	input.delegation.expires_at
	time.parse_rfc3339_ns(input.delegation.expires_at) <= time.now_ns()
}

# The path relative to the customer: /customers/{customer}/x/y reads as x/y
# when the path template names the customer acted for.
_path := array.slice(input.parsed_path, 2, count(input.parsed_path)) if {
	input.parsed_path[0] == data.deputy.partner.customer_path_prefix
	input.parsed_path[1] == input.delegation.subject
} else := input.parsed_path

_routes contains route if {
	some route in data.deputy.partner.routes
	input.attributes.request.http.method in route.methods
	_match(route.path, _path)
}

# Several routes may match; the strictest one wins.
_required_level := data.deputy.partner.levels[max({rank[r.level] | some r in _routes})]

_cc_decision := {"allowed": true, "reason": "partner_cc_shared_resource"} if {
	some route in _routes
	is_number(route.cc_resource_segment)
	resource := _path[route.cc_resource_segment]
	resource in input.delegation.attributes.shared_resources
} else := _deny("cc_resource_not_shared")

_match(pattern, path) if {
	count(pattern) == count(path)
	every i, seg in pattern {
		_segment(seg, path[i])
	}
}

# A trailing "**" matches zero or more further segments.
_match(pattern, path) if {
	n := count(pattern)
	pattern[n - 1] == "**"
	count(path) >= n - 1
	every i, seg in array.slice(pattern, 0, n - 1) {
		_segment(seg, path[i])
	}
}

_segment("*", _)

_segment(seg, value) if {
	seg != "*"
	seg == value
}

_deny(reason) := {"allowed": false, "reason": reason, "http_status": 403}
