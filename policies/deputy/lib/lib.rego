# METADATA
# title: Shared helpers of Deputy's decision policies
# description: |
#   What every decision package needs alike, defined once.
package deputy.lib

# METADATA
# description: An OPA-Envoy shaped denial with a machine-readable reason.
deny(status, reason) := {"allowed": false, "reason": reason, "http_status": status}

# METADATA
# description: |
#   Whether the route segment at i of the canonical request
#   (input.deputy.request) is value: in the route form, the one upstream
#   routers act on (so "/index.php/customers", "customers." and "cuſtomers"
#   all count), and as the client spelled it, so ids still compare exactly.
#   The route form only drops segments (front controllers, blank ones), so
#   the spelled segment is found counting from the end; a segment it cannot
#   line up (a blank segment after it, a ".json" cut from it) is not value.
#   It reads the two fields it compares from input rather than taking the
#   request as an argument: Deputy builds only the input fields rules read,
#   and a whole request passed to a function counts as reading all of it.
route_segment_is(i, value) if {
	input.deputy.request.route_segments[i] == lower(value)
	offset := count(input.deputy.request.segments) - count(input.deputy.request.route_segments)
	input.deputy.request.segments[offset + i] == value
}
