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
#   all count), and as the client spelled it (spelled_route_segments, which
#   Deputy lines up with the route form), so ids still compare exactly. A
#   segment whose spelling is not value (a ".json" cut from it) is not
#   value, nor is any segment of an input without the spelled form.
#   It reads the two fields it compares from input rather than taking the
#   request as an argument: Deputy builds only the input fields rules read,
#   and a whole request passed to a function counts as reading all of it.
route_segment_is(i, value) if {
	input.deputy.request.route_segments[i] == lower(value)
	input.deputy.request.spelled_route_segments[i] == value
}

# METADATA
# description: |
#   id with A-Z in lower case and every other byte as it is: the form
#   Deputy files assigned ids under (FoldID), in which ids that differ in
#   letter case alone, one customer to an upstream that looks customers up
#   without regard to case, are one id.
fold_id(id) := strings.replace_n(_ascii_lower, id)

_ascii_lower := {
	"A": "a",
	"B": "b",
	"C": "c",
	"D": "d",
	"E": "e",
	"F": "f",
	"G": "g",
	"H": "h",
	"I": "i",
	"J": "j",
	"K": "k",
	"L": "l",
	"M": "m",
	"N": "n",
	"O": "o",
	"P": "p",
	"Q": "q",
	"R": "r",
	"S": "s",
	"T": "t",
	"U": "u",
	"V": "v",
	"W": "w",
	"X": "x",
	"Y": "y",
	"Z": "z",
}
