package deputy.partner_test

import data.deputy.lib_test
import data.deputy.partner

_request(method, path, delegation) := object.union(
	lib_test.request([method], concat("/", ["", path])),
	{"delegation": delegation},
)

_grant(level) := {
	"mode": "partner",
	"id": "g1",
	"actor": "pat",
	"actor_org": "partnerco",
	"subject": "acme",
	"level": level,
	"scope": "organisation",
	"expires_at": "2099-01-01T00:00:00Z",
}

_cc_grant(shared) := object.union(_grant("cc"), {"attributes": {"shared_resources": shared}})

test_route_levels[note] if {
	cases := [
		{"note": "look lists service requests", "method": "GET", "path": "service-requests", "level": "look", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "look reads a service request", "method": "GET", "path": "service-requests/sr-1", "level": "look", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "look reads comments of a service request", "method": "GET", "path": "service-requests/sr-1/comments", "level": "look", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "look cannot update", "method": "PATCH", "path": "service-requests/sr-1", "level": "look", "allowed": false, "reason": "level_too_low:update"},
		{"note": "update updates", "method": "PATCH", "path": "service-requests/sr-1", "level": "update", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "update comments", "method": "POST", "path": "service-requests/sr-1/comments", "level": "update", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "update cannot create", "method": "POST", "path": "service-requests", "level": "update", "allowed": false, "reason": "level_too_low:create"},
		{"note": "create creates", "method": "POST", "path": "service-requests", "level": "create", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "a trailing slash is still the collection", "method": "POST", "path": "service-requests/", "level": "update", "allowed": false, "reason": "level_too_low:create"},
		{"note": "create cannot administer the site", "method": "PUT", "path": "site/config", "level": "create", "allowed": false, "reason": "level_too_low:service_admin"},
		{"note": "service_admin administers the site", "method": "PUT", "path": "site/config", "level": "service_admin", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "service_admin handles access requests", "method": "POST", "path": "access-requests/ar-1", "level": "service_admin", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "service_admin cannot manage contacts", "method": "POST", "path": "contacts", "level": "service_admin", "allowed": false, "reason": "level_too_low:full_admin"},
		{"note": "full_admin manages contacts", "method": "DELETE", "path": "contacts/c-9", "level": "full_admin", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "look sees the dashboard", "method": "GET", "path": "dashboard", "level": "look", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "look reads notifications", "method": "GET", "path": "notifications/n-1", "level": "look", "allowed": true, "reason": "partner_level_sufficient"},
		# Read-only: look subscribes through Deputy's subscription API, and
		# changes nothing of the customer's notifications upstream.
		{"note": "look cannot change a notification", "method": "PUT", "path": "notifications/subscription", "level": "look", "allowed": false, "reason": "level_too_low:update"},
		{"note": "look cannot delete a notification", "method": "DELETE", "path": "notifications/n-1", "level": "look", "allowed": false, "reason": "level_too_low:update"},
		{"note": "look cannot delete every notification", "method": "DELETE", "path": "notifications", "level": "look", "allowed": false, "reason": "route_not_mapped"},
		{"note": "look cannot post a notification", "method": "POST", "path": "notifications", "level": "look", "allowed": false, "reason": "level_too_low:create"},
		{"note": "update changes a notification", "method": "PATCH", "path": "notifications/n-1", "level": "update", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "cc cannot see the dashboard", "method": "GET", "path": "dashboard", "level": "cc", "allowed": false, "reason": "cc_resource_not_shared"},
		{"note": "unmapped route", "method": "GET", "path": "billing/invoices", "level": "full_admin", "allowed": false, "reason": "route_not_mapped"},
		{"note": "unmapped method", "method": "DELETE", "path": "service-requests", "level": "full_admin", "allowed": false, "reason": "route_not_mapped"},
		{"note": "unknown level", "method": "GET", "path": "service-requests", "level": "owner", "allowed": false, "reason": "unknown_level"},
	]
	some tc in cases
	note := tc.note
	d := partner.decision with input as _request(tc.method, tc.path, _grant(tc.level))
	d.allowed == tc.allowed
	d.reason == tc.reason
}

test_cc_shared_resources[note] if {
	cases := [
		{"note": "cc reads a shared request", "method": "GET", "path": "service-requests/sr-1", "shared": ["sr-1"], "allowed": true, "reason": "partner_cc_shared_resource"},
		{"note": "cc reads comments of a shared request", "method": "GET", "path": "service-requests/sr-1/comments", "shared": ["sr-1"], "allowed": true, "reason": "partner_cc_shared_resource"},
		{"note": "cc on an unshared request", "method": "GET", "path": "service-requests/sr-2", "shared": ["sr-1"], "allowed": false, "reason": "cc_resource_not_shared"},
		{"note": "cc with nothing shared", "method": "GET", "path": "service-requests/sr-1", "shared": [], "allowed": false, "reason": "cc_resource_not_shared"},
		{"note": "cc cannot list all requests", "method": "GET", "path": "service-requests", "shared": ["sr-1"], "allowed": false, "reason": "cc_resource_not_shared"},
		{"note": "cc cannot update a shared request", "method": "PATCH", "path": "service-requests/sr-1", "shared": ["sr-1"], "allowed": false, "reason": "cc_resource_not_shared"},
	]
	some tc in cases
	note := tc.note
	d := partner.decision with input as _request(tc.method, tc.path, _cc_grant(tc.shared))
	d.allowed == tc.allowed
	d.reason == tc.reason
}

test_cc_without_attributes if {
	d := partner.decision with input as _request("GET", "service-requests/sr-1", _grant("cc"))
	not d.allowed
	d.reason == "cc_resource_not_shared"
}

test_path_template[note] if {
	cases := [
		{"note": "customer named in the path", "path": "customers/acme/service-requests/sr-1", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "another customer in the path", "path": "customers/globex/service-requests/sr-1", "allowed": false, "reason": "path_names_another_customer"},
		{"note": "bare customer path", "path": "customers/acme", "allowed": false, "reason": "route_not_mapped"},
	]
	some tc in cases
	note := tc.note
	d := partner.decision with input as _request("GET", tc.path, _grant("look"))
	d.allowed == tc.allowed
	d.reason == tc.reason
}

test_not_partner[note] if {
	cases := {
		"no delegation": {"attributes": {"request": {"http": {"method": "GET"}}}, "parsed_path": ["service-requests"]},
		"impersonation": _request("GET", "service-requests", object.union(_grant("look"), {"mode": "impersonation"})),
		"reseller": _request("GET", "service-requests", object.union(_grant("look"), {"mode": "reseller"})),
	}
	some note, req in cases
	d := partner.decision with input as req
	not d.allowed
	d.reason == "not_partner_delegation"
	d.http_status == 403
}

# The pipeline strips x-deputy-* request headers before evaluation; even if one
# reached the input, policy reads the level only from input.delegation.
test_forged_level_header_is_ignored[note] if {
	cases := {
		"forged higher level": {"x-deputy-level": "full_admin", "x-deputy-mode": "partner"},
		"forged with capitals": {"X-Deputy-Level": "full_admin"},
	}
	some note, headers in cases
	base := _request("POST", "service-requests", _grant("look"))
	req := json.patch(base, [{"op": "add", "path": "/attributes/request/http/headers", "value": headers}])
	d := partner.decision with input as req
	not d.allowed
	d.reason == "level_too_low:create"
}

# Precedence is decided when resolving: a live individual grant reaches policy
# even when the organisation's grant is higher, so the lower level decides.
test_lower_individual_grant_decides if {
	individual := object.union(_grant("cc"), {"scope": "individual", "attributes": {"shared_resources": [], "precedence": "individual"}})
	d := partner.decision with input as _request("GET", "service-requests", individual)
	not d.allowed
	d.reason == "cc_resource_not_shared"
}

test_at_least[note] if {
	cases := [
		{"note": "equal", "a": "look", "b": "look", "want": true},
		{"note": "higher", "a": "full_admin", "b": "look", "want": true},
		{"note": "lower", "a": "cc", "b": "look", "want": false},
		{"note": "unknown", "a": "owner", "b": "look", "want": false},
	]
	some tc in cases
	note := tc.note
	_at_least(tc.a, tc.b) == tc.want
}

_at_least(a, b) if partner.at_least(a, b)

else := false

# Deputy refuses level_rank unless it ranks exactly these levels, higher
# in this order, as Go orders them.
test_level_rank_follows_levels if {
	levels := ["cc", "look", "update", "create", "service_admin", "full_admin"]
	count(partner.level_rank) == count(levels)
	every i, level in levels {
		partner.level_rank[level] == i
	}
}

test_tricky_forms[note] if {
	cases := [
		{"note": "upper-case section", "methods": ["GET"], "path": "/Service-Requests/sr-1", "level": "look", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "override PATCH on a look grant", "methods": ["GET", "PATCH"], "path": "/service-requests/sr-1", "level": "look", "allowed": false, "reason": "level_too_low:update"},
		{"note": "override POST on a collection", "methods": ["GET", "POST"], "path": "/service-requests", "level": "update", "allowed": false, "reason": "level_too_low:create"},
		{"note": "override within the level", "methods": ["GET", "HEAD"], "path": "/service-requests/sr-1", "level": "look", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "override to an unmapped method", "methods": ["GET", "DELETE"], "path": "/service-requests/sr-1", "level": "full_admin", "allowed": false, "reason": "route_not_mapped"},
		{"note": "leading double slash on full_admin route", "methods": ["GET"], "path": "//contacts/c-1", "level": "look", "allowed": false, "reason": "level_too_low:full_admin"},
		{"note": "double slash after the customer", "methods": ["GET"], "path": "/customers/acme//contacts", "level": "look", "allowed": false, "reason": "level_too_low:full_admin"},
		{"note": "upper-case template and section", "methods": ["GET"], "path": "/Customers/acme/Contacts", "level": "look", "allowed": false, "reason": "level_too_low:full_admin"},
		{"note": "path parameter on the section", "methods": ["GET"], "path": "/customers/acme/contacts;x", "level": "look", "allowed": false, "reason": "level_too_low:full_admin"},
		{"note": "trailing slash is the collection", "methods": ["POST"], "path": "/service-requests//", "level": "update", "allowed": false, "reason": "level_too_low:create"},
		{"note": "customer id compares exactly", "methods": ["GET"], "path": "/customers/ACME/service-requests", "level": "look", "allowed": false, "reason": "path_names_another_customer"},
		{"note": "front controller before the template", "methods": ["GET"], "path": "/index.php/customers/acme/contacts", "level": "look", "allowed": false, "reason": "level_too_low:full_admin"},
		{"note": "front controller, own customer", "methods": ["GET"], "path": "/index.php/customers/acme/service-requests", "level": "look", "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "front controller, another customer", "methods": ["GET"], "path": "/index.php/customers/globex/service-requests", "level": "full_admin", "allowed": false, "reason": "path_names_another_customer"},
		{"note": "template with a trailing dot", "methods": ["GET"], "path": "/customers./acme/contacts", "level": "look", "allowed": false, "reason": "level_too_low:full_admin"},
		{"note": "template with a trailing space, another customer", "methods": ["GET"], "path": "/customers /globex/service-requests", "level": "full_admin", "allowed": false, "reason": "path_names_another_customer"},
		{"note": "section with a format", "methods": ["GET"], "path": "/customers/acme/contacts.json", "level": "look", "allowed": false, "reason": "level_too_low:full_admin"},
		{"note": "blank segment after a collection is the collection", "methods": ["POST"], "path": "/service-requests/ ", "level": "update", "allowed": false, "reason": "level_too_low:create"},
	]
	some tc in cases
	note := tc.note
	req := object.union(lib_test.request(tc.methods, tc.path), {"delegation": _grant(tc.level)})
	d := partner.decision with input as req
	d.allowed == tc.allowed
	d.reason == tc.reason
}

test_cc_override_is_not_a_read if {
	req := object.union(lib_test.request(["GET", "PATCH"], "/service-requests/sr-1"), {"delegation": _cc_grant(["sr-1"])})
	d := partner.decision with input as req
	not d.allowed
	d.reason == "cc_resource_not_shared"
}

# The route form folds Unicode ("ſ" is "s") in Go, which the model in
# lib_test does not: the canonicaliser's output is spelled out here.
test_folded_template_names_another_customer if {
	req := object.union(lib_test.request(["GET"], "/cuſtomers/globex/service-requests"), {
		"delegation": _grant("full_admin"),
		"deputy": {"request": {"route": "/customers/globex/service-requests", "route_segments": ["customers", "globex", "service-requests"]}},
	})
	d := partner.decision with input as req
	not d.allowed
	d.reason == "path_names_another_customer"
}

# Under the customer's own path template, the section and whether the path
# names an item or the collection are decided together: each kind gets its
# own levels, and a cc user's shared item is found at the item's index.
test_customer_template_kinds[note] if {
	cases := [
		{"note": "item needs update for PATCH", "methods": ["PATCH"], "path": "/customers/acme/service-requests/sr-1", "delegation": _grant("update"), "allowed": true, "reason": "partner_level_sufficient"},
		{"note": "item PATCH on a look grant", "methods": ["PATCH"], "path": "/customers/acme/service-requests/sr-1", "delegation": _grant("look"), "allowed": false, "reason": "level_too_low:update"},
		{"note": "collection POST needs create", "methods": ["POST"], "path": "/customers/acme/service-requests", "delegation": _grant("update"), "allowed": false, "reason": "level_too_low:create"},
		{"note": "collection with a trailing slash", "methods": ["POST"], "path": "/customers/acme/service-requests/", "delegation": _grant("update"), "allowed": false, "reason": "level_too_low:create"},
		{"note": "template without a section", "methods": ["GET"], "path": "/customers/acme", "delegation": _grant("full_admin"), "allowed": false, "reason": "route_not_mapped"},
		{"note": "cc shared item under the template", "methods": ["GET"], "path": "/customers/acme/service-requests/sr-1", "delegation": _cc_grant(["sr-1"]), "allowed": true, "reason": "partner_cc_shared_resource"},
		{"note": "cc on the collection under the template", "methods": ["GET"], "path": "/customers/acme/service-requests", "delegation": _cc_grant(["service-requests"]), "allowed": false, "reason": "cc_resource_not_shared"},
	]
	some tc in cases
	note := tc.note
	req := object.union(lib_test.request(tc.methods, tc.path), {"delegation": tc.delegation})
	d := partner.decision with input as req
	d.allowed == tc.allowed
	d.reason == tc.reason
}

# Without the client's spelling of the route, the customer's path template
# is not recognised as naming the customer acted for, as
# lib.route_segment_is decides: refused.
test_customer_template_needs_spelled_form if {
	req := object.union(lib_test.request(["GET"], "/customers/acme/service-requests/sr-1"), {"delegation": _grant("full_admin")})
	d := partner.decision with input as json.remove(req, ["deputy/request/spelled_route_segments"])
	not d.allowed
	d.reason == "path_names_another_customer"
}

# The one-body branch for an item under the customer's own template and
# the chain behind it decide alike at their seams: the customer compared
# as spelled and in the route form, sections whose methods are "*" only,
# overrides, unknown levels and cc.
test_template_item_branch_seams[note] if {
	some note, tc in {
		"own customer in upper case": {"methods": ["GET"], "path": "/customers/ACME/service-requests/sr-1", "subject": "ACME", "level": "look", "allowed": true, "reason": "partner_level_sufficient"},
		"own customer in mixed case, item PATCH": {"methods": ["PATCH"], "path": "/customers/Acme/service-requests/sr-1", "subject": "Acme", "level": "update", "allowed": true, "reason": "partner_level_sufficient"},
		"own customer in mixed case, level too low": {"methods": ["PATCH"], "path": "/customers/Acme/service-requests/sr-1", "subject": "Acme", "level": "look", "allowed": false, "reason": "level_too_low:update"},
		"own customer in non-ASCII upper case": {"methods": ["GET"], "path": "/customers/ÉCOLE/service-requests/sr-1", "subject": "ÉCOLE", "level": "look", "allowed": true, "reason": "partner_level_sufficient"},
		"customer spelled lower, granted upper": {"methods": ["GET"], "path": "/customers/acme/service-requests/sr-1", "subject": "ACME", "level": "full_admin", "allowed": false, "reason": "path_names_another_customer"},
		"customer spelled upper, granted lower": {"methods": ["GET"], "path": "/customers/ACME/service-requests/sr-1", "subject": "acme", "level": "full_admin", "allowed": false, "reason": "path_names_another_customer"},
		"customer with a trailing dot": {"methods": ["GET"], "path": "/customers/acme./service-requests/sr-1", "subject": "acme.", "level": "full_admin", "allowed": false, "reason": "path_names_another_customer"},
		"section of * only": {"methods": ["DELETE"], "path": "/customers/acme/contacts/c-1", "subject": "acme", "level": "full_admin", "allowed": true, "reason": "partner_level_sufficient"},
		"section of * only, level too low": {"methods": ["GET"], "path": "/customers/acme/contacts/c-1", "subject": "acme", "level": "service_admin", "allowed": false, "reason": "level_too_low:full_admin"},
		"override within the level": {"methods": ["GET", "HEAD"], "path": "/customers/acme/service-requests/sr-1", "subject": "acme", "level": "look", "allowed": true, "reason": "partner_level_sufficient"},
		"override above the level": {"methods": ["GET", "PUT"], "path": "/customers/acme/service-requests/sr-1", "subject": "acme", "level": "look", "allowed": false, "reason": "level_too_low:update"},
		"unmapped method": {"methods": ["DELETE"], "path": "/customers/acme/service-requests/sr-1", "subject": "acme", "level": "full_admin", "allowed": false, "reason": "route_not_mapped"},
		"unknown section": {"methods": ["GET"], "path": "/customers/acme/billing/b-1", "subject": "acme", "level": "full_admin", "allowed": false, "reason": "route_not_mapped"},
		"unknown level": {"methods": ["GET"], "path": "/customers/acme/service-requests/sr-1", "subject": "acme", "level": "owner", "allowed": false, "reason": "unknown_level"},
		"cc, item not shared": {"methods": ["GET"], "path": "/customers/acme/service-requests/sr-1", "subject": "acme", "level": "cc", "allowed": false, "reason": "cc_resource_not_shared"},
	}
	grant := object.union(_grant(tc.level), {"subject": tc.subject})
	d := partner.decision with input as object.union(lib_test.request(tc.methods, tc.path), {"delegation": grant})
	d.allowed == tc.allowed
	d.reason == tc.reason
}

# The same seams for an item at the root of the path, the customer named
# by the header alone.
test_root_item_branch_seams[note] if {
	some note, tc in {
		"item read": {"methods": ["GET"], "path": "/service-requests/sr-1", "level": "look", "allowed": true, "reason": "partner_level_sufficient"},
		"section of * only": {"methods": ["DELETE"], "path": "/contacts/c-1", "level": "full_admin", "allowed": true, "reason": "partner_level_sufficient"},
		"level too low": {"methods": ["PATCH"], "path": "/service-requests/sr-1", "level": "look", "allowed": false, "reason": "level_too_low:update"},
		"override above the level": {"methods": ["GET", "PUT"], "path": "/service-requests/sr-1", "level": "look", "allowed": false, "reason": "level_too_low:update"},
		"unknown section": {"methods": ["GET"], "path": "/billing/b-1", "level": "full_admin", "allowed": false, "reason": "route_not_mapped"},
		"unknown level": {"methods": ["GET"], "path": "/service-requests/sr-1", "level": "owner", "allowed": false, "reason": "unknown_level"},
		"cc, item not shared": {"methods": ["GET"], "path": "/service-requests/sr-1", "level": "cc", "allowed": false, "reason": "cc_resource_not_shared"},
		"template word without a customer": {"methods": ["GET"], "path": "/customers", "level": "full_admin", "allowed": false, "reason": "path_names_another_customer"},
	}
	d := partner.decision with input as object.union(lib_test.request(tc.methods, tc.path), {"delegation": _grant(tc.level)})
	d.allowed == tc.allowed
	d.reason == tc.reason
}

# With no customer path template in data (null), every path reads from
# its first segment.
test_root_item_without_template if {
	d := partner.decision with input as _request("GET", "customers/acme/service-requests/sr-1", _grant("full_admin"))
		with partner.customer_path_prefix as null
	not d.allowed
	d.reason == "route_not_mapped"
	e := partner.decision with input as _request("GET", "service-requests/sr-1", _grant("look"))
		with partner.customer_path_prefix as null
	e.allowed
}

# The allows by rank leave the cc test out: no shipped route needs so
# little that a cc grant would reach it by rank (Deputy refuses such data).
test_no_route_opens_to_cc if {
	every section in partner.sections {
		every kind in ["collection", "item"] {
			every level in object.get(section, kind, {}) {
				partner.level_rank[level] > partner.level_rank.cc
			}
		}
	}
}

# A socket opened on a route the level allows carries whatever the
# application runs on it (update and create commands on a look grant), and
# outlives a revocation: no upgrade is allowed while acting for a
# customer, at any level, on any route.
test_upgrade_refused[note] if {
	some note, tc in {
		"look on service requests": {"path": "customers/acme/service-requests", "level": "look", "protocols": ["websocket"]},
		"look on the dashboard": {"path": "dashboard", "level": "look", "protocols": ["websocket"]},
		"full_admin": {"path": "contacts", "level": "full_admin", "protocols": ["websocket"]},
		"cc on a shared item": {"path": "service-requests/sr-1", "level": "cc", "protocols": ["websocket"]},
		"Connection upgrade with no protocol": {"path": "service-requests", "level": "look", "protocols": []},
	}
	req := _request("GET", tc.path, object.union(_cc_grant(["sr-1"]), {"level": tc.level}))

	# Each of these is allowed as a plain request.
	plain := partner.decision with input as req
	plain.allowed
	d := partner.decision with input as lib_test.upgrade(req, tc.protocols)
	not d.allowed
	d.reason == "delegated_upgrade"
	d.http_status == 403
}

test_upgrade_of_another_mode_is_not_partner_delegation if {
	d := partner.decision with input as lib_test.upgrade(
		_request("GET", "service-requests", object.union(_grant("look"), {"mode": "reseller"})),
		["websocket"],
	)
	not d.allowed
	d.reason == "not_partner_delegation"
}

# Every customers/{customer} template in the path must name the customer
# acted for, wherever it stands, as the reseller policy requires: a portal
# router matching the later template serves globex to acme's partner.
test_later_template_names_another_customer[note] if {
	some note, tc in {
		"template after a root item": {"path": "/service-requests/1/customers/globex", "allowed": false, "reason": "path_names_another_customer"},
		"template after a root section": {"path": "/service-requests/customers/globex/service-requests/1", "allowed": false, "reason": "path_names_another_customer"},
		"template after the own one": {"path": "/customers/acme/service-requests/1/customers/globex/service-requests/2", "allowed": false, "reason": "path_names_another_customer"},
		"template behind a locale": {"path": "/fr/customers/globex/service-requests/1", "allowed": false, "reason": "path_names_another_customer"},
		"template word at the end": {"path": "/service-requests/1/customers", "allowed": false, "reason": "path_names_another_customer"},
		"template word as the own path's item": {"path": "/customers/acme/service-requests/customers", "allowed": false, "reason": "path_names_another_customer"},
		"template far down the own path": {"path": "/customers/acme/service-requests/1/a/b/c/d/e/f/g/h/i/j/k/l/customers/globex", "allowed": false, "reason": "path_names_another_customer"},
		"own customer named again": {"path": "/customers/acme/service-requests/1/customers/acme", "allowed": true, "reason": "partner_level_sufficient"},
		"own customer after a root item": {"path": "/service-requests/1/customers/acme", "allowed": true, "reason": "partner_level_sufficient"},
	}
	d := partner.decision with input as object.union(lib_test.request(["GET"], tc.path), {"delegation": _grant("full_admin")})
	d.allowed == tc.allowed
	d.reason == tc.reason
}

# The commonest request's branch reads the template at the path's start
# alone; a customer whose id is the template word itself names the
# template again, and is decided as the walk of the segments decides it.
test_template_word_as_the_customer if {
	grant := object.union(_grant("full_admin"), {"subject": "customers"})
	d := partner.decision with input as object.union(lib_test.request(["GET"], "/customers/customers/service-requests/1"), {"delegation": grant})
	not d.allowed
	d.reason == "path_names_another_customer"
}
