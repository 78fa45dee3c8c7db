package deputy.lib_test

import data.deputy.lib

# METADATA
# description: |
#   A policy input as Deputy builds it for a request with these methods (the
#   request's own first, then those its overrides name) and this path:
#   OPA-Envoy's fields, and input.deputy.request as the Go canonicaliser
#   derives it for paths without escapes (slashes merged, ;params dropped).
#   Undefined for a path Deputy refuses before policy runs (a PHP script
#   other than the index.php front controller with a path after it), so a
#   test cannot judge a request no policy ever sees.
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
			"route_dirs": _route_dirs_with_forms(route, segments, kept),
			"route_segments": route,
			"spelled_route_segments": [segments[i] | some i in kept],
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
	not _script_with_path(segments)
	canonical := _canonical(raw, segments)
	kept := _route_kept(segments)
	route := _route([_route_trim(segments[i]) | some i in kept])
}

# METADATA
# description: |
#   The input req, for a request that asks to switch protocols to
#   protocols, as Deputy derives input.deputy.request.upgrade (an empty
#   list: a Connection naming upgrade with no Upgrade field).
upgrade(req, protocols) := object.union(req, {"deputy": {"request": {"upgrade": protocols}}})

# The route form without Unicode folding (the Go canonicaliser's tests
# cover that): lower case, trailing dots and spaces dropped, the index.php
# front controller dropped wherever it stands before a later segment, the
# last segment cut at its first dot. _route_kept are the indices of the
# segments it keeps, for their spelling as sent.
_route_trim(s) := trim_right(lower(s), ". ")

_route_kept(segments) := [i |
	some i, s in segments
	_route_trim(s) != ""
	not _front_controller_at(segments, i)
]

_front_controller_at(segments, i) if {
	_route_trim(segments[i]) == "index.php"
	some j, s in segments
	j > i
	_route_trim(s) != ""
}

_route_dirs(route) := [concat("", ["/", concat("/", array.slice(route, i, count(route))), "/"]) | some i, _ in route]

# route_dirs: the route's directories, then the same for each other form
# of its last segment, as it was before its format cut (the last segment
# kept): cut at each dot after the first character, trailing dots and
# spaces dropped, and whole, each once.
_route_dirs_with_forms(route, _, _) := [] if count(route) == 0

_route_dirs_with_forms(route, segments, kept) := array.concat(_route_dirs(route), [dir |
	some form in _format_forms(route[n - 1], _route_trim(segments[kept[count(kept) - 1]]))
	some dir in _route_dirs(array.concat(array.slice(route, 0, n - 1), [form]))
]) if {
	n := count(route)
	n > 0
}

_format_forms(cut, whole) := [f |
	some j, f in forms
	not f in array.slice(forms, 0, j)
] if {
	cuts := [f |
		some i in indexof_n(whole, ".")
		i > 0
		f := trim_right(substring(whole, 0, i), ". ")
		f != ""
	]
	forms := [f |
		some f in array.concat(cuts, [whole])
		f != cut
	]
}

_route(trimmed) := [] if count(trimmed) == 0

_route(trimmed) := array.concat(array.slice(trimmed, 0, n - 1), [_cut_format(trimmed[n - 1])]) if {
	n := count(trimmed)
	n > 0
}

# A PHP script other than the front controller, with segments after it:
# Deputy refuses the path (no route form is right for every upstream).
_script_with_path(segments) if {
	some i, s in segments
	i < count(segments) - 1
	t := _route_trim(s)
	t != "index.php"
	parts := split(t, ".")
	count(parts) > 1
	parts[count(parts) - 1] in {"php", "phar", "phtml", "php3", "php4", "php5", "php6", "php7", "php8"}
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
		"front controller below the root": {"path": "/shop/index.php/customer/account", "want": ["shop", "customer", "account"]},
		"front controller in upper case, twice": {"path": "/INDEX.PHP/Shop/Index.Php./customer", "want": ["shop", "customer"]},
		"front controller last below the root": {"path": "/shop/index.php", "want": ["shop", "index"]},
		"script without a path": {"path": "/shop/export.php", "want": ["shop", "export"]},
		"trailing dots": {"path": "/customer./account/password..", "want": ["customer", "account", "password"]},
		"root": {"path": "/", "want": []},
	}
	r := request(["GET"], tc.path).deputy.request
	r.route_segments == tc.want
}

test_route_dirs_model[note] if {
	some note, tc in {
		"no dot": {"path": "/vault/cards", "want": ["/vault/cards/", "/cards/"]},
		"format": {"path": "/Vault/Cards.HTML.json", "want": ["/vault/cards/", "/cards/", "/vault/cards.html/", "/cards.html/", "/vault/cards.html.json/", "/cards.html.json/"]},
		"trailing dot": {"path": "/vault/cards.html.", "want": ["/vault/cards/", "/cards/", "/vault/cards.html/", "/cards.html/"]},
		"leading dot": {"path": "/a/.env.local", "want": ["/a/.env.local/", "/.env.local/", "/a/.env/", "/.env/"]},
		"dot before more path": {"path": "/a.b/c", "want": ["/a.b/c/", "/c/"]},
		"root": {"path": "/", "want": []},
	}
	request(["GET"], tc.path).deputy.request.route_dirs == tc.want
}

test_route_segment_is[note] if {
	some note, tc in {
		"as sent": {"path": "/customers/Acme/x", "value": "Acme", "want": true},
		"other case": {"path": "/customers/ACME/x", "value": "Acme", "want": false},
		"after a front controller": {"path": "/index.php/customers/Acme", "value": "Acme", "want": true},
		"behind a front controller below the root": {"path": "/customers/index.php/Acme/x", "value": "Acme", "want": true},
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

# Deputy refuses a PHP script other than the front controller before a
# path (it runs the script, not the route the path spells), so the model
# builds no input for it.
test_request_model_refuses_script_with_path[note] if {
	some note, path in {
		"at the root": "/export.php/customers/acme/service-requests/1",
		"below the root": "/shop/admin.php/customer/account",
		"other extension, upper case": "/shop/Admin.PHTML/customer",
		"trailing dot": "/admin.php./customer",
	}
	not request(["GET"], path)
}

test_request_model_keeps_scripts_without_path if {
	request(["GET"], "/export.php")
	request(["GET"], "/index.php/customer")
}
