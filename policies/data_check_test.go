package policies_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// activateEdited copies the shipped policies with old replaced by new in
// file, and activates the copy as activateCopy does.
func activateEdited(t *testing.T, file, old, new string) error {
	t.Helper()
	return activateCopy(t, editFile(t, file, old, new))
}

// editFile is an edit replacing old by new in file.
func editFile(t *testing.T, file, old, new string) func(dir string) {
	return func(dir string) {
		path := filepath.Join(dir, file)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), old) {
			t.Fatalf("%s holds no %s", file, old)
		}
		if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// activateCopy copies the shipped policies, lets edit change the copy, and
// activates it as `deputy serve` does, its data checked by
// authz.CheckData: the activation's error, nil when it is accepted.
func activateCopy(t *testing.T, edit func(dir string)) error {
	t.Helper()
	_, err := activate(t, edit, authz.CheckData)
	return err
}

// activate copies the shipped policies, lets edit change the copy, and
// activates it in an engine running checks on its data.
func activate(t *testing.T, edit func(dir string), checks ...func(map[string]any) error) (*policy.Engine, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(".")); err != nil {
		t.Fatal(err)
	}
	edit(dir)
	set, err := policy.LoadPaths([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	opts := []policy.Option{policy.WithLogger(slog.New(slog.DiscardHandler))}
	for _, c := range checks {
		opts = append(opts, policy.WithDataCheck(c))
	}
	e := policy.New(opts...)
	return e, e.Activate(context.Background(), set)
}

// A key or prefix naming a route in policy data is compared with a form of
// the request's path (its route form, or its lower-cased canonical path),
// never with the path as sent. One not written in that form equals no
// request's: the rule it carries is dead. In a deny list that leaves the
// route it means open; in an allow table the route silently never opens.
// Each slip is shown dead first, activated without the check (the hole it
// leaves, as Deputy served it before), then refused at activation, naming
// the data path and the form to write; that form, written in its place, is
// accepted and decides the request as the author meant.
func TestActivationRefusesRoutesNoRequestMeets(t *testing.T) {
	const (
		imp     = "deputy/impersonation/data.json"
		partner = "deputy/partner/data.json"
		authzJS = "deputy/authz/data.json"
		fr      = "data.deputy.impersonation.forbidden_routes."
	)
	session := &sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "s1", Actor: "staff-1", ActorRoles: []string{"support_agent"}, Subject: "c42"}
	look := &sidecar.Delegation{Mode: sidecar.ModePartner, ID: "g1", Actor: "pat", Subject: "acme", Level: "look"}
	signedIn := verifierFunc(func(context.Context, *sidecar.Request) (*sidecar.Identity, error) {
		return &sidecar.Identity{Subject: "c42"}, nil
	})
	for _, tc := range []struct {
		name, file, old, new string
		path, want           string // named in the refusal
		// fixed is written in place of old to follow the refusal, when
		// more than the key must change; by default new with its key
		// (its first JSON string) replaced by want.
		fixed string
		// The request the data means to forbid (or open), as whom, and
		// whether the slip, served, lets it through.
		del            *sidecar.Delegation
		signedIn       bool
		method, target string
		deadAllowed    bool
	}{
		// Forbidden routes: the page stays open to impersonating staff.
		{
			name: "long s in a forbidden prefix", file: imp,
			old: `"/customer/account/password/"`, new: `"/customer/account/pa\u017fsword/"`,
			path: fr + "customer[0].prefix", want: "/customer/account/password/",
			del: session, method: "GET", target: "/customer/account/password/", deadAllowed: true,
		},
		{
			name: "Kelvin sign in a forbidden prefix", file: imp,
			old: `"/password/resetlinktoken/"`, new: `"/password/resetlin\u212atoken/"`,
			path: fr + "password[0].prefix", want: "/password/resetlinktoken/",
			del: session, method: "GET", target: "/password/resetlinktoken/t1", deadAllowed: true,
		},
		{
			name: "sharp s in a forbidden prefix", file: imp,
			old: `"/customer/account/password/"`, new: `"/customer/account/pa\u00dfword/"`,
			path: fr + "customer[0].prefix", want: "/customer/account/password/",
			del: session, method: "GET", target: "/customer/account/password/", deadAllowed: true,
		},
		{
			name: "front controller in a forbidden prefix", file: imp,
			old: `"/customer/account/password/"`, new: `"/customer/index.php/account/password/"`,
			path: fr + "customer[0].prefix", want: "/customer/account/password/",
			del: session, method: "GET", target: "/customer/index.php/account/password/", deadAllowed: true,
		},
		{
			name: "trailing dot in a forbidden prefix", file: imp,
			old: `"/vault/cards/"`, new: `"/vault/cards./"`,
			path: fr + "vault[0].prefix", want: "/vault/cards/",
			del: session, method: "GET", target: "/vault/cards./1", deadAllowed: true,
		},
		{
			name: ";params in a forbidden prefix", file: imp,
			old: `"/customer/account/password/"`, new: `"/customer/account;x/password/"`,
			path: fr + "customer[0].prefix", want: "/customer/account/password/",
			del: session, method: "GET", target: "/customer/account;x/password/", deadAllowed: true,
		},
		{
			name: "escape in a forbidden prefix", file: imp,
			old: `"/customer/account/password/"`, new: `"/customer/account/pass%77ord/"`,
			path: fr + "customer[0].prefix", want: "/customer/account/password/",
			del: session, method: "GET", target: "/customer/account/pass%77ord/", deadAllowed: true,
		},
		{
			// Requests spelling a dot segment or an encoded "/" are
			// refused before policy: there is no form to write.
			name: "dot segment in a forbidden prefix", file: imp,
			old: `"/customer/account/password/"`, new: `"/customer/./account/password/"`,
			path: fr + "customer[0].prefix", want: "",
			del: session, method: "GET", target: "/customer/account/password/", deadAllowed: true,
		},
		{
			name: "encoded slash in a forbidden prefix", file: imp,
			old: `"/customer/account/password/"`, new: `"/customer/account%2fpassword/"`,
			path: fr + "customer[0].prefix", want: "",
			del: session, method: "GET", target: "/customer/account/password/", deadAllowed: true,
		},
		{
			// Filed under the section its slip names, the route passes
			// the check that a prefix starts with its section: the
			// prefix is what no request meets.
			name: "front controller filing a forbidden route", file: imp,
			old: `"vault": [
      {
        "prefix": "/vault/cards/"`, new: `"index.php": [
      {
        "prefix": "/index.php/vault/cards/"`,
			path: fr + "index.php[0].prefix", want: "/vault/cards/",
			// Filed under its own section again.
			fixed: `"vault": [
      {
        "prefix": "/vault/cards/"`,
			del: session, method: "GET", target: "/vault/cards/1", deadAllowed: true,
		},
		// Allow tables: the route silently never opens.
		{
			name: "partner section in upper case", file: partner,
			old: `"dashboard": {`, new: `"Dashboard": {`,
			path: "data.deputy.partner.sections.Dashboard", want: "dashboard",
			del: look, method: "GET", target: "/customers/acme/dashboard/d1",
		},
		{
			name: "public path in upper case", file: authzJS,
			old: `"/health": {`, new: `"/Health": {`,
			path: "data.deputy.authz.public.paths./Health", want: "/health",
			method: "GET", target: "/health",
		},
		{
			name: "public path with repeated slashes", file: authzJS,
			old: `"/health": {`, new: `"//health": {`,
			path: "data.deputy.authz.public.paths.//health", want: "/health",
			method: "GET", target: "//health",
		},
		{
			// A request's path ends where its query begins: no path holds
			// a "?", and there is no form to write.
			name: "public path with a query", file: authzJS,
			old: `"/health": {`, new: `"/health?full=1": {`,
			path: "data.deputy.authz.public.paths./health?full=1", want: "",
			method: "GET", target: "/health?full=1",
		},
		{
			name: "public section in upper case", file: authzJS,
			old: `"static": {`, new: `"STATIC": {`,
			path: "data.deputy.authz.public.sections.STATIC", want: "static",
			method: "GET", target: "/static/app.css",
		},
		{
			name: "signed-in section escaped", file: authzJS,
			old: `"support": {`, new: `"%73upport": {`,
			path: "data.deputy.authz.authenticated.sections.%73upport", want: "support",
			signedIn: true, method: "GET", target: "/support/tickets",
		},
		{
			name: "signed-in section of two segments", file: authzJS,
			old: `"support": {`, new: `"support/tickets": {`,
			path: "data.deputy.authz.authenticated.sections.support/tickets", want: "",
			signedIn: true, method: "GET", target: "/support/tickets",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edit := editFile(t, tc.file, tc.old, tc.new)
			served, err := activate(t, edit)
			if err != nil {
				t.Fatalf("activation without the data check: %v", err)
			}
			var verifier sidecar.IdentityVerifier
			if tc.signedIn {
				verifier = signedIn
			}
			resp := decide(t, served, tc.del, verifier, tc.method, tc.target)
			if resp.Allowed != tc.deadAllowed {
				t.Fatalf("served, %s %s: allowed %v (%s), want %v: the slip is no dead rule", tc.method, tc.target, resp.Allowed, resp.Reason, tc.deadAllowed)
			}
			_, err = activate(t, edit, authz.CheckData)
			if err == nil || !strings.Contains(err.Error(), tc.path+": ") {
				t.Fatalf("activation: %v, want a refusal naming %s", err, tc.path)
			}
			if tc.want == "" {
				return
			}
			if !strings.Contains(err.Error(), "write "+strconv.QuoteToASCII(tc.want)) {
				t.Fatalf("activation: %v, want it to say to write %q", err, tc.want)
			}
			fixed := tc.fixed
			if fixed == "" {
				key := tc.new[:strings.IndexByte(tc.new[1:], '"')+2]
				fixed = strings.Replace(tc.new, key, strconv.Quote(tc.want), 1)
			}
			if !strings.Contains(fixed, strconv.Quote(tc.want)) {
				t.Fatalf("the fix %s does not write %q", fixed, tc.want)
			}
			following, err := activate(t, editFile(t, tc.file, tc.old, fixed), authz.CheckData)
			if err != nil {
				t.Fatalf("activation with the form the refusal asked for: %v", err)
			}
			if resp := decide(t, following, tc.del, verifier, tc.method, tc.target); resp.Allowed == tc.deadAllowed {
				t.Fatalf("with %q written, %s %s: allowed %v (%s), want %v", tc.want, tc.method, tc.target, resp.Allowed, resp.Reason, !tc.deadAllowed)
			}
		})
	}
}

// A key holding a dot is compared with segments that have more path after
// them, which the route form keeps whole (only a request's last segment is
// cut at its dot): it matches requests as written, so it is accepted and
// decides them, in a deny list and in an allow table alike.
func TestActivationAcceptsRouteKeysWithDots(t *testing.T) {
	const (
		imp     = "deputy/impersonation/data.json"
		partner = "deputy/partner/data.json"
	)
	session := &sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "s1", Actor: "staff-1", ActorRoles: []string{"support_agent"}, Subject: "c42"}
	look := &sidecar.Delegation{Mode: sidecar.ModePartner, ID: "g1", Actor: "pat", Subject: "acme", Level: "look"}
	for _, tc := range []struct {
		name, file, old, new string
		del                  *sidecar.Delegation
		target               string
		allowed              bool
		reason               string
	}{
		{
			name: "forbidden prefix with a dot in its last segment", file: imp,
			old: `"/customer/account/password/"`, new: `"/customer/account.v2/"`,
			del: session, target: "/customer/account.v2/password", reason: "password_change_forbidden",
		},
		{
			name: "forbidden prefix with a format", file: imp,
			old: `"/vault/cards/"`, new: `"/vault/cards.html/"`,
			del: session, target: "/vault/cards.html/1", reason: "payment_method_change_forbidden",
		},
		{
			name: "partner section with a format", file: partner,
			old: `"dashboard": {`, new: `"dashboard.json": {`,
			del: look, target: "/customers/acme/dashboard.json/d1", allowed: true, reason: "partner_level_sufficient",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := activate(t, editFile(t, tc.file, tc.old, tc.new), authz.CheckData)
			if err != nil {
				t.Fatalf("activation: %v, want %s accepted", err, tc.new)
			}
			resp := decide(t, e, tc.del, nil, "GET", tc.target)
			if resp.Allowed != tc.allowed || resp.Reason != tc.reason {
				t.Fatalf("GET %s: allowed %v (%s), want %v (%s)", tc.target, resp.Allowed, resp.Reason, tc.allowed, tc.reason)
			}
		})
	}
}

// A forbidden prefix naming a page with its dot (a static page, or a
// route an upstream serves with its format) is a deny list entry: the
// page is forbidden in every spelling that names it, though the route
// form cuts a request's last segment at its first dot. A prefix filed
// under the page itself (its one segment) forbids it the same way, behind
// any store code. Pages beside it stay open.
func TestForbiddenPrefixWithADotForbidsThePageInEveryForm(t *testing.T) {
	const imp = "deputy/impersonation/data.json"
	session := &sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "s1", Actor: "staff-1", ActorRoles: []string{"support_agent"}, Subject: "c42"}
	type want struct {
		target string
		reason string // "" when allowed
	}
	for _, tc := range []struct {
		name, old, new string
		wants          []want
	}{
		{
			name: "page with its format", old: `"/vault/cards/"`, new: `"/vault/cards.html/"`,
			wants: []want{
				{"/vault/cards.html", "payment_method_change_forbidden"},
				{"/vault/Cards.HTML", "payment_method_change_forbidden"},
				{"/vault/cards.html;x", "payment_method_change_forbidden"},
				{"/vault/cards.html.json", "payment_method_change_forbidden"},
				{"/vault/cards.html/", "payment_method_change_forbidden"},
				{"/vault/cards.html/1", "payment_method_change_forbidden"},
				{"/fr/vault/cards.html", "payment_method_change_forbidden"},
				{"/index.php/vault/cards.html", "payment_method_change_forbidden"},
				{"/vault/cards.html.", "payment_method_change_forbidden"},
				{"/vault/cards.html%20.json", "payment_method_change_forbidden"},
				{"/vault/other.html", ""},
				{"/vault/cardsx", ""},
				{"/vault/cards.htmlx", ""},
				{"/vault/cards", ""},
			},
		},
		{
			name: "segment with a dot before more path", old: `"/customer/account/password/"`, new: `"/customer/account.v2/"`,
			wants: []want{
				{"/customer/account.v2", "password_change_forbidden"},
				{"/customer/account.v2/", "password_change_forbidden"},
				{"/customer/account.v2/password", "password_change_forbidden"},
				{"/customer/account.v2.json", "password_change_forbidden"},
				{"/customer/account.v3", ""},
			},
		},
		{
			name: "page alone as its section", old: `"password": [`, new: `"cards.html": [{"prefix": "/cards.html/", "reason": "payment_method_change_forbidden"}], "password": [`,
			wants: []want{
				{"/cards.html", "payment_method_change_forbidden"},
				{"/fr/cards.html.json", "payment_method_change_forbidden"},
				{"/cards.htm", ""},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := activate(t, editFile(t, imp, tc.old, tc.new), authz.CheckData)
			if err != nil {
				t.Fatalf("activation: %v, want %s accepted", err, tc.new)
			}
			for _, w := range tc.wants {
				resp := decide(t, e, session, nil, "GET", w.target)
				if resp.Allowed != (w.reason == "") || !resp.Allowed && (resp.Reason != w.reason || resp.HTTPStatus != 403) {
					t.Errorf("GET %s: allowed %v (%s %d), want denied for %q (allowed when empty)", w.target, resp.Allowed, resp.Reason, resp.HTTPStatus, w.reason)
				}
			}
		})
	}
}

// decide checks one request through the pipeline on e, acting as del (none
// when nil), its identity from verifier (none when nil).
func decide(t *testing.T, e *policy.Engine, del *sidecar.Delegation, verifier sidecar.IdentityVerifier, method, target string) *authz.Response {
	t.Helper()
	var opts []authz.Option
	if del != nil {
		opts = append(opts, authz.WithResolvers(sidecar.DelegationResolverFunc(
			func(context.Context, *sidecar.Request, *sidecar.Identity) (*sidecar.Delegation, error) {
				return del, nil
			})))
	}
	if verifier != nil {
		opts = append(opts, authz.WithVerifier(verifier))
	}
	return authz.New(e, opts...).Check(context.Background(), checkRequest(t, method, target, nil, ""))
}

// Policy data the shipped policies would read otherwise than its author
// meant is refused at activation, naming the data path, never served.
func TestActivationRefusesDataThePoliciesMisread(t *testing.T) {
	for _, tc := range []struct {
		name, file, old, new string
		path                 string // named in the refusal
	}{
		{
			// Rego orders every string above every number: a cc rank
			// quoted as YAML and ConfigMap authors quote numbers would
			// let a cc grant through every route, contacts included.
			name: "cc rank as a string", file: "deputy/partner/data.json",
			old: `"level_rank": {"cc": 0,`, new: `"level_rank": {"cc": "0",`,
			path: "data.deputy.partner.level_rank.cc",
		},
		{
			// The policy opens a method whose entry, or "*", is defined
			// and not false: "*" would overrule the explicit false.
			name: "method closed by false beside *", file: "deputy/authz/data.json",
			old: `"catalog": {"GET": true, "HEAD": true}`, new: `"catalog": {"*": true, "DELETE": false}`,
			path: "data.deputy.authz.public.sections.catalog.DELETE",
		},
		{
			name: "method closed by a quoted false", file: "deputy/authz/data.json",
			old: `"catalog": {"GET": true, "HEAD": true}`, new: `"catalog": {"GET": true, "HEAD": true, "POST": "false"}`,
			path: "data.deputy.authz.public.sections.catalog.POST",
		},
		{
			name: "method closed by 0", file: "deputy/authz/data.json",
			old: `"catalog": {"GET": true, "HEAD": true}`, new: `"catalog": {"GET": true, "HEAD": true, "POST": 0}`,
			path: "data.deputy.authz.public.sections.catalog.POST",
		},
		{
			name: "method closed by null", file: "deputy/authz/data.json",
			old: `"/health": {"GET": true, "HEAD": true}`, new: `"/health": {"GET": true, "HEAD": true, "POST": null}`,
			path: "data.deputy.authz.public.paths./health.POST",
		},
		{
			name: "signed-in method closed by false", file: "deputy/authz/data.json",
			old: `"checkout": {"*": true}`, new: `"checkout": {"*": true, "DELETE": false}`,
			path: "data.deputy.authz.authenticated.sections.checkout.DELETE",
		},
		{
			// The reseller policy compares the host as Deputy decides on
			// it, lower-cased without a port: this entry would match no
			// request, and refuse every one of its domain's.
			name: "domain host with a port", file: "deputy/reseller/data.json",
			old: `"domain_hosts": {}`, new: `"domain_hosts": {"shop-a.example": ["Portal.shop-a.example:443"]}`,
			path: "data.deputy.reseller.domain_hosts.shop-a.example[0]",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := activateEdited(t, tc.file, tc.old, tc.new)
			if err == nil || !strings.Contains(err.Error(), tc.path+":") {
				t.Fatalf("activation: %v, want a refusal naming %s", err, tc.path)
			}
		})
	}
}

// A rule beside the data it shadows is refused: the impersonation policy
// would read max_session from the rule, the session lifecycle, which
// alone applies it, from the data.
func TestActivationRefusesRuleShadowingData(t *testing.T) {
	err := activateCopy(t, func(dir string) {
		rule := "package deputy.impersonation\n\nmax_session := \"15m\"\n"
		if err := os.WriteFile(filepath.Join(dir, "deputy/impersonation/override.rego"), []byte(rule), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	if want := "conflicting rule for data path deputy/impersonation/max_session"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("activation: %v, want %q", err, want)
	}
}
