package authz_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// requestPolicy allows everything and returns what policy sees as the
// canonical request, so tests read it from the response.
const requestPolicy = `package t

decision := {"allowed": true, "reason": json.marshal({
	"r": input.deputy.request,
	"parsed_path": input.parsed_path,
	"parsed_query": input.parsed_query,
})}
`

type seen struct {
	R struct {
		Path          string   `json:"path"`
		Segments      []string `json:"segments"`
		LowerPath     string   `json:"lower_path"`
		LowerSegments []string `json:"lower_segments"`
		Method        string   `json:"method"`
		Methods       []string `json:"methods"`
		SoleMethod    string   `json:"sole_method"`
	} `json:"r"`
	ParsedPath  []string            `json:"parsed_path"`
	ParsedQuery map[string][]string `json:"parsed_query"`
}

// methodsPolicy allows everything, its reason the methods policy sees.
const methodsPolicy = "package t\n\ndecision := {\"allowed\": true, \"reason\": concat(\",\", input.deputy.request.methods)}\n"

func httpRequest(method, path string, headers map[string]string, body string) string {
	h, _ := json.Marshal(headers)
	b, _ := json.Marshal(body)
	p, _ := json.Marshal(path)
	return `{"attributes":{"request":{"http":{"method":"` + method + `","path":` + string(p) + `,"headers":` + string(h) + `,"body":` + string(b) + `}}}}`
}

// headerMapRequest is httpRequest as Envoy sends it with
// encode_raw_headers: headers empty, every header a header_map entry with
// its value base64 in rawValue, in name order.
func headerMapRequest(method, path string, headers map[string]string, body string) string {
	entries := make([]map[string]string, 0, len(headers))
	for _, k := range slices.Sorted(maps.Keys(headers)) {
		entries = append(entries, map[string]string{"key": k, "rawValue": base64.StdEncoding.EncodeToString([]byte(headers[k]))})
	}
	h, _ := json.Marshal(entries)
	b, _ := json.Marshal(body)
	p, _ := json.Marshal(path)
	return `{"attributes":{"request":{"http":{"method":"` + method + `","path":` + string(p) + `,"headerMap":{"headers":` + string(h) + `},"body":` + string(b) + `}}}}`
}

// headerEncodings are the two ways Envoy sends a request's headers to the
// check: a test of what a header means runs in both.
var headerEncodings = []struct {
	name  string
	build func(method, path string, headers map[string]string, body string) string
}{
	{"headers", httpRequest},
	{"header_map", headerMapRequest},
}

func TestPolicySeesCanonicalRequest(t *testing.T) {
	p := authz.New(engineFor(t, "data.t.decision", requestPolicy, nil), authz.WithQuery("data.t.decision"))
	form := map[string]string{"content-type": "application/x-www-form-urlencoded"}
	multipart := map[string]string{"content-type": "multipart/form-data; boundary=b"}
	mpBody := "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\ndelete\r\n--b--\r\n"
	for _, tc := range []struct {
		name, method, path string
		headers            map[string]string
		body               string
		wantPath           string
		wantSegs           string
		wantLower          string
		wantMethods        string
		wantParsedPath     string
	}{
		{name: "double slash is not a host", method: "POST", path: "//customer/account/password/?a=1",
			wantPath: "/customer/account/password/", wantSegs: "customer,account,password", wantLower: "/customer/account/password/", wantMethods: "POST",
			wantParsedPath: "customer,account,password,"},
		{name: "case folded for routes", method: "get", path: "/Customer/Account/Password/",
			wantPath: "/Customer/Account/Password/", wantSegs: "Customer,Account,Password", wantLower: "/customer/account/password/", wantMethods: "GET",
			wantParsedPath: "Customer,Account,Password,"},
		{name: "params and encoded letters", method: "GET", path: "/%63ustomer/account;x/password;y/",
			wantPath: "/customer/account/password/", wantSegs: "customer,account,password", wantLower: "/customer/account/password/", wantMethods: "GET",
			wantParsedPath: "customer,account;x,password;y,"},
		{name: "override header", method: "GET", path: "/a", headers: map[string]string{"x-http-method-override": "post"},
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "GET,POST", wantParsedPath: "a"},
		{name: "override header, mixed-case name", method: "GET", path: "/a", headers: map[string]string{"X-HTTP-Method": "PUT"},
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "GET,PUT", wantParsedPath: "a"},
		{name: "override header with underscores", method: "POST", path: "/a", headers: map[string]string{"X_HTTP_Method_Override": "DELETE"},
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "override header, mixed separators", method: "POST", path: "/a", headers: map[string]string{"x-http_method-override": "DELETE"},
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "override header, two spellings", method: "GET", path: "/a", headers: map[string]string{"x-http-method-override": "PUT", "X_HTTP_METHOD_OVERRIDE": "DELETE"},
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "GET,PUT,DELETE", wantParsedPath: "a"},
		{name: "every override header", method: "GET", path: "/a", headers: map[string]string{"x-http-method-override": "POST", "x-http-method": "PUT", "x-method-override": "DELETE"},
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "GET,POST,PUT,DELETE", wantParsedPath: "a"},
		{name: "same method once", method: "POST", path: "/a", headers: map[string]string{"x-http-method-override": "post"},
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST", wantParsedPath: "a"},
		{name: "_method in query", method: "GET", path: "/a?x=1&_method=delete",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "GET,DELETE", wantParsedPath: "a"},
		{name: "_method in query, key encoded", method: "GET", path: "/a?%5Fmethod=PATCH",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "GET,PATCH", wantParsedPath: "a"},
		{name: "PHP: .method in query", method: "POST", path: "/a?.method=DELETE",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "PHP: leading space in query", method: "POST", path: "/a?%20_method=DELETE",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "PHP: leading + in query", method: "POST", path: "/a?+.method=PUT",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,PUT", wantParsedPath: "a"},
		{name: "PHP: unclosed [ in query", method: "POST", path: "/a?[method=PATCH",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,PATCH", wantParsedPath: "a"},
		{name: "PHP: array field in query", method: "POST", path: "/a?_method[]=DELETE",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "PHP: .method in form body", method: "POST", path: "/a", headers: form, body: "x=1&.method=DELETE",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "PHP: another name is not a carrier", method: "POST", path: "/a?x_method=DELETE&_methods=PUT",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST", wantParsedPath: "a"},
		{name: "_method in form body", method: "POST", path: "/a", headers: form, body: "x=1&_method=DELETE",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "_method in multipart body", method: "POST", path: "/a", headers: multipart, body: mpBody,
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "_method in JSON body", method: "POST", path: "/a", headers: map[string]string{"content-type": "application/json"}, body: `{"_method":"put"}`,
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,PUT", wantParsedPath: "a"},
		// Slim's MethodOverrideMiddleware reads _METHOD from a form or
		// JSON body; ASP.NET MVC reads X-HTTP-Method-Override from the
		// form and the query string, names compared in any case.
		{name: "Slim: _METHOD in form body", method: "POST", path: "/a", headers: form, body: "_METHOD=DELETE",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "Slim: _METHOD in JSON body", method: "POST", path: "/a", headers: map[string]string{"content-type": "application/json"}, body: `{"_METHOD":"DELETE"}`,
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "JSON carriers in a stable order", method: "POST", path: "/a", headers: map[string]string{"content-type": "application/json"}, body: `{"x-http-method-override":"PATCH","_Method":"PUT"}`,
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,PUT,PATCH", wantParsedPath: "a"},
		{name: "_METHOD in multipart body", method: "POST", path: "/a", headers: multipart, body: strings.Replace(mpBody, "_method", "_METHOD", 1),
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "_METHOD in query", method: "POST", path: "/a?_METHOD=DELETE",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "PHP: .Method in query", method: "POST", path: "/a?.Method=DELETE",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "ASP.NET: X-HTTP-Method-Override in form body", method: "POST", path: "/a", headers: form, body: "X-HTTP-Method-Override=DELETE",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "ASP.NET: X-HTTP-METHOD-OVERRIDE in form body", method: "POST", path: "/a", headers: form, body: "X-HTTP-METHOD-OVERRIDE=DELETE",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "ASP.NET: X-HTTP-Method-Override in query", method: "POST", path: "/a?X-HTTP-Method-Override=DELETE",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "ASP.NET: x-http-method-override in query", method: "POST", path: "/a?x-http-method-override=put",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,PUT", wantParsedPath: "a"},
		{name: "ASP.NET: dotless i in query name", method: "POST", path: "/a?X-HTTP-Method-Overr%C4%B1de=DELETE",
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "ASP.NET: X-HTTP-Method-Override in JSON body", method: "POST", path: "/a", headers: map[string]string{"content-type": "application/json"}, body: `{"X-HTTP-Method-Override":"DELETE"}`,
			wantPath: "/a", wantSegs: "a", wantLower: "/a", wantMethods: "POST,DELETE", wantParsedPath: "a"},
		{name: "root", method: "GET", path: "/", wantPath: "/", wantSegs: "", wantLower: "/", wantMethods: "GET", wantParsedPath: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := p.Check(context.Background(), checkRequest(t, httpRequest(tc.method, tc.path, tc.headers, tc.body)))
			if !resp.Allowed {
				t.Fatalf("denied: %s", resp.Reason)
			}
			var s seen
			if err := json.Unmarshal([]byte(resp.Reason), &s); err != nil {
				t.Fatal(err)
			}
			got := []string{s.R.Path, strings.Join(s.R.Segments, ","), s.R.LowerPath, strings.Join(s.R.Methods, ","), strings.Join(s.ParsedPath, ",")}
			want := []string{tc.wantPath, tc.wantSegs, tc.wantLower, tc.wantMethods, tc.wantParsedPath}
			for i, name := range []string{"path", "segments", "lower_path", "methods", "parsed_path"} {
				if got[i] != want[i] {
					t.Errorf("input.deputy.request %s = %q, want %q", name, got[i], want[i])
				}
			}
			if s.R.Method != strings.Split(tc.wantMethods, ",")[0] {
				t.Errorf("method = %q", s.R.Method)
			}
			if want := map[bool]string{true: s.R.Method, false: ""}[len(s.R.Methods) == 1]; s.R.SoleMethod != want {
				t.Errorf("sole_method = %q, want %q", s.R.SoleMethod, want)
			}
			if strings.Join(s.R.LowerSegments, "/") != strings.ToLower(strings.Join(s.R.Segments, "/")) {
				t.Errorf("lower_segments = %q", s.R.LowerSegments)
			}
		})
	}
}

// Envoy's encode_raw_headers sends header_map instead of headers: an
// override there counts the same, in any spelling.
func TestOverrideHeadersInHeaderMap(t *testing.T) {
	p := authz.New(engineFor(t, "data.t.decision", methodsPolicy, nil), authz.WithQuery("data.t.decision"))
	for _, tc := range []struct{ name, headerMap, want string }{
		{"value", `[{"key":"x-http-method-override","value":"DELETE"}]`, "POST,DELETE"},
		{"raw value", `[{"key":"x-http-method","rawValue":"UFVU"}]`, "POST,PUT"},
		{"underscores", `[{"key":"X_HTTP_Method_Override","rawValue":"REVMRVRF"}]`, "POST,DELETE"},
		{"other header", `[{"key":"x-http-method-overrider","value":"DELETE"}]`, "POST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := `{"attributes":{"request":{"http":{"method":"POST","path":"/a","headerMap":{"headers":` + tc.headerMap + `}}}}}`
			resp := p.Check(context.Background(), checkRequest(t, req))
			if !resp.Allowed || resp.Reason != tc.want {
				t.Errorf("methods = %q (allowed %v), want %q", resp.Reason, resp.Allowed, tc.want)
			}
		})
	}
}

// Resolvers see header_map too, value or raw value, names as sent, so the
// customer a request names is read wherever Envoy puts it. (Spellings with
// "_" never reach them: TestOnBehalfOfReachesUpstreamOnlyAsDecided.)
func TestResolversSeeHeaderMap(t *testing.T) {
	var got []string
	p := authz.New(engineFor(t, "data.t.decision", methodsPolicy, nil), authz.WithQuery("data.t.decision"),
		authz.WithResolvers(sidecar.DelegationResolverFunc(func(_ context.Context, r *sidecar.Request, _ *sidecar.Identity) (*sidecar.Delegation, error) {
			got = r.HeaderValues("x-on-behalf-of")
			return nil, nil
		})))
	req := `{"attributes":{"request":{"http":{"method":"GET","path":"/a","headers":{"X-On-Behalf-Of":"acme"},"headerMap":{"headers":[` +
		`{"key":"x-on-behalf-of","value":"globex"},{"key":"X-ON-BEHALF-OF","rawValue":"aW5pdGVjaA=="},{"key":"x-on-behalf-ofx","value":"no"}]}}}}}`
	p.Check(context.Background(), checkRequest(t, req))
	if want := []string{"acme", "globex", "initech"}; !slices.Equal(got, want) {
		t.Errorf("x-on-behalf-of values = %q, want %q", got, want)
	}
}

// Resolvers read the policy data of the activation deciding the check,
// even when a reload lands while they run: one revision's Rego never
// decides with the next revision's Go-read rules (a customer path, the
// reseller privileges).
func TestResolversReadTheDecidingActivation(t *testing.T) {
	const src = "package t\n\ndecision := {\"allowed\": true, \"reason\": data.t.rev}\n"
	e := engineFor(t, "data.t.decision", src, map[string]any{"t": map[string]any{"rev": "a"}})
	mod := ast.MustParseModuleWithOpts(src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	next := &policy.Set{Modules: map[string]*ast.Module{"policy.rego": mod}, Data: map[string]any{"t": map[string]any{"rev": "b"}}, Revision: "b"}
	var read any
	p := authz.New(e, authz.WithQuery("data.t.decision"),
		authz.WithResolvers(sidecar.DelegationResolverFunc(func(ctx context.Context, r *sidecar.Request, _ *sidecar.Identity) (*sidecar.Delegation, error) {
			if err := e.Activate(ctx, next); err != nil { // the reload lands now
				return nil, err
			}
			if d, ok := r.PolicyData["t"].(map[string]any); ok {
				read = d["rev"]
			}
			return nil, nil
		})))
	resp := p.Check(context.Background(), checkRequest(t, httpRequest("GET", "/a", nil, "")))
	if resp.Reason != "a" || read != "a" {
		t.Fatalf("Rego decided with revision %q, the resolver read revision %v: want both a", resp.Reason, read)
	}
}

func TestMethodOverridesAreConfigurable(t *testing.T) {
	e := engineFor(t, "data.t.decision", methodsPolicy, nil)
	req := httpRequest("GET", "/a?_method=DELETE&verb=PATCH", map[string]string{"x-http-method-override": "POST", "x-verb": "PUT"}, "")
	for _, tc := range []struct {
		name       string
		carriers   []string
		wantReason string
	}{
		{"defaults", nil, "GET,POST,DELETE"},
		{"none", []string{}, "GET"},
		{"own names", []string{"header:X-Verb", "query:verb"}, "GET,PUT,PATCH"},
		{"own names in another case", []string{"query:VERB"}, "GET,PATCH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []authz.Option{authz.WithQuery("data.t.decision")}
			if tc.carriers != nil {
				opts = append(opts, authz.WithMethodOverrides(tc.carriers))
			}
			resp := authz.New(e, opts...).Check(context.Background(), checkRequest(t, req))
			if !resp.Allowed || resp.Reason != tc.wantReason {
				t.Errorf("methods = %q (allowed %v), want %q", resp.Reason, resp.Allowed, tc.wantReason)
			}
		})
	}
}

func TestMalformedMethodsAreRefused(t *testing.T) {
	e := engineFor(t, "data.t.decision", "package t\n\ndecision := true\n", nil)
	p := authz.New(e, authz.WithQuery("data.t.decision"))
	for name, req := range map[string]string{
		"repeated override header":    httpRequest("GET", "/a", map[string]string{"x-http-method-override": "GET, DELETE"}, ""),
		"override with a space":       httpRequest("GET", "/a?_method=DE+LETE", nil, ""),
		"override in body with a NUL": httpRequest("POST", "/a", map[string]string{"content-type": "application/x-www-form-urlencoded"}, "_method=DELETE%00"),
		"no method":                   httpRequest("", "/a", nil, ""),
		"path not a path":             httpRequest("GET", "http://shop/a", nil, ""),
	} {
		t.Run(name, func(t *testing.T) {
			resp := p.Check(context.Background(), checkRequest(t, req))
			if resp.Allowed || resp.HTTPStatus != 400 || resp.Reason != authz.ReasonMalformedRequest {
				t.Errorf("got allowed=%v %d %s, want 400 %s", resp.Allowed, resp.HTTPStatus, resp.Reason, authz.ReasonMalformedRequest)
			}
		})
	}
}

// A POST body may name an override that Deputy cannot read: not sent to
// the check (nginx, Caddy), truncated, of a type frameworks parse and
// OPA-Envoy does not, or unparseable. Such a request is decided as every
// method an override could name; a body-less POST and a body frameworks
// never read overrides from are not.
func TestUnreadBodyOverrides(t *testing.T) {
	e := engineFor(t, "data.t.decision", methodsPolicy, nil)
	const every = "POST,GET,HEAD,PUT,PATCH,DELETE,OPTIONS"
	form := "application/x-www-form-urlencoded"
	big := strings.Repeat("a=1&", 3000) + "_method=DELETE"
	for _, tc := range []struct {
		name, method string
		headers      map[string]string
		body         string
		skipParse    bool
		want         string
	}{
		{"no content type is read as a form", "POST", nil, "_method=DELETE", false, "POST,DELETE"},
		{"form type with a broken parameter", "POST", map[string]string{"content-type": form + "; charset"}, "_method=DELETE", false, "POST,DELETE"},
		{"text/json", "POST", map[string]string{"content-type": "text/json"}, `{"_method":"DELETE"}`, false, "POST,DELETE"},
		{"JSON with a broken parameter", "POST", map[string]string{"content-type": "application/json; x"}, `{"_method":"DELETE"}`, false, "POST,DELETE"},
		{"vendor /json type", "POST", map[string]string{"content-type": "application/vnd.api/json"}, `{"_method":"PUT"}`, false, "POST,PUT"},
		{"JSON array (Express takes its first item)", "POST", map[string]string{"content-type": "application/json"}, `{"_method":["DELETE"]}`, false, every},
		{"text/json array", "POST", map[string]string{"content-type": "text/json"}, `{"_method":["DELETE"]}`, false, every},
		{"JSON:API array", "POST", map[string]string{"content-type": "application/vnd.api+json"}, `{"_method":["DELETE"]}`, false, every},
		{"JSON object", "POST", map[string]string{"content-type": "application/json"}, `{"_method":{"0":"DELETE"}}`, false, every},
		{"JSON number", "POST", map[string]string{"content-type": "application/json"}, `{"_method":1}`, false, every},
		{"JSON null", "POST", map[string]string{"content-type": "application/json"}, `{"_method":null}`, false, every},
		{"JSON without a carrier", "POST", map[string]string{"content-type": "application/json"}, `{"method":["DELETE"]}`, false, "POST"},
		{"multipart/mixed", "POST", map[string]string{"content-type": "multipart/mixed; boundary=b"},
			"--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n", false, every},
		{"body not sent, length known", "POST", map[string]string{"content-type": form, "content-length": "14"}, "", false, every},
		{"body not sent, chunked", "POST", map[string]string{"content-type": form, "transfer-encoding": "chunked"}, "", false, every},
		{"body not sent, no content type", "POST", map[string]string{"content-length": "14"}, "", false, every},
		{"truncated body", "POST", map[string]string{"content-type": form, "content-length": "20000"}, big[:8192], false, every},
		{"partial body", "POST", map[string]string{"content-type": form, "x-envoy-auth-partial-body": "true"}, "a=1", false, every},
		{"unparseable form, parse_body off", "POST", map[string]string{"content-type": form}, "_method=DELETE&%zz", true, every},
		{"body-less POST", "POST", map[string]string{"content-type": form, "content-length": "0"}, "", false, "POST"},
		{"POST without any body headers", "POST", nil, "", false, "POST"},
		{"body of a type frameworks do not read", "POST", map[string]string{"content-type": "text/plain", "content-length": "14"}, "", false, "POST"},
		{"not a POST", "PUT", map[string]string{"content-type": form, "content-length": "14"}, "", false, "PUT"},
		{"truncated body, names in upper case", "POST", map[string]string{"Content-Type": form, "Content-Length": "20000"}, big[:8192], false, every},
		{"partial body, name in upper case", "POST", map[string]string{"content-type": form, "X-Envoy-Auth-Partial-Body": "true"}, "a=1", false, every},
		// With parse_body on, a compressed form is refused (see
		// TestRawBodyReadAsBody).
		{"gzip body, parse_body off", "POST", map[string]string{"content-type": form, "content-encoding": "gzip"}, "x=1", true, every},
		{"form in a type spelled in upper case", "POST", map[string]string{"Content-Type": "Application/X-WWW-Form-Urlencoded"}, "_method=PUT", false, "POST,PUT"},
		// A field name Go leaves encoded and another parser may decode
		// (RFC 2047 encoded words, RFC 2231 charsets Go ignores), or a
		// part with two dispositions, which parsers read differently.
		{"multipart name as an RFC 2047 B word", "POST", map[string]string{"content-type": "multipart/form-data; boundary=b"},
			"--b\r\nContent-Disposition: form-data; name=\"=?utf-8?B?X21ldGhvZA==?=\"\r\n\r\nDELETE\r\n--b--\r\n", false, every},
		{"multipart name as an RFC 2047 Q word", "POST", map[string]string{"content-type": "multipart/form-data; boundary=b"},
			"--b\r\nContent-Disposition: form-data; name=\"=?utf-8?Q?=5F=6Dethod?=\"\r\n\r\nDELETE\r\n--b--\r\n", false, every},
		{"multipart name in a charset Go ignores", "POST", map[string]string{"content-type": "multipart/form-data; boundary=b"},
			"--b\r\nContent-Disposition: form-data; name*=iso-8859-1''_%6Dethod\r\n\r\nDELETE\r\n--b--\r\n", false, every},
		{"multipart part with two dispositions", "POST", map[string]string{"content-type": "multipart/form-data; boundary=b"},
			"--b\r\nContent-Disposition: form-data; name=\"note\"\r\nContent-Disposition: form-data; name=\"_%6Dethod\"\r\n\r\nDELETE\r\n--b--\r\n", false, every},
		{"multipart with plain names", "POST", map[string]string{"content-type": "multipart/form-data; boundary=b"},
			"--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n=?x name*=\r\n" +
				"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a=?.txt\"; filename*=utf-8''r%C3%A9sum%C3%A9.txt\r\n\r\nx\r\n--b--\r\n", false, "POST"},
	} {
		for _, enc := range headerEncodings {
			t.Run(tc.name+"/"+enc.name, func(t *testing.T) {
				opts := []authz.Option{authz.WithQuery("data.t.decision"), authz.WithBodyParsing(!tc.skipParse)}
				resp := authz.New(e, opts...).Check(context.Background(), checkRequest(t, enc.build(tc.method, "/a", tc.headers, tc.body)))
				if !resp.Allowed || resp.Reason != tc.want {
					t.Errorf("methods = %q (allowed %v), want %q", resp.Reason, resp.Allowed, tc.want)
				}
			})
		}
	}
	for _, enc := range headerEncodings {
		t.Run("no body carrier configured/"+enc.name, func(t *testing.T) {
			p := authz.New(e, authz.WithQuery("data.t.decision"), authz.WithMethodOverrides([]string{"header:x-http-method-override", "query:_method"}))
			resp := p.Check(context.Background(), checkRequest(t, enc.build("POST", "/a", map[string]string{"content-type": form, "content-length": "14"}, "")))
			if !resp.Allowed || resp.Reason != "POST" {
				t.Errorf("methods = %q (allowed %v), want POST", resp.Reason, resp.Allowed)
			}
		})
	}
}

// A content type that is not exactly one media type is read differently
// by each framework: PHP and Rack cut the media type at ";" or "," and
// see a form, Laravel finds "/json" or "+json" anywhere and reads JSON, an
// upstream that takes the last of two content-type headers (which Envoy
// joins with ",") reads the second. A POST is decided on the methods of
// every reading, and as every override method when one of them cannot
// read the body.
func TestAmbiguousContentTypes(t *testing.T) {
	e := engineFor(t, "data.t.decision", methodsPolicy, nil)
	const every = "POST,GET,HEAD,PUT,PATCH,DELETE,OPTIONS"
	form := "application/x-www-form-urlencoded"
	formInJSON := `{"a":"&_method=DELETE&"}` // a form to PHP: _method=DELETE
	for _, tc := range []struct{ name, ct, body, want string }{
		{"control: a form", form, formInJSON, "POST,DELETE"},
		{"control: JSON", "application/json", formInJSON, "POST"},
		{"form, then a parameter holding /json", form + "; x=/json", formInJSON, "POST,DELETE"},
		{"form, then /json", form + ";/json", formInJSON, "POST,DELETE"},
		{"form and JSON joined", form + ",application/json", formInJSON, "POST,DELETE"},
		{"JSON and form joined", "application/json," + form, formInJSON, "POST,DELETE"},
		{"form with charset, then a/json", form + "; charset=utf-8; q=a/json", formInJSON, "POST,DELETE"},
		{"form, then a boundary of +json", form + " ; boundary=+json", formInJSON, "POST,DELETE"},
		{"form with the +json suffix", form + "+json", formInJSON, "POST,DELETE"},
		{"multipart, then a parameter holding /json", "multipart/form-data; boundary=x; y=/json", formInJSON, every},
		{"multipart and form joined", "multipart/form-data; boundary=x," + form, "_method=DELETE", every},
		// Laravel reads the JSON (isJson), PHP and Rack the form.
		{"a valid form type with a quoted /json", form + `; x="/json"`, `{"_method":"DELETE"}`, "POST,DELETE"},
		{"a valid form type with a quoted /json, a form body", form + `; x="/json"`, "_method=PUT", "POST,PUT,GET,HEAD,PATCH,DELETE,OPTIONS"},
		{"form and JSON joined, a body only JSON reads", form + ",application/json", `{"x":";","_method":"PATCH"}`, "POST,PATCH,GET,HEAD,PUT,DELETE,OPTIONS"},
		{"form and JSON joined, no carrier in either", form + ",application/json", `{"a":1}`, "POST"},
	} {
		for _, enc := range headerEncodings {
			t.Run(tc.name+"/"+enc.name, func(t *testing.T) {
				headers := map[string]string{"content-type": tc.ct, "content-length": strconv.Itoa(len(tc.body))}
				resp := authz.New(e, authz.WithQuery("data.t.decision")).Check(context.Background(), checkRequest(t, enc.build("POST", "/a", headers, tc.body)))
				if !resp.Allowed || resp.Reason != tc.want {
					t.Errorf("methods = %q (allowed %v, status %d), want %q", resp.Reason, resp.Allowed, resp.HTTPStatus, tc.want)
				}
			})
		}
	}
}

// The headers that frame a body are sent once, under their own names:
// two content-length or content-type entries (twice in header_map, or in
// headers and header_map both), or one spelled with "_", are refused, as
// upstreams differ on which they read. Whether the body is parsed or not.
func TestRepeatedBodyHeadersAreRefused(t *testing.T) {
	e := engineFor(t, "data.t.decision", methodsPolicy, nil)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	req := func(headers, headerMap, body string) string {
		return `{"attributes":{"request":{"http":{"method":"POST","path":"/a","headers":` + headers + `,"headerMap":{"headers":` + headerMap + `},"body":"` + body + `"}}}}`
	}
	form := b64("application/x-www-form-urlencoded")
	for _, tc := range []struct {
		name    string
		req     string
		refused bool
		want    string // methods when not refused
	}{
		{"content-length twice in header_map", req(`{}`, `[{"key":"content-length","rawValue":"`+b64("3")+`"},{"key":"Content-Length","rawValue":"`+b64("3")+`"}]`, "a=1"), true, ""},
		{"content-length in headers and header_map", req(`{"content-length":"3"}`, `[{"key":"content-length","value":"9000"}]`, "a=1"), true, ""},
		{"content-type twice in header_map", req(`{}`, `[{"key":"content-type","rawValue":"`+form+`"},{"key":"content-type","rawValue":"`+b64("application/json")+`"}]`, "a=1"), true, ""},
		{"content-type in headers and header_map", req(`{"content-type":"application/json"}`, `[{"key":"content-type","rawValue":"`+form+`"}]`, "a=1"), true, ""},
		{"content_length in headers", req(`{"content_length":"3"}`, `[]`, "a=1"), true, ""},
		{"Content_Type in header_map", req(`{}`, `[{"key":"Content_Type","rawValue":"`+b64("application/json")+`"}]`, "a=1"), true, ""},
		{"content-length in two cases in headers", req(`{"content-length":"3","Content-Length":"9000"}`, `[]`, "a=1"), true, ""},
		{"content-type in two cases in headers", req(`{"Content-Type":"application/json","content-type":"application/x-www-form-urlencoded"}`, `[]`, "a=1"), true, ""},
		{"content-length and content_length", req(`{"content-length":"3","content_length":"9000"}`, `[]`, "a=1"), true, ""},
		{"control: each once, in any case", req(`{}`, `[{"key":"Content-Type","rawValue":"`+form+`"},{"key":"CONTENT-LENGTH","value":"16"}]`, "_method=DELETE&a"), false, "POST,DELETE"},
	} {
		for _, parse := range []bool{true, false} {
			t.Run(tc.name+"/parse_body="+strconv.FormatBool(parse), func(t *testing.T) {
				resp := authz.New(e, authz.WithQuery("data.t.decision"), authz.WithBodyParsing(parse)).Check(context.Background(), checkRequest(t, tc.req))
				checkMethodsOrRefused(t, resp, tc.refused, tc.want)
			})
		}
	}
}

// The shipped policies deny a partner at level update a DELETE of a
// service request: a POST whose body may run as DELETE is denied too,
// whether Envoy sends the headers in headers or header_map, and whatever
// the content type's readings.
func TestShippedPolicyDecidesBodyOverrides(t *testing.T) {
	p := shippedPipeline(t, authz.WithResolvers(sidecar.DelegationResolverFunc(func(context.Context, *sidecar.Request, *sidecar.Identity) (*sidecar.Delegation, error) {
		return &sidecar.Delegation{Mode: sidecar.ModePartner, ID: "g1", Actor: "pat", ActorOrg: "helpco", Subject: "acme", Level: "update", Scope: "organisation"}, nil
	})))
	const path = "/customers/acme/service-requests/1"
	form := "application/x-www-form-urlencoded"
	full := "note=" + strings.Repeat("x", 9000) + "&_method=DELETE"
	for _, tc := range []struct {
		name    string
		method  string
		headers map[string]string
		body    string
		allowed bool
	}{
		{"control: a plain POST", "POST", map[string]string{"content-type": form, "content-length": "6"}, "note=x", true},
		{"control: DELETE", "DELETE", nil, "", false},
		{"_method=DELETE past the body cut", "POST", map[string]string{"content-type": form, "content-length": strconv.Itoa(len(full)), "x-envoy-auth-partial-body": "true"}, full[:8192], false},
		{"_method=DELETE in a form PHP reads, sent as /json", "POST", map[string]string{"content-type": form + "; x=/json", "content-length": "24"}, `{"a":"&_method=DELETE&"}`, false},
		{"_method=DELETE in a JSON body", "POST", map[string]string{"content-type": "application/json", "content-length": "20"}, `{"_method":"DELETE"}`, false},
	} {
		for _, enc := range headerEncodings {
			t.Run(tc.name+"/"+enc.name, func(t *testing.T) {
				resp := p.Check(context.Background(), checkRequest(t, enc.build(tc.method, path, tc.headers, tc.body)))
				if resp.Allowed != tc.allowed {
					t.Errorf("allowed = %v (status %d, reason %s), want %v", resp.Allowed, resp.HTTPStatus, resp.Reason, tc.allowed)
				}
			})
		}
	}
}

// checkMethodsOrRefused fails t unless resp is the 400 malformed_request
// refusal (refused), or else allowed with the methods want (under
// methodsPolicy).
func checkMethodsOrRefused(t *testing.T, resp *authz.Response, refused bool, want string) {
	t.Helper()
	if refused {
		if resp.Allowed || resp.HTTPStatus != 400 || resp.Reason != authz.ReasonMalformedRequest {
			t.Errorf("got allowed=%v %d %s, want 400 %s", resp.Allowed, resp.HTTPStatus, resp.Reason, authz.ReasonMalformedRequest)
		}
		return
	}
	if !resp.Allowed || resp.Reason != want {
		t.Errorf("methods = %q (allowed %v), want %q", resp.Reason, resp.Allowed, want)
	}
}

// PHP reads a query or form field name as a C string: "_method\x00x" is
// $_GET['_method']. A field name or value holding a control character is
// refused before policy, whatever its name.
func TestControlCharactersInFieldsAreRefused(t *testing.T) {
	e := engineFor(t, "data.t.decision", methodsPolicy, nil)
	form := map[string]string{"content-type": "application/x-www-form-urlencoded"}
	for _, tc := range []struct {
		name, method, path string
		headers            map[string]string
		body               string
		skipParse          bool
		refused            bool
		want               string // methods when not refused
	}{
		{name: "query: encoded NUL ending the name", method: "POST", path: "/a?_method%00=DELETE", refused: true},
		{name: "query: encoded NUL inside the name", method: "POST", path: "/a?_method%00x=DELETE", refused: true},
		{name: "query: raw NUL in the name", method: "POST", path: "/a?_method\x00x=DELETE", refused: true},
		{name: "query: other name with a control character", method: "GET", path: "/a?q%01=1", refused: true},
		{name: "query: DEL in the name", method: "GET", path: "/a?q%7F=1", refused: true},
		{name: "query: NUL in a value", method: "GET", path: "/a?q=a%00b", refused: true},
		{name: "form: encoded NUL in the name", method: "POST", path: "/a", headers: form, body: "_method%00x=DELETE", refused: true},
		{name: "form: encoded NUL in the name, parse_body off", method: "POST", path: "/a", headers: form, body: "_method%00x=DELETE", skipParse: true, refused: true},
		{name: "form: NUL in a value", method: "POST", path: "/a", headers: form, body: "a=1%00", refused: true},
		{name: "form: control character in a name, no content type", method: "POST", path: "/a", body: "_method%00=DELETE", want: "POST,GET,HEAD,PUT,PATCH,DELETE,OPTIONS"},
		{name: "control: _method in query", method: "POST", path: "/a?_method=DELETE", want: "POST,DELETE"},
		{name: "a textarea's lines in a form value", method: "POST", path: "/a", headers: form, body: "note=a%0D%0Ab%09c", want: "POST"},
		{name: "an escape that is not a control character", method: "GET", path: "/a?q=%2F%7E%20", want: "GET"},
		{name: "a stray percent", method: "GET", path: "/a?q=100%", want: "GET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := authz.New(e, authz.WithQuery("data.t.decision"), authz.WithBodyParsing(!tc.skipParse))
			resp := p.Check(context.Background(), checkRequest(t, httpRequest(tc.method, tc.path, tc.headers, tc.body)))
			checkMethodsOrRefused(t, resp, tc.refused, tc.want)
		})
	}
}

// Multipart parsers disagree, and Deputy does not mirror PHP's: a POST
// multipart body holding the carrier's name core anywhere is decided as
// every method a body override may name, unless Deputy read each
// occurrence as a carrier value. Uploads without the word are unaffected.
func TestMultipartOverridesDeputyCannotRead(t *testing.T) {
	e := engineFor(t, "data.t.decision", methodsPolicy, nil)
	const every = "POST,GET,HEAD,PUT,PATCH,DELETE,OPTIONS"
	mp := map[string]string{"content-type": "multipart/form-data; boundary=BBB"}
	part := func(disposition, value string) string {
		return "--BBB\r\nContent-Disposition: " + disposition + "\r\n\r\n" + value + "\r\n"
	}
	for _, tc := range []struct {
		name    string
		headers map[string]string
		body    string
		want    string
	}{
		{"a field read as the carrier", mp, part(`form-data; name="_method"`, "DELETE") + "--BBB--\r\n", "POST,DELETE"},
		{"an upload without the word", mp, part(`form-data; name="title"`, "hello") +
			part(`form-data; name="file"; filename="a.txt"`, "plain text") + "--BBB--\r\n", "POST"},
		{"single-quoted name", mp, part(`form-data; name='_method'`, "DELETE") + "--BBB--\r\n", every},
		{"boundary parameter inside another", map[string]string{"content-type": "multipart/form-data; xboundary=AAA; boundary=BBB"},
			part(`form-data; name="x"`, "--AAA\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--AAA--\r\n") + "--BBB--\r\n", every},
		{"repeated name parameter", mp, part(`form-data; name="x"; name="_method"`, "DELETE") + "--BBB--\r\n", every},
		{"a part after the close delimiter", mp, part(`form-data; name="x"`, "1") + "--BBB--\r\n" +
			part(`form-data; name="_method"`, "DELETE") + "--BBB--\r\n", every},
		{"a carrier read, another after the close delimiter", mp, part(`form-data; name="_method"`, "PUT") + "--BBB--\r\n" +
			part(`form-data; name="_method"`, "DELETE") + "--BBB--\r\n", "POST,PUT,GET,HEAD,PATCH,DELETE,OPTIONS"},
		{"filename* makes a field for PHP", mp, part(`form-data; name="_method"; filename*=UTF-8''a.txt`, "DELETE") + "--BBB--\r\n", every},
		{"attachment disposition", mp, part(`attachment; name="_method"`, "DELETE") + "--BBB--\r\n", every},
		{"the word in upper case in a value", mp, part(`form-data; name="note"`, "METHOD") + "--BBB--\r\n", every},
		{"multipart/mixed", map[string]string{"content-type": "multipart/mixed; boundary=BBB"},
			part(`form-data; name="_method"`, "DELETE") + "--BBB--\r\n", every},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := authz.New(e, authz.WithQuery("data.t.decision")).Check(context.Background(), checkRequest(t, httpRequest("POST", "/a", tc.headers, tc.body)))
			if !resp.Allowed || resp.Reason != tc.want {
				t.Errorf("methods = %q (allowed %v), want %q", resp.Reason, resp.Allowed, tc.want)
			}
		})
	}
	t.Run("no body carrier configured", func(t *testing.T) {
		p := authz.New(e, authz.WithQuery("data.t.decision"), authz.WithMethodOverrides([]string{"query:_method"}))
		resp := p.Check(context.Background(), checkRequest(t, httpRequest("POST", "/a", mp, part(`attachment; name="_method"`, "DELETE")+"--BBB--\r\n")))
		if !resp.Allowed || resp.Reason != "POST" {
			t.Errorf("methods = %q (allowed %v), want POST", resp.Reason, resp.Allowed)
		}
	})
}

// spelled_route_segments lines the client's spelling up with the route
// form, so a rule compares an id as sent at a route segment's index; it is
// built the same whether or not the policy reads route_segments too.
func TestSpelledRouteSegments(t *testing.T) {
	both := "package t\n\ndecision := {\"allowed\": true, \"reason\": concat(\" \", [concat(\",\", input.deputy.request.route_segments), concat(\",\", input.deputy.request.spelled_route_segments)])}\n"
	alone := "package t\n\ndecision := {\"allowed\": true, \"reason\": concat(\" \", [\"-\", concat(\",\", input.deputy.request.spelled_route_segments)])}\n"
	for _, tc := range []struct{ path, route, spelled string }{
		{"/customers/Acme/service-requests/42", "customers,acme,service-requests,42", "customers,Acme,service-requests,42"},
		{"/index.php/Customers/Acme", "customers,acme", "Customers,Acme"},
		{"/a/index.php/b", "a,b", "a,b"},
		{"/customers/Acme/password.json", "customers,acme,password", "customers,Acme,password.json"},
		{"/customers/Acme/x./%20", "customers,acme,x", "customers,Acme,x."},
		// Blank segments after the customer must not shift the spelling of
		// a later segment onto it: ACME stays ACME.
		{"/customers/ACME/service-requests/acme/%20/%20", "customers,acme,service-requests,acme", "customers,ACME,service-requests,acme"},
		{"/customers/ACME/service-requests/acme/.../...", "customers,acme,service-requests,acme", "customers,ACME,service-requests,acme"},
		{"/index.php/%20/Customers/%20/Acme", "customers,acme", "Customers,Acme"},
		{"/", "", ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			for name, policy := range map[string]string{"with route_segments": both, "alone": alone} {
				p := authz.New(engineFor(t, "data.t.decision", policy, nil), authz.WithQuery("data.t.decision"))
				resp := p.Check(context.Background(), checkRequest(t, httpRequest("GET", tc.path, nil, "")))
				want := tc.route + " " + tc.spelled
				if policy == alone {
					want = "- " + tc.spelled
				}
				if resp.Reason != want {
					t.Errorf("%s: route and spelled = %q, want %q", name, resp.Reason, want)
				}
			}
		})
	}
}

// Dry run lets policy denials through, never a request Deputy cannot read
// as the upstream will: those are refused (400, logged as refused, not as
// a dry-run allow) and carry no delegated identity.
func TestDryRunEnforcesCanonicalRefusals(t *testing.T) {
	logs := &logSink{}
	deleg := authz.WithResolvers(delegationFunc(func() (*sidecar.Delegation, error) {
		return &sidecar.Delegation{Mode: sidecar.ModeImpersonation, Actor: "staff-1", Subject: "cust-1"}, nil
	}))
	p := authz.New(engineFor(t, "data.t.decision", "package t\n\ndecision := false\n", nil),
		authz.WithQuery("data.t.decision"), authz.WithDryRun(true), authz.WithDecisionLogger(logs), deleg)
	for _, tc := range []struct {
		name, method, path string
		headers            map[string]string
	}{
		{name: "dot segment", method: "GET", path: "/catalog/../customer/account/password/"},
		{name: "encoded slash", method: "GET", path: "/customer%2Faccount/password/"},
		{name: "encoded question mark", method: "GET", path: "/catalog%3F/../customer/account/password/"},
		{name: "encoded hash", method: "GET", path: "/customer/account/password%23/"},
		{name: "backslash", method: "GET", path: "/customer\\account/password/"},
		{name: "double encoding", method: "GET", path: "/catalog/%252e%252e/customer/"},
		{name: "not a path", method: "GET", path: "http://evil/customer/account/password/"},
		{name: "ambiguous override", method: "POST", path: "/a", headers: map[string]string{"x-http-method-override": "GET, DELETE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.got = nil
			resp := p.Check(context.Background(), checkRequest(t, httpRequest(tc.method, tc.path, tc.headers, "")))
			if resp.Allowed || resp.HTTPStatus != 400 || resp.Reason != authz.ReasonMalformedRequest {
				t.Fatalf("allowed %v status %d reason %q, want a 400 %s refusal", resp.Allowed, resp.HTTPStatus, resp.Reason, authz.ReasonMalformedRequest)
			}
			if len(resp.Injected) != 0 {
				t.Fatalf("identity injected on a refusal: %v", resp.Injected)
			}
			if len(logs.got) != 1 || logs.got[0].DryRun || logs.got[0].Allowed {
				t.Fatalf("decision record %+v, want one refusal not marked dry run", logs.got)
			}
		})
	}
	// A policy denial is still let through: that is what dry run is for.
	if resp := p.Check(context.Background(), checkRequest(t, httpRequest("GET", "/catalog/", nil, ""))); !resp.Allowed {
		t.Fatalf("dry run denied a policy denial: %+v", resp)
	}
}

// nginx and Caddy pass a "#" in the request target on, and the
// application's query parser reads what follows as more parameters (Go's
// ParseRequestURI keeps it in RawQuery, nginx's $args too): a "#" in the
// query is refused, as one in the path is, rather than cut off before the
// overrides and the GraphQL document behind it are read.
func TestFragmentInTheQueryIsRefused(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	token := "fragment-session-token-0123456789abcdef012"
	redeemedSession(t, store, token)
	sessions := resolve.NewSessionResolver(store, delegation.ImpersonationDefaults())
	t.Cleanup(func() { sessions.Close() })
	p := shippedPipeline(t, authz.WithResolvers(sessions))
	staff := map[string]string{"cookie": "deputy_session=" + token}
	if resp := p.Check(ctx, withHeaders(t, "/customer/account/edit/?x=1", staff)); !resp.Allowed {
		t.Fatalf("the account edit form is refused: %d %s", resp.HTTPStatus, resp.Reason)
	}
	for _, path := range []string{
		"/customer/account/edit/?x=1#&_method=POST",
		"/customer/account/edit/?#_method=POST",
		"/graphql?x=1#&query=mutation%7BupdateCustomerV2(input%3A%7B%7D)%7Bcustomer%7Bid%7D%7D%7D",
		"/customer/account/edit/?x=1#",
	} {
		t.Run(path, func(t *testing.T) {
			wantRefused(t, p.Check(ctx, withHeaders(t, path, staff)))
		})
	}
}

// X-Original-URL and X-Rewrite-URL (IIS URL Rewrite's headers) replace the
// request URI in Zend Framework 1 (Magento 1), Laminas and Symfony before
// their 2018 fixes: such an upstream routes the header's path while Deputy
// decides the request line's. No client sets them, so Deputy refuses them
// in every spelling, whatever they name.
func TestURLRewriteHeadersAreRefused(t *testing.T) {
	p := authz.New(engineFor(t, "data.t.decision", "package t\n\ndecision := true\n", nil), authz.WithQuery("data.t.decision"))
	for _, tc := range []struct{ name, req string }{
		{"X-Original-URL", httpRequest("GET", "/catalog/shoes", map[string]string{"x-original-url": "/customer/account/password/"}, "")},
		{"X-Rewrite-URL", httpRequest("GET", "/catalog/shoes", map[string]string{"x-rewrite-url": "/customer/account/password/"}, "")},
		{"mixed case", httpRequest("GET", "/catalog/shoes", map[string]string{"X-Original-Url": "/customer/account/password/"}, "")},
		{"underscores", httpRequest("GET", "/catalog/shoes", map[string]string{"x_original_url": "/customer/account/password/"}, "")},
		{"same path", httpRequest("GET", "/catalog/shoes", map[string]string{"x-original-url": "/catalog/shoes"}, "")},
		{"header_map", `{"attributes":{"request":{"http":{"method":"GET","path":"/catalog/shoes","headerMap":{"headers":[{"key":"X_Rewrite_URL","value":"/customer/account/password/"}]}}}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantRefused(t, p.Check(context.Background(), checkRequest(t, tc.req)))
		})
	}
	// Names that only look alike are not refused.
	resp := p.Check(context.Background(), checkRequest(t, httpRequest("GET", "/catalog/shoes", map[string]string{"x-original-uri": "/x", "x-original-urls": "/y"}, "")))
	if !resp.Allowed {
		t.Fatalf("refused: %s", resp.Reason)
	}
}

// wantRefused fails unless resp is a 400 malformed_request refusal.
func wantRefused(t *testing.T, resp *authz.Response) {
	t.Helper()
	if resp.Allowed || resp.HTTPStatus != 400 || resp.Reason != authz.ReasonMalformedRequest {
		t.Fatalf("allowed %v status %d reason %q, want a 400 refusal", resp.Allowed, resp.HTTPStatus, resp.Reason)
	}
}

// In HTTP/2 and HTTP/3 a body needs neither content-length nor
// transfer-encoding. Behind an Envoy not configured to send the body
// (with_request_body), a form POST without a length reached the check
// body-less and was decided as a POST, while the upstream read its
// _method=DELETE. Over those protocols a POST stating no length has an
// unknown body; over HTTP/1.x (and a request not stating its protocol,
// as a hand-written one for deputy eval) it has none.
func TestBodyOfUnstatedLengthOverHTTP2(t *testing.T) {
	e := engineFor(t, "data.t.decision", methodsPolicy, nil)
	const every = "POST,GET,HEAD,PUT,PATCH,DELETE,OPTIONS"
	form := "application/x-www-form-urlencoded"
	for _, tc := range []struct {
		name, protocol string
		headers        map[string]string
		want           string
	}{
		{"HTTP/2, no length", "HTTP/2", map[string]string{"content-type": form}, every},
		{"HTTP/3, no length", "HTTP/3", map[string]string{"content-type": form}, every},
		{"Go's HTTP/2.0, no length", "HTTP/2.0", map[string]string{"content-type": form}, every},
		{"HTTP/2, no content type", "HTTP/2", nil, every},
		{"HTTP/2, length 0", "HTTP/2", map[string]string{"content-type": form, "content-length": "0"}, "POST"},
		{"HTTP/2, not a form", "HTTP/2", map[string]string{"content-type": "text/plain"}, "POST"},
		{"HTTP/1.1, no length", "HTTP/1.1", map[string]string{"content-type": form}, "POST"},
		{"HTTP/1.0, no length", "HTTP/1.0", map[string]string{"content-type": form}, "POST"},
		{"protocol not stated, no length", "", map[string]string{"content-type": form}, "POST"},
	} {
		for _, enc := range headerEncodings {
			t.Run(tc.name+"/"+enc.name, func(t *testing.T) {
				req := enc.build("POST", "/a", tc.headers, "")
				if tc.protocol != "" {
					req = strings.Replace(req, `"http":{`, `"http":{"protocol":"`+tc.protocol+`",`, 1)
				}
				resp := authz.New(e, authz.WithQuery("data.t.decision")).Check(context.Background(), checkRequest(t, req))
				if !resp.Allowed || resp.Reason != tc.want {
					t.Errorf("methods = %q (allowed %v), want %q", resp.Reason, resp.Allowed, tc.want)
				}
			})
		}
	}
}
