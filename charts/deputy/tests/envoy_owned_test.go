package tests

import (
	"path/filepath"
	"slices"
	"testing"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/deputyhq/deputy/examples/envoycheck"
)

// In http_service mode Envoy sends Deputy only the headers it lists; an
// owned header a client forged, in any spelling, must be among them so
// that Deputy lists it for removal instead of it reaching the application,
// and so must every header Deputy decides on (envoycheck.ReadByDeputy).
func TestHTTPServiceForwardsOwnedHeaders(t *testing.T) {
	authz := httpServiceAuthz(t, mustRender(t, filepath.Join("testdata", "http-ext-authz.yaml"), true))
	// With them, the client's headers of the families nginx and Caddy
	// clear by prefix, which Envoy cannot: Deputy lists them for removal.
	for _, name := range append(envoycheck.ReadByDeputy(), "x-deputy-role", "x-deputy-token", "x_deputy_actor", "x-deputy_subject", "x_deputy-level",
		"x-auth-request-redirect", "x_auth_request_user", "remote-addr", "remote_user", "x-forwarded-uid",
		// A name with another byte, which PHP reads as an owned, override or
		// on-behalf-of header: Deputy refuses the request.
		"x.deputy.subject", "x.deputy-token", "x.on.behalf.of", "x.http.method.override", "x-deputy.actor", ".x", "x:y") {
		if ok, err := envoycheck.Matches(authz.GetAllowedHeaders(), name); err != nil || !ok {
			t.Errorf("%s is not sent to Deputy (%v)", name, err)
		}
	}
	for _, name := range []string{":authority", ":scheme", ":path", ":method", "accept", "x-deputyrole"} {
		if ok, err := envoycheck.Matches(authz.GetAllowedHeaders(), name); err != nil || ok {
			t.Errorf("%s is sent to Deputy; the list grew wider than meant (%v)", name, err)
		}
	}
	if ok, err := envoycheck.Matches(authz.GetHttpService().GetAuthorizationResponse().GetAllowedUpstreamHeaders(), "x-on-behalf-of"); err != nil || !ok {
		t.Errorf("x-on-behalf-of from Deputy's answer does not reach the application (%v)", err)
	}
}

// The credential carrier headers Envoy sends Deputy follow
// identity.credential_carriers: a token in a header Deputy is not sent
// would leave a session honoured while the application signs the token's
// holder in. Configured carriers travel in every spelling, the defaults
// no longer do when the values replace them, and an empty list reads none.
func TestHTTPServiceForwardsCredentialCarriers(t *testing.T) {
	const base = "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\nenvoy: {extAuthz: {transport: http}}\n"
	for _, tc := range []struct {
		name      string
		values    string
		carriers  []string
		notListed []string
	}{
		{name: "defaults", values: base, carriers: envoycheck.CarrierHeaders, notListed: []string{"x-shop-jwt"}},
		{name: "configured", values: base + "deputy: {config: {identity: {credential_carriers: [\"header:X-Shop-JWT\", \"cookie:jwt\", \"query:token\"]}}}\n",
			carriers: []string{"x-shop-jwt"}, notListed: []string{"x-auth-token", "x-shopxjwt"}},
		{name: "null", values: base + "deputy: {config: {identity: {credential_carriers: null}}}\n", carriers: envoycheck.CarrierHeaders},
		{name: "none", values: base + "deputy: {config: {identity: {credential_carriers: []}}}\n", notListed: []string{"x-auth-token", "x-api-key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			authz := httpServiceAuthz(t, renderInline(t, tc.values))
			for _, name := range envoycheck.Spellings(tc.carriers...) {
				if ok, err := envoycheck.Matches(authz.GetAllowedHeaders(), name); err != nil || !ok {
					t.Errorf("%s is not sent to Deputy (%v)", name, err)
				}
			}
			for _, name := range tc.notListed {
				if ok, err := envoycheck.Matches(authz.GetAllowedHeaders(), name); err != nil || ok {
					t.Errorf("%s is sent to Deputy, not a configured carrier (%v)", name, err)
				}
			}
		})
	}
}

// The override headers Envoy sends Deputy follow check.method_overrides:
// a header carrier the values configure travels in every spelling, the
// defaults no longer do when the values replace them (an empty list
// reads none), and they do when the values leave the setting null, as
// Deputy then reads them.
func TestHTTPServiceForwardsMethodOverrides(t *testing.T) {
	for _, tc := range []struct {
		name      string
		values    string
		carriers  []string
		notListed []string
	}{
		{name: "defaults", values: "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\nenvoy: {extAuthz: {transport: http}}\n",
			carriers: envoycheck.OverrideHeaders, notListed: []string{"x-custom-verb"}},
		{name: "configured", values: "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\nenvoy: {extAuthz: {transport: http}}\n" +
			"deputy: {config: {check: {method_overrides: [\"header:X-Custom-Verb\", \"header:X_Tunnel_Method\", \"query:_method\"]}}}\n",
			carriers: []string{"x-custom-verb", "x-tunnel-method"}, notListed: []string{"x-http-method-override", "x-tunnelxmethod"}},
		// Left null, Deputy reads its default carriers.
		{name: "null", values: "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\nenvoy: {extAuthz: {transport: http}}\n" +
			"deputy: {config: {check: {method_overrides: null}}}\n",
			carriers: envoycheck.OverrideHeaders},
		{name: "none", values: "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\nenvoy: {extAuthz: {transport: http}}\n" +
			"deputy: {config: {check: {method_overrides: []}}}\n",
			notListed: envoycheck.OverrideHeaders},
	} {
		t.Run(tc.name, func(t *testing.T) {
			authz := httpServiceAuthz(t, renderInline(t, tc.values))
			for _, name := range envoycheck.Spellings(tc.carriers...) {
				if ok, err := envoycheck.Matches(authz.GetAllowedHeaders(), name); err != nil || !ok {
					t.Errorf("%s is not sent to Deputy (%v)", name, err)
				}
			}
			for _, name := range tc.notListed {
				if ok, err := envoycheck.Matches(authz.GetAllowedHeaders(), name); err != nil || ok {
					t.Errorf("%s is sent to Deputy, not a configured carrier (%v)", name, err)
				}
			}
		})
	}
}

// httpServiceAuthz is the http_service ext_authz filter of the rendered
// Envoy config.
func httpServiceAuthz(t *testing.T, m manifests) *extauthzv3.ExtAuthz {
	t.Helper()
	hcm := renderedHCM(t, m)
	var authz extauthzv3.ExtAuthz
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() == "envoy.filters.http.ext_authz" {
			if err := f.GetTypedConfig().UnmarshalTo(&authz); err != nil {
				t.Fatal(err)
			}
		}
	}
	if authz.GetHttpService() == nil {
		t.Fatal("no http_service ext_authz in the rendered config")
	}
	return &authz
}

// renderedHCM is the HTTP connection manager of the chart's rendered
// Envoy config.
func renderedHCM(t *testing.T, m manifests) *hcmv3.HttpConnectionManager {
	t.Helper()
	cm := m.get(t, "ConfigMap", "shop-deputy-envoy").(*corev1.ConfigMap)
	b, err := envoycheck.Bootstrap([]byte(cm.Data["envoy.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	var hcm hcmv3.HttpConnectionManager
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	return &hcm
}

// Applications behind auth_request-style setups route or log on
// X-Original-URI, frameworks read the host, scheme, port and prefix from
// forwarding headers (Rails' request.host reads X-Forwarded-Host, Rack's
// scheme X-Forwarded-Ssl) and the user from an authenticating proxy's
// (X-Forwarded-User, Remote-User): Envoy drops a client's copy of every
// name of the list all shipped front ends share, in any spelling,
// whichever the transport, so the application reads the host Deputy
// decided on and bound an impersonation session to, and sets
// X-Forwarded-Proto and -For itself from the connection.
func TestEnvoyDropsClientHeaders(t *testing.T) {
	for _, transport := range []string{"grpc", "http"} {
		t.Run(transport, func(t *testing.T) {
			m := renderInline(t, "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\nenvoy: {extAuthz: {transport: "+transport+"}}\n")
			hcm := renderedHCM(t, m)
			if !hcm.GetUseRemoteAddress().GetValue() || hcm.GetXffNumTrustedHops() != 0 {
				t.Errorf("use_remote_address = %v, xff_num_trusted_hops = %d: a client's x-forwarded-proto would reach the application", hcm.GetUseRemoteAddress().GetValue(), hcm.GetXffNumTrustedHops())
			}
			for _, name := range envoycheck.ClientHeaders() {
				if !slices.Contains(hcm.GetRouteConfig().GetRequestHeadersToRemove(), name) {
					t.Errorf("route_config does not remove a client's %s", name)
				}
			}
		})
	}
}

// Single-use redeem codes travel in a query string
// (/deputy/v1/impersonation/redeem?code=...): Envoy's access log writes
// the path without it, whichever the transport, or the codes would reach
// the pod's logs.
func TestEnvoyAccessLogLeavesQueryOut(t *testing.T) {
	for _, transport := range []string{"grpc", "http"} {
		t.Run(transport, func(t *testing.T) {
			m := renderInline(t, "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\nenvoy: {extAuthz: {transport: "+transport+"}}\n")
			cm := m.get(t, "ConfigMap", "shop-deputy-envoy").(*corev1.ConfigMap)
			b, err := envoycheck.Bootstrap([]byte(cm.Data["envoy.yaml"]))
			if err != nil {
				t.Fatal(err)
			}
			if len(renderedHCM(t, m).GetAccessLog()) == 0 {
				t.Error("no access log")
			}
			if err := envoycheck.AccessLogsWithoutQuery(b); err != nil {
				t.Error(err)
			}
		})
	}
}

// A client's header name with "_" is dropped before any filter, whichever
// the transport: CGI, PHP and WSGI applications read x_tenant as x-tenant.
func TestEnvoyDropsUnderscoreHeaders(t *testing.T) {
	for _, transport := range []string{"grpc", "http"} {
		t.Run(transport, func(t *testing.T) {
			m := renderInline(t, "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\nenvoy: {extAuthz: {transport: "+transport+"}}\n")
			cm := m.get(t, "ConfigMap", "shop-deputy-envoy").(*corev1.ConfigMap)
			b, err := envoycheck.Bootstrap([]byte(cm.Data["envoy.yaml"]))
			if err != nil {
				t.Fatal(err)
			}
			if err := envoycheck.DropsUnderscoreHeaders(b); err != nil {
				t.Error(err)
			}
		})
	}
}

// A client's x-envoy-original-path chooses neither the path Envoy's access
// log writes (nor, through a '"', the rest of the line) nor the one the
// application reads: the chart's Envoy rewrites no path, so any copy is a
// client's. Whichever the transport.
func TestEnvoyLogsRequestPath(t *testing.T) {
	for _, transport := range []string{"grpc", "http"} {
		t.Run(transport, func(t *testing.T) {
			m := renderInline(t, "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\nenvoy: {extAuthz: {transport: "+transport+"}}\n")
			cm := m.get(t, "ConfigMap", "shop-deputy-envoy").(*corev1.ConfigMap)
			b, err := envoycheck.Bootstrap([]byte(cm.Data["envoy.yaml"]))
			if err != nil {
				t.Fatal(err)
			}
			if err := envoycheck.LogsRequestPath(b); err != nil {
				t.Error(err)
			}
		})
	}
}

// Envoy replaces only the name an allow sets upstream, so a client's
// x_current_user stays beside the x-current-user a policy set, and CGI,
// PHP and WSGI upstreams read both as one. Every spelling of each header
// http.envoy_upstream_headers lets through goes to Deputy, which lists
// the client's other spellings for removal.
func TestHTTPServiceForwardsSpellingsOfUpstreamHeaders(t *testing.T) {
	authz := httpServiceAuthz(t, renderInline(t, "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\nenvoy: {extAuthz: {transport: http}}\n"+
		"deputy: {config: {http: {envoy_upstream_headers: [\"x-deputy-*\", \"x-deputy-token\", \"x-on-behalf-of\", \"cache-control\", \"X-Current-User\", \"x_tenant\", \"x-acme-*\"]}}}\n"))
	for _, name := range append(envoycheck.Spellings("x-current-user", "x-tenant", "cache-control", "x-acme-role"), "X-Current_User",
		// Any name holding "_": a policy removing x-user-role means it too.
		"x_user_role", "a_b") {
		if ok, err := envoycheck.Matches(authz.GetAllowedHeaders(), name); err != nil || !ok {
			t.Errorf("%s is not sent to Deputy, which cannot list it for removal (%v)", name, err)
		}
	}
	// Without the body, a form POST's _method=DELETE is unseen: over
	// http_service Envoy states its length as 0.
	if wrb := authz.GetWithRequestBody(); wrb == nil || wrb.GetMaxRequestBytes() == 0 {
		t.Error("with_request_body is not set: Deputy cannot decide a body's method override")
	}
	for _, name := range []string{"x-current-users", "x-tenantx", "x-acmerole"} {
		if ok, err := envoycheck.Matches(authz.GetAllowedHeaders(), name); err != nil || ok {
			t.Errorf("%s is sent to Deputy; the list grew wider than meant (%v)", name, err)
		}
	}
}
