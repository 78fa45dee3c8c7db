# METADATA
# title: Management API authorization
# description: |
#   Every call to /deputy/v1/ is an action ({action, identity, target, ...})
#   decided here. Areas add rules in their own files of this package:
#     allow contains "<action>" if { ... }   the action may proceed
#     deny contains "<reason>" if { ... }    it may not (overrides allow)
#     reason_info["<reason>"] := {"http_status": 404, "field": "..."}
#   The smallest deny reason wins so answers are deterministic; areas make
#   permission checks come first by only adding fact-based reasons for
#   callers that hold the permission.
package deputy.manage

# METADATA
# description: The decision for one management action.
# entrypoint: true
default decision := {"allowed": false, "reason": "no_rule"}

decision := _with_info({"allowed": false, "reason": "unauthenticated"}) if {
	not input.identity.sub
	not input.action in public_actions
}

decision := _with_info({"allowed": false, "reason": _deny_reason}) if {
	_authenticated_or_public
	count(deny) > 0
}

# staff: the caller acted with a storefront staff permission; Deputy
# records its subject as staff (see _staff).
decision := {"allowed": true, "reason": "ok", "staff": _staff} if {
	_authenticated_or_public
	count(deny) == 0
	input.action in allow
}

decision := {"allowed": false, "reason": "not_permitted"} if {
	_authenticated_or_public
	count(deny) == 0
	not input.action in allow
	input.action in known_actions
}

# METADATA
# description: Actions that authenticate by other means than a bearer token.
public_actions contains "impersonation.redeem"

_authenticated_or_public if input.identity.sub

_authenticated_or_public if input.action in public_actions

_deny_reason := sort(deny)[0]

_with_info(d) := object.union(d, reason_info[d.reason])

_with_info(d) := d if not reason_info[d.reason]
