# Source-principal check, as in OPA-Envoy's Istio examples: only named
# workloads (SPIFFE ids from the mTLS peer certificate) may call, and each
# only on its own routes.
package envoy.authz

import input.attributes.request.http as http_request

default allow := false

routes := {
	"spiffe://cluster.local/ns/default/sa/frontend": {"catalog", "cart", "people"},
	"spiffe://cluster.local/ns/default/sa/backoffice": {"orders", "people"},
}

allow if {
	http_request.method in {"GET", "HEAD"}
	input.parsed_path[0] in routes[input.attributes.source.principal]
}
