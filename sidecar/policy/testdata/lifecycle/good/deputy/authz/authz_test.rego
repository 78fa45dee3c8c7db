package deputy.authz_test

import data.deputy.authz

test_decision[note] if {
	some note, tc in {
		"get is allowed": {"method": "GET", "allowed": true},
		"post is denied": {"method": "POST", "allowed": false},
	}
	d := authz.decision with input.attributes.request.http.method as tc.method
	d.allowed == tc.allowed
	d.reason == "v1"
}
