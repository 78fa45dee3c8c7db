package deputy.authz

decision := {"allowed": false, "http_status": 200, "reason": "suspended"} if {
	input.deputy.request.path == "/customer/account"
} else := {"allowed": false, "http_status": 302, "headers": {"location": "/login"}} if {
	not input.identity
} else := {"allowed": true}
