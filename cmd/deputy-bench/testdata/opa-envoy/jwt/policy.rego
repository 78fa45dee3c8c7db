# JWT decode with injected headers, as in OPA-Envoy's quick start: the
# bearer token is verified (HS256) and decoded in Rego, the route is
# chosen by the token's role, and the caller's identity is injected into
# the upstream request.
package envoy.authz

import input.attributes.request.http as http_request

default allow := false

token := {"valid": valid, "payload": payload} if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}

allow if {
	token.valid
	action_allowed
}

action_allowed if {
	http_request.method == "GET"
	token.payload.role in {"guest", "admin"}
	glob.match("/people*", [], http_request.path)
}

action_allowed if {
	http_request.method == "POST"
	token.payload.role == "admin"
	glob.match("/people", [], http_request.path)
}

result["allowed"] := allow

result["headers"] := {
	"x-current-user": token.payload.sub,
	"x-current-role": token.payload.role,
} if {
	allow
}
