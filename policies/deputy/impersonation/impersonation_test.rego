package deputy.impersonation_test

import data.deputy.impersonation
import data.deputy.lib_test

_session := {"mode": "impersonation", "id": "s1", "actor": "alice", "actor_roles": ["support_agent"], "subject": "c42", "store_view": "default"}

_req(method, path) := object.union(lib_test.request([method], path), {"delegation": _session})

test_storefront_requests[note] if {
	some note, tc in {
		"browse catalogue": {"method": "GET", "path": "/catalog/shoes?page=2", "allowed": true, "reason": "impersonation"},
		"view cart": {"method": "GET", "path": "/checkout/cart", "allowed": true, "reason": "impersonation"},
		"place order": {"method": "POST", "path": "/checkout/order", "allowed": true, "reason": "impersonation"},
		"change password": {"method": "POST", "path": "/customer/account/password", "allowed": false, "reason": "password_change_forbidden"},
		"password page": {"method": "GET", "path": "/customer/account/password/", "allowed": false, "reason": "password_change_forbidden"},
		"view account edit": {"method": "GET", "path": "/customer/account/edit", "allowed": true, "reason": "impersonation"},
		"submit account edit": {"method": "post", "path": "/customer/account/edit", "allowed": false, "reason": "account_change_forbidden"},
		"saved cards": {"method": "GET", "path": "/vault/cards/list", "allowed": false, "reason": "payment_method_change_forbidden"},
		"add payment method": {"method": "PUT", "path": "/customer/payment/method", "allowed": false, "reason": "payment_method_change_forbidden"},
		"prefix is not a path segment": {"method": "GET", "path": "/vault/cardsharing", "allowed": true, "reason": "impersonation"},
		"repeated slashes": {"method": "GET", "path": "/customer//account///password", "allowed": false, "reason": "password_change_forbidden"},
		"repeated trailing slashes": {"method": "GET", "path": "/vault/cards//", "allowed": false, "reason": "payment_method_change_forbidden"},
	}
	d := impersonation.decision with input as _req(tc.method, tc.path)
	d.allowed == tc.allowed
	d.reason == tc.reason
}

test_cache_bypass[note] if {
	some note, tc in {
		"on by default": {"switch": true, "headers": {"cache-control": "no-cache"}, "response": {"cache-control": "private, no-store"}},
		"off": {"switch": false, "headers": null, "response": null},
	}
	d := impersonation.decision with input as _req("GET", "/")
		with impersonation.disable_page_cache as tc.switch
	d.allowed
	object.get(d, "headers", null) == tc.headers
	object.get(d, "response_headers_to_add", null) == tc.response
}

test_not_allowed_outside_sessions[note] if {
	some note, tc in {
		"feature off": {"input": _req("GET", "/"), "enabled": false, "reason": "impersonation_disabled"},
		"no delegation": {"input": {"attributes": {"request": {"http": {"method": "GET", "path": "/"}}}}, "enabled": true, "reason": "not_impersonating"},
		"partner delegation": {"input": object.union(_req("GET", "/"), {"delegation": {"mode": "partner"}}), "enabled": true, "reason": "not_impersonating"},
	}
	d := impersonation.decision with input as tc.input
		with impersonation.enabled as tc.enabled
	d.allowed == false
	d.reason == tc.reason
	d.http_status == 403
}

# Only the boolean true turns impersonation on: a switch left out, or not
# a boolean, is off, as Deputy's Go code reads the same data
# (delegation.ReadSwitches, which refuses such data outright).
test_switch_not_true_is_off[note] if {
	some note, value in {"null": null, "string": "yes", "number": 1, "false": false}
	d := impersonation.decision with input as _req("GET", "/")
		with impersonation.enabled as value
	not d.allowed
	d.reason == "impersonation_disabled"
}

test_input_without_canonical_request_is_denied if {
	d := impersonation.decision with input as {
		"attributes": {"request": {"http": {"method": "GET", "path": "/customer/account/password"}}},
		"delegation": _session,
	}
	not d.allowed
	d.reason == "path_missing"
}

# Routes are matched on the canonical request, never on the path as sent
# or on OPA-Envoy's parsed_path.
test_forbidden_route_matched_on_canonical_request if {
	d := impersonation.decision with input as object.union(
		_req("GET", "/catalog/shoes"),
		{"deputy": {"request": lib_test.request(["GET"], "/customer/account/password").deputy.request}},
	)
	d.reason == "password_change_forbidden"
}

test_custom_forbidden_routes if {
	d := impersonation.decision with input as _req("GET", "/wishlist/share")
		with impersonation.forbidden_routes as {"wishlist": [{"prefix": "/wishlist/share/", "reason": "sharing_forbidden"}]}
	d.reason == "sharing_forbidden"
}

# A matching route denies whatever its reason's value: the rule takes the
# first reason found, it does not test the reason itself.
# A prefix naming a page with its dot forbids the page in every form that
# names it, though the route form cuts the last segment at its first dot;
# pages beside it stay open.
test_forbidden_page_with_a_dot[note] if {
	routes := {
		"vault": [{"prefix": "/vault/cards.html/", "reason": "cards_forbidden"}],
		"terms.html": [{"prefix": "/terms.html/", "reason": "terms_forbidden"}],
	}
	some note, tc in {
		"as named": {"path": "/vault/cards.html", "reason": "cards_forbidden"},
		"other case": {"path": "/vault/Cards.HTML", "reason": "cards_forbidden"},
		"with a format after it": {"path": "/vault/cards.html.json", "reason": "cards_forbidden"},
		"trailing slash": {"path": "/vault/cards.html/", "reason": "cards_forbidden"},
		"below a store code": {"path": "/fr/vault/cards.html", "reason": "cards_forbidden"},
		"under it": {"path": "/vault/cards.html/1", "reason": "cards_forbidden"},
		"page as its section": {"path": "/terms.html", "reason": "terms_forbidden"},
		"page as its section, below a store code, with a format": {"path": "/fr/terms.html.json", "reason": "terms_forbidden"},
		"another page": {"path": "/vault/other.html", "reason": "impersonation"},
		"a longer name": {"path": "/vault/cardsx", "reason": "impersonation"},
		"the page without its dot": {"path": "/vault/cards", "reason": "impersonation"},
	}
	d := impersonation.decision with input as _req("GET", tc.path)
		with impersonation.forbidden_routes as routes
	d.reason == tc.reason
}

test_forbidden_route_denies_whatever_its_reason if {
	d := impersonation.decision with input as _req("GET", "/wishlist/share")
		with impersonation.forbidden_routes as {"wishlist": [{"prefix": "/wishlist/share/", "reason": false}]}
	d.allowed == false
	d.reason == false
}

test_permissions[note] if {
	some note, tc in {
		"agent": {"roles": ["support_agent"], "want": {"login_as_customer"}},
		"lead": {"roles": ["support_lead"], "want": {"login_as_customer", "view_login_as_customer_log", "allow_remote_shopping_assistance"}},
		"unknown role": {"roles": ["shopper"], "want": set()},
		"several roles": {"roles": ["support_agent", "customer_sync"], "want": {"login_as_customer", "manage_customers"}},
	}
	got := impersonation.permissions with input as {"identity": {"sub": "x", "roles": tc.roles}}
	got == tc.want
}

test_custom_role_from_data if {
	got := impersonation.permissions with input as {"identity": {"sub": "x", "roles": ["night_shift"]}}
		with impersonation.role_permissions as {"night_shift": ["login_as_customer"]}
	got == {"login_as_customer"}
}

test_forbidden_prefixes_end_with_a_slash if {
	every section, routes in impersonation.forbidden_routes {
		every r in routes {
			endswith(r.prefix, "/")
			startswith(r.prefix, concat("", ["/", section, "/"]))
		}
	}
}

test_tricky_forms[note] if {
	some note, tc in {
		"leading double slash": {"methods": ["POST"], "path": "//customer/account/password/", "reason": "password_change_forbidden"},
		"upper case": {"methods": ["GET"], "path": "/Customer/Account/Password/", "reason": "password_change_forbidden"},
		"path parameter": {"methods": ["GET"], "path": "/customer/account/password;x/", "reason": "password_change_forbidden"},
		"parameters everywhere": {"methods": ["GET"], "path": "/customer;a/account;b/password;c", "reason": "password_change_forbidden"},
		"vault in upper case": {"methods": ["GET"], "path": "/VAULT/Cards", "reason": "payment_method_change_forbidden"},
		"override header POST on a GET": {"methods": ["GET", "POST"], "path": "/customer/account/edit", "reason": "account_change_forbidden"},
		"_method PUT on payment": {"methods": ["GET", "PUT"], "path": "/Customer/Payment/method", "reason": "payment_method_change_forbidden"},
		"_method DELETE in a form": {"methods": ["POST", "DELETE"], "path": "/customer/payment/1", "reason": "payment_method_change_forbidden"},
		"format suffix": {"methods": ["POST"], "path": "/customer/account/password.json", "reason": "password_change_forbidden"},
		"html suffix": {"methods": ["POST"], "path": "/customer/account/password.html", "reason": "password_change_forbidden"},
		"suffix in upper case": {"methods": ["POST"], "path": "/Customer/Account/Password.JSON", "reason": "password_change_forbidden"},
		"payment with a suffix": {"methods": ["POST"], "path": "/customer/payment.json", "reason": "payment_method_change_forbidden"},
		"account edit with a suffix": {"methods": ["POST"], "path": "/customer/account/edit.json", "reason": "account_change_forbidden"},
		"vault with a suffix": {"methods": ["GET"], "path": "/vault/cards.json", "reason": "payment_method_change_forbidden"},
		"front controller": {"methods": ["POST"], "path": "/index.php/customer/account/password/", "reason": "password_change_forbidden"},
		"front controller in upper case": {"methods": ["POST"], "path": "/INDEX.PHP/Customer/Account/Password", "reason": "password_change_forbidden"},
		"trailing dot": {"methods": ["POST"], "path": "/customer/account/password./", "reason": "password_change_forbidden"},
		# Magento's own form targets: the account form posts to editPost
		# (name, email, password), the reset link's form to resetPasswordPost.
		"account form target": {"methods": ["POST"], "path": "/customer/account/editPost/", "reason": "account_change_forbidden"},
		"account form target through the front controller": {"methods": ["POST"], "path": "/index.php/customer/account/editpost", "reason": "account_change_forbidden"},
		"password reset target": {"methods": ["POST"], "path": "/customer/account/resetPasswordPost/", "reason": "password_change_forbidden"},
		"password reset form": {"methods": ["GET"], "path": "/customer/account/createPassword/", "reason": "password_change_forbidden"},
		"password reset target in upper case": {"methods": ["POST"], "path": "/index.php/Customer/Account/ResetPasswordPost", "reason": "password_change_forbidden"},
		# Storefronts that put the store view's code (Magento's "Add Store
		# Code to Urls"), a locale or a mount point in front of every URL
		# route the same actions below it.
		"store code": {"methods": ["POST"], "path": "/default/customer/account/editPost/", "reason": "account_change_forbidden"},
		"locale": {"methods": ["GET"], "path": "/fr/customer/account/password/", "reason": "password_change_forbidden"},
		"store code and payment": {"methods": ["POST"], "path": "/fr/customer/payment/add", "reason": "payment_method_change_forbidden"},
		"mount point and store code": {"methods": ["GET"], "path": "/shop/en-gb/vault/cards/list", "reason": "payment_method_change_forbidden"},
		"front controller and store code": {"methods": ["POST"], "path": "/shop/index.php/de/customer/account/resetPasswordPost", "reason": "password_change_forbidden"},
		"forbidden below another section": {"methods": ["POST"], "path": "/customer/fr/customer/account/password", "reason": "password_change_forbidden"},
	}
	d := impersonation.decision with input as object.union(lib_test.request(tc.methods, tc.path), {"delegation": _session})
	not d.allowed
	d.reason == tc.reason
}

test_override_to_a_harmless_method_stays_allowed if {
	d := impersonation.decision with input as object.union(lib_test.request(["GET", "HEAD"], "/customer/account/edit"), {"delegation": _session})
	d.allowed
}

# Prefixes are compared as written with the lower-cased route form, so
# every prefix is in lower case (Deputy refuses data with one that is
# not, data.deputy.impersonation.forbidden_routes.<section>[i].prefix),
# and a request in any case still meets it.
test_forbidden_route_prefixes_are_lower_case if {
	every routes in impersonation.forbidden_routes {
		every r in routes {
			r.prefix == lower(r.prefix)
		}
	}
	d := impersonation.decision with input as _req("GET", "/Wishlist/SHARE")
		with impersonation.forbidden_routes as {"wishlist": [{"prefix": "/wishlist/share/", "reason": "sharing_forbidden"}]}
	d.reason == "sharing_forbidden"
}

# Protection is judged on every request from what Deputy read of the
# customer's account just now, against the live protected_* data.
test_protected_customer[note] if {
	some note, tc in {
		"profile or staff": {"delegation": {"subject_protected": true}, "roles": [], "customers": [], "reason": "customer_protected"},
		"protected role": {"delegation": {"subject_roles": ["customer", "admin"]}, "roles": ["admin"], "customers": [], "reason": "customer_protected"},
		"role added to data": {"delegation": {"subject_roles": ["vip"]}, "roles": ["staff", "vip"], "customers": [], "reason": "customer_protected"},
		"customer listed in data": {"delegation": {}, "roles": [], "customers": ["c42"], "reason": "customer_protected"},
		"customer listed in other letter case": {"delegation": {}, "roles": [], "customers": ["C42"], "reason": "customer_protected"},
		"another spelling of the subject listed": {"delegation": {"subject": "C42"}, "roles": [], "customers": ["c42"], "reason": "customer_protected"},
		"unprotected roles": {"delegation": {"subject_roles": ["customer"]}, "roles": ["admin"], "customers": ["c7"], "reason": "impersonation"},
		"protected flag false": {"delegation": {"subject_protected": false}, "roles": [], "customers": [], "reason": "impersonation"},
	}
	d := impersonation.decision with input as object.union(_req("GET", "/catalog/shoes"), {"delegation": object.union(_session, tc.delegation)})
		with impersonation.protected_roles as tc.roles
		with impersonation.protected_customers as tc.customers
	d.reason == tc.reason
	allowed := tc.reason == "impersonation"
	d.allowed == allowed
}

# The switch is tested after the other branches, each of which holds only
# while it is true: with it off (or not the boolean true), every session
# is denied as impersonation_disabled, whatever else would deny or allow
# it, and with it on the other reasons stand.
test_switch_off_outranks_every_other_reason[note] if {
	some note, tc in {
		"protected by profile": {"delegation": {"subject_protected": true}, "path": "/catalog", "customers": []},
		"protected role": {"delegation": {"subject_roles": ["admin"]}, "path": "/catalog", "customers": []},
		"protected customer": {"delegation": {}, "path": "/catalog", "customers": ["c42"]},
		"forbidden route": {"delegation": {}, "path": "/customer/account/password", "customers": []},
		"no canonical request": {"delegation": {}, "path": "", "customers": []},
	}
	req := object.union(_req("GET", "/x"), {"delegation": object.union(_session, tc.delegation)})
	input_ := _with_path(req, tc.path)
	every enabled in [false, null, "true", 1] {
		d := impersonation.decision with input as input_
			with impersonation.enabled as enabled
			with impersonation.protected_customers as tc.customers
		not d.allowed
		d.reason == "impersonation_disabled"
	}
	on := impersonation.decision with input as input_
		with impersonation.protected_customers as tc.customers
	not on.allowed
	on.reason != "impersonation_disabled"
}

_with_path(req, "") := object.remove(req, ["deputy"])

_with_path(req, path) := object.union(req, {"deputy": lib_test.request(["GET"], path).deputy}) if path != ""

# Narrowing a staff role takes effect on the next request: a session that
# recorded its actor's roles at start is honoured only while one of them
# still grants login_as_customer in the live role_permissions.
test_actor_permission_on_every_request[note] if {
	some note, tc in {
		"role still grants it": {"roles": ["support_agent"], "perms": {"support_agent": ["login_as_customer"]}, "allowed": true, "reason": "impersonation"},
		"permission removed from the role": {"roles": ["support_agent"], "perms": {"support_agent": ["view_login_as_customer_log"]}, "allowed": false, "reason": "actor_not_permitted"},
		"role removed from the data": {"roles": ["support_agent"], "perms": {"admin": ["login_as_customer"]}, "allowed": false, "reason": "actor_not_permitted"},
		"another of the roles grants it": {"roles": ["auditor", "admin"], "perms": {"admin": ["login_as_customer"]}, "allowed": true, "reason": "impersonation"},
		"no roles recorded": {"roles": [], "perms": {"support_agent": ["login_as_customer"]}, "allowed": false, "reason": "actor_not_permitted"},
		"roles not a list": {"roles": "support_agent", "perms": {"support_agent": ["login_as_customer"]}, "allowed": false, "reason": "actor_not_permitted"},
	}
	d := impersonation.decision with input as object.union(lib_test.request(["GET"], "/catalog/shoes"), {"delegation": object.union(_session, {"actor_roles": tc.roles})})
		with impersonation.role_permissions as tc.perms
	d.allowed == tc.allowed
	d.reason == tc.reason
}

# Magento's REST API runs the same account actions as the storefront's
# pages, with the customer's session, under /rest/<store code>/V1/...: the
# store code ("default", "all", none), a front controller or an async
# prefix in front of V1 does not take a route out of reach, since routes
# match from any segment on.
test_rest_api[note] if {
	some note, tc in {
		"change password": {"methods": ["PUT"], "path": "/rest/V1/customers/me/password", "reason": "password_change_forbidden"},
		"change password with store code": {"methods": ["PUT"], "path": "/rest/default/V1/customers/me/password", "reason": "password_change_forbidden"},
		"change password in every store": {"methods": ["PUT"], "path": "/rest/all/V1/customers/me/password", "reason": "password_change_forbidden"},
		"change password through the front controller": {"methods": ["PUT"], "path": "/index.php/rest/V1/customers/me/password", "reason": "password_change_forbidden"},
		"change password, front controller and store code": {"methods": ["PUT"], "path": "/index.php/rest/default/V1/customers/me/password", "reason": "password_change_forbidden"},
		"change password asynchronously": {"methods": ["PUT"], "path": "/rest/async/V1/customers/me/password", "reason": "password_change_forbidden"},
		"change password in bulk": {"methods": ["PUT"], "path": "/rest/default/async/bulk/V1/customers/me/password", "reason": "password_change_forbidden"},
		"change password in upper case": {"methods": ["PUT"], "path": "/REST/DEFAULT/V1/CUSTOMERS/ME/PASSWORD", "reason": "password_change_forbidden"},
		"change password with parameters": {"methods": ["PUT"], "path": "/rest;a/default/V1;b/customers/me;c/password;d", "reason": "password_change_forbidden"},
		"change password with a suffix": {"methods": ["PUT"], "path": "/rest/V1/customers/me/password.json", "reason": "password_change_forbidden"},
		"change password, any method": {"methods": ["POST"], "path": "/rest/V1/customers/me/password", "reason": "password_change_forbidden"},
		"change password by override": {"methods": ["GET", "PUT"], "path": "/rest/V1/customers/me/password", "reason": "password_change_forbidden"},
		"edit account": {"methods": ["PUT"], "path": "/rest/V1/customers/me", "reason": "account_change_forbidden"},
		"edit account with store code": {"methods": ["PUT"], "path": "/rest/default/V1/customers/me", "reason": "account_change_forbidden"},
		"edit account in mixed case": {"methods": ["PUT"], "path": "/Rest/Default/v1/Customers/Me/", "reason": "account_change_forbidden"},
		"edit account by override": {"methods": ["POST", "PUT"], "path": "/rest/default/V1/customers/me", "reason": "account_change_forbidden"},
		"edit account through the front controller": {"methods": ["PUT"], "path": "/index.php/rest/default/V1/customers/me", "reason": "account_change_forbidden"},
		"edit account with repeated slashes": {"methods": ["PUT"], "path": "//rest//default//V1//customers//me", "reason": "account_change_forbidden"},
		"activate account": {"methods": ["PUT"], "path": "/rest/default/V1/customers/me/activate", "reason": "account_change_forbidden"},
		"reset password": {"methods": ["POST"], "path": "/rest/default/V1/customers/resetPassword", "reason": "password_change_forbidden"},
		"reset password in lower case": {"methods": ["POST"], "path": "/rest/V1/customers/resetpassword", "reason": "password_change_forbidden"},
		"reset link check": {"methods": ["GET"], "path": "/rest/default/V1/customers/42/password/resetLinkToken/abc", "reason": "password_change_forbidden"},
		"mount point and store code": {"methods": ["PUT"], "path": "/shop/index.php/rest/fr/V1/customers/me", "reason": "account_change_forbidden"},
	}
	d := impersonation.decision with input as object.union(lib_test.request(tc.methods, tc.path), {"delegation": _session})
	not d.allowed
	d.reason == tc.reason
}

# Magento's SOAP API serves the same service contracts as REST, each
# operation a POST to /soap/<store>?services=..., named only in the body
# and the SOAPAction: no path tells a password change from a read, and
# no storefront page calls it, so impersonation reaches none of it.
test_soap_api[note] if {
	some note, tc in {
		"an operation": {"methods": ["POST"], "path": "/soap/default"},
		"every store": {"methods": ["POST"], "path": "/soap/all"},
		"no store code": {"methods": ["POST"], "path": "/soap"},
		"through the front controller": {"methods": ["POST"], "path": "/index.php/soap/default"},
		"in upper case": {"methods": ["POST"], "path": "/SOAP/Default"},
		"the service description": {"methods": ["GET"], "path": "/soap/default"},
		"behind a mount point": {"methods": ["POST"], "path": "/shop/index.php/soap/fr"},
	}
	d := impersonation.decision with input as object.union(lib_test.request(tc.methods, tc.path), {"delegation": _session})
	not d.allowed
	d.reason == "soap_forbidden"
}

# Reading the account, and the REST routes of shopping, stay open.
test_rest_api_reads_and_shopping_stay_allowed[note] if {
	some note, tc in {
		"read account": {"methods": ["GET"], "path": "/rest/default/V1/customers/me"},
		"read billing address": {"methods": ["GET"], "path": "/rest/V1/customers/me/billingAddress"},
		"read shipping address": {"methods": ["GET"], "path": "/rest/all/V1/customers/me/shippingAddress"},
		"add to cart": {"methods": ["POST"], "path": "/rest/default/V1/carts/mine/items"},
		"place order": {"methods": ["POST"], "path": "/rest/default/V1/carts/mine/payment-information"},
		"a route merely starting like me": {"methods": ["PUT"], "path": "/rest/V1/customers/mebership"},
	}
	d := impersonation.decision with input as object.union(lib_test.request(tc.methods, tc.path), {"delegation": _session})
	d.allowed
	d.reason == "impersonation"
}

# A request to the GraphQL endpoint as Deputy builds it: parsed_body is
# null when Deputy parsed no body, and parsed_query holds the query
# parameter when the URL has one.
_graphql(methods, path, body, query) := object.union(
	lib_test.request(methods, path),
	{"delegation": _session, "parsed_body": body, "parsed_query": query},
)

_post(body) := _graphql(["POST"], "/graphql", body, {})

_mutation(field) := {"query": concat("", ["mutation { ", field, "(input: {firstname: \"Eve\"}) { customer { email } } }"])}

# The GraphQL mutations of the actions the forbidden pages run, however
# the request spells them.
test_graphql_forbidden_fields[note] if {
	some note, tc in {
		"account change": {"in": _post(_mutation("updateCustomerV2")), "reason": "account_change_forbidden"},
		"account change, first version": {"in": _post(_mutation("updateCustomer")), "reason": "account_change_forbidden"},
		"email change": {"in": _post({"query": "mutation { updateCustomerEmail(email: \"eve@example.com\", password: \"x\") { customer { email } } }"}), "reason": "account_change_forbidden"},
		"account deletion": {"in": _post({"query": "mutation { deleteCustomer }"}), "reason": "account_change_forbidden"},
		"password change": {"in": _post({"query": "mutation { changeCustomerPassword(currentPassword: \"a\", newPassword: \"b\") { id } }"}), "reason": "password_change_forbidden"},
		"password reset": {"in": _post({"query": "mutation { resetPassword(email: \"c@example.com\", resetPasswordToken: \"t\", newPassword: \"b\") }"}), "reason": "password_change_forbidden"},
		"payment token deletion": {"in": _post({"query": "mutation { deletePaymentToken(public_hash: \"h\") { result } }"}), "reason": "payment_method_change_forbidden"},
		"alias": {"in": _post({"query": "mutation { x: updateCustomerV2(input: {}) { customer { id } } }"}), "reason": "account_change_forbidden"},
		"alias without spaces": {"in": _post({"query": "mutation{x:updateCustomerV2(input:{}){customer{id}}}"}), "reason": "account_change_forbidden"},
		"newlines and tabs": {"in": _post({"query": "mutation\n{\n\tupdateCustomerV2\n\t(input: {})\n{ customer { id } } }"}), "reason": "account_change_forbidden"},
		"commas as whitespace": {"in": _post({"query": "mutation{,,,updateCustomerV2,(input:{}){customer{id}}}"}), "reason": "account_change_forbidden"},
		"in another case": {"in": _post({"query": "mutation { UPDATECUSTOMERV2(input: {}) { customer { id } } }"}), "reason": "account_change_forbidden"},
		"in a fragment": {"in": _post({"query": "mutation { ...f } fragment f on Mutation { deletePaymentToken(public_hash: \"h\") { result } }"}), "reason": "payment_method_change_forbidden"},
		"second of two operations": {"in": _post({"query": "query a { cart(cart_id: \"c\") { id } } mutation b { updateCustomerV2(input: {}) { customer { id } } }", "operationName": "b"}), "reason": "account_change_forbidden"},
		"operationName naming the harmless one": {"in": _post({"query": "query a { cart(cart_id: \"c\") { id } } mutation b { updateCustomerV2(input: {}) { customer { id } } }", "operationName": "a"}), "reason": "account_change_forbidden"},
		"after harmless fields": {"in": _post({"query": "mutation { addProductsToCart(cartId: \"c\", cartItems: []) { cart { id } } deletePaymentToken(public_hash: \"h\") { result } }"}), "reason": "payment_method_change_forbidden"},
		"batch": {"in": _post([{"query": "{ cart(cart_id: \"c\") { id } }"}, _mutation("updateCustomerV2")]), "reason": "account_change_forbidden"},
		"batch of one": {"in": _post([{"query": "mutation { deleteCustomer }"}]), "reason": "account_change_forbidden"},
		"query in the URL": {"in": _graphql(["GET"], "/graphql", null, {"query": ["mutation { updateCustomerV2(input: {}) { customer { id } } }"]}), "reason": "account_change_forbidden"},
		"URL beside a harmless body": {"in": _graphql(["POST"], "/graphql", {"query": "{ cart(cart_id: \"c\") { id } }"}, {"query": ["mutation { deleteCustomer }"]}), "reason": "account_change_forbidden"},
		"repeated query parameter": {"in": _graphql(["GET"], "/graphql", null, {"query": ["{ cart(cart_id: \"c\") { id } }", "mutation { deleteCustomer }"]}), "reason": "account_change_forbidden"},
		"form body": {"in": _post({"query": ["mutation { updateCustomerV2(input: {}) { customer { id } } }"]}), "reason": "account_change_forbidden"},
		"in the variables only": {"in": _post({"query": "mutation($m: String) { addProductsToCart(cartId: $m, cartItems: []) { cart { id } } }", "variables": {"m": "deleteCustomer"}}), "reason": "account_change_forbidden"},
		"store code in front": {"in": _graphql(["POST"], "/default/graphql", _mutation("updateCustomerV2"), {}), "reason": "account_change_forbidden"},
		"front controller": {"in": _graphql(["POST"], "/index.php/graphql", _mutation("updateCustomerV2"), {}), "reason": "account_change_forbidden"},
		"endpoint in upper case with a suffix": {"in": _graphql(["POST"], "/GraphQL.json", _mutation("updateCustomerV2"), {}), "reason": "account_change_forbidden"},
		"endpoint with a parameter and a trailing slash": {"in": _graphql(["POST"], "/graphql;x/", _mutation("updateCustomerV2"), {}), "reason": "account_change_forbidden"},
		"below the endpoint": {"in": _graphql(["POST"], "/graphql/anything", _mutation("updateCustomerV2"), {}), "reason": "account_change_forbidden"},
	}
	d := impersonation.decision with input as tc.in
	not d.allowed
	d.http_status == 403
	d.reason == tc.reason
}

# What Deputy could not read is not judged: the request is denied.
test_graphql_unread_fails_closed[note] if {
	some note, tc in {
		# nginx's auth_request and Caddy's forward_auth send no body.
		"body not sent": {"in": _post(null), "reason": "graphql_body_unread"},
		"body truncated": {"in": object.union(_post(null), {"truncated_body": true}), "reason": "graphql_body_unread"},
		"body parsing off": {"in": object.remove(_post(null), ["parsed_body"]), "reason": "graphql_body_unread"},
		"a body method by override": {"in": _graphql(["GET", "POST"], "/graphql", null, {"query": ["{ cart(cart_id: \"c\") { id } }"]}), "reason": "graphql_body_unread"},
		"PUT": {"in": _graphql(["PUT"], "/graphql", null, {}), "reason": "graphql_body_unread"},
		"persisted query": {"in": _post({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "abc"}}}), "reason": "graphql_query_unreadable"},
		"document by id": {"in": _post({"id": "q1", "variables": {}}), "reason": "graphql_query_unreadable"},
		"query not a string": {"in": _post({"query": {"x": 1}}), "reason": "graphql_query_unreadable"},
		"form body": {"in": _post({"query": ["{ cart(cart_id: \"c\") { id } }"]}), "reason": "graphql_query_unreadable"},
		"multipart operations": {"in": _post({"operations": ["{\"query\": \"mutation { \\u0064eleteCustomer }\"}"], "map": ["{}"]}), "reason": "graphql_query_unreadable"},
		"empty batch": {"in": _post([]), "reason": "graphql_query_unreadable"},
		"batch with a persisted query": {"in": _post([{"query": "{ cart(cart_id: \"c\") { id } }"}, {"extensions": {"persistedQuery": {"sha256Hash": "abc"}}}]), "reason": "graphql_query_unreadable"},
		"GET without a document": {"in": _graphql(["GET"], "/graphql", null, {}), "reason": "graphql_query_unreadable"},
		"GET with a persisted query": {"in": _graphql(["GET"], "/graphql", null, {"extensions": ["{\"persistedQuery\":{\"sha256Hash\":\"abc\"}}"]}), "reason": "graphql_query_unreadable"},
	}
	d := impersonation.decision with input as tc.in
	not d.allowed
	d.http_status == 403
	d.reason == tc.reason
}

# Shopping assistance goes on through the GraphQL endpoint: carts,
# checkout, reading the account, and the address book (the pages under
# /customer/address/ are not forbidden either).
test_graphql_shopping_stays_allowed[note] if {
	some note, tc in {
		"add to cart": {"in": _post({"query": "mutation($c: String!) { addProductsToCart(cartId: $c, cartItems: [{sku: \"S1\", quantity: 1}]) { cart { id } } }", "variables": {"c": "abc"}})},
		"place order": {"in": _post({"query": "mutation { placeOrder(input: {cart_id: \"abc\"}) { order { order_number } } }"})},
		"read the account": {"in": _post({"query": "{ customer { firstname email addresses { city } } }", "operationName": null})},
		"saved cards at checkout": {"in": _post({"query": "{ customerPaymentTokens { items { public_hash } } }"})},
		"address book": {"in": _post({"query": "mutation { createCustomerAddress(input: {city: \"Lyon\"}) { id } updateCustomerAddress(id: 1, input: {}) { id } deleteCustomerAddress(id: 2) }"})},
		"password reset email": {"in": _post({"query": "mutation { requestPasswordResetEmail(email: \"c@example.com\") }"})},
		"batch": {"in": _post([{"query": "{ cart(cart_id: \"c\") { id } }"}, {"query": "{ customer { email } }"}])},
		"query in the URL": {"in": _graphql(["GET"], "/graphql", null, {"query": ["{ products(search: \"shoe\") { total_count } }"]})},
		"HEAD": {"in": _graphql(["HEAD"], "/graphql", null, {"query": ["{ cart(cart_id: \"c\") { id } }"]})},
		"a name containing a forbidden one": {"in": _post({"query": "{ x: updateCustomerV2Preview deleteCustomerAddressBook _resetPassword }"})},
		"a page body naming a field": {"in": _graphql(["POST"], "/checkout/cart/add", {"note": ["updateCustomerV2"]}, {})},
		"a page without a body": {"in": _graphql(["POST"], "/checkout/cart/add", null, {})},
		"a path merely starting like the endpoint": {"in": _graphql(["POST"], "/graphqlx", null, {})},
	}
	d := impersonation.decision with input as tc.in
	d.allowed
	d.reason == "impersonation"
}

# Two forbidden fields: the reason is the first in data order, wherever
# the fields stand in the request.
test_graphql_reason_follows_data_order if {
	d := impersonation.decision with input as _post({"query": "mutation { deletePaymentToken(public_hash: \"h\") { result } changeCustomerPassword(currentPassword: \"a\", newPassword: \"b\") { id } }"})
	d.reason == "password_change_forbidden"
}

# Endpoints and fields are data: a storefront that serves GraphQL
# elsewhere, or another mutation to forbid, needs no rule change.
test_custom_graphql_endpoint_and_field[note] if {
	some note, tc in {
		"custom endpoint": {"path": "/api/graphql", "query": "mutation { updateCustomerV2(input: {}) { customer { id } } }", "reason": "account_change_forbidden"},
		"custom endpoint, other path": {"path": "/graphql", "query": "mutation { updateCustomerV2(input: {}) { customer { id } } }", "reason": "impersonation"},
		"custom field": {"path": "/api/graphql", "query": "mutation { subscribeEmailToNewsletter(email: \"e\") { status } }", "reason": "newsletter_change_forbidden"},
	}
	d := impersonation.decision with input as _graphql(["POST"], tc.path, {"query": tc.query}, {})
		with impersonation.forbidden_routes as {"api": [{"prefix": "/api/graphql/", "graphql": true}]}
		with impersonation.forbidden_graphql_fields as array.concat(
			impersonation.forbidden_graphql_fields,
			[{"field": "subscribeEmailToNewsletter", "reason": "newsletter_change_forbidden"}],
		)
	d.reason == tc.reason
}

test_graphql_switch_off_outranks_a_forbidden_field if {
	d := impersonation.decision with input as _post(_mutation("updateCustomerV2"))
		with impersonation.enabled as false
	not d.allowed
	d.reason == "impersonation_disabled"
}

# forbidden_route_met answers true or false, never undefined: Deputy keeps
# a false answer across checks, and the check of every other delegated
# mode tests it as its own expression.
test_forbidden_route_met_answers_a_boolean[note] if {
	some note, tc in {
		"password page": {"path": "/customer/account/password", "met": true},
		"behind a store code, with a format": {"path": "/fr/customer/account/password.json", "met": true},
		"a catalog page": {"path": "/catalog/shoes", "met": false},
		"the root": {"path": "/", "met": false},
	}
	request := lib_test.request(["GET"], tc.path).deputy.request
	impersonation.forbidden_route_met(request.route_segments, request.route_dirs) == tc.met
}
