package envoy_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/envoy"
)

// The pipeline's own denials map through the error table; a policy's
// denial is PermissionDenied whatever its status, as OPA-Envoy answers.
func TestDenialGRPCStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp *authz.Response
		want codes.Code
	}{
		{"malformed request", &authz.Response{HTTPStatus: 400, Reason: authz.ReasonMalformedRequest, Code: sidecar.EINVALID}, codes.InvalidArgument},
		{"state unavailable", &authz.Response{HTTPStatus: 503, Reason: authz.ReasonStateUnavailable, Code: sidecar.EUNAVAILABLE}, codes.Unavailable},
		{"policy denial", &authz.Response{HTTPStatus: 403, Reason: "no_rule_matched"}, codes.PermissionDenied},
		{"policy denial with its own status", &authz.Response{HTTPStatus: 429, Reason: "slow_down"}, codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := envoy.ToCheckResponse(tc.resp)
			if got := codes.Code(out.GetStatus().GetCode()); got != tc.want {
				t.Errorf("gRPC status %v, want %v", got, tc.want)
			}
			if got := out.GetDeniedResponse().GetStatus().GetCode(); int(got) != tc.resp.HTTPStatus {
				t.Errorf("HTTP status %v, want %d", got, tc.resp.HTTPStatus)
			}
		})
	}
}
