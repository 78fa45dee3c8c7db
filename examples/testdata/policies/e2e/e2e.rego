# METADATA
# description: |
#   The shipped decision, plus one denial with a status, body and headers of
#   its own, to prove a proxy hands Deputy's answer to the client unchanged.
# entrypoint: true
package e2e

decision := {
	"allowed": false,
	"http_status": 429,
	"body": "{\"error\":\"slow down\"}",
	"headers": {"content-type": "application/json", "retry-after": "7"},
	"reason": "throttled",
} if {
	startswith(input.attributes.request.http.path, "/throttled")
} else := data.deputy.authz.decision
