package envoycheck_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/deputyhq/deputy/examples/envoycheck"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/envoy"
)

func TestShippedConfigs(t *testing.T) {
	tests := []struct {
		file string
		grpc bool // ext_authz over gRPC rather than http_service
	}{
		{file: "envoy.yaml", grpc: true},
		{file: "envoy-http.yaml", grpc: false},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			doc, err := os.ReadFile(filepath.Join("..", "envoy", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			b, err := envoycheck.Bootstrap(doc)
			if err != nil {
				t.Fatalf("shipped config rejected: %v", err)
			}
			authz := extAuthz(t, b)
			// Deputy unreachable must never mean allowed.
			if authz.GetFailureModeAllow() {
				t.Error("failure_mode_allow is true")
			}
			// Without the body, a form POST's _method=DELETE is unseen:
			// over http_service Envoy even states its length as 0.
			if wrb := authz.GetWithRequestBody(); wrb == nil || wrb.GetMaxRequestBytes() == 0 {
				t.Error("with_request_body is not set: Deputy cannot decide a body's method override")
			}
			// Over gRPC the body goes in raw_body only with pack_as_bytes;
			// otherwise in body, a proto3 string, whatever its bytes: a
			// file upload is not UTF-8. http_service sends the bytes as
			// they are and has no such setting.
			if tc.grpc && !authz.GetWithRequestBody().GetPackAsBytes() {
				t.Error("with_request_body.pack_as_bytes is not set: Envoy sends a binary upload as a string")
			}
			if got := authz.GetStatusOnError().GetCode(); got != 503 {
				t.Errorf("status_on_error = %v, want 503", got)
			}
			if got := authz.GetTransportApiVersion().String(); got != "V3" {
				t.Errorf("transport_api_version = %s", got)
			}
			// A check answer never steers Envoy's router or changes the
			// host, scheme or method decided on.
			if err := envoycheck.RefusesControlHeaders(authz); err != nil {
				t.Error(err)
			}
			if (authz.GetGrpcService() != nil) != tc.grpc || (authz.GetHttpService() != nil) == tc.grpc {
				t.Errorf("grpc_service=%v http_service=%v, want gRPC %v", authz.GetGrpcService() != nil, authz.GetHttpService() != nil, tc.grpc)
			}
			// Applications behind auth_request-style setups route or log on
			// X-Original-URI, and frameworks read the host, scheme, port
			// and prefix from forwarding headers: a client's copy, in any
			// spelling, never reaches them while Deputy decided on the
			// request line and the Host. X-Forwarded-Proto and -For are
			// Envoy's own, from the connection it accepted.
			var hcm hcmv3.HttpConnectionManager
			if err := protoUnmarshal(b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().GetValue(), &hcm); err != nil {
				t.Fatal(err)
			}
			if !hcm.GetUseRemoteAddress().GetValue() || hcm.GetXffNumTrustedHops() != 0 {
				t.Errorf("use_remote_address = %v, xff_num_trusted_hops = %d: a client's x-forwarded-proto would reach the application", hcm.GetUseRemoteAddress().GetValue(), hcm.GetXffNumTrustedHops())
			}
			for _, name := range envoycheck.ClientHeaders() {
				if !slices.Contains(hcm.GetRouteConfig().GetRequestHeadersToRemove(), name) {
					t.Errorf("route_config does not remove a client's %s", name)
				}
			}
			// Redeem codes travel in a query string: the access log
			// must not write it.
			if len(hcm.GetAccessLog()) == 0 {
				t.Error("no access log")
			}
			if err := envoycheck.AccessLogsWithoutQuery(b); err != nil {
				t.Error(err)
			}
			// The access log writes the path Envoy forwarded, never one
			// a client chose in x-envoy-original-path.
			if err := envoycheck.LogsRequestPath(b); err != nil {
				t.Error(err)
			}
			// Envoy's admin interface (its config dump, POST
			// /quitquitquit, /logging, /runtime_modify) on a port, even
			// of 127.0.0.1, or on an abstract socket answers anything in
			// Envoy's network namespace: the pod's other containers, any
			// process of the host.
			if a := b.GetAdmin().GetAddress(); a.GetSocketAddress() != nil || strings.HasPrefix(a.GetPipe().GetPath(), "@") {
				t.Errorf("admin listens on %v", a)
			}
		})
	}
}

// LogsRequestPath refuses an access log that writes x-envoy-original-path,
// and a route config that lets a client's copy reach the upstream.
func TestLogsRequestPath(t *testing.T) {
	const (
		formatter = `, formatters: [{name: envoy.formatter.req_without_query, typed_config: {"@type": type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery}}]`
		routes    = `virtual_hosts: [{name: app, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: app}}]}]`
		removed   = `{request_headers_to_remove: [x-forwarded-host, x-envoy-original-path], ` + routes + `}`
	)
	tests := []struct {
		name      string
		logConfig string // the StdoutAccessLog's fields after its @type
		route     string // the route_config
		want      string // in the error; "" when accepted
	}{
		{"default format", ``, removed, "default format"},
		{"original path first", `, log_format: {text_format_source: {inline_string: "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%\n"}` + formatter + `}`, removed, "X-ENVOY-ORIGINAL-PATH"},
		{"original path in json", `, log_format: {json_format: {p: "%REQ(x-envoy-original-path)%"}}`, removed, "x-envoy-original-path"},
		{"PATH reading the original", `, log_format: {text_format_source: {inline_string: "%PATH(NQ:ORIG)%\n"}}`, removed, "ORIG"},
		// PATH reads x-envoy-original-path first unless told :PATH.
		{"PATH by default", `, log_format: {text_format_source: {inline_string: "%PATH(NQ)%\n"}}`, removed, "PATH(NQ)"},
		{"client's copy forwarded", `, log_format: {text_format_source: {inline_string: "%REQ_WITHOUT_QUERY(:PATH)%\n"}` + formatter + `}`, `{request_headers_to_remove: [x-forwarded-host], ` + routes + `}`, "x-envoy-original-path"},
		{"no route config removal", `, log_format: {text_format_source: {inline_string: "%REQ_WITHOUT_QUERY(:PATH)%\n"}` + formatter + `}`, `{` + routes + `}`, "x-envoy-original-path"},
		{"request path", `, log_format: {text_format_source: {inline_string: "%REQ(:METHOD)% %REQ_WITHOUT_QUERY(:PATH)%\n"}` + formatter + `}`, removed, ""},
		{"PATH of the request", `, log_format: {text_format_source: {inline_string: "%PATH(NQ:PATH)%\n"}}`, removed, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := `static_resources: {listeners: [{name: l, address: {socket_address: {address: 0.0.0.0, port_value: 8080}}, filter_chains: [{filters: [{name: hcm, typed_config: {
  "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s,
  route_config: ` + tc.route + `, http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}],
  access_log: [{name: envoy.access_loggers.stdout, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog` + tc.logConfig + `}}]}}]}]}]}`
			b, err := envoycheck.Bootstrap([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			err = envoycheck.LogsRequestPath(b)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Error("accepted")
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// AccessLogsWithoutQuery refuses every access log that could write a
// query string, and accepts the formats that cannot.
func TestAccessLogsWithoutQuery(t *testing.T) {
	const formatter = `, formatters: [{name: envoy.formatter.req_without_query, typed_config: {"@type": type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery}}]`
	tests := []struct {
		name      string
		logConfig string // the StdoutAccessLog's fields after its @type
		want      string // in the error; "" when accepted
	}{
		{"default format", ``, "default format"},
		{"original path", `, log_format: {text_format_source: {inline_string: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\n"}}`, "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)"},
		{"path header", `, log_format: {text_format_source: {inline_string: "%REQ(:path):64%\n"}}`, "REQ(:path)"},
		{"json path", `, log_format: {json_format: {p: "%REQ(:PATH)%"}}`, "REQ(:PATH)"},
		{"PATH with query", `, log_format: {text_format_source: {inline_string: "%PATH(WQ:ORIG)%\n"}}`, "PATH(WQ:ORIG)"},
		{"without query, no formatter", `, log_format: {text_format_source: {inline_string: "%REQ_WITHOUT_QUERY(:PATH)%\n"}}`, "formatter"},
		{"without query", `, log_format: {text_format_source: {inline_string: "%REQ(:METHOD)% %REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%\n"}` + formatter + `}`, ""},
		{"PATH without query", `, log_format: {text_format_source: {inline_string: "%PATH(NQ:ORIG)%\n"}}`, ""},
		{"json without query", `, log_format: {json_format: {p: "%REQ_WITHOUT_QUERY(:PATH)%", m: "%REQ(:METHOD)%"}` + formatter + `}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := `static_resources: {listeners: [{name: l, address: {socket_address: {address: 0.0.0.0, port_value: 8080}}, filter_chains: [{filters: [{name: hcm, typed_config: {
  "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s,
  route_config: {}, http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}],
  access_log: [{name: envoy.access_loggers.stdout, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog` + tc.logConfig + `}}]}}]}]}]}`
			b, err := envoycheck.Bootstrap([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			err = envoycheck.AccessLogsWithoutQuery(b)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Error("accepted")
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// RefusesControlHeaders accepts only mutation rules under which Envoy
// fails a request whose check answer sets x-envoy-* or routing headers.
func TestRefusesControlHeaders(t *testing.T) {
	tests := []struct {
		name  string
		rules string // the ext_authz filter's decoder_header_mutation_rules; "" for none
		want  string // in the error; "" when accepted
	}{
		{"none", ``, "no decoder_header_mutation_rules"},
		{"defaults only", `{}`, "disallow_is_error"},
		{"refused mutations dropped", `{disallow_is_error: false}`, "disallow_is_error"},
		{"envoy headers allowed", `{allow_envoy: true, disallow_is_error: true}`, "allow_envoy"},
		{"routing allowed", `{allow_all_routing: true, disallow_is_error: true}`, "allow_all_routing"},
		{"allowed by expression", `{allow_expression: {regex: "x-envoy-.*"}, disallow_is_error: true}`, "allow_expression"},
		{"everything refused", `{disallow_all: true, disallow_is_error: true}`, "disallow_all"},
		{"refused with an error", `{disallow_is_error: true}`, ""},
		{"explicit", `{allow_envoy: false, allow_all_routing: false, disallow_is_error: true}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rules := ""
			if tc.rules != "" {
				rules = `, decoder_header_mutation_rules: ` + tc.rules
			}
			doc := `static_resources: {listeners: [{name: l, address: {socket_address: {address: 0.0.0.0, port_value: 8080}}, filter_chains: [{filters: [{name: hcm, typed_config: {
  "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, route_config: {},
  http_filters: [{name: envoy.filters.http.ext_authz, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz,
    grpc_service: {envoy_grpc: {cluster_name: deputy}}` + rules + `}},
  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}]}]}]}`
			b, err := envoycheck.Bootstrap([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			err = envoycheck.RefusesControlHeaders(extAuthz(t, b))
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Error("accepted")
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func extAuthz(t *testing.T, b *bootstrapv3.Bootstrap) *extauthzv3.ExtAuthz {
	t.Helper()
	a, err := envoycheck.ExtAuthz(b)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Deputy's own routes bypass ext_authz, the application's do not.
func TestRoutesToDeputy(t *testing.T) {
	for _, file := range []string{"envoy.yaml", "envoy-http.yaml"} {
		t.Run(file, func(t *testing.T) {
			doc, err := os.ReadFile(filepath.Join("..", "envoy", file))
			if err != nil {
				t.Fatal(err)
			}
			b, err := envoycheck.Bootstrap(doc)
			if err != nil {
				t.Fatal(err)
			}
			var hcm hcmv3.HttpConnectionManager
			if err := protoUnmarshal(b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().GetValue(), &hcm); err != nil {
				t.Fatal(err)
			}
			want := map[string]struct {
				cluster  string
				disabled bool
			}{
				"/.well-known/": {"deputy_http", true},
				"/deputy/v1/":   {"deputy_http", true},
				"/":             {"app", false},
			}
			for _, r := range hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes() {
				p := r.GetMatch().GetPrefix()
				w, ok := want[p]
				if !ok {
					t.Errorf("unexpected route %q", p)
					continue
				}
				delete(want, p)
				if got := r.GetRoute().GetCluster(); got != w.cluster {
					t.Errorf("route %q goes to %q, want %q", p, got, w.cluster)
				}
				disabled := false
				if pr, ok := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]; ok {
					var per extauthzv3.ExtAuthzPerRoute
					if err := pr.UnmarshalTo(&per); err != nil {
						t.Fatal(err)
					}
					disabled = per.GetDisabled()
				}
				if disabled != w.disabled {
					t.Errorf("route %q: ext_authz disabled = %v, want %v", p, disabled, w.disabled)
				}
			}
			for p := range want {
				t.Errorf("missing route %q", p)
			}
		})
	}
}

func TestRejectsBrokenConfigs(t *testing.T) {
	tests := []struct {
		file string
		want string // in the error
	}{
		{"misspelled-bootstrap-field.yaml", "static_resource"},
		{"misspelled-ext-authz-field.yaml", "failure_mode_alow"},
		{"misspelled-http-service-field.yaml", "allowed_upstream_header"},
		{"wrong-type-port.yaml", "portValue"},
		{"wrong-type-duration.yaml", "Duration"},
		{"wrong-type-per-route.yaml", "disabled"},
		{"unknown-extension-type.yaml", "routr"},
		{"unknown-status-enum.yaml", "NoSuchStatus"},
		{"empty-stat-prefix.yaml", "StatPrefix"},
		{"port-out-of-range.yaml", "PortValue"},
	}
	for _, tc := range tests {
		t.Run(strings.TrimSuffix(tc.file, ".yaml"), func(t *testing.T) {
			doc, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			_, err = envoycheck.Bootstrap(doc)
			if err == nil {
				t.Fatal("broken config accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestRejectsMalformedYAML(t *testing.T) {
	tests := map[string]string{
		"empty":        "",
		"not yaml":     "admin: [",
		"scalar":       "42",
		"list":         "- a\n- b",
		"null section": "static_resources: {listeners: [{name: x, address: 7}]}",
	}
	for name, doc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := envoycheck.Bootstrap([]byte(doc)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzBootstrap(f *testing.F) {
	for _, p := range []string{"../envoy/envoy.yaml", "../envoy/envoy-http.yaml", "testdata/unknown-extension-type.yaml"} {
		doc, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(doc)
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		_, _ = envoycheck.Bootstrap(doc) // must not panic
	})
}

// http_service sends Deputy only the headers it lists. Owned headers a
// client forged must be among them in every spelling, or Deputy cannot
// list them in x-envoy-auth-headers-to-remove and they reach the
// application. Envoy lowercases header names before matching.
func TestHTTPServiceForwardsOwnedHeaders(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "envoy", "envoy-http.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := envoycheck.Bootstrap(doc)
	if err != nil {
		t.Fatal(err)
	}
	authz := extAuthz(t, b)
	forwarded := func(name string) bool {
		ok, err := envoycheck.Matches(authz.GetAllowedHeaders(), name)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for _, name := range append(envoycheck.ReadByDeputy(), "x-deputy-role", "x-deputy-token", "x_deputy_actor", "x-deputy_subject", "x_deputy-level") {
		if !forwarded(name) {
			t.Errorf("%s is not sent to Deputy", name)
		}
	}
	// Envoy removes exact names only; Deputy lists the client's other
	// headers of the families nginx and Caddy clear by prefix.
	for _, name := range []string{"x-auth-request-redirect", "x_auth_request_user", "remote-addr", "remote_user", "x-forwarded-uid"} {
		if !forwarded(name) {
			t.Errorf("%s is not sent to Deputy, which cannot list it for removal", name)
		}
	}
	// A name with a byte other than a letter, a digit, "-" or "_" goes to
	// Deputy, which refuses the request: PHP reads x.deputy.subject as
	// HTTP_X_DEPUTY_SUBJECT, and Envoy removes exact names only. Envoy's
	// own pseudo-headers are not matched (Envoy sets them on the check).
	for _, name := range []string{"x.deputy.subject", "x.deputy-token", "x.on.behalf.of", "x.http.method.override", "x-deputy.actor",
		"remote.user", ".x", "x.", "x y", "x:y", "x~deputy~subject"} {
		if !forwarded(name) {
			t.Errorf("%s is not sent to Deputy, which cannot refuse it", name)
		}
	}
	// A policy removing x-user-role means the client's x_user_role too:
	// every name holding "_" goes to Deputy, which lists it.
	for _, name := range []string{"x_user_role", "x-user_role", "_", "a_b"} {
		if !forwarded(name) {
			t.Errorf("%s is not sent to Deputy, which cannot list it for removal", name)
		}
	}
	for _, name := range []string{"x-deputyrole", ":authority", ":scheme", ":path", ":method", "accept", "x-envoy-deputy-x", "x-remote", "remoteuser"} {
		if forwarded(name) {
			t.Errorf("%s is sent to Deputy; the list grew wider than meant", name)
		}
	}
	// Deputy sets the on-behalf-of header to the customer it decided on.
	// What it is told by default that Envoy copies (http.envoy_upstream_headers),
	// the shipped config copies: a name it leaves out would carry the
	// client's copy to the application.
	copied := authz.GetHttpService().GetAuthorizationResponse().GetAllowedUpstreamHeaders()
	for _, p := range append(slices.Clone(envoy.DefaultEnvoyUpstreamHeaders), "x-deputy-subject", "x-deputy-token", "x-on-behalf-of") {
		name := strings.Replace(p, "*", "subject", 1)
		if ok, err := envoycheck.Matches(copied, name); err != nil || !ok {
			t.Errorf("%s from Deputy's answer does not reach the application (%v)", name, err)
		}
		// Envoy replaces only the name set: the client's other spellings
		// go to Deputy, which lists them for removal.
		for _, spelled := range envoycheck.EverySpelling(name) {
			if !forwarded(spelled) {
				t.Errorf("%s, another spelling of %s an allow sets, is not sent to Deputy, which cannot list it for removal", spelled, name)
			}
		}
	}
}

// ReadByDeputy lists the credential carrier headers Deputy reads by
// default.
func TestCarrierHeadersAreDeputys(t *testing.T) {
	var want []string
	for _, c := range authz.DefaultCredentialCarriers() {
		if h, ok := strings.CutPrefix(c, "header:"); ok {
			want = append(want, h)
		}
	}
	if !slices.Equal(envoycheck.CarrierHeaders, want) {
		t.Errorf("envoycheck.CarrierHeaders = %q, Deputy reads %q", envoycheck.CarrierHeaders, want)
	}
}

// ReadByDeputy lists the override headers Deputy reads by default.
func TestOverrideHeadersAreDeputys(t *testing.T) {
	var want []string
	for _, c := range authz.DefaultMethodOverrides() {
		if h, ok := strings.CutPrefix(c, "header:"); ok {
			want = append(want, h)
		}
	}
	if !slices.Equal(envoycheck.OverrideHeaders, want) {
		t.Errorf("envoycheck.OverrideHeaders = %q, Deputy reads %q", envoycheck.OverrideHeaders, want)
	}
}

// A client's header name with "_" never reaches the application: CGI, PHP
// and WSGI read x_tenant as x-tenant (HTTP_X_TENANT), a name Deputy and
// policies read apart. The shipped configs drop such names before any
// filter, as nginx does by default; a config that lets them through is
// reported.
func TestShippedConfigsDropUnderscoreHeaders(t *testing.T) {
	for _, file := range []string{"envoy.yaml", "envoy-http.yaml"} {
		t.Run(file, func(t *testing.T) {
			doc, err := os.ReadFile(filepath.Join("..", "envoy", file))
			if err != nil {
				t.Fatal(err)
			}
			b, err := envoycheck.Bootstrap(doc)
			if err != nil {
				t.Fatal(err)
			}
			if err := envoycheck.DropsUnderscoreHeaders(b); err != nil {
				t.Error(err)
			}
			// Without the setting, the same config is reported.
			loose := strings.Replace(string(doc), "headers_with_underscores_action: DROP_HEADER", "headers_with_underscores_action: ALLOW", 1)
			if loose == string(doc) {
				t.Fatal("the config does not spell headers_with_underscores_action: DROP_HEADER")
			}
			lb, err := envoycheck.Bootstrap([]byte(loose))
			if err != nil {
				t.Fatal(err)
			}
			if err := envoycheck.DropsUnderscoreHeaders(lb); err == nil || !strings.Contains(err.Error(), "listener ingress") {
				t.Errorf("a config allowing underscore names: %v", err)
			}
		})
	}
}
