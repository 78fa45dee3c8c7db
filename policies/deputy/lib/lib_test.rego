package deputy.lib_test

import data.deputy.lib

# METADATA
# description: |
#   A policy input as Deputy builds it for a request with these methods (the
#   request's own first, then those its overrides name) and this path:
#   OPA-Envoy's fields, and input.deputy.request as the Go canonicaliser
#   derives it for paths without escapes (slashes merged, ;params dropped).
request(methods, path) := {
	"attributes": {"request": {"http": {"method": methods[0], "path": path}}},
	"parsed_path": split(trim_left(raw, "/"), "/"),
	"deputy": {"request": object.union(
		{
			"path": canonical,
			"segments": segments,
			"lower_path": lower(canonical),
			"lower_segments": [lower(s) | some s in segments],
			"route": concat("/", array.concat([""], route)),
			"route_segments": route,
			"spelled_route_segments": array.slice(segments, count(segments) - count(route), count(segments)),
			"method": upper(methods[0]),
			"methods": [upper(m) | some m in methods],
		},
		{"sole_method": upper(methods[0]) | count(methods) == 1},
	)},
} if {
	raw := split(path, "?")[0]
	segments := [s |
		some piece in split(raw, "/")
		s := split(piece, ";")[0]
		s != ""
	]
	canonical := _canonical(raw, segments)
	route := _route(segments)
}

# The route form without Unicode folding (the Go canonicaliser's tests
# cover that): lower case, trailing dots and spaces dropped, leading front
# controllers dropped, the last segment cut at its first dot.
_route(segments) := [] if count(segments) == 0

_route(segments) := array.concat(array.slice(kept, 0, n - 1), [_cut_format(kept[n - 1])]) if {
	trimmed := [t | some s in segments; t := trim_right(lower(s), ". "); t != ""]
	php := [i | some i, s in trimmed; not endswith(s, ".php")]
	start := min(array.concat(php, [count(trimmed) - 1]))
	kept := array.slice(trimmed, start, count(trimmed))
	n := count(kept)
}

_cut_format(s) := s if indexof(s, ".") < 1

_cut_format(s) := substring(s, 0, indexof(s, ".")) if indexof(s, ".") > 0

_canonical(_, segments) := "/" if count(segments) == 0

_canonical(raw, segments) := concat("", ["/", concat("/", segments), "/"]) if {
	count(segments) > 0
	_trailing_slash(raw)
}

_canonical(raw, segments) := concat("/", array.concat([""], segments)) if {
	count(segments) > 0
	not _trailing_slash(raw)
}

# The last segment is empty once its ;params are dropped.
_trailing_slash(raw) if {
	pieces := split(raw, "/")
	split(pieces[count(pieces) - 1], ";")[0] == ""
}

test_deny if lib.deny(401, "x") == {"allowed": false, "reason": "x", "http_status": 401}

test_request_model[note] if {
	some note, tc in {
		"double slash": {"path": "//customer/account/password/", "want": "/customer/account/password/", "segments": ["customer", "account", "password"]},
		"params": {"path": "/Customer;x/Account", "want": "/Customer/Account", "segments": ["Customer", "Account"]},
		"root": {"path": "/?a=1", "want": "/", "segments": []},
	}
	r := request(["get"], tc.path).deputy.request
	r.path == tc.want
	r.segments == tc.segments
	r.methods == ["GET"]
}

test_route_model[note] if {
	some note, tc in {
		"format": {"path": "/Customer/Account/Password.JSON", "want": ["customer", "account", "password"]},
		"front controller": {"path": "/index.php/customer/account/password/", "want": ["customer", "account", "password"]},
		"front controller alone": {"path": "/index.php", "want": ["index"]},
		"trailing dots": {"path": "/customer./account/password..", "want": ["customer", "account", "password"]},
		"root": {"path": "/", "want": []},
	}
	r := request(["GET"], tc.path).deputy.request
	r.route_segments == tc.want
}

test_route_segment_is[note] if {
	some note, tc in {
		"as sent": {"path": "/customers/Acme/x", "value": "Acme", "want": true},
		"other case": {"path": "/customers/ACME/x", "value": "Acme", "want": false},
		"after a front controller": {"path": "/index.php/customers/Acme", "value": "Acme", "want": true},
		"format cut": {"path": "/customers/Acme.json", "value": "Acme", "want": false},
	}
	req := request(["GET"], tc.path)
	matched := [true | lib.route_segment_is(1, tc.value) with input as req]
	count(matched) == 1 == tc.want
}

# An input without the spelled form (not built by Deputy) matches nothing.
test_route_segment_is_needs_spelled_form if {
	lib.route_segment_is(1, "Acme") with input as request(["GET"], "/customers/Acme")
	req := json.remove(request(["GET"], "/customers/Acme"), ["deputy/request/spelled_route_segments"])
	not lib.route_segment_is(1, "Acme") with input as req
}
