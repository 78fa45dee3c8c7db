package api_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// acmeVariants name the customer acme to an upstream that looks customers
// up as MySQL's and MariaDB's *_ci collations do (letter case ignored).
var acmeVariants = []string{"ACME", "Acme", "aCmE"}

// shop-b's super admin and staff, who must never reach shop-a's customers.
var (
	sidB = identity.DevClaims{Subject: "sid", Org: "resellerco", Domain: "shop-b.example", Roles: []string{"reseller_super_admin"}}
	robB = identity.DevClaims{Subject: "rob", Org: "resellerco", Domain: "shop-b.example", Roles: []string{"reseller_admin"}}
)

// collationVariants are ids outside the assignable set that an upstream's
// collation reads as an assigned ASCII id, by collation: width and accents
// (*_ai_ci), letters with a stroke and ligatures (unicode_520_ci,
// uca1400_ai_ci, MySQL 8's 0900_ai_ci), enclosing and format characters
// (ignored by all), "ß" and dotless "ı" (general_ci: s and i;
// unicode_ci: ss), trailing no-break spaces (PAD SPACE), each with the ASCII id it
// is read as.
var collationVariants = map[string]string{
	"\uff41\uff43\uff4d\uff45": "acme", "\uff21\uff23\uff2d\uff25": "acme", "acm\u00e9": "acme", "acme\u0301": "acme",
	"ac\u200bme": "acme", "acme\u20dd": "acme", "acme\u00a0": "acme", "acme\u3000": "acme",
	"\u0142odz": "lodz", "\u00e6on": "aeon", "str\u00f8m": "strom", "stra\u00dfe": "strase", "\u0131dx": "idx",
}

// TestResellerIDsOutsideASCIIAreRefused: no fold of Unicode matches every
// collation an upstream may compare customer ids with, so a customer id
// outside ASCII letters, digits and . _ - @ : is refused wherever reseller
// access names one: shop-b's super admin cannot claim, import or read a
// variant of shop-a's customer (400 naming the field and the allowed
// characters, never 200), and no staff member acts for one (denied with
// customer_id_not_allowed, by header or path, whichever domain).
func TestResellerIDsOutsideASCIIAreRefused(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			p := newPartnerAPI(t, b)
			seedDomains(t, p)
			for _, c := range []string{"lodz", "aeon", "strom", "strase", "idx"} {
				if err := p.store.PutAssignment(ctx, &sidecar.Assignment{Customer: c, Reseller: "resellerco", Domain: "shop-a.example"}); err != nil {
					t.Fatal(err)
				}
			}
			sid := p.tok(sidB)
			for v, ascii := range collationVariants {
				t.Run(v, func(t *testing.T) {
					p.advance(time.Minute) // past the management write rate limit
					refused := func(what string, r pres, field string) {
						t.Helper()
						if r.status != 400 || r.code() != "invalid" || r.field() != field || !strings.Contains(r.msg(), sidecar.AssignedIDChars) {
							t.Fatalf("%s %q: %d %s, want 400 invalid naming %s and %q", what, v, r.status, r.raw, field, sidecar.AssignedIDChars)
						}
					}
					path := "reseller/assignments/" + url.PathEscape(v)
					refused("put", p.call("PUT", path, sid, map[string]any{}), "customer")
					refused("get", p.call("GET", path, sid, nil), "customer")
					refused("delete", p.call("DELETE", path, sid, nil), "customer")
					refused("csv import", p.call("POST", "reseller/imports", sid, `"`+v+`",shop-b.example`+"\n", "text/csv"), "body")
					refused("json lines import", p.call("POST", "reseller/imports?format=jsonl", sid,
						fmt.Sprintf(`{"customer":%q,"domain":"shop-b.example"}`+"\n", v), "application/octet-stream"), "body")
					if a, err := p.store.GetAssignment(ctx, ascii); err != nil || a.Domain != "shop-a.example" || a.Customer != ascii {
						t.Fatalf("%s = %+v, %v; want it left in shop-a.example", ascii, a, err)
					}
					for _, staff := range []identity.DevClaims{robB, ritaClaims} {
						if ok, why := p.check(staff, "GET", "/cases", map[string]string{"x-on-behalf-of": v}); ok || why != "customer_id_not_allowed" {
							t.Fatalf("%s of %s acting for %q by header: allowed=%v reason=%q, want customer_id_not_allowed", staff.Subject, staff.Domain, v, ok, why)
						}
						if ok, why := p.check(staff, "GET", "/customers/"+v+"/cases", map[string]string{"x-on-behalf-of": ""}); ok || why != "customer_id_not_allowed" {
							t.Fatalf("%s of %s acting for %q by path: allowed=%v reason=%q, want customer_id_not_allowed", staff.Subject, staff.Domain, v, ok, why)
						}
					}
				})
			}
			if page := p.must(p.call("GET", "reseller/assignments", sid, nil), 200); len(page.items()) != 1 {
				t.Fatalf("shop-b lists %v, want globex only", page.items())
			}
		})
	}
}

// TestResellerFoldedIDsStayInOneDomain: acme belongs to shop-a. A super
// admin of shop-b must not take it by naming a variant of its id, and
// shop-b's staff must not act for it under any spelling: the upstream
// would act on acme.
func TestResellerFoldedIDsStayInOneDomain(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			p := newPartnerAPI(t, b)
			seedDomains(t, p)
			sid := p.tok(sidB)
			stays := func(t *testing.T) {
				t.Helper()
				a, err := p.store.GetAssignment(ctx, "acme")
				if err != nil || a.Domain != "shop-a.example" || a.Customer != "acme" {
					t.Fatalf("acme = %+v, %v; want it left in shop-a.example as acme", a, err)
				}
			}

			// The answers for the exact id, which every variant must get word for word.
			exactPut := p.call("PUT", "reseller/assignments/acme", sid, map[string]any{})
			exactGet := p.call("GET", "reseller/assignments/acme", sid, nil)
			exactCSV := p.call("POST", "reseller/imports", sid, "acme,shop-b.example\n", "text/csv")
			exactJSONL := p.call("POST", "reseller/imports?format=jsonl", sid, `{"customer":"acme","domain":"shop-b.example"}`+"\n", "application/octet-stream")
			if exactPut.status != 403 || exactPut.msg() != "customer_not_in_domain" || exactCSV.status != 403 || exactJSONL.status != 403 || exactGet.status != 404 {
				t.Fatalf("exact id: put %d %q, csv %d, jsonl %d, get %d; want 403 customer_not_in_domain, 403, 403, 404",
					exactPut.status, exactPut.msg(), exactCSV.status, exactJSONL.status, exactGet.status)
			}
			stays(t)
			same := func(t *testing.T, what string, got, want pres, v string) {
				t.Helper()
				wantMsg := want.msg()
				if want.status == 404 {
					wantMsg = fmt.Sprintf("customer %s is not assigned", v)
				}
				if got.status != want.status || got.code() != want.code() || got.msg() != wantMsg || got.field() != want.field() {
					t.Fatalf("%s %q: %d %s %q, want %d %s %q as for the exact id: %s", what, v, got.status, got.code(), got.msg(), want.status, want.code(), wantMsg, got.raw)
				}
			}
			for _, v := range acmeVariants {
				t.Run(v, func(t *testing.T) {
					p.advance(time.Minute) // past the management write rate limit
					path := "reseller/assignments/" + url.PathEscape(v)
					same(t, "put", p.call("PUT", path, sid, map[string]any{}), exactPut, v)
					stays(t)
					same(t, "get", p.call("GET", path, sid, nil), exactGet, v)
					same(t, "csv import", p.call("POST", "reseller/imports", sid, v+",shop-b.example\n", "text/csv"), exactCSV, v)
					stays(t)
					same(t, "json lines import", p.call("POST", "reseller/imports?format=jsonl", sid,
						fmt.Sprintf(`{"customer":%q,"domain":"shop-b.example"}`+"\n", v), "application/octet-stream"), exactJSONL, v)
					stays(t)
					// Nothing to delete from shop-b, and acme stays.
					if r := p.call("DELETE", path, sid, nil); r.status != 204 {
						t.Fatalf("delete %q: %d %s, want 204 as for an unassigned customer", v, r.status, r.raw)
					}
					stays(t)
					if ok, why := p.check(robB, "GET", "/cases", map[string]string{"x-on-behalf-of": v}); ok || why != "customer_not_in_domain" {
						t.Fatalf("shop-b staff acting for %q: allowed=%v reason=%q, want customer_not_in_domain", v, ok, why)
					}
				})
			}
			if page := p.must(p.call("GET", "reseller/assignments", sid, nil), 200); len(page.items()) != 1 {
				t.Fatalf("shop-b lists %v, want globex only", page.items())
			}
		})
	}
}

// TestResellerCheckPathActsOnStoredSpelling: shop-a's own staff naming a
// variant of acme are refused, not handed acme: the upstream routes on
// the spelling the request carries (a path template, its own lookup),
// and a case-sensitive upstream may hold ACME as another customer than
// acme. What reaches the upstream names the customer exactly as assigned.
func TestResellerCheckPathActsOnStoredSpelling(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			seedDomains(t, p)
			ok, why := p.check(ritaClaims, "GET", "/cases", map[string]string{"x-on-behalf-of": "acme"})
			if !ok {
				t.Fatalf("shop-a staff acting for acme: refused with %q", why)
			}
			id := &sidecar.Identity{Subject: "rita", Org: "resellerco", Domain: "shop-a.example", Roles: ritaClaims.Roles}
			d, err := p.resolver.Resolve(context.Background(), &sidecar.Request{Method: "GET", Path: "/cases", Headers: map[string]string{"x-on-behalf-of": "acme"}}, id)
			if err != nil || d == nil || d.Subject != "acme" || d.ID != "shop-a.example/acme" {
				t.Fatalf("delegation = %+v, %v; want subject acme", d, err)
			}
			for _, v := range acmeVariants {
				if ok, why := p.check(ritaClaims, "GET", "/cases", map[string]string{"x-on-behalf-of": v}); ok || why != "customer_not_in_domain" {
					t.Fatalf("shop-a staff naming %q: allowed=%v reason=%q, want customer_not_in_domain", v, ok, why)
				}
			}
			// shop-a's super admin may respell its own customer; from then
			// on that spelling is the one acted for, and the old one is a
			// variant.
			r := p.call("PUT", "reseller/assignments/ACME", p.tok(samClaims), map[string]any{})
			if r.status != 200 || r.str("customer") != "ACME" {
				t.Fatalf("respelling acme as ACME in its own domain: %d %s", r.status, r.raw)
			}
			if ok, why := p.check(ritaClaims, "GET", "/cases", map[string]string{"x-on-behalf-of": "ACME"}); !ok {
				t.Fatalf("shop-a staff acting for ACME once respelled: refused with %q", why)
			}
			if ok, why := p.check(ritaClaims, "GET", "/cases", map[string]string{"x-on-behalf-of": "acme"}); ok || why != "customer_not_in_domain" {
				t.Fatalf("shop-a staff naming acme once respelled ACME: allowed=%v reason=%q", ok, why)
			}
			if l := p.must(p.call("GET", "reseller/assignments", p.tok(samClaims), nil), 200).items(); len(l) != 1 || l[0].(map[string]any)["customer"] != "ACME" {
				t.Fatalf("shop-a lists %v, want ACME once", l)
			}
		})
	}
}
