package envoy_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/envoy"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// testPolicy allows GET /ok (adding a header), /plain (with nothing more
// than cache-control, which nginx and Caddy apply), /scrub (on removing a
// header), denies /busy with a status, body and header of its own, and
// denies everything else.
const testPolicy = `package t

default decision := {"allowed": false, "reason": "nope"}

decision := {"allowed": true, "reason": "fine", "headers": {"cache-control": "no-cache"},
	"response_headers_to_add": {"cache-control": "private"}} if {
	input.attributes.request.http.path == "/plain"
}

decision := {"allowed": true, "reason": "scrubbed", "request_headers_to_remove": ["x-user-role"]} if {
	input.attributes.request.http.path == "/scrub"
}

decision := {"allowed": true, "reason": "fine", "headers": {"x-app": "1"},
	"response_headers_to_add": {"cache-control": "private"}} if {
	input.attributes.request.http.path == "/ok"
}

decision := {"allowed": true, "reason": "unadmin", "query_parameters_to_remove": ["admin"]} if {
	startswith(input.attributes.request.http.path, "/noadmin")
}

decision := {"allowed": false, "http_status": 429, "body": "slow down", "headers": {"x-why": "busy"}, "reason": "busy"} if {
	input.attributes.request.http.path == "/busy"
}
`

type staticDelegation struct{ d *sidecar.Delegation }

func (s staticDelegation) Resolve(_ context.Context, r *sidecar.Request, _ *sidecar.Identity) (*sidecar.Delegation, error) {
	if r.Headers["cookie"] == "deputy_session=s1" {
		return s.d, nil
	}
	return nil, nil
}

func pipeline(t testing.TB, opts ...authz.Option) *authz.Pipeline {
	t.Helper()
	return policyPipeline(t, testPolicy, append([]authz.Option{authz.WithResolvers(staticDelegation{&sidecar.Delegation{
		Mode: sidecar.ModeImpersonation, ID: "s1", Actor: "staff-1", Subject: "cust-9",
	}})}, opts...)...)
}

// policyPipeline decides with the policy src, whose data.t.decision is
// the decision.
func policyPipeline(t testing.TB, src string, opts ...authz.Option) *authz.Pipeline {
	t.Helper()
	mod := ast.MustParseModuleWithOpts(src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	e := policy.New(policy.WithQueries("data.t.decision"), policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err := e.Activate(context.Background(), &policy.Set{Modules: map[string]*ast.Module{"t.rego": mod}}); err != nil {
		t.Fatal(err)
	}
	return authz.New(e, append([]authz.Option{authz.WithQuery("data.t.decision")}, opts...)...)
}

// startGRPC serves the ext_authz and health services on a loopback port,
// as `deputy serve` does, and returns a connected client.
func startGRPC(t *testing.T, maxRecv int) (authv3.AuthorizationClient, healthpb.HealthClient) {
	t.Helper()
	return serveGRPC(t, pipeline(t), maxRecv)
}

// serveGRPC is startGRPC deciding with p.
func serveGRPC(t *testing.T, p *authz.Pipeline, maxRecv int) (authv3.AuthorizationClient, healthpb.HealthClient) {
	t.Helper()
	conn, err := grpc.NewClient(serveGRPCAddr(t, p, maxRecv), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn), healthpb.NewHealthClient(conn)
}

// serveGRPCAddr serves as serveGRPC does and returns the address.
func serveGRPCAddr(t *testing.T, p *authz.Pipeline, maxRecv int) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(maxRecv), grpc.ForceServerCodecV2(envoy.Codec{}))
	authv3.RegisterAuthorizationServer(srv, envoy.NewGRPCServer(p))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// tooManySegments is /ok with one segment more than check.max_path_segments
// lets through by default: refused before any policy, whichever way the
// request comes in.
var tooManySegments = "/ok" + strings.Repeat("/a", authz.DefaultMaxPathSegments)

// routeDirsTooLong is /ok with as many segments as check.max_path_segments
// lets through, 1.1 KB in all, whose route_dirs (the path from each
// segment on) would hold 74 KB, past check.max_route_dirs_bytes: refused
// before any policy, whichever way the request comes in.
var routeDirsTooLong = "/ok" + strings.Repeat("/aaaaaaaa", authz.DefaultMaxPathSegments-1)

func check(path string, headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path, Headers: headers},
	}}}
}

func TestGRPCCheckOverLoopback(t *testing.T) {
	client, healthClient := startGRPC(t, 64<<10)
	ctx := context.Background()

	t.Run("allow carries policy and injected headers", func(t *testing.T) {
		resp, err := client.Check(ctx, check("/ok", map[string]string{"cookie": "deputy_session=s1", "x-deputy-actor": "forged", "x-deputy-level": "full_admin", "x-app": "forged"}))
		if err != nil {
			t.Fatal(err)
		}
		if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
			t.Fatalf("status %v", resp.GetStatus())
		}
		ok := resp.GetOkResponse()
		got := map[string]*corev3.HeaderValueOption{}
		for _, h := range ok.GetHeaders() {
			got[h.GetHeader().GetKey()] = h
		}
		// A policy's header replaces the client's copy: Envoy's default,
		// APPEND_IF_EXISTS_OR_ADD, would keep the client's value first.
		if got["x-app"].GetHeader().GetValue() != "1" || got["x-app"].GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("policy header missing or not overwriting: %v", ok.GetHeaders())
		}
		for name, want := range map[string]string{"x-deputy-actor": "staff-1", "x-deputy-subject": "cust-9", "x-deputy-mode": "impersonation", "x-deputy-session": "s1"} {
			h := got[name]
			if h.GetHeader().GetValue() != want || h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				t.Errorf("%s = %v, want %q overwriting", name, h, want)
			}
		}
		if strings.Join(ok.GetHeadersToRemove(), ",") != "x-deputy-level" {
			t.Errorf("headers to remove = %v, want the forged level", ok.GetHeadersToRemove())
		}
		// The application's own response headers (Set-Cookie) stay.
		if len(ok.GetResponseHeadersToAdd()) != 1 || ok.GetResponseHeadersToAdd()[0].GetHeader().GetValue() != "private" ||
			ok.GetResponseHeadersToAdd()[0].GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
			t.Errorf("response headers = %v", ok.GetResponseHeadersToAdd())
		}
		if id := resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue(); len(id) != 32 {
			t.Errorf("decision_id = %q", id)
		}
	})

	t.Run("denial passes status, body and headers", func(t *testing.T) {
		resp, err := client.Check(ctx, check("/busy", nil))
		if err != nil {
			t.Fatal(err)
		}
		if codes.Code(resp.GetStatus().GetCode()) != codes.PermissionDenied {
			t.Fatalf("status %v", resp.GetStatus())
		}
		d := resp.GetDeniedResponse()
		if d.GetStatus().GetCode() != 429 || d.GetBody() != "slow down" || d.GetHeaders()[0].GetHeader().GetValue() != "busy" {
			t.Errorf("denied = %v", d)
		}
	})

	t.Run("default deny", func(t *testing.T) {
		resp, err := client.Check(ctx, check("/other", nil))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetDeniedResponse().GetStatus().GetCode() != 403 {
			t.Errorf("got %v", resp)
		}
	})

	// CodeIgniter routes a path carried in the query; the application
	// reads what follows a "#" in the query as more parameters; a path of
	// more segments than check.max_path_segments, or past
	// check.max_route_dirs_bytes, costs every check work.
	for _, tc := range []struct{ name, path string }{
		{"a path in the query", "/ok?/customer/account/password/"},
		{"a # in the query", "/ok?x=1#&_method=POST"},
		{"too many path segments", tooManySegments},
		{"too long a route_dirs", routeDirsTooLong},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			resp, err := client.Check(ctx, check(tc.path, nil))
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetDeniedResponse().GetStatus().GetCode() != 400 {
				t.Errorf("got %v, want a 400 refusal", resp)
			}
		})
	}

	t.Run("oversized message is refused by the gRPC limit", func(t *testing.T) {
		_, err := client.Check(ctx, check("/ok", map[string]string{"x-big": strings.Repeat("a", 100<<10)}))
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("err = %v, want ResourceExhausted", err)
		}
	})

	t.Run("health service answers", func(t *testing.T) {
		resp, err := healthClient.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health = %v, %v", resp, err)
		}
	})
}

// methodsPipeline denies every request, the methods it is decided as in
// the denial's body: nginx and Caddy would not carry an allow's extra
// header.
func methodsPipeline(t *testing.T) *authz.Pipeline {
	t.Helper()
	return policyPipeline(t, "package t\n\ndecision := {\"allowed\": false, \"body\": concat(\",\", input.deputy.request.methods)}\n")
}

// Envoy with encode_raw_headers sends every header in header_map, its
// value as raw_value bytes, and headers empty: the body headers count
// there as in headers. A form cut before its _method is decided as every
// method a body override may name, and a content-length sent twice is
// refused.
func TestBodyHeadersInHeaderMapOverGRPC(t *testing.T) {
	client, _ := serveGRPC(t, methodsPipeline(t), 64<<10)
	const every = "POST,GET,HEAD,PUT,PATCH,DELETE,OPTIONS"
	form := strings.Repeat("a=1&", 3000) + "_method=DELETE"
	raw := func(kv ...string) []*corev3.HeaderValue {
		var hs []*corev3.HeaderValue
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		return hs
	}
	for _, tc := range []struct {
		name       string
		headerMap  []*corev3.HeaderValue
		body       string
		wantStatus int32
		want       string
	}{
		{"truncated form", raw(":method", "POST", "content-type", "application/x-www-form-urlencoded",
			"content-length", "12014", "x-envoy-auth-partial-body", "true"), form[:8192], 403, every},
		{"whole form", raw(":method", "POST", "Content-Type", "application/x-www-form-urlencoded", "Content-Length", "13"), "_method=PATCH", 403, "POST,PATCH"},
		{"JSON", raw(":method", "POST", "content-type", "application/json", "content-length", "20"), `{"_method":"DELETE"}`, 403, "POST,DELETE"},
		{"body not sent", raw(":method", "POST", "content-type", "application/x-www-form-urlencoded", "content-length", "14"), "", 403, every},
		{"content-length twice", raw(":method", "POST", "content-length", "3", "content-length", "9000"), "a=1", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/a", HeaderMap: &corev3.HeaderMap{Headers: tc.headerMap}, Body: tc.body},
			}}})
			if err != nil {
				t.Fatal(err)
			}
			d := resp.GetDeniedResponse()
			if int32(d.GetStatus().GetCode()) != tc.wantStatus {
				t.Fatalf("status %v, want %d", d.GetStatus(), tc.wantStatus)
			}
			if tc.want != "" && d.GetBody() != tc.want {
				t.Errorf("methods %q, want %q", d.GetBody(), tc.want)
			}
		})
	}
}

func TestHTTPCheck(t *testing.T) {
	p := pipeline(t)
	// Envoy configured to copy x-app upstream too (allowed_upstream_headers).
	envoyHTTP := envoy.NewHTTPHandler(p, envoy.WithPathPrefix("/ext_authz"),
		envoy.WithEnvoyUpstreamHeaders(append(slices.Clone(envoy.DefaultEnvoyUpstreamHeaders), "X-App")))
	envoyShipped := envoy.NewHTTPHandler(p, envoy.WithPathPrefix("/ext_authz"))
	nginx := envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyNginx), envoy.WithOwned(p.Owned))
	caddy := envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyCaddy), envoy.WithOwned(p.Owned))

	cases := []struct {
		name        string
		handler     http.Handler
		method      string
		target      string
		headers     map[string]string
		wantStatus  int
		wantHeaders map[string]string
		wantBody    string
		refused     string // refused before any decision, naming this header
	}{
		{name: "envoy http_service allow", handler: envoyHTTP, method: "GET", target: "/ext_authz/ok",
			headers: map[string]string{"Cookie": "deputy_session=s1", "X-Deputy-Level": "full_admin"}, wantStatus: 200,
			wantHeaders: map[string]string{"x-app": "1", "x-deputy-subject": "cust-9", "x-deputy-actor": "staff-1",
				envoy.HeadersToRemoveHeader: "x-deputy-level", envoy.ResponseHeaderPrefix + "cache-control": "private"}},
		{name: "envoy http_service deny passes status and body", handler: envoyHTTP, method: "GET", target: "/ext_authz/busy",
			wantStatus: 429, wantBody: "slow down", wantHeaders: map[string]string{"x-why": "busy"}},
		{name: "nginx auth_request original URI", handler: nginx, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Original-URI": "/plain", "X-Original-Method": "GET"}, wantStatus: 200,
			wantHeaders: map[string]string{"cache-control": "no-cache", envoy.ResponseHeaderPrefix + "cache-control": "private"}},
		// nginx and Caddy copy only the headers their config names, and
		// remove none a policy asks for: allowed on such a condition, the
		// application would get the client's values.
		{name: "nginx: a header nginx does not copy", handler: nginx, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Original-URI": "/ok", "X-Original-Method": "GET"}, wantStatus: 403},
		{name: "caddy: a removal Caddy does not apply", handler: caddy, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Forwarded-Uri": "/scrub", "X-Forwarded-Method": "GET"}, wantStatus: 403},
		{name: "envoy http_service applies the removal", handler: envoyHTTP, method: "GET", target: "/ext_authz/scrub",
			wantStatus: 200, wantHeaders: map[string]string{envoy.HeadersToRemoveHeader: "x-user-role"}},
		{name: "caddy forward_auth forwarded URI", handler: caddy, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Forwarded-Uri": "/busy", "X-Forwarded-Method": "GET"}, wantStatus: 429},
		{name: "caddy forward_auth forwarded host", handler: caddy, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Forwarded-Uri": "/busy", "X-Forwarded-Method": "GET", "X-Forwarded-Host": "shop.example"}, wantStatus: 429},
		// Caddy passes a client's X-Original-URI on to forward_auth: read
		// first, it chose what was decided.
		{name: "caddy: a client's X-Original-URI is refused", handler: caddy, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Forwarded-Uri": "/other", "X-Forwarded-Method": "POST", "X-Original-URI": "/ok"}, wantStatus: 400, refused: "X-Original-Uri"},
		{name: "caddy: a client's X-Original-Method is refused", handler: caddy, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Forwarded-Uri": "/ok", "X-Forwarded-Method": "POST", "X-Original-Method": "GET"}, wantStatus: 400, refused: "X-Original-Method"},
		{name: "nginx: a client's X-Forwarded-Uri is refused", handler: nginx, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Original-URI": "/other", "X-Original-Method": "GET", "X-Forwarded-Uri": "/ok"}, wantStatus: 400, refused: "X-Forwarded-Uri"},
		{name: "nginx: a client's X-Forwarded-Method is refused", handler: nginx, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Original-URI": "/ok", "X-Original-Method": "POST", "X-Forwarded-Method": "GET"}, wantStatus: 400, refused: "X-Forwarded-Method"},
		// Behind the wrong proxy nothing is decided, rather than the check
		// endpoint's own path.
		{name: "nginx convention without its headers", handler: nginx, method: "GET", target: "/deputy/authz",
			wantStatus: 400, refused: "X-Original-Method"},
		{name: "caddy convention without a method", handler: caddy, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Forwarded-Uri": "/ok"}, wantStatus: 400, refused: "X-Forwarded-Method"},
		{name: "forwarded URI that is not a path", handler: nginx, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Original-URI": "http://evil.example/ok", "X-Original-Method": "GET"}, wantStatus: 400, refused: "X-Original-Uri"},
		{name: "forwarded endpoint refuses owned headers", handler: nginx, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Original-URI": "/ok", "X-Original-Method": "GET", "X-Deputy-Role": "admin"}, wantStatus: 400, refused: "X-Deputy-Role"},
		// Envoy's http_service copies upstream only what its config names
		// and never changes the query: allowed on such a condition, the
		// application would get the client's values.
		{name: "envoy http_service: a header its config does not copy", handler: envoyShipped, method: "GET", target: "/ext_authz/ok",
			headers: map[string]string{"X-App": "client"}, wantStatus: 403},
		{name: "envoy http_service: a query change", handler: envoyShipped, method: "GET", target: "/ext_authz/noadmin?admin=1",
			wantStatus: 403},
		{name: "envoy http_service: a query change, whatever headers its config copies", handler: envoyHTTP, method: "GET",
			target: "/ext_authz/noadmin?admin=1", wantStatus: 403},
		{name: "envoy http_service: what its config copies", handler: envoyShipped, method: "GET", target: "/ext_authz/plain",
			wantStatus: 200, wantHeaders: map[string]string{"cache-control": "no-cache"}},
		{name: "forwarded endpoint refuses owned headers with underscores", handler: caddy, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Forwarded-Uri": "/ok", "X-Forwarded-Method": "GET", "x_deputy_subject": "c1"}, wantStatus: 400, refused: "X_deputy_subject"},
		{name: "forwarded endpoint refuses owned headers with mixed separators", handler: caddy, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Forwarded-Uri": "/ok", "X-Forwarded-Method": "GET", "X-DEPUTY_actor": "c1"}, wantStatus: 400, refused: "X-Deputy_actor"},
		{name: "envoy mode lists owned headers for removal instead", handler: envoyHTTP, method: "GET", target: "/ext_authz/ok",
			headers: map[string]string{"X-Deputy-Role": "admin"}, wantStatus: 200, wantHeaders: map[string]string{envoy.HeadersToRemoveHeader: "x-deputy-role"}},
		{name: "envoy mode ignores forwarded URI headers", handler: envoyHTTP, method: "GET", target: "/ext_authz/other",
			headers: map[string]string{"X-Original-URI": "/ok", "X-Forwarded-Uri": "/ok"}, wantStatus: 403},
		// CodeIgniter routes /?/x and /index.php?/x as /x: a path carried
		// in the query is refused on every way in, not decided as "/".
		{name: "envoy http_service: a path carried in the query", handler: envoyHTTP, method: "GET",
			target: "/ext_authz/ok?/customer/account/password/", wantStatus: 400, refused: "query"},
		{name: "nginx: a path carried in the query", handler: nginx, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Original-URI": "/index.php?/customer/account/password/", "X-Original-Method": "GET"}, wantStatus: 400, refused: "query"},
		{name: "caddy: a path carried in the query", handler: caddy, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Forwarded-Uri": "/?%2Fcustomer/account/password/", "X-Forwarded-Method": "GET"}, wantStatus: 400, refused: "query"},
		// Everything after a "#" reaches the application as query: cut
		// off, it would hide a method override.
		{name: "envoy http_service: a # in the query", handler: envoyHTTP, method: "GET",
			target: "/ext_authz/ok?x=1#&_method=POST", wantStatus: 400, refused: "query"},
		{name: "nginx: a # in the query", handler: nginx, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Original-URI": "/ok?x=1#&_method=POST", "X-Original-Method": "GET"}, wantStatus: 400, refused: "query"},
		{name: "caddy: a # in the query", handler: caddy, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Forwarded-Uri": "/ok?#_method=POST", "X-Forwarded-Method": "GET"}, wantStatus: 400, refused: "query"},
		// A path of more segments than check.max_path_segments is refused
		// on every way in: each one costs the check work.
		{name: "envoy http_service: too many path segments", handler: envoyHTTP, method: "GET",
			target: "/ext_authz" + tooManySegments, wantStatus: 400, refused: "check.max_path_segments"},
		{name: "nginx: too many path segments", handler: nginx, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Original-URI": tooManySegments, "X-Original-Method": "GET"}, wantStatus: 400, refused: "check.max_path_segments"},
		{name: "caddy: too many path segments", handler: caddy, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Forwarded-Uri": tooManySegments, "X-Forwarded-Method": "GET"}, wantStatus: 400, refused: "check.max_path_segments"},
		// So is a path whose route_dirs would pass check.max_route_dirs_bytes.
		{name: "envoy http_service: too long a route_dirs", handler: envoyHTTP, method: "GET",
			target: "/ext_authz" + routeDirsTooLong, wantStatus: 400, refused: "check.max_route_dirs_bytes"},
		{name: "nginx: too long a route_dirs", handler: nginx, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Original-URI": routeDirsTooLong, "X-Original-Method": "GET"}, wantStatus: 400, refused: "check.max_route_dirs_bytes"},
		{name: "caddy: too long a route_dirs", handler: caddy, method: "GET", target: "/deputy/authz",
			headers: map[string]string{"X-Forwarded-Uri": routeDirsTooLong, "X-Forwarded-Method": "GET"}, wantStatus: 400, refused: "check.max_route_dirs_bytes"},
		{name: "malformed JSON body is a 400", handler: envoyHTTP, method: "POST", target: "/ext_authz/ok",
			headers: map[string]string{"Content-Type": "application/json", "X-Body": "{"}, wantStatus: 400},
		// So is one whose object repeats a key: the policy would see the
		// last value alone, and an upstream may run the first.
		{name: "repeated JSON key is a 400", handler: envoyHTTP, method: "POST", target: "/ext_authz/ok",
			headers:    map[string]string{"Content-Type": "application/json", "X-Body": `{"query":"mutation { deleteCustomer }","variables":{},"query":"{ cart { id } }"}`},
			wantStatus: 400, refused: `repeats the key "query"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body *strings.Reader
			if tc.headers["X-Body"] != "" {
				body = strings.NewReader(tc.headers["X-Body"])
			} else {
				body = strings.NewReader("")
			}
			req := httptest.NewRequest(tc.method, tc.target, body)
			for k, v := range tc.headers {
				req.Header[textproto.CanonicalMIMEHeaderKey(k)] = []string{v}
			}
			rec := httptest.NewRecorder()
			tc.handler.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d (body %q)", rec.Code, tc.wantStatus, rec.Body.String())
			}
			for k, v := range tc.wantHeaders {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if tc.wantBody != "" && rec.Body.String() != tc.wantBody {
				t.Errorf("body %q, want %q", rec.Body.String(), tc.wantBody)
			}
			if tc.refused != "" {
				if !strings.Contains(rec.Body.String(), tc.refused) {
					t.Errorf("refusal %q does not name %s", rec.Body.String(), tc.refused)
				}
				return
			}
			if rec.Header().Get("x-deputy-decision-id") == "" {
				t.Errorf("no decision id")
			}
		})
	}
}

// A status Envoy's StatusCode enum lacks cannot be sent over gRPC: it is

// A policy header of several values ({"x-roles": ["admin", "auditor"]},
// as OPA-Envoy's result format allows) reaches the application whole: the
// first entry replaces the client's copy, the others add to it. Each
// overwriting would leave Envoy only the last value.
func TestMultiValuedPolicyHeaderOverGRPC(t *testing.T) {
	const pol = `package t
decision := {"allowed": true, "reason": "fine", "headers": {"x-roles": ["admin", "auditor"], "x-team": "ops"}}
`
	client, _ := serveGRPC(t, policyPipeline(t, pol), 1<<20)
	resp, err := client.Check(context.Background(), check("/x", map[string]string{":path": "/x", ":method": "GET", "x-roles": "superuser"}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range resp.GetOkResponse().GetHeaders() {
		got = append(got, h.GetHeader().GetKey()+"="+h.GetHeader().GetValue()+" "+h.GetAppendAction().String())
	}
	slices.Sort(got)
	want := []string{"x-roles=admin OVERWRITE_IF_EXISTS_OR_ADD", "x-roles=auditor APPEND_IF_EXISTS_OR_ADD", "x-team=ops OVERWRITE_IF_EXISTS_OR_ADD"}
	if !slices.Equal(got, want) {
		t.Errorf("headers %q, want %q", got, want)
	}
}

// denied with 403 rather than producing a response Envoy rejects.
func TestStatusOutsideEnvoyEnumFallsBackTo403(t *testing.T) {
	resp := envoy.ToCheckResponse(&authz.Response{Allowed: false, HTTPStatus: 418, DecisionID: "d"})
	if resp.GetDeniedResponse().GetStatus().GetCode() != 403 {
		t.Fatalf("got %v", resp.GetDeniedResponse().GetStatus())
	}
	if resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue() != "d" {
		t.Fatalf("decision id lost")
	}
}

// nginx's auth_request keeps only a denial's status: the nginx endpoint
// sends the whole denial in one header for the config to render, so a
// denial costs one check. Other endpoints do not.
func TestDenialHeaderForNginx(t *testing.T) {
	p := pipeline(t)
	nginx := envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyNginx), envoy.WithOwned(p.Owned))
	caddy := envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyCaddy), envoy.WithOwned(p.Owned))
	type denial struct {
		Status  int         `json:"status"`
		Headers [][2]string `json:"headers"`
		Body    string      `json:"body"`
	}
	decode := func(t *testing.T, rec *httptest.ResponseRecorder) denial {
		t.Helper()
		raw, err := base64.RawURLEncoding.DecodeString(rec.Header().Get(envoy.DenialHeader))
		if err != nil {
			t.Fatalf("%s: %v", envoy.DenialHeader, err)
		}
		var d denial
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v: %s", envoy.DenialHeader, err, raw)
		}
		return d
	}
	ask := func(h http.Handler, headers map[string]string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/deputy/authz", nil)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	t.Run("policy denial", func(t *testing.T) {
		rec := ask(nginx, map[string]string{"X-Original-URI": "/busy", "X-Original-Method": "GET"})
		d := decode(t, rec)
		want := denial{Status: 429, Body: "slow down", Headers: [][2]string{{"x-why", "busy"}, {"content-type", "text/plain; charset=utf-8"}}}
		if !reflect.DeepEqual(d, want) {
			t.Errorf("denial %+v, want %+v", d, want)
		}
		if rec.Code != 429 || rec.Body.String() != "slow down" {
			t.Errorf("answer %d %q", rec.Code, rec.Body.String())
		}
	})
	t.Run("refusal before policy", func(t *testing.T) {
		d := decode(t, ask(nginx, map[string]string{"X-Original-URI": "/ok", "X-Original-Method": "GET", "X-Deputy-Role": "admin"}))
		if d.Status != 400 || !strings.Contains(d.Body, "X-Deputy-Role") {
			t.Errorf("denial %+v", d)
		}
	})
	t.Run("allow carries none", func(t *testing.T) {
		rec := ask(nginx, map[string]string{"X-Original-URI": "/plain", "X-Original-Method": "GET", "Cookie": "deputy_session=s1"})
		if rec.Code != 200 || rec.Header().Get(envoy.DenialHeader) != "" {
			t.Errorf("allow: %d %q", rec.Code, rec.Header().Get(envoy.DenialHeader))
		}
	})
	t.Run("caddy passes the denial itself", func(t *testing.T) {
		rec := ask(caddy, map[string]string{"X-Forwarded-Uri": "/busy", "X-Forwarded-Method": "GET"})
		if rec.Code != 429 || rec.Header().Get(envoy.DenialHeader) != "" {
			t.Errorf("caddy: %d %q", rec.Code, rec.Header().Get(envoy.DenialHeader))
		}
	})
}

type decisionRecorder struct{ logged, observed []*sidecar.Decision }

func (r *decisionRecorder) Log(d *sidecar.Decision)             { r.logged = append(r.logged, d) }
func (r *decisionRecorder) ObserveDecision(d *sidecar.Decision) { r.observed = append(r.observed, d) }

type failingBody struct{}

func (failingBody) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

// A request the HTTP check refuses before any policy (a header its proxy
// does not set or strip, a missing or repeated original method or URI, a
// URI that is not a path, a body it cannot read) leaves by the pipeline's
// one exit: logged and counted as malformed_request with the header named,
// answered with the error table's status, and refused under dry run too.
func TestHTTPCheckRefusalsAreDecisions(t *testing.T) {
	rec := &decisionRecorder{}
	p := pipeline(t, authz.WithDryRun(true), authz.WithDecisionLogger(rec), authz.WithObserver(rec))
	envoyHTTP := envoy.NewHTTPHandler(p, envoy.WithPathPrefix("/ext_authz"))
	nginx := envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyNginx), envoy.WithOwned(p.Owned))
	caddy := envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyCaddy), envoy.WithOwned(p.Owned))
	wantStatus := sidecar.HTTPStatus(sidecar.Invalid("x", "y"))

	cases := []struct {
		name    string
		handler http.Handler
		headers map[string][]string
		body    io.Reader
		field   string
		path    string
	}{
		{name: "owned header", handler: nginx, field: "X-Deputy-Role", path: "/ok",
			headers: map[string][]string{"X-Original-Uri": {"/ok"}, "X-Original-Method": {"GET"}, "X-Deputy-Role": {"admin"}}},
		{name: "owned header with underscores", handler: caddy, field: "X_deputy_subject", path: "/ok",
			headers: map[string][]string{"X-Forwarded-Uri": {"/ok"}, "X-Forwarded-Method": {"GET"}, "X_deputy_subject": {"c1"}}},
		{name: "the other convention's header", handler: caddy, field: "X-Original-Uri", path: "/other",
			headers: map[string][]string{"X-Forwarded-Uri": {"/other"}, "X-Forwarded-Method": {"GET"}, "X-Original-Uri": {"/ok"}}},
		{name: "missing method", handler: nginx, field: "X-Original-Method", path: "/ok",
			headers: map[string][]string{"X-Original-Uri": {"/ok"}}},
		{name: "repeated URI", handler: nginx, field: "X-Original-Uri", path: "/ok",
			headers: map[string][]string{"X-Original-Uri": {"/ok", "/busy"}, "X-Original-Method": {"GET"}}},
		{name: "URI that is not a path", handler: nginx, field: "X-Original-Uri", path: "http://evil.example/ok",
			headers: map[string][]string{"X-Original-Uri": {"http://evil.example/ok"}, "X-Original-Method": {"GET"}}},
		{name: "body that cannot be read", handler: envoyHTTP, field: "body", path: "/ok", body: failingBody{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec.logged, rec.observed = nil, nil
			target := "/deputy/authz"
			if tc.handler == envoyHTTP {
				target = "/ext_authz/ok"
			}
			req := httptest.NewRequest("POST", target, tc.body)
			for k, v := range tc.headers {
				req.Header[k] = v
			}
			w := httptest.NewRecorder()
			tc.handler.ServeHTTP(w, req)
			if w.Code != wantStatus {
				t.Fatalf("status %d under dry run, want %d (body %q)", w.Code, wantStatus, w.Body.String())
			}
			if !strings.Contains(w.Body.String(), tc.field) {
				t.Errorf("body %q does not name %s", w.Body.String(), tc.field)
			}
			if len(rec.logged) != 1 || len(rec.observed) != 1 {
				t.Fatalf("logged %d, observed %d decisions, want 1 each", len(rec.logged), len(rec.observed))
			}
			d := rec.logged[0]
			if d.Allowed || d.DryRun || d.HTTPStatus != wantStatus || d.Reason != authz.ReasonMalformedRequest {
				t.Errorf("decision allowed=%v dry_run=%v status=%d reason=%q", d.Allowed, d.DryRun, d.HTTPStatus, d.Reason)
			}
			if !strings.Contains(d.Error, tc.field) {
				t.Errorf("decision error %q does not name %s", d.Error, tc.field)
			}
			if d.Path != tc.path {
				t.Errorf("decision path %q, want %q", d.Path, tc.path)
			}
			if got := w.Header().Get("x-deputy-decision-id"); got != d.ID {
				t.Errorf("decision id %q, logged %q", got, d.ID)
			}
		})
	}
}

// nginx and Caddy send the forwarded check no body, only its original
// length in the header their shipped configs set: a POST with a body the
// check cannot read is decided as every method a body override could
// name, a body-less one as a POST. Envoy's http_service body cut at the
// limit counts as unread too.
func TestForwardedBodyLength(t *testing.T) {
	p := methodsPipeline(t)
	nginx := envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyNginx))
	caddy := envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyCaddy))
	traefik := envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyTraefik))
	envoyHTTP := envoy.NewHTTPHandler(p, envoy.WithMaxBody(16))
	const every = "POST,GET,HEAD,PUT,PATCH,DELETE,OPTIONS"
	nginxPost := map[string]string{"X-Original-Uri": "/a", "X-Original-Method": "POST", "Content-Type": "application/x-www-form-urlencoded"}
	caddyPost := map[string]string{"X-Forwarded-Uri": "/a", "X-Forwarded-Method": "POST", "Content-Type": "application/x-www-form-urlencoded"}
	with := func(base map[string]string, k, v string) map[string]string {
		m := map[string]string{k: v}
		for bk, bv := range base {
			m[bk] = bv
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		handler  http.Handler
		headers  map[string]string
		body     string
		want     string
		refusing string
	}{
		{"nginx: a body", nginx, with(nginxPost, "X-Original-Content-Length", "14"), "", every, ""},
		{"nginx: a chunked body", nginx, with(nginxPost, "X-Original-Content-Length", "unknown"), "", every, ""},
		{"nginx: length not stated", nginx, nginxPost, "", every, ""},
		{"nginx: no body", nginx, with(nginxPost, "X-Original-Content-Length", "0"), "", "POST", ""},
		{"caddy: a body", caddy, with(caddyPost, "X-Forwarded-Content-Length", "14"), "", every, ""},
		{"caddy: unknown length", caddy, with(caddyPost, "X-Forwarded-Content-Length", ""), "", every, ""},
		{"caddy: no body", caddy, with(caddyPost, "X-Forwarded-Content-Length", "0"), "", "POST", ""},
		{"traefik: never known", traefik, caddyPost, "", every, ""},
		{"nginx: the other convention's length is refused", nginx, with(nginxPost, "X-Forwarded-Content-Length", "0"), "", "", "X-Forwarded-Content-Length"},
		{"caddy: the other convention's length is refused", caddy, with(caddyPost, "X-Original-Content-Length", "0"), "", "", "X-Original-Content-Length"},
		{"envoy http_service: body cut at the limit", envoyHTTP, map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
			"a=1&b=2&c=3&d=4&_method=DELETE", every, ""},
		{"envoy http_service: whole body", envoyHTTP, map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
			"_method=DELETE", "POST,DELETE", ""},
		// Envoy's http_service sends at most max_request_bytes and sets
		// Content-Length to what it sent: a body of exactly the limit may
		// have been cut, whether or not Envoy's partial flag reached Deputy.
		{"envoy http_service: body of exactly the limit", envoyHTTP, map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "16"},
			"a=1&b=2&c=3&d=44", every, ""},
		{"envoy http_service: partial flag", envoyHTTP, map[string]string{"Content-Type": "application/x-www-form-urlencoded", "X-Envoy-Auth-Partial-Body": "true"},
			"a=1", every, ""},
		// http_service passes only the headers allowed_headers lists: a
		// body without a type may be JSON or a form whose type was not sent.
		{"envoy http_service: body without a content type", envoyHTTP, map[string]string{"Content-Length": "9"},
			`{"a":"b"}`, every, ""},
		// A compressed body (body-parser inflates gzip) hides its fields:
		// a form is refused, not decided on bytes the upstream inflates.
		{"envoy http_service: compressed body", envoyHTTP, map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"},
			"a=1", "", "content-encoding \"gzip\""},
		{"envoy http_service: identity encoding is read", envoyHTTP, map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "identity"},
			"_method=PUT", "POST,PUT", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method, target := "GET", "/deputy/authz"
			if tc.handler == envoyHTTP {
				method, target = "POST", "/a"
			}
			req := httptest.NewRequest(method, target, strings.NewReader(tc.body))
			req.ContentLength = -1 // sent chunked: only the handler's limit cuts it
			for k, v := range tc.headers {
				req.Header[textproto.CanonicalMIMEHeaderKey(k)] = []string{v}
			}
			rec := httptest.NewRecorder()
			tc.handler.ServeHTTP(rec, req)
			if tc.refusing != "" {
				if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), tc.refusing) {
					t.Fatalf("status %d %q, want 400 naming %s", rec.Code, rec.Body.String(), tc.refusing)
				}
				return
			}
			if rec.Code != http.StatusForbidden || rec.Body.String() != tc.want {
				t.Errorf("status %d, methods %q, want %q", rec.Code, rec.Body.String(), tc.want)
			}
		})
	}
}
