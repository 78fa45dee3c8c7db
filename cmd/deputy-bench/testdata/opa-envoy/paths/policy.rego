# Path rules in the style of OPA-Envoy's tutorials: method and path
# prefix decide, on the fields OPA-Envoy puts in its input.
package envoy.authz

import input.attributes.request.http as http_request

default allow := false

allow if {
	http_request.method == "GET"
	input.parsed_path[0] in {"catalog", "search", "assets"}
}

allow if {
	http_request.method in {"GET", "POST"}
	input.parsed_path[0] == "cart"
}

allow if {
	http_request.method == "GET"
	glob.match("/api/v1/products/*", ["/"], concat("/", ["", concat("/", input.parsed_path)]))
}
