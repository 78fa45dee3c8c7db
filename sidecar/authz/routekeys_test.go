package authz_test

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// A key or prefix naming a route must be written in the form its table is
// matched in, checked by the functions that build the request's form: a
// slip is refused naming the data path and the form to write, writing
// that form is accepted and decides a request as its author meant
// (forbids it, or opens it) through the shipped pipeline, and keys already
// in form are accepted, whatever they spell.
func TestCheckDataRefusesRouteKeysOutOfForm(t *testing.T) {
	// Each table gets one more entry keyed by the case's key.
	session := &sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "s1", Actor: "staff-1", ActorRoles: []string{"support_agent"}, Subject: "c42"}
	look := &sidecar.Delegation{Mode: sidecar.ModePartner, ID: "g1", Actor: "pat", Subject: "acme", Level: "look"}
	// Each table's requests are checked as del (none when nil), signed in
	// or not; meant says whether its entries open a request or forbid it.
	tables := map[string]struct {
		at       string
		add      func(t *testing.T, deputy map[string]any, key string)
		del      *sidecar.Delegation
		signedIn bool
		meant    bool
		reason   string // of the decision meant
	}{
		"forbidden": {"data.deputy.impersonation.forbidden_routes.%s[0].prefix", func(t *testing.T, deputy map[string]any, key string) {
			section, _, _ := strings.Cut(strings.TrimPrefix(key, "/"), "/")
			object(t, deputy, "impersonation", "forbidden_routes")[section] = []any{
				map[string]any{"prefix": key, "reason": "password_change_forbidden"},
			}
		}, session, false, false, "password_change_forbidden"},
		"partner": {"data.deputy.partner.sections.%s", func(t *testing.T, deputy map[string]any, key string) {
			sections := object(t, deputy, "partner", "sections")
			sections[key] = sections["dashboard"]
		}, look, false, true, "partner_level_sufficient"},
		"public paths": {"data.deputy.authz.public.paths.%s", func(t *testing.T, deputy map[string]any, key string) {
			object(t, deputy, "authz", "public", "paths")[key] = map[string]any{"GET": true}
		}, nil, false, true, "public_route"},
		"signed-in sections": {"data.deputy.authz.authenticated.sections.%s", func(t *testing.T, deputy map[string]any, key string) {
			object(t, deputy, "authz", "authenticated", "sections")[key] = map[string]any{"GET": true}
		}, nil, true, true, "authenticated_route"},
	}
	for _, tc := range []struct {
		name, table, key string
		// want is the form the refusal says to write; "" when there is
		// none (requests spelling the key are refused before policy).
		want string
		// target is a request the key's author means: decided against
		// that meaning with the key served as written, as meant with want.
		target   string
		accepted bool
	}{
		{name: "mount point before a forbidden route", table: "forbidden", key: "/shop/customer/account/password/", accepted: true},
		{name: "non-ASCII route no router folds to ASCII", table: "forbidden", key: "/kunde/passwort-\u00e4ndern/", accepted: true},
		{name: "dot inside a forbidden prefix", table: "forbidden", key: "/v1/customers.me/password/", accepted: true},
		{name: "forbidden prefix in mixed case", table: "forbidden", key: "/customer/account/editPost/", want: "/customer/account/editpost/", target: "/customer/account/editPost/1"},
		{name: "forbidden prefix with fullwidth capitals", table: "forbidden", key: "/customer/\uff21ccount/", want: "/customer/account/", target: "/customer/\uff21ccount/edit"},
		{name: "forbidden prefix in fullwidth letters", table: "forbidden", key: "/\uff57\uff49\uff53\uff48\uff4c\uff49\uff53\uff54/share/", want: "/wishlist/share/", target: "/wishlist/share"},
		{name: "forbidden prefix with a fullwidth solidus", table: "forbidden", key: "/customer/account\uff0fpassword/"},
		{name: "forbidden prefix with a two dot leader", table: "forbidden", key: "/customer/\u2025/password/"},
		{name: "partner section in fullwidth letters", table: "partner", key: "\uff53ites", want: "sites", target: "/customers/acme/\uff53ites/1"},
		{name: "forbidden prefix with a trailing space", table: "forbidden", key: "/vault/cards /", want: "/vault/cards/", target: "/vault/cards%20/1"},
		{name: "forbidden prefix with a ligature", table: "forbidden", key: "/customer/pro\ufb01le/", want: "/customer/profile/", target: "/customer/pro\ufb01le/edit"},
		{name: "forbidden prefix behind a front controller", table: "forbidden", key: "/shop/index.php/customer/payment/", want: "/shop/customer/payment/", target: "/shop/index.php/customer/payment/1"},
		{name: "forbidden prefix with escaped dots", table: "forbidden", key: "/vault/cards/%2e%2e/"},
		{name: "forbidden prefix with a backslash", table: "forbidden", key: "/vault/cards\\x/"},
		{name: "forbidden prefix with a double escape", table: "forbidden", key: "/vault/cards%252f/"},
		{name: "forbidden prefix with a query", table: "forbidden", key: "/customer/account/password?x/"},
		{name: "partner section with a query", table: "partner", key: "reports?v=2"},
		{name: "public path with a query", table: "public paths", key: "/status?v=1"},
		{name: "signed-in section with a query", table: "signed-in sections", key: "orders?"},
		{name: "partner section with ;params", table: "partner", key: "reports;v=2", want: "reports", target: "/customers/acme/reports;v=2/1"},
		{name: "partner section with a trailing dot", table: "partner", key: "invoices.", want: "invoices", target: "/customers/acme/invoices./1"},
		{name: "partner section with a long s", table: "partner", key: "\u017fites", want: "sites", target: "/customers/acme/\u017fites/1"},
		{name: "partner section of no segment", table: "partner", key: ""},
		{name: "partner section of two segments", table: "partner", key: "site/config"},
		{name: "public path with ;params", table: "public paths", key: "/status;v=1", want: "/status", target: "/status;v=1"},
		{name: "public path with a trailing /", table: "public paths", key: "/status/", accepted: true},
		{name: "public path with a front controller", table: "public paths", key: "/index.php/status", accepted: true},
		{name: "public path not absolute", table: "public paths", key: "status"},
		{name: "public path with a Kelvin sign", table: "public paths", key: "/\u212aiosk", want: "/kiosk", target: "/\u212aiosk"},
		{name: "signed-in section with a trailing /", table: "signed-in sections", key: "orders/", want: "orders", target: "/orders/1"},
		{name: "signed-in section escaped", table: "signed-in sections", key: "%4Frders", want: "orders", target: "/%4Frders/1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := tables[tc.table]
			load := func(key string) *policy.Set {
				set, err := policy.LoadPaths([]string{"../../policies"})
				if err != nil {
					t.Fatal(err)
				}
				table.add(t, set.Data["deputy"].(map[string]any), key)
				return set
			}
			check := func(key string) error { return authz.CheckData(load(key).Data) }
			err := check(tc.key)
			if tc.accepted {
				if err != nil {
					t.Fatalf("CheckData: %v, want %+q accepted", err, tc.key)
				}
				return
			}
			at := table.at
			if tc.table == "forbidden" {
				section, _, _ := strings.Cut(strings.TrimPrefix(tc.key, "/"), "/")
				at = strings.Replace(at, "%s", section, 1)
			} else {
				at = strings.Replace(at, "%s", tc.key, 1)
			}
			if err == nil || !strings.HasPrefix(err.Error(), at+": "+strconv.QuoteToASCII(tc.key)+" can never match a request") {
				t.Fatalf("CheckData: %v, want a refusal naming %s", err, at)
			}
			if tc.want == "" {
				if strings.Contains(err.Error(), "write") {
					t.Fatalf("CheckData: %v, want no form to write", err)
				}
				return
			}
			if !strings.HasSuffix(err.Error(), "; write "+strconv.QuoteToASCII(tc.want)) {
				t.Fatalf("CheckData: %v, want it to say to write %+q", err, tc.want)
			}
			if err := check(tc.want); err != nil {
				t.Fatalf("CheckData with the form it asked for: %v", err)
			}
			decide := func(key string, checks ...func(map[string]any) error) *authz.Response {
				opts := []policy.Option{policy.WithLogger(slog.New(slog.DiscardHandler))}
				for _, c := range checks {
					opts = append(opts, policy.WithDataCheck(c))
				}
				e := policy.New(opts...)
				if err := e.Activate(context.Background(), load(key)); err != nil {
					t.Fatal(err)
				}
				var pipe []authz.Option
				if table.del != nil {
					pipe = append(pipe, authz.WithResolvers(delegationFunc(func() (*sidecar.Delegation, error) { return table.del, nil })))
				}
				if table.signedIn {
					pipe = append(pipe, authz.WithVerifier(signedIn{Subject: "c42"}))
				}
				return authz.New(e, pipe...).Check(context.Background(), checkRequest(t, httpRequest("GET", tc.target, nil, "")))
			}
			if resp := decide(tc.key); resp.Allowed == table.meant {
				t.Fatalf("served as written, GET %s: allowed %v (%s): the key is no dead rule", tc.target, resp.Allowed, resp.Reason)
			}
			if resp := decide(tc.want, authz.CheckData); resp.Allowed != table.meant || resp.Reason != table.reason {
				t.Fatalf("with %+q written, GET %s: allowed %v (%s), want %v (%s)", tc.want, tc.target, resp.Allowed, resp.Reason, table.meant, table.reason)
			}
		})
	}
}

// The shipped data is in form.
func TestCheckDataAcceptsShippedData(t *testing.T) {
	set, err := policy.LoadPaths([]string{"../../policies"})
	if err != nil {
		t.Fatal(err)
	}
	if err := authz.CheckData(set.Data); err != nil {
		t.Fatal(err)
	}
}

// signedIn verifies every request as its identity.
type signedIn sidecar.Identity

func (s signedIn) Verify(context.Context, *sidecar.Request) (*sidecar.Identity, error) {
	id := sidecar.Identity(s)
	return &id, nil
}

// object is the object at path under deputy.
func object(t *testing.T, deputy map[string]any, path ...string) map[string]any {
	t.Helper()
	cur := deputy
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			t.Fatalf("shipped data has no object at %v", path)
		}
		cur = next
	}
	return cur
}
