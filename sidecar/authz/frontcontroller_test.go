package authz_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// A storefront installed below the root (/shop/) lists its forbidden
// routes with that prefix. PHP runs /shop/index.php/customer/... as
// /shop/customer/... (PATH_INFO after the script), so the shipped
// impersonation policy must refuse the front-controller spelling too.
func TestFrontControllerBelowTheRoot(t *testing.T) {
	ctx := context.Background()
	set, err := policy.LoadPaths([]string{"../../policies"})
	if err != nil {
		t.Fatal(err)
	}
	imp := set.Data["deputy"].(map[string]any)["impersonation"].(map[string]any)
	imp["forbidden_routes"].(map[string]any)["shop"] = []any{
		map[string]any{"prefix": "/shop/customer/account/password/", "reason": "password_change_forbidden"},
	}
	e := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err := e.Activate(ctx, set); err != nil {
		t.Fatal(err)
	}
	store := memory.New()
	token := "front-controller-session-token-0123456789ab"
	redeemedSession(t, store, token)
	sessions := resolve.NewSessionResolver(store, delegation.ImpersonationDefaults())
	t.Cleanup(func() { sessions.Close() })
	p := authz.New(e, authz.WithResolvers(sessions))
	for _, tc := range []struct {
		path    string
		allowed bool
	}{
		{"/shop/customer/account/", true},
		{"/shop/customer/account/password/", false},
		{"/shop/index.php/customer/account/password/", false},
		{"/shop/INDEX.PHP/Customer/Account/Password", false},
		{"/shop/index.php/index.php/customer/account/password/", false},
		{"/shop/%69ndex.php;x/customer/account/password/", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			req := withHeaders(t, tc.path, map[string]string{"cookie": "deputy_session=" + token})
			req.Attributes.Request.Http.Method = "POST"
			req.Attributes.Request.Http.Headers[":method"] = "POST"
			resp := p.Check(ctx, req)
			if resp.Allowed != tc.allowed {
				t.Fatalf("allowed %v (%s), want %v", resp.Allowed, resp.Reason, tc.allowed)
			}
			if !tc.allowed && resp.Reason != "password_change_forbidden" {
				t.Fatalf("denied as %q, want password_change_forbidden", resp.Reason)
			}
		})
	}
}

// Partner levels are allowlists on the route form. A PHP script other
// than index.php, with a route spelled after it, runs that script
// (PATH_INFO): /export.php/customers/acme/service-requests/1 must not pass
// for the service request a look grant may read.
func TestScriptBeforeAnAllowedRouteIsRefused(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	if err := store.PutGrant(ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "helpco", Level: sidecar.Level("look"), ExpiresAt: time.Now().Add(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	p, mint := delegatedPipeline(t, store)
	partner := map[string]string{"x-on-behalf-of": "acme", "authorization": "Bearer " + mint(identity.DevClaims{Subject: "pat", Org: "helpco", Roles: []string{"partner"}, TTL: time.Hour})}
	if resp := p.Check(ctx, withHeaders(t, "/customers/acme/service-requests/1", partner)); !resp.Allowed {
		t.Fatalf("the genuine read is refused: %s", resp.Reason)
	}
	for _, path := range []string{
		"/export.php/customers/acme/service-requests/1",
		"/customers/acme/contacts.php/service-requests/1",
		"/customers/acme/service-requests/admin.phtml/1",
	} {
		t.Run(path, func(t *testing.T) {
			wantRefused(t, p.Check(ctx, withHeaders(t, path, partner)))
		})
	}
}

// CodeIgniter 3 and 4 (URI::_parse_request_uri, the default REQUEST_URI
// protocol) route on the query when the path names nothing past the
// script or its directory and the query starts with "/": /?/x,
// /index.php?/x and /shop/?/x run the action of /x. Deputy decides on the
// path, so every query that starts with a path (also encoded, with a
// backslash, or after dot segments, for routers that decode or resolve
// it) is refused, whatever the path, for staff in an impersonation
// session, partners and anonymous callers alike. With uri_protocol
// QUERY_STRING, CodeIgniter routes on the whole query when it does not
// start with "/" (/index.php?customer/account): a first field that holds
// a path and no "=" is refused too.
func TestPathCarriedInTheQueryIsRefused(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	token := "query-path-session-token-0123456789abcdef"
	redeemedSession(t, store, token)
	if err := store.PutGrant(ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "helpco", Level: sidecar.Level("look"), ExpiresAt: time.Now().Add(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	p, mint := delegatedPipeline(t, store)
	staff := map[string]string{"cookie": "deputy_session=" + token}
	partner := map[string]string{"x-on-behalf-of": "acme", "authorization": "Bearer " + mint(identity.DevClaims{Subject: "pat", Org: "helpco", Roles: []string{"partner"}, TTL: time.Hour})}
	for _, tc := range []struct {
		name, path string
		headers    map[string]string
		allowed    bool
	}{
		{"staff: root", "/?/customer/account/password/", staff, false},
		{"staff: front controller", "/index.php?/customer/account/password/", staff, false},
		{"staff: front controller as a directory", "/index.php/?/customer/account/password/", staff, false},
		{"staff: letter case", "/?/Customer/Account/Password", staff, false},
		{"staff: saved cards", "/?/vault/cards/", staff, false},
		{"staff: blank segments", "//%20/?/customer/account/password/", staff, false},
		{"staff: below a mount point", "/shop/?/customer/account/password/", staff, false},
		{"staff: front controller below a mount point", "/shop/index.php?/customer/account/password/", staff, false},
		{"staff: a query after the carried path", "/?/customer/account/password/?x=1", staff, false},
		{"staff: encoded slash", "/?%2Fcustomer/account/password/", staff, false},
		{"staff: encoded slash in lower case", "/?%2fcustomer/account/password/", staff, false},
		{"staff: backslash", "/?\\customer/account/password/", staff, false},
		{"staff: encoded backslash", "/?%5ccustomer/account/password/", staff, false},
		{"staff: dot segment", "/?./customer/account/password/", staff, false},
		{"staff: dot-dot segment", "/?../customer/account/password/", staff, false},
		{"staff: encoded dot", "/?%2E/customer/account/password/", staff, false},
		// With uri_protocol QUERY_STRING (index_page "index.php?"),
		// CodeIgniter routes on the whole query when it does not start
		// with "/": a first field holding a path and no "=".
		{"staff: query-string route", "/index.php?customer/account/password/", staff, false},
		{"staff: query-string route at the root", "/?customer/account/password/", staff, false},
		{"staff: query-string route then fields", "/index.php?customer/account/password/&x=1", staff, false},
		{"staff: query-string route, encoded", "/index.php?customer%2Faccount%2Fpassword", staff, false},
		{"staff: query-string route with a backslash", "/index.php?customer\\account\\password", staff, false},
		{"partner: query-string route", "/index.php?customers/acme/contacts", partner, false},
		{"anonymous: query-string route", "/?customer/account", nil, false},
		{"partner: root", "/?/customers/acme/contacts", partner, false},
		{"partner: front controller", "/index.php?/customers/acme/contacts", partner, false},
		{"anonymous: account", "/?/customer/account", nil, false},
		{"anonymous: cart", "/?/checkout/cart", nil, false},
		{"anonymous: support tickets", "/?/support/tickets", nil, false},
		// A path as a query value, and the pages the same callers reach,
		// are decided as before.
		{"anonymous: home", "/", nil, true},
		{"anonymous: home with a query", "/?utm_source=mail", nil, true},
		{"anonymous: a path as a value", "/catalog/shoes?return=/customer/account", nil, true},
		// A bare first field is a route to CodeIgniter's QUERY_STRING
		// protocol, a one-segment controller or routes.php alias too.
		{"anonymous: a one-segment query-string route", "/?customer", nil, false},
		{"staff: a one-segment alias", "/index.php?password", staff, false},
		{"anonymous: a flag", "/catalog/shoes?preview", nil, false},
		{"staff: account page", "/customer/account/?tab=orders", staff, true},
		{"partner: service request", "/customers/acme/service-requests/1?x=/y", partner, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := p.Check(ctx, withHeaders(t, tc.path, tc.headers))
			if tc.allowed {
				if !resp.Allowed {
					t.Fatalf("%s refused: %d %s", tc.path, resp.HTTPStatus, resp.Reason)
				}
				return
			}
			wantRefused(t, resp)
		})
	}
}

// CodeIgniter's enable_query_strings reads the controller and method from
// the c and m parameters wherever they stand (Yii reads r, Drupal 7 q):
// named in check.query_route_params, such a parameter is refused in any
// spelling PHP reads as the same name, since Deputy decides on the path.
func TestQueryRouteParamsAreRefused(t *testing.T) {
	ctx := context.Background()
	named := shippedPipeline(t, authz.WithQueryRouteParams([]string{"c", "m", "d"}))
	plain := shippedPipeline(t)
	for path, refused := range map[string]bool{
		"/catalog/shoes?c=customer&m=password":    true,
		"/catalog/shoes?utm_source=x&c=customer":  true,
		"/catalog/shoes?%63=customer":             true,
		"/catalog/shoes?C=customer":               true,
		"/catalog/shoes?c[]=customer":             true,
		"/catalog/shoes?utm_source=x;m=password":  true,
		"/catalog/shoes?color=red&cc=1&mode=grid": false,
		"/catalog/shoes?utm_source=mail":          false,
	} {
		t.Run(path, func(t *testing.T) {
			resp := named.Check(ctx, withHeaders(t, path, nil))
			if refused {
				wantRefused(t, resp)
			} else if !resp.Allowed {
				t.Fatalf("%s refused: %d %s", path, resp.HTTPStatus, resp.Reason)
			}
			if resp := plain.Check(ctx, withHeaders(t, path, nil)); !resp.Allowed {
				t.Fatalf("%s refused without query_route_params: %d %s", path, resp.HTTPStatus, resp.Reason)
			}
		})
	}
}
