package authz

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"golang.org/x/text/unicode/norm"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/policy"
)

func TestParsePathCanonicalForm(t *testing.T) {
	for _, tc := range []struct {
		name, raw, path string
		segments        []string
		decoded         string
	}{
		{"root", "/", "/", []string{}, "/"},
		{"plain", "/catalog/shoes", "/catalog/shoes", []string{"catalog", "shoes"}, ""},
		{"trailing slash kept", "/customer/account/", "/customer/account/", []string{"customer", "account"}, ""},
		{"leading double slash is a path, not a host", "//customer/account/password/", "/customer/account/password/", []string{"customer", "account", "password"}, ""},
		{"many leading slashes", "////customer//account", "/customer/account", []string{"customer", "account"}, ""},
		{"inner and trailing slashes merge", "/customer//account///password//", "/customer/account/password/", []string{"customer", "account", "password"}, ""},
		{"only slashes", "///", "/", []string{}, ""},
		{"path parameter dropped", "/customer/account/password;x/", "/customer/account/password/", []string{"customer", "account", "password"}, ""},
		{"parameter on every segment", "/customer;a=1/account;b/password;jsessionid=2", "/customer/account/password", []string{"customer", "account", "password"}, ""},
		{"parameter-only segment merges", "/;x/customer/;y/password/;z", "/customer/password/", []string{"customer", "password"}, ""},
		{"encoded parameter dropped too", "/customer%3Bx/account", "/customer/account", []string{"customer", "account"}, "/customer;x/account"},
		{"encoded letters decoded once", "/%63ustomer/%61ccount/%70assword/", "/customer/account/password/", []string{"customer", "account", "password"}, "/customer/account/password/"},
		{"upper-case escapes", "/%43USTOMER/%41ccount", "/CUSTOMER/Account", []string{"CUSTOMER", "Account"}, ""},
		{"case kept (lower_* fold it)", "/Customer/Account/Password/", "/Customer/Account/Password/", []string{"Customer", "Account", "Password"}, ""},
		{"single percent escape kept decoded", "/search/100%25", "/search/100%", []string{"search", "100%"}, "/search/100%"},
		{"UTF-8 decoded", "/catalog/%C3%A9t%C3%A9", "/catalog/été", []string{"catalog", "été"}, ""},
		{"raw UTF-8", "/catalog/été", "/catalog/été", []string{"catalog", "été"}, ""},
		{"dots inside a segment are fine", "/static/app.min.js", "/static/app.min.js", []string{"static", "app.min.js"}, ""},
		{"three dots are a name", "/a/.../b", "/a/.../b", []string{"a", "...", "b"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp, err := parsePath(tc.raw, 0, 0)
			if err != nil {
				t.Fatalf("parsePath(%q): %v", tc.raw, err)
			}
			if cp.path != tc.path || !slices.Equal(cp.segments, tc.segments) {
				t.Errorf("parsePath(%q) = %q %q, want %q %q", tc.raw, cp.path, cp.segments, tc.path, tc.segments)
			}
			if tc.decoded != "" && cp.decoded != tc.decoded {
				t.Errorf("decoded = %q, want %q", cp.decoded, tc.decoded)
			}
		})
	}
}

// The route form reaches the action an upstream router runs for every
// spelling of a forbidden route: format suffixes, front controllers,
// trailing dots and Unicode case folding.
func TestRouteSegments(t *testing.T) {
	for _, tc := range []struct{ raw, route string }{
		{"/customer/account/password/", "customer/account/password"},
		{"/customer/account/password.json", "customer/account/password"},
		{"/customer/account/password.html", "customer/account/password"},
		{"/Customer/Account/Password.JSON", "customer/account/password"},
		{"/customer/account/password.json.html", "customer/account/password"},
		{"/customer/account/password.json/", "customer/account/password"},
		{"/customer/payment.json", "customer/payment"},
		{"/vault/cards.json", "vault/cards"},
		{"/index.php/customer/account/password/", "customer/account/password"},
		{"/INDEX.PHP/customer/account/password", "customer/account/password"},
		{"/index.php", "index"},
		// A front controller below the root hands what follows to the
		// router too: the route is the rewritten URL that runs the same
		// action (/shop/index.php/x is /shop/x).
		{"/shop/index.php/customer/account/password/", "shop/customer/account/password"},
		{"/shop/INDEX.PHP./customer/account/password", "shop/customer/account/password"},
		{"/shop/index.php/index.php/customer/account/password", "shop/customer/account/password"},
		{"/shop/index.php", "shop/index"},
		{"/shop/index.php/", "shop/index"},
		{"/shop/index.phpx/customer", "shop/index.phpx/customer"},
		{"/customer/account/password./", "customer/account/password"},
		{"/customer/account/password..", "customer/account/password"},
		{"/customer/account/password%20/", "customer/account/password"},
		{"/customer/account/password.%20", "customer/account/password"},
		{"/customer./account./password", "customer/account/password"},
		{"/customer/account/pa%C5%BFsword/", "customer/account/password"},
		{"/%E2%84%AAey/value", "key/value"},
		// Routers that compare with Java's equalsIgnoreCase or upper-case
		// whole strings read "ı" (U+0131) as "i", "İ" (U+0130) as "i",
		// "ß" as "ss" and the "ﬁ" ligature as "fi".
		{"/customer/account/ed%C4%B1t/", "customer/account/edit"},
		{"/customer/account/%C4%B0dit/", "customer/account/idit"},
		{"/customer/account/pa%C3%9Fword/", "customer/account/password"},
		{"/customer/account/pa%C3%9Fsword/", "customer/account/passsword"},
		{"/catalog/%EF%AC%81lters", "catalog/filters"},
		{"/catalog/stra%C3%9Fe", "catalog/strasse"},
		{"/.well-known/jwks.json", ".well-known/jwks"},
		{"/static/app.min.js", "static/app"},
		{"/catalog/été", "catalog/été"},
		// Compatibility forms (NFKC) are read as what they stand for,
		// as NFKC-normalizing routers read them: fullwidth letters,
		// ligatures, an ideographic space.
		{"/%EF%BD%83%EF%BD%95%EF%BD%93%EF%BD%94%EF%BD%8F%EF%BD%8D%EF%BD%85%EF%BD%92/account/password", "customer/account/password"},
		{"/ｃｕｓｔｏｍｅｒ/ＡＣＣＯＵＮＴ/password", "customer/account/password"},
		{"/customer/account/password%E3%80%80", "customer/account/password"},
		{"/customer/account/password%C2%A0", "customer/account/password"},
		{"/catalog/%EF%AC%80", "catalog/ff"},
		{"/catalog/caf%C3%A9", "catalog/café"},
		{"/catalog/cafe%CC%81", "catalog/café"},
		{"/", ""},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			cp, err := parsePath(tc.raw, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(routeSegments(cp.segments), "/"); got != tc.route {
				t.Errorf("route of %q = %q, want %q", tc.raw, got, tc.route)
			}
		})
	}
}

// routed lets routeForm skip its work only where that work changes
// nothing: on every path, the result is foldRoute's.
func TestRoutedMatchesFoldRoute(t *testing.T) {
	for _, raw := range []string{
		"/", "/catalog/shoes", "/catalog/shoes/", "/Catalog/shoes", "/customer/account/password.json",
		"/.well-known/jwks", "/.well-known/jwks.json", "/a/.env", "/a/b.", "/a/b%20", "/index.php/customer",
		"/shop/index.php/customer", "/shop/app.phar", "/a.b/c", "/catalog/%C3%A9t%C3%A9", "/pa%C5%BFsword",
		"/pa%C3%9Fword", "/ed%C4%B1t", "/%EF%AC%81lters",
		"/customers/acme/service-requests/42", "/a/index.php", "/a/b/c/d/e/f/g",
	} {
		t.Run(raw, func(t *testing.T) {
			cp, err := parsePath(raw, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			wantRoute, wantSpelled, wantWhole := foldRoute(cp.segments, true)
			gotRoute, gotSpelled, gotWhole := routeForm(cp.segments, true)
			if !slices.Equal(gotRoute, wantRoute) || !slices.Equal(gotSpelled, wantSpelled) || gotWhole != wantWhole {
				t.Errorf("routeForm = %q, %q, %q; foldRoute = %q, %q, %q", gotRoute, gotSpelled, gotWhole, wantRoute, wantSpelled, wantWhole)
			}
		})
	}
}

// Every route segment is its own lower-case form (strings.ToLower, which
// is OPA's lower()): the partner policy compares a route segment with the
// customer id without lower(), and relies on this.
func TestRouteSegmentsAreLowerCase(t *testing.T) {
	for _, raw := range []string{
		"/customers/ACME/service-requests/42", "/customers/%C3%89COLE/x", "/customers/%D0%96ACME/x",
		"/customers/%E2%84%AAey/x", "/customers/%C4%B0STANBUL/x", "/customers/STRA%C3%9FE/x",
		"/customers/%CE%A3%CE%A3/x", "/customers/A%CC%81/x", "/INDEX.PHP/Customers/X./y",
	} {
		cp, err := parsePath(raw, 0, 0)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		for _, seg := range routeSegments(cp.segments) {
			if strings.ToLower(seg) != seg {
				t.Errorf("%s: route segment %q is not lower-case", raw, seg)
			}
		}
	}
}

// Dot segments never reach routeForm (parsePath refuses them), but should
// that refusal ever loosen, the shortcut must still agree with foldRoute.
func TestRoutedMatchesFoldRouteOnDotSegments(t *testing.T) {
	for _, segs := range [][]string{{"."}, {".."}, {"a", "."}, {"a", ".."}, {".", "a"}, {"customer", "account", "."}} {
		wantRoute, wantSpelled, wantWhole := foldRoute(segs, true)
		gotRoute, gotSpelled, gotWhole := routeForm(segs, true)
		if !slices.Equal(gotRoute, wantRoute) || !slices.Equal(gotSpelled, wantSpelled) || gotWhole != wantWhole {
			t.Errorf("%q: routeForm = %q, %q, %q; foldRoute = %q, %q, %q", segs, gotRoute, gotSpelled, gotWhole, wantRoute, wantSpelled, wantWhole)
		}
	}
}

func TestParsePathRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, raw, why string
	}{
		{"empty", "", refusedNotAbsolute},
		{"relative", "customer/account", refusedNotAbsolute},
		{"absolute URL", "http://shop/customer", refusedNotAbsolute},
		{"asterisk", "*", refusedNotAbsolute},
		// A PHP script other than index.php with a path after it runs that
		// script (PATH_INFO), whatever route the rest spells.
		{"script before a route", "/export.php/customers/acme/service-requests/1", refusedScriptPath},
		{"script below the root", "/customers/acme/contacts.php/service-requests/1", refusedScriptPath},
		{"script in another case", "/Export.PHP./customers/acme", refusedScriptPath},
		{"phar", "/a/app.phar/customer/account/password", refusedScriptPath},
		{"phtml", "/a/index.phtml/customer/account/password", refusedScriptPath},
		{"php7", "/a/index.php7/customer/account/password", refusedScriptPath},
		{"encoded", "/export%2ephp/customers/acme", refusedScriptPath},
		{"param", "/export.php;x/customers/acme", refusedScriptPath},
		{"dot", "/catalog/./customer", refusedDotSegment},
		{"dot dot", "/catalog/../customer/account/password/", refusedDotSegment},
		{"trailing dot dot", "/customer/..", refusedDotSegment},
		{"encoded dot", "/catalog/%2e/customer", refusedDotSegment},
		{"encoded dot dot upper", "/catalog/%2E%2E/customer", refusedDotSegment},
		{"half-encoded dot dot", "/catalog/.%2e/customer", refusedDotSegment},
		{"dot dot with parameter", "/catalog/..;x/customer", refusedDotSegment},
		{"dot dot after double slash", "//catalog/../customer", refusedDotSegment},
		{"double-encoded dot", "/catalog/%252e%252e/customer", refusedDoubleEncoding},
		{"double-encoded dot upper", "/catalog/%252E%252E/customer", refusedDoubleEncoding},
		{"double-encoded via encoded digits", "/catalog/%25%32%65/customer", refusedDoubleEncoding},
		{"double-encoded slash", "/customer%252faccount", refusedDoubleEncoding},
		{"double-encoded letter", "/%2563ustomer/account", refusedDoubleEncoding},
		{"encoded slash", "/catalog%2f..%2fcustomer", refusedEncodedSep},
		{"encoded slash upper", "/customer%2Faccount/password", refusedEncodedSep},
		{"encoded backslash", "/customer%5caccount", refusedEncodedSep},
		{"encoded backslash upper", "/customer%5Caccount", refusedEncodedSep},
		{"encoded #", "/customer/account/password%23x", refusedEncodedDelim},
		{"encoded ?", "/customer/account/password%3fx", refusedEncodedDelim},
		{"encoded ? upper", "/customer/account/password%3F", refusedEncodedDelim},
		{"backslash", "/catalog\\..\\customer", refusedBackslash},
		{"leading backslash", "/\\customer/account", refusedBackslash},
		{"NUL", "/customer\x00/account", refusedControl},
		{"encoded NUL", "/customer%00/account", refusedControl},
		{"tab", "/customer\t/account", refusedControl},
		{"encoded newline", "/customer%0a/account", refusedControl},
		{"encoded CR", "/customer%0D/account", refusedControl},
		{"DEL", "/customer\x7f", refusedControl},
		{"encoded DEL", "/customer%7F", refusedControl},
		{"fragment", "/customer#x", refusedFragment},
		{"bad escape", "/customer/%zz", refusedBadEscape},
		{"truncated escape", "/customer/%2", refusedBadEscape},
		{"lone percent", "/customer/%", refusedBadEscape},
		{"overlong UTF-8 slash", "/customer%c0%afaccount", refusedNotUTF8},
		// Characters whose compatibility form (NFKC) is "/", "\" or
		// ".": upstreams that normalize Unicode, or map it best-fit to
		// ASCII (IIS), read them as path syntax.
		{"fullwidth solidus", "/customer/account\uff0fpassword", refusedCompatSyntax},
		{"encoded fullwidth solidus", "/customer/account%EF%BC%8Fpassword", refusedCompatSyntax},
		{"fullwidth reverse solidus", "/customer/account%EF%BC%BCpassword", refusedCompatSyntax},
		{"fullwidth full stops", "/%EF%BC%8E%EF%BC%8E/customer/account/password", refusedCompatSyntax},
		{"raw fullwidth full stops", "/\uff0e\uff0e/customer", refusedCompatSyntax},
		{"one dot leader", "/catalog/%E2%80%A4%E2%80%A4/customer", refusedCompatSyntax},
		{"two dot leader", "/catalog/%E2%80%A5/customer", refusedCompatSyntax},
		{"small full stop", "/catalog/%EF%B9%92%EF%B9%92/customer", refusedCompatSyntax},
		{"ellipsis", "/catalog/%E2%80%A6/customer", refusedCompatSyntax},
		{"account of", "/catalog/%E2%84%80", refusedCompatSyntax},
		{"digit with full stop", "/catalog/%E2%92%88", refusedCompatSyntax},
		{"in a parameter", "/customer;x%EF%BC%8Fy/account", refusedCompatSyntax},
		{"invalid raw UTF-8", "/customer\xff", refusedNotUTF8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp, err := parsePath(tc.raw, 0, 0)
			if err == nil {
				t.Fatalf("parsePath(%q) = %q %q, want refused: %s", tc.raw, cp.path, cp.segments, tc.why)
			}
			if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "path" || !strings.Contains(err.Error(), tc.why) {
				t.Errorf("parsePath(%q) error = %v, want EINVALID path: %s", tc.raw, err, tc.why)
			}
		})
	}
}

func TestCheckQuery(t *testing.T) {
	for _, tc := range []struct {
		name, raw, why string
	}{
		{"path", "/customer/account", refusedQueryPath},
		{"root", "/", refusedQueryPath},
		{"encoded slash", "%2Fcustomer", refusedQueryPath},
		{"encoded slash lower", "%2fcustomer", refusedQueryPath},
		{"backslash", "\\customer", refusedQueryPath},
		{"encoded backslash", "%5Ccustomer", refusedQueryPath},
		{"encoded backslash lower", "%5ccustomer", refusedQueryPath},
		{"dot", "./customer", refusedQueryPath},
		{"dot dot", "../customer", refusedQueryPath},
		{"encoded dots", "%2e%2E/customer", refusedQueryPath},
		{"dots then encoded slash", "..%2fcustomer", refusedQueryPath},
		// CodeIgniter's QUERY_STRING protocol routes on a first field
		// that holds a path and no "=".
		{"relative path", "customer/account/password/", refusedQueryPath},
		{"relative path then fields", "customer/account/password/&x=1", refusedQueryPath},
		{"relative path with a backslash", "customer\\account", refusedQueryPath},
		{"relative path encoded", "customer%2Faccount", refusedQueryPath},
		{"relative path encoded lower", "customer%2faccount", refusedQueryPath},
		{"relative path encoded backslash", "customer%5Caccount", refusedQueryPath},
		{"fragment", "x=1#&_method=POST", refusedQueryFragment},
		{"fragment first", "#_method=POST", refusedQueryFragment},
		{"fragment last", "x=1#", refusedQueryFragment},
		{"path and fragment", "/x#y", refusedQueryFragment},
		{"empty", "", ""},
		{"field", "q=/customer/account", ""},
		{"encoded #", "q=%23x", ""},
		{"PHP .method", ".method=POST", ""},
		{"dots only", "..", refusedQueryBare},
		{"encoded letter", "%5F_method=POST", ""},
		{"truncated escape", "%2", refusedQueryBare},
		{"slash in a later field", "a=1&/customer=1", ""},
		// CodeIgniter's QUERY_STRING protocol runs a bare first field
		// as a route, a one-segment controller or alias included.
		{"flag", "flag", refusedQueryBare},
		{"controller", "customer", refusedQueryBare},
		{"controller then fields", "customer&x=1", refusedQueryBare},
		{"flag then a path as a value", "flag&redirect=/customer/account", refusedQueryBare},
		{"empty first field", "&x=1", ""},
		{"value", "preview=1", ""},
		{"path as the first value", "redirect=/customer/account", ""},
		{"slash in a later flag", "a=1&customer/account", ""},
		{"bare later field", "a=1&flag", ""},
		{"escape that is no separator", "a%2Eb", refusedQueryBare},
		// Go's ParseQuery reads none of more than 10000 fields.
		{"more fields than Go reads, with semicolons", "_method=DELETE" + strings.Repeat(";a=1", goMaxQueryParams/2) + strings.Repeat("&a=1", goMaxQueryParams/2), refusedQueryFields},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkQuery(tc.raw, false)
			if tc.why == "" {
				if err != nil {
					t.Fatalf("checkQuery(%q) = %v, want nil", tc.raw, err)
				}
				return
			}
			if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "query" || !strings.Contains(err.Error(), tc.why) {
				t.Errorf("checkQuery(%q) = %v, want EINVALID query: %s", tc.raw, err, tc.why)
			}
		})
	}
}

// A query checkQuery lets through is one Go's parser reads: at its field
// limit an override is still read, one field more is refused.
func TestQueryFieldLimitIsGos(t *testing.T) {
	m, err := ParseMethodOverrides(DefaultMethodOverrides())
	if err != nil {
		t.Fatal(err)
	}
	within := "_method=DELETE" + strings.Repeat("&a=1", goMaxQueryParams-1)
	if err := checkQuery(within, false); err != nil {
		t.Fatalf("%d fields refused: %v", goMaxQueryParams, err)
	}
	var s methodSet
	_ = s.add("POST")
	if _, err := m.fromQuery(within, &s); err != nil || !slices.Contains(s, "DELETE") {
		t.Errorf("%d fields: methods %v (%v), want DELETE read", goMaxQueryParams, s, err)
	}
	if err := checkQuery(within+"&a=1", false); sidecar.ErrorField(err) != "query" {
		t.Errorf("%d fields: %v, want refused", goMaxQueryParams+1, err)
	}
}

// With check.allow_bare_query, a bare flag passes, and a first field
// holding a path is still refused.
func TestCheckQueryAllowingBareFields(t *testing.T) {
	for raw, refused := range map[string]bool{
		"flag": false, "1699999": false, "flag&redirect=/x": false, "preview=1": false, "..": false, "%2": false, "a%2Eb": false,
		"customer/account": true, "customer%2Faccount": true, "/customer": true, "x#y": true,
	} {
		if err := checkQuery(raw, true); (err != nil) != refused {
			t.Errorf("checkQuery(%q, allowBare) = %v, want refused %v", raw, err, refused)
		}
	}
}

func TestParseMethodOverrides(t *testing.T) {
	m, err := ParseMethodOverrides(DefaultMethodOverrides())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.headers, []string{"x-http-method-override", "x-http-method", "x-method-override"}) ||
		!slices.Equal(m.query, []string{"_method", "x-http-method-override"}) || !slices.Equal(m.body, []string{"_method", "x-http-method-override"}) {
		t.Errorf("defaults parsed as %+v", m)
	}
	// "method" finds both query carriers: the quick filter scans once.
	if !slices.Equal(m.queryRuns, []string{"method"}) {
		t.Errorf("query runs = %q", m.queryRuns)
	}
	if m, err := ParseMethodOverrides([]string{"header:X-Upper", "query:X.Verb", "body:_VERB[]"}); err != nil ||
		m.headers[0] != "x-upper" || m.query[0] != "x_verb" || m.body[0] != "_verb" {
		t.Errorf("names are read as upstreams read them: %+v %v", m, err)
	}
	for _, bad := range []string{"", "x-http-method-override", "cookie:_method", "header:", "query:a b", "body:a,b"} {
		if _, err := ParseMethodOverrides([]string{bad}); sidecar.ErrorCode(err) != sidecar.EINVALID {
			t.Errorf("ParseMethodOverrides(%q) = %v, want EINVALID", bad, err)
		}
	}
}

// The runes refused as path syntax are exactly those whose compatibility
// form (NFKC) holds "/", "\" or ".", computed over every rune, ASCII
// "." itself aside.
func TestCompatSyntaxIsNFKC(t *testing.T) {
	var refused []rune
	for r := rune(utf8.RuneSelf); r <= utf8.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		s := string(r)
		want := strings.ContainsAny(norm.NFKC.String(s), "/\\.")
		if got := compatSyntax("a" + s + "b"); got != want {
			t.Errorf("U+%04X: compatSyntax %v, NFKC %+q", r, got, norm.NFKC.String(s))
		}
		if want {
			refused = append(refused, r)
		}
	}
	// Fullwidth solidus, reverse solidus and full stop, the dot leaders,
	// the small full stop, the ellipsis, "a/c", "1." among them.
	for _, r := range []rune{0xFF0F, 0xFF3C, 0xFF0E, 0x2024, 0x2025, 0xFE52, 0x2026, 0x2100, 0x2488} {
		if !slices.Contains(refused, r) {
			t.Errorf("U+%04X is not among the %d runes NFKC maps to path syntax", r, len(refused))
		}
	}
	for _, s := range []string{"", "/customer/account/password.json", "/catalog/caf\u00e9/\u00fcber.html", "/\u5546\u54c1/\u9774"} {
		if compatSyntax(s) {
			t.Errorf("compatSyntax(%+q) = true", s)
		}
	}
}

// FuzzParsePath checks the canonical path against an independent model of
// a slash-merging, decoding upstream (net/url's decoder, then segments
// split, ";params" cut and empties dropped), and that no form of a refused
// class ever comes out.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/", "//customer/account/password/", "/a;b/c", "/%2e%2e/x", "/a%2Fb", "/%252e",
		"/a\\b", "/a%00", "/%c3%a9", "/a//b//", "/Customer;x/%41", "/;/;/", "/a%3b/b", "/%23", "/a%3Fb",
		// Compatibility forms of "/", "\" and ".", raw and encoded, and
		// of letters.
		"/customer/account\uff0fpassword", "/customer/account%EF%BC%8Fpassword", "/a%EF%BC%BCb", "/\uff3c",
		"/\uff0e\uff0e/customer", "/%EF%BC%8E%EF%BC%8E/customer", "/a/\u2024\u2024/b", "/\u2025/x", "/%E2%80%A5",
		"/\ufe52\ufe52/x", "/a\u2026", "/\u2100", "/\u2488x", "/\uff43\uff55\uff53\uff54\uff4f\uff4d\uff45\uff52/account",
		"/password\u3000.json", "/\ufdfa"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		cp, err := parsePath(raw, 0, 0)
		if err != nil {
			if sidecar.ErrorCode(err) != sidecar.EINVALID {
				t.Fatalf("parsePath(%q): %v", raw, err)
			}
			return
		}
		// Nothing of a refused class survives.
		// (A raw "?" never reaches parsePath: the query is cut off first.)
		if strings.ContainsAny(cp.decoded, "\\#\x7f") || hasEscape(cp.decoded) ||
			strings.Count(cp.decoded, "?") > strings.Count(raw, "?") {
			t.Fatalf("parsePath(%q) accepted %q", raw, cp.decoded)
		}
		for _, c := range []byte(cp.decoded) {
			if c < 0x20 {
				t.Fatalf("parsePath(%q) accepted a control character", raw)
			}
		}
		for _, seg := range cp.segments {
			if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "/;") {
				t.Fatalf("parsePath(%q): segment %q", raw, seg)
			}
		}
		for _, seg := range routeSegments(cp.segments) {
			if strings.ToLower(seg) != seg {
				t.Fatalf("parsePath(%q): route segment %q is not lower-case", raw, seg)
			}
		}
		// No rune an NFKC-normalizing upstream reads as "/", "\" or
		// "." but ASCII "." itself, and no route segment it splits.
		for _, r := range cp.decoded {
			if r >= utf8.RuneSelf && strings.ContainsAny(norm.NFKC.String(string(r)), "/\\.") {
				t.Fatalf("parsePath(%q) accepted %+q, whose NFKC form is %+q", raw, r, norm.NFKC.String(string(r)))
			}
		}
		if strings.ContainsAny(norm.NFKC.String(cp.decoded), "\\") || strings.Count(norm.NFKC.String(cp.decoded), "/") != strings.Count(cp.decoded, "/") {
			t.Fatalf("parsePath(%q) accepted %q, which NFKC splits otherwise", raw, cp.decoded)
		}
		// The upstream's view: decode once, split, cut params, merge.
		dec, err := url.PathUnescape(raw)
		if err != nil {
			t.Fatalf("parsePath(%q) accepted what net/url cannot decode: %v", raw, err)
		}
		if dec != cp.decoded {
			t.Fatalf("decoded %q, net/url %q", cp.decoded, dec)
		}
		var want []string
		pieces := strings.Split(dec, "/")
		for _, p := range pieces {
			p, _, _ = strings.Cut(p, ";")
			if p != "" {
				want = append(want, p)
			}
		}
		wantPath := "/" + strings.Join(want, "/")
		if last, _, _ := strings.Cut(pieces[len(pieces)-1], ";"); last == "" && len(want) > 0 {
			wantPath += "/"
		}
		if cp.path != wantPath || !slices.Equal(cp.segments, want) && len(want)+len(cp.segments) > 0 {
			t.Fatalf("parsePath(%q) = %q %q, upstream routes %q %q", raw, cp.path, cp.segments, wantPath, want)
		}
	})
}

// Headers whose names are all lower case without "_" (as Envoy sends
// them) have one spelling each: the override carriers and URL overrides
// they name are what comparing every name finds, whatever else is there.
func TestMethodOverridesFromPlainHeaders(t *testing.T) {
	m, err := ParseMethodOverrides(append(DefaultMethodOverrides(), "header:x-tunnel-method"))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"x-http-method-override", "x-http-method", "x-method-override", "x-tunnel-method", "x-original-url",
		"x-rewrite-url", "x-original-urls", "x-http-method-overrid", "accept", "cookie", ":path", "x-method"}
	values := []string{"PUT", "delete", "GET", "", "bad method", "/x"}
	rnd := rand.New(rand.NewPCG(7, 8))
	for range 5000 {
		headers := map[string]string{}
		for range rnd.IntN(6) {
			headers[names[rnd.IntN(len(names))]] = values[rnd.IntN(len(values))]
		}
		var scanned, looked methodSet
		errScanned := m.fromHeaders(headers, false, nil, &scanned)
		errLooked := m.fromHeaders(headers, true, nil, &looked)
		_, orig := headers["x-original-url"]
		_, rewrite := headers["x-rewrite-url"]
		// With both URL overrides sent, either may be the one named.
		sameErr := fmt.Sprint(errScanned) == fmt.Sprint(errLooked) || orig && rewrite && errScanned != nil && errLooked != nil
		if !sameErr || !slices.Equal(scanned, looked) {
			t.Fatalf("%q: comparing every name gives %q, %v; looking up gives %q, %v", headers, scanned, errScanned, looked, errLooked)
		}
		if (orig || rewrite) && errLooked == nil {
			t.Fatalf("%q: URL override let through", headers)
		}
	}
}

// BenchmarkCanonical is the canonical request's own cost on a check: the
// path, the method and its override carriers, and the input term policy
// reads.
func BenchmarkCanonical(b *testing.B) {
	m, _ := ParseMethodOverrides(DefaultMethodOverrides())
	headers := map[string]string{"accept": "text/html", "cookie": "a=b", "user-agent": "x"}
	need := &policy.InputNeeds{All: true}
	b.ReportAllocs()
	for b.Loop() {
		var c canonicalRequest
		rawPath, rawQuery, _ := strings.Cut("/catalog/shoes?size=42&color=red", "?")
		cp, err := parsePath(rawPath, 0, 0)
		if err != nil {
			b.Fatal(err)
		}
		c.canonicalPath = cp
		_ = c.methods.add("GET")
		_ = m.fromHeaders(headers, true, nil, &c.methods)
		_, _ = m.fromQuery(rawQuery, &c.methods)
		_ = c.requestTerm(need)
	}
}

// route_dirs[i] is the route from its segment i on, with one trailing
// slash, so a prefix rule's startswith meets the route and what is under
// it, after any segments before (a store code, a locale, a mount point),
// never a sibling that shares its spelling (/vault/cardsharing/ is not
// under /vault/cards/).
func TestRouteDirs(t *testing.T) {
	for _, tc := range []struct {
		raw, route string
		dirs       []string
	}{
		{"/", "/", nil},
		{"/vault/cards", "/vault/cards", []string{"/vault/cards/", "/cards/"}},
		{"/vault/cards/", "/vault/cards", []string{"/vault/cards/", "/cards/"}},
		{"/Vault/Cards.json", "/vault/cards", []string{"/vault/cards/", "/cards/", "/vault/cards.json/", "/cards.json/"}},
		{"/vault/cardsharing", "/vault/cardsharing", []string{"/vault/cardsharing/", "/cardsharing/"}},
		{"/shop/index.php/fr/customer/account/editPost/", "/shop/fr/customer/account/editpost",
			[]string{"/shop/fr/customer/account/editpost/", "/fr/customer/account/editpost/", "/customer/account/editpost/", "/account/editpost/", "/editpost/"}},
		// After the route's own directories, those of each other form of
		// its last segment: cut at each dot, and whole.
		{"/vault/cards.html", "/vault/cards", []string{"/vault/cards/", "/cards/", "/vault/cards.html/", "/cards.html/"}},
		{"/Vault/Cards.HTML.json/", "/vault/cards",
			[]string{"/vault/cards/", "/cards/", "/vault/cards.html/", "/cards.html/", "/vault/cards.html.json/", "/cards.html.json/"}},
		{"/cards.html", "/cards", []string{"/cards/", "/cards.html/"}},
		{"/fr/index.php/cards.html.", "/fr/cards", []string{"/fr/cards/", "/cards/", "/fr/cards.html/", "/cards.html/"}},
		// Trailing spaces and dots dropped from a form, as from a segment;
		// each form once.
		{"/a/cards%20.html..json", "/a/cards ",
			[]string{"/a/cards /", "/cards /", "/a/cards/", "/cards/", "/a/cards .html/", "/cards .html/", "/a/cards .html..json/", "/cards .html..json/"}},
		// A leading dot is no cut: the segment is its own route segment.
		{"/.well-known/jwks.json", "/.well-known/jwks", []string{"/.well-known/jwks/", "/jwks/", "/.well-known/jwks.json/", "/jwks.json/"}},
		{"/a/.env.local", "/a/.env.local", []string{"/a/.env.local/", "/.env.local/", "/a/.env/", "/.env/"}},
		// A dot before more path is no format: no other form.
		{"/customer/account.v2/password", "/customer/account.v2/password",
			[]string{"/customer/account.v2/password/", "/account.v2/password/", "/password/"}},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			cp, err := parsePath(tc.raw, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			c := canonicalRequest{canonicalPath: cp}
			_ = c.methods.add("GET")
			obj := c.requestTerm(&policy.InputNeeds{All: true}).Value.(ast.Object)
			route, dirs := obj.Get(ast.StringTerm("route")), obj.Get(ast.StringTerm("route_dirs"))
			if route == nil || dirs == nil {
				t.Fatalf("route = %v, route_dirs = %v", route, dirs)
			}
			if got := string(route.Value.(ast.String)); got != tc.route {
				t.Errorf("route = %q, want %q", got, tc.route)
			}
			var got []string
			dirs.Value.(*ast.Array).Foreach(func(d *ast.Term) { got = append(got, string(d.Value.(ast.String))) })
			if !slices.Equal(got, tc.dirs) {
				t.Errorf("route_dirs = %q, want %q", got, tc.dirs)
			}
		})
	}
	// Only the fields policy reads are built: route_dirs alone builds no route.
	cp, _ := parsePath("/vault/cards", 0, 0)
	c := canonicalRequest{canonicalPath: cp}
	_ = c.methods.add("GET")
	obj := c.requestTerm(&policy.InputNeeds{Children: map[string]*policy.InputNeeds{"route_dirs": {}}}).Value.(ast.Object)
	if obj.Len() != 1 || obj.Get(ast.StringTerm("route_dirs")) == nil {
		t.Errorf("requestTerm(route_dirs) = %v", obj)
	}
}

// What the route form adds to the segments is counted too, so a bound
// below what route_dirs holds refuses: blank segments after the route's
// last one are dropped, so the dot-cut forms of the segment before them
// are in route_dirs; a compatibility form (NFKC) may be longer than its
// segment (U+FDFA stands for 33 bytes), its dots shifted.
func TestParsePathRouteDirsBytesCountsWhatTheRouteFormAdds(t *testing.T) {
	for _, raw := range []string{"/a/b.c.d.e.f.g.h/%20/...", "/b.c.d.e.f.g.h./%20%20", "/b.c.d.e/%E3%80%80",
		"/a/%EF%B7%BA%EF%B7%BA", "/a/x%EF%B7%BA.%EF%B7%BA.b.c", "/%EF%B7%BA/b"} {
		cp, err := parsePath(raw, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		rs, _, whole := routeForm(cp.segments, false)
		held := 0
		routeDirsTerm(rs, formatForms(rs[len(rs)-1], whole)).Value.(*ast.Array).Foreach(func(d *ast.Term) { held += len(d.Value.(ast.String)) })
		if _, err := parsePath(raw, 0, held-1); err == nil {
			t.Errorf("%s: route_dirs holds %d bytes, and a bound of %d lets it through", raw, held, held-1)
		}
	}
}

// The query is parsed for overrides only when it may name one, in any
// case, escaped or folded from a non-ASCII rune; the test that decides
// so reads the query in place, allocating nothing.
func TestQueryQuickFilter(t *testing.T) {
	m, err := ParseMethodOverrides(DefaultMethodOverrides())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query  string
		parsed bool
	}{
		{"size=42&color=red", false},
		{"methods=1", true}, // parsed, not a carrier
		{"_METHOD=DELETE", true},
		{"X-HTTP-Method-Override=DELETE", true},
		{"x-http-MeThOd-override=DELETE", true},
		{"%5Fmethod=DELETE", true},
		{"x-http-method-overr\u0131de=DELETE", true},
		{"meth=1", false},
	} {
		var s methodSet
		q, err := m.fromQuery(tc.query, &s)
		if err != nil || (q != nil) != tc.parsed {
			t.Errorf("fromQuery(%q) parsed %v (%v), want %v", tc.query, q != nil, err, tc.parsed)
		}
	}
	var s methodSet
	if n := testing.AllocsPerRun(100, func() { _, _ = m.fromQuery("size=42&color=red&sort=price", &s) }); n != 0 {
		t.Errorf("a query without carriers costs %v allocations", n)
	}
}

// parsePath's route_dirs bound counts exactly what route_dirs of the
// canonical segments holds, their last segment also cut at each of its
// dots after the first byte, and the route form (which drops and shortens
// segments, and adds its last segment's dot-cut forms) holds no more: a
// bound of that many bytes lets the path through, one byte less refuses
// it.
func TestParsePathRouteDirsBytes(t *testing.T) {
	for _, raw := range []string{
		"/", "/a", "/vault/cards/", "//shop//fr/;x/customer;y/account/",
		"/shop/index.php/fr/customer/account/editPost/",
		"/Catalog/Product/View/ID/42/Category/7.html",
		"/catalogsearch/result/index/q/red%20leather%20boots",
		"/vault/cards.html.json", "/vault/Cards.HTML.",
		"/.well-known/jwks.json", "/a/cards. .html", "/a/..x.y",
	} {
		t.Run(raw, func(t *testing.T) {
			cp, err := parsePath(raw, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			dirBytes := func(route, forms []string) (n int) {
				routeDirsTerm(route, forms).Value.(*ast.Array).Foreach(func(d *ast.Term) { n += len(d.Value.(ast.String)) })
				return n
			}
			var cuts []string
			if k := len(cp.segments); k > 0 {
				last := cp.segments[k-1]
				for i := 1; i < len(last); i++ {
					if last[i] == '.' {
						cuts = append(cuts, last[:i])
					}
				}
			}
			n := dirBytes(cp.segments, cuts)
			if rs, _, whole := routeForm(cp.segments, false); len(rs) > 0 && dirBytes(rs, formatForms(rs[len(rs)-1], whole)) > n {
				t.Errorf("route form %q holds %d bytes of route_dirs, more than the %d counted", rs, dirBytes(rs, formatForms(rs[len(rs)-1], whole)), n)
			}
			if n == 0 {
				return
			}
			if _, err := parsePath(raw, 0, n); err != nil {
				t.Errorf("bound %d, the bytes of route_dirs: %v", n, err)
			}
			if _, err := parsePath(raw, 0, n-1); err == nil || !strings.Contains(sidecar.ErrorMessage(err), "check.max_route_dirs_bytes (") {
				t.Errorf("bound %d, one byte short of route_dirs: %v, want refused naming check.max_route_dirs_bytes", n-1, err)
			}
		})
	}
}
