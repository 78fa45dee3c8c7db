package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/deputyhq/deputy/examples/envoycheck"
)

// What Envoy's CheckRequest may hold besides the body: the headers the
// listener accepts (max_request_headers_kb, 60 KiB by default), of which
// the path and the host come again in fields of their own, with each
// entry's framing, the addresses and a peer certificate. The chart keeps
// envoy.extAuthz.maxRequestBytes this far below grpc.max_recv_msg_bytes.
const checkRequestHeadroom = 256 << 10

const boundsBase = "app: {image: {repository: x}}, identity: {anonymousOnly: true}"

// renderErr renders inline values and returns the render's error.
func renderErr(t *testing.T, values string) error {
	t.Helper()
	_, err := renderYAML(t, loadChart(t), values)
	return err
}

// A body Envoy sends whole (or cut at maxRequestBytes) must fit, with the
// rest of the CheckRequest, in the message Deputy's gRPC server accepts:
// past grpc.max_recv_msg_bytes it refuses the message and Envoy denies the
// request (503). The render refuses a limit above the bound, whatever
// grpc.max_recv_msg_bytes deputy.config sets; over http_service the
// body's limit is Deputy's http.max_body_bytes, which the chart sets to
// the same number and deputy.config may not set apart.
func TestExtAuthzBodyWithinDeputyLimit(t *testing.T) {
	const defaultMax = 4 << 20
	tests := []struct {
		name, values string
		want         string // the refusal's mention; "" renders
	}{
		{"default", "{" + boundsBase + "}", ""},
		{"at the bound", fmt.Sprintf("{%s, envoy: {extAuthz: {maxRequestBytes: %d}}}", boundsBase, defaultMax-checkRequestHeadroom), ""},
		{"over the bound", fmt.Sprintf("{%s, envoy: {extAuthz: {maxRequestBytes: %d}}}", boundsBase, defaultMax-checkRequestHeadroom+1),
			fmt.Sprintf("envoy.extAuthz.maxRequestBytes %d leaves less than 256 KiB of grpc.max_recv_msg_bytes (%d)", defaultMax-checkRequestHeadroom+1, defaultMax)},
		{"Deputy's whole limit", fmt.Sprintf("{%s, envoy: {extAuthz: {maxRequestBytes: %d}}}", boundsBase, defaultMax), "at most 3932160"},
		{"a larger limit in deputy.config", fmt.Sprintf("{%s, envoy: {extAuthz: {maxRequestBytes: %d}}, deputy: {config: {grpc: {max_recv_msg_bytes: %d}}}}", boundsBase, 8<<20-checkRequestHeadroom, 8<<20), ""},
		{"over a larger limit", fmt.Sprintf("{%s, envoy: {extAuthz: {maxRequestBytes: %d}}, deputy: {config: {grpc: {max_recv_msg_bytes: %d}}}}", boundsBase, 8<<20-checkRequestHeadroom+1, 8<<20), "at most 8126464"},
		{"a smaller limit in deputy.config", fmt.Sprintf("{%s, deputy: {config: {grpc: {max_recv_msg_bytes: %d}}}}", boundsBase, 128<<10), "deputy.config.grpc.max_recv_msg_bytes 131072 leaves no room for a body: raise it to at least 270336"},
		{"the limit set to null", "{" + boundsBase + ", deputy: {config: {grpc: {max_recv_msg_bytes: null}}}}", ""},
		// Not followed when set among the extras.
		{"limit as a flag", "{" + boundsBase + ", deputy: {extraArgs: ['--grpc-max-recv-msg-bytes=1048576']}}", "--grpc-max-recv-msg-bytes is not followed by the chart's Envoy config"},
		{"limit as a variable", "{" + boundsBase + ", deputy: {extraEnv: [{name: DEPUTY_GRPC_MAX_RECV_MSG_BYTES, value: '1048576'}]}}", "DEPUTY_GRPC_MAX_RECV_MSG_BYTES is not followed"},
		// Over http_service no gRPC message carries the body.
		{"http_service, a large body", "{" + boundsBase + ", envoy: {extAuthz: {transport: http, maxRequestBytes: 16777216}}}", ""},
		{"http_service, the body limit set apart", "{" + boundsBase + ", envoy: {extAuthz: {transport: http}}, deputy: {config: {http: {max_body_bytes: 4096}}}}",
			"deputy.config.http.max_body_bytes 4096 is not envoy.extAuthz.maxRequestBytes (8192)"},
		{"http_service, the same body limit", "{" + boundsBase + ", envoy: {extAuthz: {transport: http}}, deputy: {config: {http: {max_body_bytes: 8192}}}}", ""},
		{"body limit as a flag", "{" + boundsBase + ", deputy: {extraArgs: ['--http-max-body-bytes', '4096']}}", "--http-max-body-bytes is not followed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := renderErr(t, tc.values)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("render refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want mention of %q", err, tc.want)
			}
		})
	}
}

// Envoy stops waiting for Deputy at envoy.extAuthz.timeout and answers its
// own 503: Deputy's 503 state_unavailable (its reason, its decision
// record's) must come first. A check may wait on three state lookups in
// turn, each with the whole of state_lookup.budget, so the budget may be a
// quarter of the timeout at most; unset, the chart writes Deputy's default
// (100ms) or, under a shorter timeout, a quarter of it. Either way Envoy
// fails closed.
func TestExtAuthzTimeoutCoversStateBudget(t *testing.T) {
	tests := []struct {
		name, values string
		budget       string // the budget in Deputy's config
		timeout      string // Envoy's
		want         string // the refusal's mention; "" renders
	}{
		{name: "default", values: "{" + boundsBase + "}", budget: "100ms", timeout: "0.5s"},
		{name: "http_service", values: "{" + boundsBase + ", envoy: {extAuthz: {transport: http}}}", budget: "100ms", timeout: "0.5s"},
		{name: "Envoy's own default timeout", values: "{" + boundsBase + ", envoy: {extAuthz: {timeout: 0.2s}}}", budget: "50ms", timeout: "0.2s"},
		{name: "a longer timeout", values: "{" + boundsBase + ", envoy: {extAuthz: {timeout: 2s}}}", budget: "100ms", timeout: "2s"},
		{name: "a quarter of a millisecond cut", values: "{" + boundsBase + ", envoy: {extAuthz: {timeout: 0.0375s}}}", budget: "9ms", timeout: "0.0375s"},
		{name: "a budget set", values: "{" + boundsBase + ", deputy: {config: {state_lookup: {budget: 50ms}}}}", budget: "50ms", timeout: "0.5s"},
		{name: "a budget of a quarter", values: "{" + boundsBase + ", deputy: {config: {state_lookup: {budget: 125ms}}}}", budget: "125ms", timeout: "0.5s"},
		{name: "a budget set null", values: "{" + boundsBase + ", envoy: {extAuthz: {timeout: 0.2s}}, deputy: {config: {state_lookup: {budget: null}}}}", budget: "50ms", timeout: "0.2s"},
		{name: "a budget over a quarter", values: "{" + boundsBase + ", deputy: {config: {state_lookup: {budget: 126ms}}}}",
			want: "deputy.config.state_lookup.budget 126ms is more than a quarter of envoy.extAuthz.timeout (0.5s)"},
		{name: "the budget as long as the timeout", values: "{" + boundsBase + ", envoy: {extAuthz: {timeout: 0.1s}}, deputy: {config: {state_lookup: {budget: 0.1s}}}}",
			want: "more than a quarter of envoy.extAuthz.timeout (0.1s)"},
		{name: "a budget in another unit", values: "{" + boundsBase + ", envoy: {extAuthz: {timeout: 1s}}, deputy: {config: {state_lookup: {budget: 1m}}}}",
			want: "more than a quarter"},
		{name: "a budget unreadable", values: "{" + boundsBase + ", deputy: {config: {state_lookup: {budget: soon}}}}",
			want: "deputy.config.state_lookup.budget: the chart cannot read \"soon\""},
		{name: "a zero timeout", values: "{" + boundsBase + ", envoy: {extAuthz: {timeout: 0s}}}", want: "envoy.extAuthz.timeout 0s is too short"},
		{name: "a timeout too short", values: "{" + boundsBase + ", envoy: {extAuthz: {timeout: 0.003s}}}", want: "envoy.extAuthz.timeout 0.003s is too short"},
		{name: "budget as a flag", values: "{" + boundsBase + ", deputy: {extraArgs: ['--state-lookup-budget=1s']}}", want: "--state-lookup-budget is not followed"},
		{name: "budget as a variable", values: "{" + boundsBase + ", deputy: {extraEnv: [{name: DEPUTY_STATE_LOOKUP_BUDGET, value: 1s}]}}", want: "DEPUTY_STATE_LOOKUP_BUDGET is not followed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want != "" {
				if err := renderErr(t, tc.values); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want mention of %q", err, tc.want)
				}
				return
			}
			m := renderInline(t, tc.values)
			var cfg map[string]any
			if err := yaml.Unmarshal([]byte(m.get(t, "ConfigMap", "shop-deputy-config").(*corev1.ConfigMap).Data["config.yaml"]), &cfg); err != nil {
				t.Fatal(err)
			}
			if got, _ := lookup(cfg, "state_lookup.budget"); got != tc.budget {
				t.Errorf("state_lookup.budget = %v, want %s", got, tc.budget)
			}
			b, err := envoycheck.Bootstrap([]byte(m.get(t, "ConfigMap", "shop-deputy-envoy").(*corev1.ConfigMap).Data["envoy.yaml"]))
			if err != nil {
				t.Fatal(err)
			}
			authz, err := envoycheck.ExtAuthz(b)
			if err != nil {
				t.Fatal(err)
			}
			timeout := authz.GetGrpcService().GetTimeout()
			if authz.GetHttpService() != nil {
				timeout = authz.GetHttpService().GetServerUri().GetTimeout()
			}
			if got := timeout.AsDuration(); got.Seconds() != seconds(t, tc.timeout) {
				t.Errorf("Envoy's timeout %s, want %s", got, tc.timeout)
			}
			// Envoy's own answer, past the timeout or with Deputy down,
			// is a denial.
			if authz.GetFailureModeAllow() {
				t.Error("failure_mode_allow is true: Deputy late or down would mean allowed")
			}
			if got := authz.GetStatusOnError().GetCode(); got != 503 {
				t.Errorf("status_on_error = %v, want 503", got)
			}
		})
	}
}

func seconds(t *testing.T, s string) float64 {
	t.Helper()
	var f float64
	if _, err := fmt.Sscanf(strings.TrimSuffix(s, "s"), "%g", &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// The bounds against Deputy itself, started from the rendered pod: a
// CheckRequest as large as Envoy sends at the largest maxRequestBytes the
// render accepts (the body whole, and 60 KiB of headers, the listener's
// most, in Envoy's 100 at most, the path and host again in their fields)
// is decided, while one carrying a body of Deputy's whole limit, which a
// larger maxRequestBytes would send, is refused. With the store hung, a
// check needing state is answered with Deputy's 503 within the rendered
// Envoy timeout, the deadline Envoy gives the call.
func TestRenderedBoundsHoldAgainstDeputy(t *testing.T) {
	bin := deputyBinary(t)
	frozenAddr, frozen := startRedis(t, "s3cret")
	if err := frozen.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = frozen.Signal(syscall.SIGCONT) })
	const limit, bound = 4 << 20, 4<<20 - checkRequestHeadroom
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte(fmt.Sprintf("{%s, envoy: {extAuthz: {maxRequestBytes: %d}}, redis: {enabled: true, addrs: ['%s'], password: s3cret}}",
		boundsBase, bound, frozenAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	m := mustRender(t, values, true)
	b, err := envoycheck.Bootstrap([]byte(m.get(t, "ConfigMap", "shop-deputy-envoy").(*corev1.ConfigMap).Data["envoy.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	authz, err := envoycheck.ExtAuthz(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := authz.GetWithRequestBody().GetMaxRequestBytes(); got != bound {
		t.Fatalf("max_request_bytes %d, want %d", got, bound)
	}
	timeout := authz.GetGrpcService().GetTimeout().AsDuration()
	d := startRendered(t, bin, m)
	conn, err := grpc.NewClient(d.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := authv3.NewAuthorizationClient(conn)

	for _, tc := range []struct {
		name string
		body int
		want codes.Code
	}{
		{"the largest body the render allows", bound, codes.OK},
		{"a body of Deputy's whole limit", limit, codes.ResourceExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := largestCheck(tc.body)
			if tc.want == codes.OK && proto.Size(req) > limit {
				t.Fatalf("the CheckRequest holds %d bytes, over Deputy's %d", proto.Size(req), limit)
			}
			// The size decides here, not the time: a loaded machine
			// may take a while to copy megabytes.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := client.Check(ctx, req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("Check of %d bytes: %v, want %v\n%s", proto.Size(req), err, tc.want, d.out.String())
			}
		})
	}

	t.Run("the store hung", func(t *testing.T) {
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/account", Host: "shop.example.com", Scheme: "https", Protocol: "HTTP/1.1",
			Headers: map[string]string{":method": "GET", ":path": "/account", ":authority": "shop.example.com", ":scheme": "https",
				"cookie": "deputy_session=" + strings.Repeat("a", 43)},
		}}}}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		resp, err := client.Check(ctx, req)
		if err != nil {
			t.Fatalf("no answer within Envoy's timeout (%s): %v\n%s", timeout, err, d.out.String())
		}
		if got := resp.GetDeniedResponse().GetStatus().GetCode(); got != 503 || resp.GetStatus().GetMessage() != "state_unavailable" {
			t.Fatalf("answered %v, want Deputy's 503 state_unavailable", resp)
		}
	})
}

// largestCheck is the CheckRequest Envoy sends for a request with a body
// of size bytes and the most header bytes its listener takes (60 KiB, in
// its 100 headers at most), nearly all in the path, which comes again in a
// field of its own, as the host does, and both addresses.
func largestCheck(size int) *authv3.CheckRequest {
	const headerBytes, headers = 60 << 10, 100
	h := map[string]string{":method": "POST", ":scheme": "https", ":authority": "shop.example.com", "content-type": "application/octet-stream"}
	for i := len(h); i < headers-1; i++ {
		h[fmt.Sprintf("x-%02d", i)] = "v"
	}
	used := len(":path")
	for k, v := range h {
		used += len(k) + len(v)
	}
	path := "/upload?q=" + strings.Repeat("q", headerBytes-used-len("/upload?q="))
	h[":path"] = path
	addr := func(ip string, port uint32) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      addr("203.0.113.9", 54321),
		Destination: addr("10.0.0.7", 8080),
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "5a1c3e0e-0d6f-4c51-9d3a-0e1f2a3b4c5d", Method: "POST", Path: path, Host: "shop.example.com",
			Scheme: "https", Protocol: "HTTP/1.1", Size: int64(size), Headers: h, Body: strings.Repeat("b", size),
		}},
	}}
}
