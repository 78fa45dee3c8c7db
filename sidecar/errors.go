// Package sidecar holds Deputy's domain: who is asking (Identity), on whose
// behalf (Delegation), what was decided (Decision), the error codes every
// surface maps from, and the small interfaces the check path consumes.
package sidecar

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
)

// Error codes. They are stable: clients, metrics and logs key on them.
const (
	EINVALID      = "invalid"      // malformed input; Field names what is wrong
	EUNAUTHORIZED = "unauthorized" // no or bad credentials
	EFORBIDDEN    = "forbidden"    // credentials fine, policy says no
	ENOTFOUND     = "not_found"
	ECONFLICT     = "conflict"
	ETOOLARGE     = "too_large"
	ERATELIMIT    = "rate_limited"
	// EPRECONDITION refuses a write whose precondition (If-Match and kin)
	// cannot be shown true.
	EPRECONDITION = "precondition_failed"
	EUNAVAILABLE  = "unavailable" // state store or policy not reachable
	EINTERNAL     = "internal"
)

// Error is the one error type that crosses package boundaries. Message is
// safe to show to a client; wrapped causes are not.
type Error struct {
	Code    string
	Message string
	Field   string // for EINVALID: the offending field, as the client named it
	// Reason is a machine-readable reason (e.g. session_ended) that policy
	// reads as input.identity_error or input.delegation_error.
	Reason string
	Err    error // cause, never shown to clients
}

func (e *Error) Error() string {
	msg := e.Code + ": " + e.Message
	if e.Field != "" {
		msg = e.Code + ": " + e.Field + ": " + e.Message
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an EINVALID error naming the field.
func Invalid(field, format string, args ...any) *Error {
	return &Error{Code: EINVALID, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Unavailable wraps a store or dependency failure.
func Unavailable(msg string, err error) *Error {
	return &Error{Code: EUNAVAILABLE, Message: msg, Err: err}
}

// RetryAfter rides (as Err) on an ERATELIMIT error: how long until the
// budget that refused the call has room again.
type RetryAfter struct{ Wait time.Duration }

func (r *RetryAfter) Error() string { return "retry after " + r.Wait.String() }

// RateLimited refuses a call over a budget; wait is how long until it has
// room again (the HTTP answer's Retry-After).
func RateLimited(wait time.Duration, format string, args ...any) *Error {
	return &Error{Code: ERATELIMIT, Message: fmt.Sprintf(format, args...), Err: &RetryAfter{Wait: wait}}
}

// ReasonUnpublished is the reason of an error that reports a committed
// write whose eviction could not be published.
const ReasonUnpublished = "eviction_unpublished"

// Unpublished reports a narrowing write that committed while its eviction
// did not reach the other replicas: EUNAVAILABLE, so that the caller
// retries, and a retry publishes the eviction again.
func Unpublished(cause error) *Error {
	return &Error{Code: EUNAVAILABLE, Reason: ReasonUnpublished, Err: cause,
		Message: "change saved, but not yet announced to every replica: retry"}
}

// IsUnpublished reports whether err is Unpublished: the write it reports
// on stands, and the caller records it as done before answering 503.
func IsUnpublished(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Reason == ReasonUnpublished
}

// ReasonGrantSuperseded is the reason of the ECONFLICT PutGrant answers
// for a grant older than a later approval or revocation of the same
// access: the later decision stands.
const ReasonGrantSuperseded = "grant_superseded"

// Superseded is the error of a grant write that a later approval or
// revocation of the same access refused.
func Superseded() *Error {
	return &Error{Code: ECONFLICT, Reason: ReasonGrantSuperseded,
		Message: ReasonGrantSuperseded + ": a later approval or revocation of this access stands"}
}

// ReasonRedeemActorMismatch refuses a redeem link opened with the
// verified identity of someone other than its session's staff member.
const ReasonRedeemActorMismatch = "redeem_actor_mismatch"

// RedeemActorMismatch is the EFORBIDDEN refusing a redeem link opened
// with the verified identity of someone other than its session's staff
// member.
func RedeemActorMismatch() *Error {
	return &Error{Code: EFORBIDDEN, Reason: ReasonRedeemActorMismatch,
		Message: ReasonRedeemActorMismatch + ": this link starts a session for another person than the one signed in; " +
			"it is used up and can never be redeemed: the staff member who started the session must start a new one"}
}

// SessionOver is the ECONFLICT refusing a use of a session that is no
// longer live; state is its EndState, and the reason, session_<state>, is
// the one the check path denies its cookie with.
func SessionOver(state string) *Error { return Refused(ECONFLICT, "session_"+state, nil) }

// SessionOverState returns the end state a SessionOver error reports, and
// whether err is one.
func SessionOverState(err error) (string, bool) {
	var e *Error
	if !errors.As(err, &e) || e.Code != ECONFLICT {
		return "", false
	}
	return strings.CutPrefix(e.Reason, "session_")
}

// ErrorCode returns the code of err, EINTERNAL for foreign errors and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the client-safe message of err.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		if e.Field != "" {
			return e.Field + ": " + e.Message
		}
		return e.Message
	}
	return "internal error"
}

// Refused returns an error with a machine-readable reason, which is also
// its message.
func Refused(code, reason string, cause error) *Error {
	return &Error{Code: code, Reason: reason, Message: reason, Err: cause}
}

// ErrorReason returns the machine-readable reason of err: its Reason, or
// the error table's reason for its code when it has none. A message is
// never read as a reason.
func ErrorReason(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Reason != "" {
		return e.Reason
	}
	return ErrorMetricReason(err)
}

// ErrorField returns the field an EINVALID error names, if any.
func ErrorField(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}

// The one error table: code → HTTP status → gRPC status → metric reason.
// Every surface maps through it (the check pipeline and its gRPC and HTTP
// adapters, the management API), in both directions.
var codeTable = map[string]codeRow{
	EINVALID:      {http.StatusBadRequest, codes.InvalidArgument, "malformed_request"},
	EUNAUTHORIZED: {http.StatusUnauthorized, codes.Unauthenticated, "unauthorized"},
	EFORBIDDEN:    {http.StatusForbidden, codes.PermissionDenied, "forbidden"},
	ENOTFOUND:     {http.StatusNotFound, codes.NotFound, "not_found"},
	ECONFLICT:     {http.StatusConflict, codes.AlreadyExists, "conflict"},
	ETOOLARGE:     {http.StatusRequestEntityTooLarge, codes.ResourceExhausted, "too_large"},
	ERATELIMIT:    {http.StatusTooManyRequests, codes.ResourceExhausted, "rate_limited"},
	EPRECONDITION: {http.StatusPreconditionFailed, codes.FailedPrecondition, "precondition_failed"},
	EUNAVAILABLE:  {http.StatusServiceUnavailable, codes.Unavailable, "state_unavailable"},
	EINTERNAL:     {http.StatusInternalServerError, codes.Internal, "internal"},
}

type codeRow struct {
	http   int
	grpc   codes.Code
	reason string
}

// HTTPStatus maps an error to its HTTP status: 200 for nil, 500 for a
// foreign error.
func HTTPStatus(err error) int {
	if err == nil {
		return http.StatusOK
	}
	return codeEntry(err).http
}

// ErrorMetricReason is the reason an error is counted and logged under.
func ErrorMetricReason(err error) string { return codeEntry(err).reason }

// codeEntry is the table's row for err; a code it does not know is internal.
func codeEntry(err error) codeRow {
	if e, ok := codeTable[ErrorCode(err)]; ok {
		return e
	}
	return codeTable[EINTERNAL]
}

// GRPCCode is the gRPC status of an error code; PermissionDenied for a
// code the table does not know.
func GRPCCode(code string) codes.Code {
	if e, ok := codeTable[code]; ok {
		return e.grpc
	}
	return codes.PermissionDenied
}
