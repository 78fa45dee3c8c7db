# METADATA
# description: A small decision for testing deputy eval, independent of the shipped policies.
package deputy.authz

# METADATA
# entrypoint: true
default decision := {"allowed": false, "http_status": 401, "reason": "no_identity"}

decision := {"allowed": true, "reason": "delegated", "headers": {"x-policy": "yes"}} if {
	input.identity.sub == data.deputy.authz.staff
	input.delegation.mode == "impersonation"
}

decision := {"allowed": true, "reason": "public"} if {
	not input.identity
	input.parsed_path[0] == "catalog"
}

# Queries the tests of deputy eval's --fail flags point --query at: one no
# request defines, one defined but no decision. Deputy refuses a set in
# which no rule defines its decision query, so each has a rule.
never if input.never_sent

not_a_decision := data.deputy.authz.staff
