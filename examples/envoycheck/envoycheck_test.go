package envoycheck_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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
			authz := extAuthz(t, b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().GetValue())
			// Deputy unreachable must never mean allowed.
			if authz.GetFailureModeAllow() {
				t.Error("failure_mode_allow is true")
			}
			if got := authz.GetStatusOnError().GetCode(); got != 503 {
				t.Errorf("status_on_error = %v, want 503", got)
			}
			if got := authz.GetTransportApiVersion().String(); got != "V3" {
				t.Errorf("transport_api_version = %s", got)
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
			for _, name := range envoycheck.ClientForwarding() {
				if !slices.Contains(hcm.GetRouteConfig().GetRequestHeadersToRemove(), name) {
					t.Errorf("route_config does not remove a client's %s", name)
				}
			}
		})
	}
}

func extAuthz(t *testing.T, hcmBytes []byte) *extauthzv3.ExtAuthz {
	t.Helper()
	var hcm hcmv3.HttpConnectionManager
	if err := protoUnmarshal(hcmBytes, &hcm); err != nil {
		t.Fatal(err)
	}
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() == "envoy.filters.http.ext_authz" {
			var a extauthzv3.ExtAuthz
			if err := f.GetTypedConfig().UnmarshalTo(&a); err != nil {
				t.Fatal(err)
			}
			return &a
		}
	}
	t.Fatal("no ext_authz filter")
	return nil
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
	authz := extAuthz(t, b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().GetValue())
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
	for _, name := range []string{"x-deputyrole", "accept", "x-envoy-deputy-x"} {
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
