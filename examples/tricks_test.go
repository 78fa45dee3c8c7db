package examples_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// trick is one request a hostile client sends through the proxy: a
// spelling of a route the policy forbids it, which an upstream that merges
// slashes, routes case-insensitively, drops ;params, decodes, or honours a
// method override serves as the forbidden route.
type trick struct {
	name, method, path string
	header             http.Header
}

// impersonationTricks aim at the password page, forbidden to staff in an
// impersonation session (for every method), and at account edits, for
// which only writes are forbidden.
var impersonationTricks = []trick{
	{name: "as sent", method: "POST", path: "/customer/account/password/"},
	{name: "percent-encoded letter", method: "POST", path: "/customer/account/p%61ssword/"},
	{name: "percent-encoded first segment", method: "POST", path: "/%63ustomer/account/password/"},
	{name: "repeated slash inside", method: "POST", path: "/customer//account/password/"},
	{name: "client X-Original-URI", method: "POST", path: "/customer/account/password/",
		header: http.Header{"X-Original-Uri": {"/catalog/shoes"}, "X-Original-Method": {"GET"}}},
	{name: "client X-Forwarded-Uri", method: "POST", path: "/customer/account/password/",
		header: http.Header{"X-Forwarded-Uri": {"/catalog/shoes"}, "X-Forwarded-Method": {"GET"}}},
	{name: "write as sent", method: "POST", path: "/customer/account/edit/"},
	{name: "leading double slash", method: "POST", path: "//customer/account/password/"},
	{name: "letter case", method: "POST", path: "/Customer/Account/Password/"},
	// Java's equalsIgnoreCase reads "ı" as "i"; String.toUpperCase reads
	// "ß" as "SS".
	{name: "dotless i", method: "POST", path: "/customer/account/ed%C4%B1t/"},
	{name: "sharp s", method: "POST", path: "/customer/account/pa%C3%9Fword/"},
	{name: "path parameter", method: "POST", path: "/customer/account/password;x/"},
	{name: "path parameter in first segment", method: "POST", path: "/customer;v=1/account/password/"},
	{name: "X-HTTP-Method-Override", method: "GET", path: "/customer/account/edit/", header: http.Header{"X-Http-Method-Override": {"POST"}}},
	{name: "X-Method-Override", method: "GET", path: "/customer/account/edit/", header: http.Header{"X-Method-Override": {"PUT"}}},
	{name: "_method in query", method: "GET", path: "/customer/account/edit/?_method=POST"},
	{name: "format suffix", method: "POST", path: "/customer/account/password.json"},
	{name: "html suffix", method: "POST", path: "/customer/account/password.html"},
	{name: "suffix in upper case", method: "POST", path: "/Customer/Account/Password.JSON"},
	{name: "payment with a suffix", method: "POST", path: "/customer/payment.json"},
	{name: "account edit with a suffix", method: "POST", path: "/customer/account/edit.json"},
	{name: "saved cards with a suffix", method: "GET", path: "/vault/cards.json"},
	{name: "PHP front controller", method: "POST", path: "/index.php/customer/account/password/"},
	{name: "long s", method: "POST", path: "/customer/account/pa%C5%BFsword/"},
	// Compatibility forms (NFKC): IIS's best-fit mapping and routers that
	// normalize Unicode read fullwidth letters as letters, and fullwidth
	// solidus, full stops and dot leaders as path syntax.
	{name: "fullwidth letters", method: "POST", path: "/%EF%BD%83%EF%BD%95%EF%BD%93%EF%BD%94%EF%BD%8F%EF%BD%8D%EF%BD%85%EF%BD%92/account/password/"},
	{name: "fullwidth solidus", method: "POST", path: "/customer/account%EF%BC%8Fpassword/"},
	{name: "fullwidth reverse solidus", method: "POST", path: "/customer/account%EF%BC%BCpassword/"},
	{name: "fullwidth dot segment", method: "POST", path: "/catalog/%EF%BC%8E%EF%BC%8E/customer/account/password/"},
	{name: "two dot leader segment", method: "POST", path: "/catalog/%E2%80%A5/customer/account/password/"},
	{name: "PHP .method in query", method: "GET", path: "/customer/account/edit/?.method=POST"},
	{name: "PHP leading space in query", method: "GET", path: "/customer/account/edit/?%20_method=POST"},
	{name: "encoded # cutting the path", method: "POST", path: "/customer/account/password%23x"},
	{name: "encoded ? cutting the path", method: "POST", path: "/customer/account/password%3Fx"},
	{name: "REST password change", method: "PUT", path: "/rest/V1/customers/me/password"},
	{name: "REST account edit with a store code", method: "PUT", path: "/rest/default/V1/customers/me"},
	{name: "REST account edit through the front controller", method: "PUT", path: "/index.php/rest/all/V1/Customers/Me"},
	// CodeIgniter routes a path carried in the query: /?/x and
	// /index.php?/x run /x.
	{name: "path carried in the query", method: "GET", path: "/?/customer/account/password/"},
	{name: "path carried in the query after the front controller", method: "GET", path: "/index.php?/customer/account/password/"},
	{name: "path carried in the query after the front controller's directory", method: "GET", path: "/index.php/?/Customer/Account/Password"},
	{name: "path carried in the query, encoded", method: "GET", path: "/?%2Fvault/cards/"},
	// With uri_protocol QUERY_STRING it routes on the whole query:
	// /index.php?x runs x.
	{name: "route as the whole query", method: "GET", path: "/index.php?customer/account/password/"},
	{name: "route as the whole query at the root", method: "GET", path: "/?customer/account/password/"},
	{name: "route as the whole query, encoded", method: "GET", path: "/index.php?vault%2Fcards%2F"},
	{name: "one-segment route alias as the whole query", method: "GET", path: "/index.php?password"},
	// The proxies send the check no body: a GraphQL POST cannot be judged.
	{name: "GraphQL POST", method: "POST", path: "/graphql"},
	{name: "GraphQL mutation in the URL", method: "GET", path: "/graphql?query=mutation%7B%75pdateCustomerV2(input%3A%7B%7D)%7Bcustomer%7Bid%7D%7D%7D"},
}

// anonymousTricks aim at the application through spellings of Deputy's
// own paths, which never open an application route, and at the account
// pages through a path carried in the query of a public one.
var anonymousTricks = []trick{
	{name: "any method under /deputy/", method: "DELETE", path: "/deputy/x/admin"},
	{name: "upper case Deputy section", method: "POST", path: "/DEPUTY/customer/account/password/"},
	{name: "mixed case Deputy API", method: "GET", path: "/Deputy/v1/anything"},
	{name: "keys section in upper case", method: "POST", path: "/.WELL-KNOWN/x"},
	{name: "account page carried in the query", method: "GET", path: "/?/customer/account"},
	{name: "cart carried in the query", method: "GET", path: "/?/checkout/cart"},
	{name: "account page as the whole query", method: "GET", path: "/index.php?customer/account"},
	// route_dirs makes a check's work grow with segments times length.
	{name: "public page with more segments than check.max_path_segments", method: "GET",
		path: "/catalog" + strings.Repeat("/a", authz.DefaultMaxPathSegments)},
	{name: "public page of long segments past check.max_route_dirs_bytes", method: "GET",
		path: "/catalog" + strings.Repeat("/aaaaaaaa", authz.DefaultMaxPathSegments-1)},
}

// partnerTricks aim at contacts, which need full_admin, and at creating
// service requests, which needs create, with a look grant.
var partnerTricks = []trick{
	{name: "as sent", method: "POST", path: "/customers/acme/contacts"},
	{name: "read as sent", method: "GET", path: "/customers/acme/contacts"},
	{name: "percent-encoded letter", method: "GET", path: "/customers/acme/c%6Fntacts"},
	{name: "create as sent", method: "POST", path: "/customers/acme/service-requests"},
	{name: "client X-Original-URI", method: "POST", path: "/customers/acme/service-requests",
		header: http.Header{"X-Original-Uri": {"/customers/acme/service-requests/1"}, "X-Original-Method": {"GET"}}},
	{name: "client X-Forwarded-Uri", method: "POST", path: "/customers/acme/service-requests",
		header: http.Header{"X-Forwarded-Uri": {"/customers/acme/service-requests/1"}, "X-Forwarded-Method": {"GET"}}},
	{name: "leading double slash", method: "GET", path: "//customers/acme/contacts"},
	{name: "leading double slash naming a section", method: "GET", path: "//contacts/service-requests/1"},
	{name: "letter case", method: "GET", path: "/customers/acme/Contacts"},
	{name: "path parameter", method: "GET", path: "/customers/acme/contacts;x"},
	{name: "X-HTTP-Method-Override", method: "GET", path: "/customers/acme/service-requests", header: http.Header{"X-Http-Method-Override": {"POST"}}},
	{name: "_method in query", method: "GET", path: "/customers/acme/service-requests?_method=POST"},
	{name: "customer in another case behind blank segments", method: "GET", path: "/customers/ACME/service-requests/acme/%20/%20"},
	{name: "customer in another case behind dot segments", method: "GET", path: "/customers/ACME/service-requests/acme/.../..."},
	{name: "another PHP script before a readable route", method: "GET", path: "/export.php/customers/acme/service-requests/1"},
	{name: "another PHP script inside a readable route", method: "GET", path: "/customers/acme/contacts.php/service-requests/1"},
	{name: "contacts carried in the query", method: "GET", path: "/?/customers/acme/contacts"},
	{name: "contacts as the whole query", method: "GET", path: "/index.php?customers/acme/contacts"},
}

// Every trick is denied through the proxy, and never reaches the
// application, while the genuine requests of the same caller pass.
func TestTricksThroughProxy(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)

			session, _, _ := impersonate(t, d, base)
			staff := http.Header{"Cookie": {"deputy_session=" + session.Value}}
			partner := partnerGrant(t, d, base, "look")

			genuine := []struct {
				name, method, path string
				h                  http.Header
			}{
				{"impersonated account page", "GET", "/customer/account", staff},
				{"impersonated account edit form", "GET", "/customer/account/edit/", staff},
				{"impersonated GraphQL query in the URL", "GET", "/graphql?query=%7Bcart(cart_id%3A%22c1%22)%7Bid%7D%7D", staff},
				{"partner reads a service request", "GET", "/customers/acme/service-requests/42", partner},
				{"partner lists service requests", "GET", "/customers/acme/service-requests", partner},
			}
			for _, g := range genuine {
				t.Run("genuine/"+g.name, func(t *testing.T) {
					resp, body := call(t, g.method, base+g.path, g.h, nil)
					if resp.StatusCode != http.StatusOK || resp.Header.Get("x-upstream") != "app" {
						t.Fatalf("%s %s: %d %s", g.method, g.path, resp.StatusCode, body)
					}
				})
			}
			for _, set := range []struct {
				name   string
				h      http.Header
				tricks []trick
			}{
				{"impersonation", staff, impersonationTricks},
				{"partner-look", partner, partnerTricks},
				{"anonymous", nil, anonymousTricks},
			} {
				for _, tr := range set.tricks {
					t.Run(set.name+"/"+tr.name, func(t *testing.T) {
						h := http.Header{}
						for k, v := range set.h {
							h[k] = v
						}
						for k, v := range tr.header {
							h[k] = v
						}
						before := app.count()
						resp, body := call(t, tr.method, base+tr.path, h, nil)
						if resp.StatusCode < 400 || app.count() != before {
							t.Errorf("%s %s reached the application: %d %s", tr.method, tr.path, resp.StatusCode, body)
						}
					})
				}
			}
		})
	}
}

// partnerGrant has partner user pat (org partnerco) granted level over
// customer acme by its contact manager, as in the README, and returns the
// headers pat sends to act for acme.
func partnerGrant(t *testing.T, d *deputy, base, level string) http.Header {
	t.Helper()
	pat := bearer(d.token(t, "--sub", "pat", "--org", "partnerco"))
	cora := bearer(d.token(t, "--sub", "cora", "--org", "acme", "--roles", "contact_manager"))
	b := mustStatus(t, base, "POST", "/deputy/v1/partner/requests", pat, map[string]any{
		"customer": "acme", "contact_email": "cora@acme.example", "expiry_days": 30, "level": level, "scope": "organisation",
	}, http.StatusCreated)
	var req struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &req); err != nil || req.ID == "" {
		t.Fatalf("partner request: %v: %s", err, b)
	}
	mustStatus(t, base, "POST", "/deputy/v1/partner/requests/"+req.ID+"/approve", cora, nil, http.StatusOK)
	pat.Set("X-On-Behalf-Of", "acme")
	return pat
}

// nginx and Caddy send the check no body: a POST whose body may carry
// _method is decided as every method an override could name, so a
// partner with update on service requests cannot DELETE one with a form
// field, while a body-less POST (the proxies state the original length)
// is decided as the POST it is. Query carriers match in any case (Slim
// reads _METHOD, ASP.NET X-HTTP-Method-Override from the query string).
// A query field name holding a NUL (PHP reads "_method\x00x" as
// "_method") is refused, and so is a query of more fields than Go reads.
func TestBodyOverridesThroughProxy(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)
			partner := partnerGrant(t, d, base, "update")
			for _, tc := range []struct {
				name, query, contentType, body string
				chunked, reaches               bool
			}{
				{name: "body-less POST", reaches: true},
				{name: "_method in query", query: "?_method=DELETE"},
				{name: "_METHOD in query", query: "?_METHOD=DELETE"},
				{name: "X-HTTP-Method-Override in query", query: "?X-HTTP-Method-Override=DELETE"},
				{name: "x-http-method-override in query", query: "?x-http-method-override=DELETE"},
				{name: "_method and a NUL in query", query: "?_method%00=DELETE"},
				{name: "_method, a NUL and more in query", query: "?_method%00x=DELETE"},
				// Go's parser reads none of more than 10000 fields; PHP
				// reads the first 1000.
				{name: "_method before 10000 more fields", query: "?_method=DELETE" + strings.Repeat("&a=1", 10000)},
				{name: "form _method", contentType: "application/x-www-form-urlencoded", body: "_method=DELETE"},
				{name: "form _method, broken parameter", contentType: "application/x-www-form-urlencoded; charset", body: "_method=DELETE"},
				{name: "no content type", body: "_method=DELETE"},
				{name: "text/json", contentType: "text/json", body: `{"_method":"DELETE"}`},
				{name: "chunked form", contentType: "application/x-www-form-urlencoded", body: "_method=DELETE", chunked: true},
				{name: "a body frameworks do not read", contentType: "application/octet-stream", body: "_method=DELETE", reaches: true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp, b, reached := postAsPartner(t, http.DefaultClient, app, base+"/customers/acme/service-requests/42"+tc.query, partner, tc.contentType, tc.body, tc.chunked)
					if reached != tc.reaches || reached != (resp.StatusCode == http.StatusOK) {
						t.Errorf("reached the application %v (status %d %s), want %v", reached, resp.StatusCode, b, tc.reaches)
					}
				})
			}
		})
	}
}

// postAsPartner POSTs body (none when empty) of contentType to url with
// the partner's headers, through client, and returns the response, its
// body and whether the application was reached. A body of unknownLength
// is sent without content-length: chunked over HTTP/1.1, in DATA frames
// alone over HTTP/2.
func postAsPartner(t *testing.T, client *http.Client, app *upstream, url string, partner http.Header, contentType, body string, unknownLength bool) (*http.Response, []byte, bool) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
		if unknownLength {
			rd = io.MultiReader(rd) // hides the length from the client
		}
	}
	req, err := http.NewRequest("POST", url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = partner.Clone()
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	before := app.count()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b, app.count() != before
}

// nginx and Caddy pass a "#" in the request target on to the application,
// whose query parser reads what follows as more parameters (Go's
// ParseRequestURI keeps it in RawQuery; so does nginx's $args for PHP).
// Decided without it, _method=POST would pass as a GET: a target holding
// a "#" never reaches the application.
func TestFragmentInTheQueryThroughProxy(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)
			session, _, _ := impersonate(t, d, base)
			staff := http.Header{"Cookie": {"deputy_session=" + session.Value}}
			if resp, body := callRaw(t, base, "/customer/account/edit/?x=1", staff); resp.StatusCode != http.StatusOK || resp.Header.Get("x-upstream") != "app" {
				t.Fatalf("the account edit form is refused: %d %s", resp.StatusCode, body)
			}
			for _, target := range []string{
				"/customer/account/edit/?x=1#&_method=POST",
				"/graphql?x=1#&query=mutation%7BupdateCustomerV2(input%3A%7B%7D)%7Bcustomer%7Bid%7D%7D%7D",
				"/customer/account/edit/?#_method=POST",
			} {
				before := app.count()
				resp, body := callRaw(t, base, target, staff)
				if resp.StatusCode < 400 || app.count() != before {
					t.Errorf("GET %s reached the application: %d %s", target, resp.StatusCode, body)
				}
			}
		})
	}
}
