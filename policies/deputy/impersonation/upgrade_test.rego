package deputy.impersonation_test

import data.deputy.impersonation
import data.deputy.lib_test

# After a 101 the connection is a tunnel to the storefront that Deputy is
# never asked about again: operations sent on it (a GraphQL mutation over
# WebSocket) are not judged, and it outlives the session, its consent and
# the actor token. No upgrade is allowed while impersonating, whatever the
# route or the protocol; the switch still comes first.
test_upgrade_refused[note] if {
	some note, tc in {
		"WebSocket on a page staff may open": {"req": _req("GET", "/customer/account"), "protocols": ["websocket"], "plain": true},
		"WebSocket to GraphQL with a harmless query": {"req": _graphql(["GET"], "/graphql?query=%7Bwhoami%7D", null, {"query": ["{whoami}"]}), "protocols": ["websocket"], "plain": true},
		"on a forbidden route": {"req": _req("GET", "/customer/account/password/"), "protocols": ["websocket"], "plain": false},
		"h2c": {"req": _req("GET", "/"), "protocols": ["h2c"], "plain": true},
		"Connection upgrade with no protocol": {"req": _req("GET", "/customer/account"), "protocols": [], "plain": true},
	}
	req := tc.req
	plain := impersonation.decision with input as req
	plain.allowed == tc.plain
	d := impersonation.decision with input as lib_test.upgrade(req, tc.protocols)
	not d.allowed
	d.reason == "delegated_upgrade"
	d.http_status == 403
}

test_upgrade_with_switch_off_is_impersonation_disabled if {
	d := impersonation.decision with input as lib_test.upgrade(_req("GET", "/"), ["websocket"])
		with impersonation.enabled as false
	not d.allowed
	d.reason == "impersonation_disabled"
}
