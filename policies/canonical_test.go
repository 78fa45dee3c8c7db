package policies_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// The shipped policies, through the real check pipeline, against each
// trick an upstream would serve as the route it names: the canonicaliser
// and the rules must agree on what that route is.
func TestShippedPoliciesDecideTheCanonicalRequest(t *testing.T) {
	e := shippedEngine(t)
	session := &sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "s1", Actor: "staff-1", ActorRoles: []string{"support_agent"}, Subject: "c42"}
	look := &sidecar.Delegation{Mode: sidecar.ModePartner, ID: "g1", Actor: "pat", Subject: "acme", Level: "look"}
	update := &sidecar.Delegation{Mode: sidecar.ModePartner, ID: "g2", Actor: "pat", Subject: "acme", Level: "update"}
	form := map[string]string{"content-type": "application/x-www-form-urlencoded"}
	mp := map[string]string{"content-type": "multipart/form-data; boundary=BBB"}
	mpPart := func(disposition, value string) string {
		return "--BBB\r\nContent-Disposition: " + disposition + "\r\n\r\n" + value + "\r\n"
	}
	const sr = "/customers/acme/service-requests/42"
	for _, tc := range []struct {
		name    string
		del     *sidecar.Delegation
		method  string
		path    string
		headers map[string]string
		body    string
		allowed bool
		status  int
	}{
		{"impersonation: control", session, "GET", "/catalog/shoes", nil, "", true, 200},
		{"impersonation: password page", session, "GET", "/customer/account/password/", nil, "", false, 403},
		{"impersonation: leading //", session, "POST", "//customer/account/password/", nil, "", false, 403},
		{"impersonation: case", session, "POST", "/Customer/Account/Password/", nil, "", false, 403},
		{"impersonation: ;param", session, "POST", "/customer/account/password;x/", nil, "", false, 403},
		{"impersonation: encoded letters", session, "POST", "/%63ustomer/%61ccount/password", nil, "", false, 403},
		{"impersonation: encoded slash", session, "POST", "/customer/account%2Fpassword", nil, "", false, 400},
		{"impersonation: encoded # cutting the path upstream", session, "POST", "/customer/account/password%23x", nil, "", false, 400},
		{"impersonation: encoded ? cutting the path upstream", session, "POST", "/customer/account/password%3Fx", nil, "", false, 400},
		{"impersonation: double-encoded dots", session, "GET", "/catalog/%252e%252e/customer/account/password", nil, "", false, 400},
		{"impersonation: backslash", session, "GET", "/catalog\\..\\customer/account/password", nil, "", false, 400},
		{"impersonation: .json format", session, "POST", "/customer/account/password.json", nil, "", false, 403},
		{"impersonation: .html format", session, "POST", "/customer/account/password.html", nil, "", false, 403},
		{"impersonation: .JSON in upper case", session, "POST", "/Customer/Account/Password.JSON", nil, "", false, 403},
		{"impersonation: payment.json", session, "POST", "/customer/payment.json", nil, "", false, 403},
		{"impersonation: edit.json", session, "POST", "/customer/account/edit.json", nil, "", false, 403},
		{"impersonation: cards.json", session, "GET", "/vault/cards.json", nil, "", false, 403},
		{"impersonation: PHP front controller", session, "POST", "/index.php/customer/account/password/", nil, "", false, 403},
		{"impersonation: long s folds to s", session, "POST", "/customer/account/pa%C5%BFsword/", nil, "", false, 403},
		{"impersonation: Kelvin sign folds to k", session, "GET", "/vault/cards/%E2%84%AA", nil, "", false, 403},
		{"impersonation: fullwidth letters", session, "GET", "/\uff43\uff55\uff53\uff54\uff4f\uff4d\uff45\uff52/account/password", nil, "", false, 403},
		{"impersonation: encoded fullwidth letters", session, "POST", "/%EF%BD%83ustomer/%EF%BC%A1ccount/password", nil, "", false, 403},
		{"impersonation: ideographic space after the page", session, "GET", "/vault/cards%E3%80%80", nil, "", false, 403},
		{"impersonation: fullwidth solidus", session, "POST", "/customer/account\uff0fpassword", nil, "", false, 400},
		{"impersonation: encoded fullwidth solidus", session, "POST", "/customer/account%EF%BC%8Fpassword", nil, "", false, 400},
		{"impersonation: fullwidth reverse solidus", session, "POST", "/customer/account%EF%BC%BCpassword", nil, "", false, 400},
		{"impersonation: fullwidth dot segment", session, "GET", "/catalog/%EF%BC%8E%EF%BC%8E/customer/account/password", nil, "", false, 400},
		{"impersonation: two dot leader", session, "GET", "/catalog/%E2%80%A5/vault/cards", nil, "", false, 400},
		{"impersonation: one dot leaders", session, "GET", "/catalog/\u2024\u2024/vault/cards", nil, "", false, 400},
		{"impersonation: small full stops", session, "GET", "/catalog/%EF%B9%92%EF%B9%92/vault/cards", nil, "", false, 400},
		{"impersonation: a page with an accent", session, "GET", "/catalog/caf%C3%A9", nil, "", true, 200},
		{"impersonation: store code", session, "POST", "/default/customer/account/editPost/", nil, "", false, 403},
		{"impersonation: locale", session, "GET", "/fr/customer/account/password/", nil, "", false, 403},
		{"impersonation: mount point, front controller and store code", session, "POST", "/shop/index.php/fr/customer/payment/add", nil, "", false, 403},
		{"impersonation: store code and control", session, "GET", "/fr/catalog/shoes", nil, "", true, 200},
		{"impersonation: a page with a suffix", session, "GET", "/catalog/shoes.json", nil, "", true, 200},
		{"impersonation: account edit page", session, "GET", "/customer/account/edit", nil, "", true, 200},
		{"impersonation: override header", session, "GET", "/customer/account/edit", map[string]string{"x-http-method-override": "POST"}, "", false, 403},
		{"impersonation: X-HTTP-Method", session, "GET", "/customer/account/edit", map[string]string{"x-http-method": "patch"}, "", false, 403},
		{"impersonation: _method in query", session, "GET", "/customer/payment/1?_method=DELETE", nil, "", false, 403},
		{"impersonation: _method in form", session, "GET", "/customer/payment/1", form, "_method=PUT", false, 403},
		{"partner look: control", look, "GET", "/service-requests/sr-1", nil, "", true, 200},
		{"partner look: leading // on full_admin", look, "GET", "//contacts/c-1", nil, "", false, 403},
		{"partner look: case on full_admin", look, "GET", "/Contacts/c-1", nil, "", false, 403},
		{"partner look: override PATCH", look, "GET", "/service-requests/sr-1", map[string]string{"x-method-override": "PATCH"}, "", false, 403},
		{"partner look: X_HTTP_Method_Override", look, "GET", "/service-requests/sr-1", map[string]string{"X_HTTP_Method_Override": "DELETE"}, "", false, 403},
		{"partner look: x-http_method-override", look, "GET", "/service-requests/sr-1", map[string]string{"x-http_method-override": "PUT"}, "", false, 403},
		{"partner look: front controller before the template on full_admin", look, "GET", "/index.php/customers/acme/contacts", nil, "", false, 403},
		{"partner look: long s in the template on full_admin", look, "GET", "/cu%C5%BFtomers/acme/contacts/c-1", nil, "", false, 403},
		{"partner look: another customer behind a front controller", look, "GET", "/index.php/customers/globex/service-requests", nil, "", false, 403},
		{"partner update: POST", update, "POST", sr, nil, "", true, 200},
		{"partner update: customer in another case", update, "PATCH", "/customers/ACME/service-requests/sr-1", nil, "", false, 403},
		{"partner update: another case, blank segments after", update, "PATCH", "/customers/ACME/service-requests/acme/%20/%20", nil, "", false, 403},
		{"partner update: another case, dot segments after", update, "PATCH", "/customers/ACME/service-requests/acme/.../...", nil, "", false, 403},
		{"partner update: _method=DELETE in query", update, "POST", sr + "?_method=DELETE", nil, "", false, 403},
		{"partner update: NUL ending _method in query", update, "POST", sr + "?_method%00=DELETE", nil, "", false, 400},
		{"partner update: NUL inside _method in query", update, "POST", sr + "?_method%00x=DELETE", nil, "", false, 400},
		{"partner update: NUL inside _method in a form", update, "POST", sr, form, "_method%00x=DELETE", false, 400},
		{"partner update: JSON _method array", update, "POST", sr, map[string]string{"content-type": "application/json"}, `{"_method":["DELETE"]}`, false, 403},
		{"partner update: vnd.api+json _method array", update, "POST", sr, map[string]string{"content-type": "application/vnd.api+json"}, `{"_method":["DELETE"]}`, false, 403},
		{"partner update: multipart upload", update, "POST", sr, mp, mpPart(`form-data; name="note"`, "hello") + "--BBB--\r\n", true, 200},
		{"partner update: multipart single quotes", update, "POST", sr, mp, mpPart(`form-data; name='_method'`, "DELETE") + "--BBB--\r\n", false, 403},
		{"partner update: multipart nested boundary", update, "POST", sr, map[string]string{"content-type": "multipart/form-data; xboundary=AAA; boundary=BBB"},
			mpPart(`form-data; name="x"`, "--AAA\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--AAA--\r\n") + "--BBB--\r\n", false, 403},
		{"partner update: multipart repeated name", update, "POST", sr, mp, mpPart(`form-data; name="x"; name="_method"`, "DELETE") + "--BBB--\r\n", false, 403},
		{"partner update: multipart part after close", update, "POST", sr, mp, mpPart(`form-data; name="x"`, "1") + "--BBB--\r\n" + mpPart(`form-data; name="_method"`, "DELETE") + "--BBB--\r\n", false, 403},
		{"partner update: multipart filename*", update, "POST", sr, mp, mpPart(`form-data; name="_method"; filename*=UTF-8''a.txt`, "DELETE") + "--BBB--\r\n", false, 403},
		{"partner update: multipart attachment", update, "POST", sr, mp, mpPart(`attachment; name="_method"`, "DELETE") + "--BBB--\r\n", false, 403},
		{"anonymous: leading // on a signed-in route", nil, "GET", "//customer/account", nil, "", false, 401},
		{"anonymous: case on a signed-in route", nil, "GET", "/CUSTOMER/account", nil, "", false, 401},
		{"anonymous: override on a public route", nil, "GET", "/catalog/shoes?_method=POST", nil, "", false, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []authz.Option{}
			if tc.del != nil {
				opts = append(opts, authz.WithResolvers(sidecar.DelegationResolverFunc(
					func(context.Context, *sidecar.Request, *sidecar.Identity) (*sidecar.Delegation, error) {
						return tc.del, nil
					})))
			}
			resp := authz.New(e, opts...).Check(context.Background(), checkRequest(t, tc.method, tc.path, tc.headers, tc.body))
			status := resp.HTTPStatus
			if resp.Allowed {
				status = 200
			}
			if resp.Allowed != tc.allowed || status != tc.status {
				t.Errorf("allowed %v status %d (%s), want %v %d", resp.Allowed, status, resp.Reason, tc.allowed, tc.status)
			}
		})
	}
}

// A reseller acting for one customer must not reach another customer of
// any domain by a spelling of the customers/{customer} template that an
// upstream router (Symfony's getPathInfo, IIS, a Unicode-folding router)
// serves as /customers/globex/cases.
func TestShippedPoliciesKeepResellersToTheirCustomer(t *testing.T) {
	e := shippedEngine(t)
	staff := verifierFunc(func(context.Context, *sidecar.Request) (*sidecar.Identity, error) {
		return &sidecar.Identity{Subject: "rita", Domain: "shop-a.example", Roles: []string{"reseller_admin"}}, nil
	})
	acme := sidecar.DelegationResolverFunc(func(context.Context, *sidecar.Request, *sidecar.Identity) (*sidecar.Delegation, error) {
		return &sidecar.Delegation{Mode: sidecar.ModeReseller, ID: "a1", Actor: "rita", Subject: "acme", Domain: "shop-a.example"}, nil
	})
	p := authz.New(e, authz.WithVerifier(staff), authz.WithResolvers(acme))
	for _, tc := range []struct {
		path    string
		allowed bool
	}{
		{"/customers/acme/cases", true},
		{"/index.php/customers/acme/cases", true},
		{"/customers/globex/cases", false},
		{"/index.php/customers/globex/cases", false},
		{"/customers./globex/cases", false},
		{"/customers%20/globex/cases", false},
		{"/cu%C5%BFtomers/globex/cases", false},
		{"/customers/globex./cases", false},
		{"/customers/ACME/cases", false},
		// Blank segments after the customer must not line a later "acme"
		// up with the customer's place.
		{"/customers/ACME/orders/acme/%20/%20", false},
		{"/customers/ACME/orders/acme/.../...", false},
		{"/customers/ACME/orders/acme//%20/%20/", false},
		// A blank segment is no segment: the customer keeps its place.
		{"/customers/acme/%20/cases", true},
		{"/customers/index.php/acme/cases", true},
		{"/customers/index.php/globex/cases", false},
		// A locale, a store code or a mount point in front of the template.
		{"/fr/customers/globex/cases", false},
		{"/portal/index.php/en/customers/globex/cases", false},
		{"/fr/customers/acme/cases", true},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp := p.Check(context.Background(), checkRequest(t, "GET", tc.path, nil, ""))
			if resp.Allowed != tc.allowed || !tc.allowed && resp.HTTPStatus != 403 {
				t.Errorf("allowed %v status %d (%s), want allowed %v", resp.Allowed, resp.HTTPStatus, resp.Reason, tc.allowed)
			}
		})
	}
}

type verifierFunc func(context.Context, *sidecar.Request) (*sidecar.Identity, error)

func (f verifierFunc) Verify(ctx context.Context, r *sidecar.Request) (*sidecar.Identity, error) {
	return f(ctx, r)
}

// shippedEngine is a policy engine running the policies as shipped.
func shippedEngine(t *testing.T) *policy.Engine {
	t.Helper()
	set, err := policy.LoadPaths([]string{"."})
	if err != nil {
		t.Fatal(err)
	}
	e := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err := e.Activate(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	return e
}

func checkRequest(t *testing.T, method, path string, headers map[string]string, body string) *authv3.CheckRequest {
	t.Helper()
	js, err := json.Marshal(map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
		"method": method, "path": path, "headers": headers, "body": body,
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(js, &req); err != nil {
		t.Fatal(err)
	}
	return &req
}
