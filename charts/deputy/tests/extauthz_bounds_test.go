package tests

import (
	"fmt"
	"strings"
	"testing"

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
