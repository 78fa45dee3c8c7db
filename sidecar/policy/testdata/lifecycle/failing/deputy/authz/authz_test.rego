package deputy.authz_test

import data.deputy.authz

test_post_is_allowed if {
	authz.decision.allowed with input.attributes.request.http.method as "POST"
}

test_get_is_allowed if {
	authz.decision.allowed with input.attributes.request.http.method as "GET"
}
