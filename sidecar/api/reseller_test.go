package api_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

var (
	samClaims  = identity.DevClaims{Subject: "sam", Org: "resellerco", Domain: "shop-a.example", Roles: []string{"reseller_super_admin"}}
	ritaClaims = identity.DevClaims{Subject: "rita", Org: "resellerco", Domain: "shop-a.example", Roles: []string{"reseller_admin"}}
)

func readFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "reseller", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// seedDomains puts globex in the reseller's other domain and acme in shop-a.
func seedDomains(t *testing.T, p *partnerAPI) {
	t.Helper()
	ctx := context.Background()
	for _, c := range []*sidecar.Customer{{ID: "staff-1", Protected: true}, {ID: "ann", Roles: []string{"customer", "support_agent"}}, {ID: "bob", Roles: []string{"customer"}}} {
		if _, err := p.store.PutCustomer(ctx, c, sidecar.Protection{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.store.MarkStaff(ctx, "staff-2"); err != nil {
		t.Fatal(err)
	}
	for c, d := range map[string]string{"acme": "shop-a.example", "globex": "shop-b.example"} {
		if err := p.store.PutAssignment(context.Background(), &sidecar.Assignment{Customer: c, Reseller: "resellerco", Domain: d}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestResellerAPI(t *testing.T) {
	cases := []struct {
		name   string
		do     func(p *partnerAPI, sam string) pres
		status int
		code   string
		msg    string
		field  string
		msgHas []string
		after  func(t *testing.T, p *partnerAPI)
	}{
		{name: "get own domain's customer", status: 200, do: func(p *partnerAPI, sam string) pres {
			return p.call("GET", "reseller/assignments/acme", sam, nil)
		}},
		// Another domain's customer reads as unassigned, word for word: a
		// 403 would tell which customer ids other domains hold.
		{name: "get another domain's customer", status: 404, code: "not_found", msg: "customer globex is not assigned", do: func(p *partnerAPI, sam string) pres {
			return p.call("GET", "reseller/assignments/globex", sam, nil)
		}},
		{name: "get an unassigned customer", status: 404, code: "not_found", msg: "customer initech is not assigned", do: func(p *partnerAPI, sam string) pres {
			return p.call("GET", "reseller/assignments/initech", sam, nil)
		}},
		{name: "put into own domain", status: 200, do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/initech", sam, map[string]any{})
		}, after: func(t *testing.T, p *partnerAPI) {
			a, err := p.store.GetAssignment(context.Background(), "initech")
			if err != nil || a.Domain != "shop-a.example" || a.UpdatedBy != "sam" {
				t.Fatalf("assignment = %+v, %v", a, err)
			}
		}},
		{name: "put into another domain", status: 403, code: "forbidden", msg: "customer_not_in_domain", do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/initech", sam, map[string]any{"domain": "shop-b.example"})
		}},
		{name: "take another domain's customer", status: 403, code: "forbidden", msg: "customer_not_in_domain", do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/globex", sam, map[string]any{"domain": "shop-a.example"})
		}, after: func(t *testing.T, p *partnerAPI) {
			if a, _ := p.store.GetAssignment(context.Background(), "globex"); a.Domain != "shop-b.example" {
				t.Fatalf("globex moved to %s", a.Domain)
			}
		}},
		// Deleting another domain's customer answers as deleting an
		// unassigned one, and leaves it where it is.
		{name: "delete another domain's customer", status: 204, do: func(p *partnerAPI, sam string) pres {
			return p.call("DELETE", "reseller/assignments/globex", sam, nil)
		}, after: func(t *testing.T, p *partnerAPI) {
			if a, err := p.store.GetAssignment(context.Background(), "globex"); err != nil || a.Domain != "shop-b.example" {
				t.Fatalf("globex = %+v, %v; want it left in shop-b.example", a, err)
			}
		}},
		{name: "delete an unassigned customer", status: 204, do: func(p *partnerAPI, sam string) pres {
			return p.call("DELETE", "reseller/assignments/initech", sam, nil)
		}},
		{name: "delete own", status: 204, do: func(p *partnerAPI, sam string) pres {
			return p.call("DELETE", "reseller/assignments/acme", sam, nil)
		}},
		{name: "malformed body", status: 400, code: "invalid", field: "body", do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/acme", sam, `{"domain":`)
		}},
		{name: "unknown field", status: 400, code: "invalid", field: "reseller", do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/acme", sam, map[string]any{"reseller": "evilco"})
		}},
		{name: "bad customer id", status: 400, code: "invalid", field: "customer", do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/a%7Bb", sam, map[string]any{})
		}},
		{name: "reseller admin is not a super admin", status: 403, code: "forbidden", msg: "not_permitted", do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/initech", p.tok(ritaClaims), map[string]any{})
		}},
		{name: "reseller admin lists own domain", status: 200, do: func(p *partnerAPI, sam string) pres {
			return p.call("GET", "reseller/assignments", p.tok(ritaClaims), nil)
		}},
		{name: "reseller admin reads another domain's customer", status: 404, code: "not_found", msg: "customer globex is not assigned", do: func(p *partnerAPI, sam string) pres {
			return p.call("GET", "reseller/assignments/globex", p.tok(ritaClaims), nil)
		}},
		{name: "partner user", status: 403, code: "forbidden", msg: "not_permitted", do: func(p *partnerAPI, sam string) pres {
			return p.call("GET", "reseller/assignments", p.pat(), nil)
		}},
		{name: "import csv", status: 200, do: func(p *partnerAPI, sam string) pres {
			return p.call("POST", "reseller/imports", sam, readFixture(t, "import.csv"), "text/csv")
		}, after: func(t *testing.T, p *partnerAPI) {
			if a, err := p.store.GetAssignment(context.Background(), "c3"); err != nil || a.Domain != "shop-a.example" {
				t.Fatalf("c3 = %+v, %v", a, err)
			}
		}},
		{name: "import json lines", status: 200, do: func(p *partnerAPI, sam string) pres {
			return p.call("POST", "reseller/imports?format=jsonl", sam, readFixture(t, "import.jsonl"), "application/octet-stream")
		}},
		{name: "import naming another domain", status: 403, code: "forbidden", msg: "customer_not_in_domain", do: func(p *partnerAPI, sam string) pres {
			return p.call("POST", "reseller/imports", sam, readFixture(t, "other-domain.csv"), "text/csv")
		}, after: noAssignment("c1")},
		{name: "import moving another domain's customer", status: 403, code: "forbidden", msg: "customer_not_in_domain", do: func(p *partnerAPI, sam string) pres {
			return p.call("POST", "reseller/imports", sam, "c9,shop-a.example\nglobex,shop-a.example\n", "text/csv")
		}, after: noAssignment("c9")},
		{name: "import with malformed lines", status: 400, code: "invalid", field: "body", msgHas: []string{"line 2: want 2 fields", "line 3: "}, do: func(p *partnerAPI, sam string) pres {
			return p.call("POST", "reseller/imports", sam, readFixture(t, "malformed.csv"), "text/csv")
		}, after: noAssignment("c1")},
		// encoding/json would read each of these lines as one row: c5, the
		// last domain. A line must say one thing.
		{name: "import json lines with a key in another case", status: 400, code: "invalid", field: "body",
			msgHas: []string{"line 2: CUSTOMER: unknown field"}, do: func(p *partnerAPI, sam string) pres {
				return p.call("POST", "reseller/imports?format=jsonl", sam,
					`{"customer":"c4","domain":"shop-a.example"}`+"\n"+`{"customer":"c4","CUSTOMER":"c5","domain":"shop-a.example"}`+"\n", "application/octet-stream")
			}, after: func(t *testing.T, p *partnerAPI) { noAssignment("c4")(t, p); noAssignment("c5")(t, p) }},
		{name: "import json lines with a repeated key", status: 400, code: "invalid", field: "body",
			msgHas: []string{"line 1: domain: repeated field"}, do: func(p *partnerAPI, sam string) pres {
				return p.call("POST", "reseller/imports?format=jsonl", sam,
					`{"customer":"c6","domain":"shop-b.example","domain":"shop-a.example"}`+"\n", "application/octet-stream")
			}, after: noAssignment("c6")},
		{name: "import json lines with an escaped repeated key", status: 400, code: "invalid", field: "body",
			msgHas: []string{"line 1: domain: repeated field"}, do: func(p *partnerAPI, sam string) pres {
				return p.call("POST", "reseller/imports?format=jsonl", sam,
					`{"customer":"c7","domain":"shop-b.example","\u0064omain":"shop-a.example"}`+"\n", "application/octet-stream")
			}, after: noAssignment("c7")},
		// A closing delimiter after the value ends no value: encoding/json's
		// More() reports nothing left, and the line was read as its row.
		{name: "import json lines with trailing data", status: 400, code: "invalid", field: "body",
			msgHas: []string{"line 1: unexpected data after the JSON value", "line 2: unexpected data", "line 3: unexpected data"}, do: func(p *partnerAPI, sam string) pres {
				return p.call("POST", "reseller/imports?format=jsonl", sam,
					`{"customer":"c8","domain":"shop-a.example"}]`+"\n"+`{"customer":"c9","domain":"shop-a.example"}}`+"\n"+`{"customer":"c10","domain":"shop-a.example"} {}`+"\n", "application/octet-stream")
			}, after: func(t *testing.T, p *partnerAPI) {
				noAssignment("c8")(t, p)
				noAssignment("c9")(t, p)
				noAssignment("c10")(t, p)
			}},
		// An account Login as Customer holds protected is put into no
		// domain, one by one or by import (seedDomains protects staff-1
		// by its profile, ann by a protected role and marks staff-2).
		{name: "put a protected profile", status: 403, code: "forbidden", msg: "customer_protected", do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/staff-1", sam, map[string]any{})
		}, after: noAssignment("staff-1")},
		{name: "put a customer with a protected role", status: 403, code: "forbidden", msg: "customer_protected", do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/ann", sam, map[string]any{})
		}, after: noAssignment("ann")},
		{name: "put a subject known as staff", status: 403, code: "forbidden", msg: "customer_protected", do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/staff-2", sam, map[string]any{})
		}, after: noAssignment("staff-2")},
		{name: "import with a protected row", status: 403, code: "forbidden", msg: "customer_protected", do: func(p *partnerAPI, sam string) pres {
			return p.call("POST", "reseller/imports", sam, "c9,shop-a.example\nstaff-1,shop-a.example\n", "text/csv")
		}, after: func(t *testing.T, p *partnerAPI) {
			noAssignment("c9")(t, p)
			noAssignment("staff-1")(t, p)
		}},
		// ...nor under another letter case: an upstream that reads ids
		// without regard to case serves "STAFF-1" as "staff-1".
		{name: "put a protected profile in capitals", status: 403, code: "forbidden", msg: "customer_protected", do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/STAFF-1", sam, map[string]any{})
		}, after: noAssignment("staff-1")},
		{name: "put a customer with a protected role in other case", status: 403, code: "forbidden", msg: "customer_protected", do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/Ann", sam, map[string]any{})
		}, after: noAssignment("ann")},
		{name: "put a subject known as staff in other case", status: 403, code: "forbidden", msg: "customer_protected", do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/Staff-2", sam, map[string]any{})
		}, after: noAssignment("staff-2")},
		{name: "import with a protected row in other case", status: 403, code: "forbidden", msg: "customer_protected", do: func(p *partnerAPI, sam string) pres {
			return p.call("POST", "reseller/imports", sam, "c9,shop-a.example\nSTAFF-1,shop-a.example\n", "text/csv")
		}, after: func(t *testing.T, p *partnerAPI) {
			noAssignment("c9")(t, p)
			noAssignment("staff-1")(t, p)
		}},
		{name: "put an unprotected profile in other case", status: 200, do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/BOB", sam, map[string]any{})
		}},
		{name: "put an unprotected profile", status: 200, do: func(p *partnerAPI, sam string) pres {
			return p.call("PUT", "reseller/assignments/bob", sam, map[string]any{})
		}},
		{name: "import too large", status: 413, code: "too_large", field: "body", do: func(p *partnerAPI, sam string) pres {
			return p.call("POST", "reseller/imports", sam, strings.Repeat("c1,shop-a.example\n", 200), "text/csv")
		}},
		{name: "import without a format", status: 400, code: "invalid", field: "format", do: func(p *partnerAPI, sam string) pres {
			return p.call("POST", "reseller/imports", sam, "c1,shop-a.example\n", "text/plain")
		}},
	}
	for _, b := range partnerBackends(t) {
		for _, tc := range cases {
			t.Run(b.name+"/"+tc.name, func(t *testing.T) {
				p := newPartnerAPI(t, b)
				seedDomains(t, p)
				r := tc.do(p, p.tok(samClaims))
				if r.status != tc.status || r.code() != tc.code || (tc.msg != "" && r.msg() != tc.msg) || r.field() != tc.field {
					t.Fatalf("got %d %s %q field %q, want %d %s %q field %q: %s", r.status, r.code(), r.msg(), r.field(), tc.status, tc.code, tc.msg, tc.field, r.raw)
				}
				for _, want := range tc.msgHas {
					if !strings.Contains(r.msg(), want) {
						t.Errorf("message %q does not mention %q", r.msg(), want)
					}
				}
				if tc.after != nil {
					tc.after(t, p)
				}
			})
		}
	}
}

func noAssignment(customer string) func(t *testing.T, p *partnerAPI) {
	return func(t *testing.T, p *partnerAPI) {
		t.Helper()
		if a, err := p.store.GetAssignment(context.Background(), customer); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
			t.Fatalf("refused import stored %s: %+v, %v", customer, a, err)
		}
	}
}

func TestResellerAPIListsOnlyOwnDomain(t *testing.T) {
	for _, b := range partnerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := newPartnerAPI(t, b)
			seedDomains(t, p)
			sam := p.tok(samClaims)
			p.must(p.call("POST", "reseller/imports", sam, readFixture(t, "import.csv"), "text/csv"), 200)
			var seen []string
			path := "reseller/assignments?limit=3"
			for range 5 {
				r := p.must(p.call("GET", path, sam, nil), 200)
				for _, it := range r.items() {
					seen = append(seen, it.(map[string]any)["customer"].(string))
				}
				if r.str("next_cursor") == "" {
					break
				}
				path = "reseller/assignments?limit=3&cursor=" + r.str("next_cursor")
			}
			if strings.Join(seen, ",") != "acme,c1,c2,c3" {
				t.Fatalf("listed %v, want shop-a's customers only", seen)
			}
		})
	}
}

// TestResellerCheckPath shows domain isolation where it matters: acting
// for a customer on the customer-care portal.
func TestResellerCheckPath(t *testing.T) {
	cases := []struct {
		name     string
		caller   identity.DevClaims
		customer string
		allowed  bool
		reason   string
	}{
		{name: "own domain's customer", caller: ritaClaims, customer: "acme", allowed: true, reason: "reseller_domain_customer"},
		{name: "the reseller's other domain", caller: ritaClaims, customer: "globex", reason: "customer_not_in_domain"},
		{name: "signed in through the other domain", caller: identity.DevClaims{Subject: "rita", Org: "resellerco", Domain: "shop-b.example", Roles: []string{"reseller_admin"}}, customer: "acme", reason: "customer_not_in_domain"},
		{name: "custom role with both privileges", caller: identity.DevClaims{Subject: "ray", Org: "resellerco", Domain: "shop-a.example", Privileges: []string{"view_customers", "access_support_cases"}}, customer: "acme", allowed: true, reason: "reseller_domain_customer"},
		{name: "missing a privilege", caller: identity.DevClaims{Subject: "ray", Org: "resellerco", Domain: "shop-a.example", Privileges: []string{"view_customers"}}, customer: "acme", reason: "missing_privilege:access_support_cases"},
	}
	for _, b := range partnerBackends(t) {
		for _, tc := range cases {
			t.Run(b.name+"/"+tc.name, func(t *testing.T) {
				p := newPartnerAPI(t, b)
				seedDomains(t, p)
				ok, why := p.check(tc.caller, "GET", "/cases", map[string]string{"x-on-behalf-of": tc.customer})
				if ok != tc.allowed || why != tc.reason {
					t.Fatalf("allowed=%v reason=%q, want %v %q", ok, why, tc.allowed, tc.reason)
				}
			})
		}
	}
}

// An import costs a caller without the permission nothing: it is refused
// before the body is parsed or the store read. Redis counts the reads.
func TestResellerImportRefusedBeforeReads(t *testing.T) {
	srv := redistest.Start(t)
	p := newPartnerAPI(t, partnerBackend{name: "redis", open: func(t *testing.T, now sidecar.Clock) sidecar.Store {
		s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout}, redis.WithClock(now))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}})
	seedDomains(t, p)
	ctx := context.Background()
	admin := srv.Client()
	reads := func() int {
		t.Helper()
		stats, err := admin.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range strings.Split(stats, "\n") {
			for _, cmd := range []string{"cmdstat_get:", "cmdstat_mget:"} {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
					calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
					c, err := strconv.Atoi(calls)
					if err != nil {
						t.Fatalf("commandstats line %q: %v", line, err)
					}
					n += c
				}
			}
		}
		return n
	}
	var rows strings.Builder
	for i := range 100 {
		fmt.Fprintf(&rows, "c%d,shop-a.example\n", i)
	}
	for _, tc := range []struct {
		name   string
		caller identity.DevClaims
		body   string
	}{
		{"customer", identity.DevClaims{Subject: "cust", Domain: "shop-a.example", Roles: []string{"customer"}}, rows.String()},
		{"reseller admin", ritaClaims, rows.String()},
		{"customer, malformed file", identity.DevClaims{Subject: "cust", Domain: "shop-a.example", Roles: []string{"customer"}}, "c1\n,\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := admin.ConfigResetStat(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			r := p.call("POST", "reseller/imports", p.tok(tc.caller), tc.body, "text/csv")
			if r.status != 403 || r.msg() != "not_permitted" {
				t.Fatalf("got %d %s", r.status, r.raw)
			}
			if n := reads(); n != 0 {
				t.Fatalf("a refused import read the store %d times", n)
			}
		})
	}
	t.Run("a super admin's import still reads and writes", func(t *testing.T) {
		p.must(p.call("POST", "reseller/imports", p.tok(samClaims), rows.String(), "text/csv"), 200)
		if a, err := p.store.GetAssignment(ctx, "c99"); err != nil || a.Domain != "shop-a.example" {
			t.Fatalf("c99: %+v, %v", a, err)
		}
	})
}
