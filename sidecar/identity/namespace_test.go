package identity_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/logtest"
)

const partnerIssuer = "https://partner.example"

// twoIssuers trusts the storefront's issuer (testIssuer, no namespace)
// and a partner issuer in the namespace "partner", each with its own key.
func twoIssuers(t *testing.T) (v *identity.Verifier, shop, partner testKey) {
	t.Helper()
	return twoIssuersIn(t, "partner")
}

// twoIssuersIn is twoIssuers with the partner issuer's namespace ns.
func twoIssuersIn(t *testing.T, ns string) (v *identity.Verifier, shop, partner testKey) {
	t.Helper()
	_, shop, _, partner = keys(t)
	v, err := identity.New(identity.Config{
		Issuers: []identity.IssuerConfig{
			{Issuer: testIssuer, JWKSFile: writeFile(t, "shop.json", jwks(shop))},
			{Issuer: partnerIssuer, JWKSFile: writeFile(t, "partner.json", jwks(partner)), Namespace: ns},
		},
		Audiences: []string{testAudience},
	}, identity.WithClock(newClock(epoch).Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v, shop, partner
}

// The same sub, org and domain from two issuers are two people: the
// namespaced issuer's names read as <namespace>:<value> wherever Deputy
// keys state or policy by them, while the claims stay as signed.
func TestNamespacedIssuerNamesAreItsOwn(t *testing.T) {
	v, shop, partner := twoIssuers(t)
	claims := with(goodClaims(epoch), "sub", "cust1", "org", "acme", "domain", "eu")
	cases := []struct {
		name                     string
		key                      testKey
		claims                   map[string]any
		sub, org, domain, issuer string
	}{
		{name: "un-namespaced issuer", key: shop, claims: claims, sub: "cust1", org: "acme", domain: "eu", issuer: testIssuer},
		{name: "namespaced issuer", key: partner, claims: with(claims, "iss", partnerIssuer), sub: "partner:cust1", org: "partner:acme", domain: "partner:eu", issuer: partnerIssuer},
		{name: "namespaced issuer, no org or domain", key: partner, claims: with(claims, "iss", partnerIssuer, "org", nil, "domain", nil), sub: "partner:cust1", issuer: partnerIssuer},
		// A value that merely looks namespaced is one more value of the
		// namespaced issuer.
		{name: "namespaced issuer, colon in sub", key: partner, claims: with(claims, "iss", partnerIssuer, "sub", "partner:x"), sub: "partner:partner:x", org: "partner:acme", domain: "partner:eu", issuer: partnerIssuer},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.VerifyToken(context.Background(), sign(t, tc.key, tc.key.kid, tc.claims))
			if err != nil {
				t.Fatal(err)
			}
			if id.Subject != tc.sub || id.Org != tc.org || id.Domain != tc.domain || id.Issuer != tc.issuer {
				t.Fatalf("identity = sub %q org %q domain %q issuer %q, want %q %q %q %q",
					id.Subject, id.Org, id.Domain, id.Issuer, tc.sub, tc.org, tc.domain, tc.issuer)
			}
			for _, name := range []string{"sub", "org", "domain"} {
				if id.Claims[name] != tc.claims[name] {
					t.Errorf("claims[%s] = %v, want %v as signed", name, id.Claims[name], tc.claims[name])
				}
			}
		})
	}
}

// The issuer without a namespace cannot spell another issuer's people: a
// name of its starting with a configured namespace and a colon is refused.
func TestUnNamespacedIssuerCannotSpellANamespace(t *testing.T) {
	v, shop, _ := twoIssuers(t)
	for _, tc := range []struct {
		name   string
		claims map[string]any
		reason string
	}{
		{name: "sub in the namespace", claims: with(goodClaims(epoch), "sub", "partner:mallory"), reason: identity.ReasonReservedNamespace},
		{name: "org in the namespace", claims: with(goodClaims(epoch), "org", "partner:acme"), reason: identity.ReasonReservedNamespace},
		{name: "domain in the namespace", claims: with(goodClaims(epoch), "domain", "partner:eu"), reason: identity.ReasonReservedNamespace},
		// A case-insensitive upstream reads these as the namespace's people.
		{name: "sub in the namespace in capitals", claims: with(goodClaims(epoch), "sub", "PARTNER:mallory"), reason: identity.ReasonReservedNamespace},
		{name: "org in the namespace, capitalized", claims: with(goodClaims(epoch), "org", "Partner:acme"), reason: identity.ReasonReservedNamespace},
		{name: "domain in the namespace, one capital", claims: with(goodClaims(epoch), "domain", "parTner:eu"), reason: identity.ReasonReservedNamespace},
		{name: "sub beginning with the namespace, no colon", claims: with(goodClaims(epoch), "sub", "partnerco")},
		{name: "sub in an unconfigured namespace", claims: with(goodClaims(epoch), "sub", "other:x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.VerifyToken(context.Background(), sign(t, shop, shop.kid, tc.claims))
			if got := reasonOf(t, err); got != tc.reason {
				t.Fatalf("reason = %q, want %q (%v)", got, tc.reason, err)
			}
			if tc.reason == "" && id.Subject != tc.claims["sub"] {
				t.Fatalf("sub = %q, want %q", id.Subject, tc.claims["sub"])
			}
		})
	}
}

// Upstreams read names case-insensitively beyond ASCII, each its own
// way: Go's strings.EqualFold reads U+017F (long s) as s and U+212A
// (Kelvin) as k, Java's equalsIgnoreCase U+0131 and U+0130 as i, full
// case folding U+FB00 as ff, MySQL's default collation U+015F as s. The
// issuer without a namespace cannot spell another issuer's people that
// way either: a non-ASCII character where its name still spells a
// namespace is refused. A name that parts from every namespace in ASCII
// first keeps any characters after.
func TestUnNamespacedIssuerCannotSpellANamespaceBeyondASCII(t *testing.T) {
	v, shop, _ := twoIssuersIn(t, "kiosk-staff")
	for _, tc := range []struct {
		name, claim, value string
		reserved           bool
	}{
		{"long s", "sub", "kio\u017Fk-staff:mallory", true},
		{"long s, capitals", "sub", "KIO\u017FK-STAFF:mallory", true},
		{"Kelvin sign", "sub", "\u212Aiosk-staff:mallory", true},
		{"dotless i", "org", "k\u0131osk-staff:acme", true},
		{"dotted capital I", "domain", "K\u0130OSK-STAFF:eu", true},
		{"ff ligature", "sub", "kiosk-sta\uFB00:mallory", true},
		{"s with cedilla", "sub", "kiosk-\u015Ftaff:mallory", true},
		{"soft hyphen", "sub", "kiosk\u00AD-staff:mallory", true},
		// White space an HTTP parser strips before the application reads
		// the header (refused for every issuer as malformed).
		{"leading space", "sub", " kiosk-staff:mallory", true},
		{"leading space in org", "org", " kiosk-staff:acme", true},
		{"parts in ASCII first", "sub", "kiosk-staffer:jos\u00E9", false},
		{"another name", "sub", "jos\u00E9", false},
		{"the namespace without a colon", "sub", "kiosk-staff", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claims := with(goodClaims(epoch), tc.claim, tc.value)
			id, err := v.VerifyToken(context.Background(), sign(t, shop, shop.kid, claims))
			want := ""
			if tc.reserved {
				want = identity.ReasonReservedNamespace
			}
			if strings.TrimSpace(tc.value) != tc.value {
				want = identity.ReasonMalformed
			}
			if got := reasonOf(t, err); got != want {
				t.Fatalf("%s %q: reason %q, want %q (%v)", tc.claim, tc.value, got, want, err)
			}
			if !tc.reserved && id.Subject != tc.value {
				t.Fatalf("sub = %q, want %q", id.Subject, tc.value)
			}
		})
	}
}

// One issuer without a namespace reads every name as before: no prefix,
// and no name is reserved.
func TestSingleIssuerNamesUnchanged(t *testing.T) {
	v := newFileVerifier(t, newClock(epoch))
	_, ek, _, _ := keys(t)
	claims := with(goodClaims(epoch), "sub", "partner:cust1", "org", "acme")
	id, err := v.VerifyToken(context.Background(), sign(t, ek, ek.kid, claims))
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "partner:cust1" || id.Org != "acme" || id.Domain != "shop.example.com" {
		t.Fatalf("identity = %+v", *id)
	}
}

// More than one trusted issuer needs namespaces on all but one of them,
// distinct and spelled as tokens, or the same sub of two issuers would be
// one person.
func TestConfigNamespaces(t *testing.T) {
	a := identity.IssuerConfig{Issuer: "https://shop.example", JWKSURL: "https://shop.example/jwks"}
	b := identity.IssuerConfig{Issuer: partnerIssuer, JWKSURL: "https://partner.example/jwks"}
	c := identity.IssuerConfig{Issuer: "https://third.example", JWKSURL: "https://third.example/jwks"}
	ns := func(is identity.IssuerConfig, n string) identity.IssuerConfig { is.Namespace = n; return is }
	dev := identity.DevConfig{Enabled: true}
	cases := []struct {
		name  string
		cfg   identity.Config
		field string
	}{
		{name: "one issuer", cfg: identity.Config{Issuers: []identity.IssuerConfig{a}}},
		{name: "one issuer, namespaced", cfg: identity.Config{Issuers: []identity.IssuerConfig{ns(a, "shop")}}},
		{name: "one issuer URL", cfg: identity.Config{IssuerURLs: []string{"https://shop.example"}}},
		{name: "two issuers, one namespaced", cfg: identity.Config{Issuers: []identity.IssuerConfig{a, ns(b, "partner")}}},
		{name: "two issuers, both namespaced", cfg: identity.Config{Issuers: []identity.IssuerConfig{ns(a, "shop"), ns(b, "partner")}}},
		{name: "issuer URL beside a namespaced issuer", cfg: identity.Config{IssuerURLs: []string{"https://shop.example"}, Issuers: []identity.IssuerConfig{ns(b, "partner")}}},
		{name: "two issuers, no namespace", cfg: identity.Config{Issuers: []identity.IssuerConfig{a, b}}, field: "identity.issuers[1].namespace"},
		{name: "three issuers, two without", cfg: identity.Config{Issuers: []identity.IssuerConfig{a, ns(b, "partner"), c}}, field: "identity.issuers[2].namespace"},
		{name: "two issuer URLs", cfg: identity.Config{IssuerURLs: []string{"https://shop.example", "https://partner.example"}}, field: "identity.issuer_urls[1]"},
		{name: "issuer URL beside an un-namespaced issuer", cfg: identity.Config{IssuerURLs: []string{"https://shop.example"}, Issuers: []identity.IssuerConfig{b}}, field: "identity.issuer_urls[0]"},
		{name: "duplicate namespace", cfg: identity.Config{Issuers: []identity.IssuerConfig{ns(a, "p"), ns(b, "p")}}, field: "identity.issuers[1].namespace"},
		{name: "duplicate namespace in letter case", cfg: identity.Config{Issuers: []identity.IssuerConfig{ns(a, "Partner"), ns(b, "partner")}}, field: "identity.issuers[1].namespace"},
		{name: "namespace with a colon", cfg: identity.Config{Issuers: []identity.IssuerConfig{a, ns(b, "partner:eu")}}, field: "identity.issuers[1].namespace"},
		{name: "namespace with a space", cfg: identity.Config{Issuers: []identity.IssuerConfig{a, ns(b, "par tner")}}, field: "identity.issuers[1].namespace"},
		{name: "namespace with a hash tag brace", cfg: identity.Config{Issuers: []identity.IssuerConfig{a, ns(b, "{p}")}}, field: "identity.issuers[1].namespace"},
		{name: "namespace on one issuer with a colon", cfg: identity.Config{Issuers: []identity.IssuerConfig{ns(a, "a:")}}, field: "identity.issuers[0].namespace"},
		// The dev issuer (dev mode) is one more issuer without a namespace
		// unless identity.dev.namespace gives it one.
		{name: "dev issuer alone", cfg: identity.Config{Dev: dev}},
		{name: "dev issuer beside a namespaced issuer", cfg: identity.Config{Dev: dev, Issuers: []identity.IssuerConfig{ns(a, "shop")}}},
		{name: "dev issuer beside an un-namespaced issuer", cfg: identity.Config{Dev: dev, Issuers: []identity.IssuerConfig{a}}, field: "identity.dev.namespace"},
		{name: "dev issuer beside an issuer URL", cfg: identity.Config{Dev: dev, IssuerURLs: []string{"https://shop.example"}}, field: "identity.dev.namespace"},
		{name: "namespaced dev issuer beside an issuer URL", cfg: identity.Config{Dev: identity.DevConfig{Enabled: true, Namespace: "dev"}, IssuerURLs: []string{"https://shop.example"}}},
		{name: "dev namespace taken", cfg: identity.Config{Dev: identity.DevConfig{Enabled: true, Namespace: "shop"}, Issuers: []identity.IssuerConfig{ns(a, "shop")}}, field: "identity.dev.namespace"},
		{name: "dev namespace with a colon", cfg: identity.Config{Dev: identity.DevConfig{Enabled: true, Namespace: "dev:"}}, field: "identity.dev.namespace"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := wantValidate(t, tc.cfg, tc.field); err != nil && !strings.Contains(err.Error(), "namespace") {
				t.Fatalf("err = %v: does not say what to set", err)
			}
		})
	}
}

// The dev issuer given a namespace reads its names in it, asserts only
// the roles listed for it like any namespaced issuer, and refuses nothing
// of the un-namespaced issuer beside it.
func TestDevIssuerNamespace(t *testing.T) {
	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	_, ek, _, _ := keys(t)
	v, err := identity.New(identity.Config{
		Dev:       identity.DevConfig{Enabled: true, Namespace: "dev", Roles: []string{"customer"}},
		Issuers:   []identity.IssuerConfig{{Issuer: testIssuer, JWKSFile: writeFile(t, "jwks.json", jwks(ek))}},
		Audiences: []string{testAudience},
	}, identity.WithDevIssuer(dev))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	tok, err := dev.Mint(identity.DevClaims{Subject: "alice", Org: "acme", Roles: []string{"admin", "customer"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.VerifyToken(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "dev:alice" || id.Org != "dev:acme" || strings.Join(id.Roles, ",") != "customer" {
		t.Fatalf("dev identity = %+v", *id)
	}
	_, err = v.VerifyToken(context.Background(), sign(t, ek, ek.kid, with(goodClaims(time.Now()), "sub", "dev:alice")))
	if got := reasonOf(t, err); got != identity.ReasonReservedNamespace {
		t.Fatalf("un-namespaced issuer spelling a dev identity: reason %q, want %q", got, identity.ReasonReservedNamespace)
	}
}

// An issuer with a namespace asserts only the roles and privileges listed
// for it (none by default): a partner IdP that could mint "admin" would
// act as the storefront's admin whatever its people are called. The
// issuer without a namespace asserts every role as signed.
func TestNamespacedIssuerAssertsOnlyListedRoles(t *testing.T) {
	_, shop, _, partner := keys(t)
	issuers := func(roles, privileges []string) []identity.IssuerConfig {
		return []identity.IssuerConfig{
			{Issuer: testIssuer, JWKSFile: writeFile(t, "shop.json", jwks(shop))},
			{Issuer: partnerIssuer, JWKSFile: writeFile(t, "partner.json", jwks(partner)), Namespace: "partner",
				Roles: roles, Privileges: privileges},
		}
	}
	claims := with(goodClaims(epoch), "roles", []any{"admin", "partner_user", "support_agent"},
		"privileges", []any{"view_customers", "access_support_cases"})
	cases := []struct {
		name              string
		roles, privileges []string
		key               testKey
		claims            map[string]any
		wantRoles         []string
		wantPrivileges    []string
	}{
		{name: "namespaced, nothing listed", key: partner, claims: with(claims, "iss", partnerIssuer),
			wantRoles: []string{}, wantPrivileges: []string{}},
		{name: "namespaced, one role listed", roles: []string{"partner_user"}, key: partner, claims: with(claims, "iss", partnerIssuer),
			wantRoles: []string{"partner_user"}, wantPrivileges: []string{}},
		{name: "namespaced, listed privilege", roles: []string{"partner_user", "reseller_admin"}, privileges: []string{"view_customers"},
			key: partner, claims: with(claims, "iss", partnerIssuer),
			wantRoles: []string{"partner_user"}, wantPrivileges: []string{"view_customers"}},
		{name: "namespaced, token without roles", roles: []string{"partner_user"}, key: partner,
			claims: with(claims, "iss", partnerIssuer, "roles", nil, "privileges", nil)},
		{name: "un-namespaced issuer beside", roles: []string{"partner_user"}, key: shop, claims: claims,
			wantRoles: []string{"admin", "partner_user", "support_agent"}, wantPrivileges: []string{"view_customers", "access_support_cases"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := identity.New(identity.Config{Issuers: issuers(tc.roles, tc.privileges), Audiences: []string{testAudience}},
				identity.WithClock(newClock(epoch).Now))
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			id, err := v.VerifyToken(context.Background(), sign(t, tc.key, tc.key.kid, tc.claims))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(id.Roles, ",") != strings.Join(tc.wantRoles, ",") || (id.Roles == nil) != (tc.wantRoles == nil) {
				t.Errorf("roles = %#v, want %#v", id.Roles, tc.wantRoles)
			}
			if strings.Join(id.Privileges, ",") != strings.Join(tc.wantPrivileges, ",") || (id.Privileges == nil) != (tc.wantPrivileges == nil) {
				t.Errorf("privileges = %#v, want %#v", id.Privileges, tc.wantPrivileges)
			}
			// The claims stay as signed: policy reads the roles from
			// input.identity.roles, never from the claims.
			if _, ok := id.Claims["roles"]; ok != (tc.claims["roles"] != nil) {
				t.Errorf("claims[roles] = %v, want as signed", id.Claims["roles"])
			}
		})
	}
}

// Role and privilege lists limit an issuer with a namespace only: on the
// issuer without one they would read as a limit that is not there.
func TestConfigIssuerRoles(t *testing.T) {
	a := identity.IssuerConfig{Issuer: "https://shop.example", JWKSURL: "https://shop.example/jwks"}
	b := identity.IssuerConfig{Issuer: partnerIssuer, JWKSURL: "https://partner.example/jwks", Namespace: "partner"}
	roles := func(is identity.IssuerConfig, r ...string) identity.IssuerConfig { is.Roles = r; return is }
	privileges := func(is identity.IssuerConfig, p ...string) identity.IssuerConfig { is.Privileges = p; return is }
	cases := []struct {
		name  string
		cfg   identity.Config
		field string
	}{
		{name: "namespaced issuer with roles", cfg: identity.Config{Issuers: []identity.IssuerConfig{a, privileges(roles(b, "partner_user"), "view_customers")}}},
		{name: "roles on the issuer without a namespace", cfg: identity.Config{Issuers: []identity.IssuerConfig{roles(a, "admin"), b}}, field: "identity.issuers[0].roles"},
		{name: "privileges on the only issuer", cfg: identity.Config{Issuers: []identity.IssuerConfig{privileges(a, "view_customers")}}, field: "identity.issuers[0].privileges"},
		{name: "empty role", cfg: identity.Config{Issuers: []identity.IssuerConfig{a, roles(b, "")}}, field: "identity.issuers[1].roles"},
		{name: "role with a space", cfg: identity.Config{Issuers: []identity.IssuerConfig{a, roles(b, "partner user")}}, field: "identity.issuers[1].roles"},
		{name: "dev roles without a namespace", cfg: identity.Config{Dev: identity.DevConfig{Enabled: true, Roles: []string{"admin"}}}, field: "identity.dev.roles"},
		{name: "dev roles with a namespace", cfg: identity.Config{Dev: identity.DevConfig{Enabled: true, Namespace: "dev", Roles: []string{"admin"}}, Issuers: []identity.IssuerConfig{a}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantValidate(t, tc.cfg, tc.field) })
	}
}

// Start-up names every namespaced issuer that asserts no roles, with the
// setting that would list them, and no other issuer.
func TestIssuersAssertingNoRolesAreLogged(t *testing.T) {
	_, shop, _, partner := keys(t)
	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	var lines logtest.Lines
	v, err := identity.New(identity.Config{
		Issuers: []identity.IssuerConfig{
			{Issuer: testIssuer, JWKSFile: writeFile(t, "shop.json", jwks(shop))},
			{Issuer: partnerIssuer, JWKSFile: writeFile(t, "partner.json", jwks(partner)), Namespace: "partner"},
			{Issuer: "https://vendor.example", JWKSFile: writeFile(t, "vendor.json", jwks(partner)), Namespace: "vendor", Privileges: []string{"view_customers"}},
		},
		Dev:       identity.DevConfig{Enabled: true, Namespace: "dev"},
		Audiences: []string{testAudience},
	}, identity.WithDevIssuer(dev), identity.WithLogger(slog.New(slog.NewJSONHandler(&lines, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var got []string
	for _, rec := range lines.Records(t) {
		if strings.Contains(rec["msg"].(string), "assert none") {
			got = append(got, rec["issuer"].(string)+" "+rec["setting"].(string))
		}
	}
	want := partnerIssuer + " identity.issuers[1].roles,deputy-dev identity.dev.roles"
	if strings.Join(got, ",") != want {
		t.Fatalf("issuers logged as asserting no roles: %q, want %q", got, want)
	}
}
