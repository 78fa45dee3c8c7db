package sidecar_test

import (
	"errors"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/deputyhq/deputy/sidecar"
)

func TestErrorTable(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		grpc   codes.Code
		reason string
	}{
		{sidecar.Invalid("path", "bad"), http.StatusBadRequest, codes.InvalidArgument, "malformed_request"},
		{sidecar.Refused(sidecar.EUNAUTHORIZED, "token_expired", nil), http.StatusUnauthorized, codes.Unauthenticated, "unauthorized"},
		{sidecar.Errorf(sidecar.EFORBIDDEN, "no"), http.StatusForbidden, codes.PermissionDenied, "forbidden"},
		{sidecar.Unavailable("redis down", errors.New("dial")), http.StatusServiceUnavailable, codes.Unavailable, "state_unavailable"},
		{sidecar.Errorf(sidecar.ERATELIMIT, "slow"), http.StatusTooManyRequests, codes.ResourceExhausted, "rate_limited"},
		{sidecar.Errorf(sidecar.EPRECONDITION, "no entity tags"), http.StatusPreconditionFailed, codes.FailedPrecondition, "precondition_failed"},
		{errors.New("foreign"), http.StatusInternalServerError, codes.Internal, "internal"},
		{&sidecar.Error{Code: "unknown_code"}, http.StatusInternalServerError, codes.PermissionDenied, "internal"},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			if got := sidecar.HTTPStatus(tc.err); got != tc.status {
				t.Errorf("HTTPStatus = %d, want %d", got, tc.status)
			}
			if got := sidecar.GRPCCode(sidecar.ErrorCode(tc.err)); got != tc.grpc {
				t.Errorf("GRPCCode = %v, want %v", got, tc.grpc)
			}
			if got := sidecar.ErrorMetricReason(tc.err); got != tc.reason {
				t.Errorf("ErrorMetricReason = %q, want %q", got, tc.reason)
			}
		})
	}
	if sidecar.HTTPStatus(nil) != http.StatusOK {
		t.Error("nil error is not 200")
	}
}

func TestErrorReason(t *testing.T) {
	if got := sidecar.ErrorReason(sidecar.Refused(sidecar.EFORBIDDEN, "no_live_grant", errors.New("cause"))); got != "no_live_grant" {
		t.Errorf("Reason field: %q", got)
	}
	// A message is for people: without a Reason, the table's reason.
	if got := sidecar.ErrorReason(sidecar.Errorf(sidecar.EUNAUTHORIZED, "session_ended")); got != "unauthorized" {
		t.Errorf("no Reason: %q", got)
	}
	if got := sidecar.ErrorReason(errors.New("boom")); got != "internal" {
		t.Errorf("foreign error: %q", got)
	}
}
