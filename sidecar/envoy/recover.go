package envoy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
)

// ReasonPanic is the reason a check that panicked is denied with.
const ReasonPanic = "internal_panic"

// Recovery keeps a check that panics from taking the sidecar down (gRPC
// does not recover a handler's panic) and from leaving the proxy without
// an answer: the check is denied with Status, logged with its stack, and
// counted. A gRPC error would not do: Envoy lets the request through on
// one when failure_mode_allow is set.
type Recovery struct {
	Status int                    // the check's error status (check.error_status)
	Logger *slog.Logger           // where the panic and its stack go
	Count  func(transport string) // counts a panic, by transport (grpc, http)
}

func (rc Recovery) recovered(ctx context.Context, transport string, p any) {
	rc.Logger.ErrorContext(ctx, "check panicked; denied", "transport", transport,
		"error", fmt.Sprint(p), "stack", string(debug.Stack()))
	rc.Count(transport)
}

func (rc Recovery) denial() *authz.Response {
	return &authz.Response{HTTPStatus: rc.Status, Reason: ReasonPanic, Code: sidecar.EINTERNAL}
}

// UnaryInterceptor recovers a panic in the ext_authz Check, answering a
// denial; a panic in another method (health) becomes an Internal error.
func (rc Recovery) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				rc.recovered(ctx, "grpc", p)
				if info.FullMethod == CheckMethod {
					resp, err = ToCheckResponse(rc.denial()), nil
				} else {
					resp, err = nil, status.Error(codes.Internal, "internal error")
				}
			}
		}()
		return handler(ctx, req)
	}
}

// CheckMethod is the ext_authz gRPC method.
const CheckMethod = "/envoy.service.auth.v3.Authorization/Check"

// Handler recovers a panic in an HTTP check handler, answering the error
// status when nothing was written yet, else cutting the response (the
// proxy then fails closed).
func (rc Recovery) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackingWriter{ResponseWriter: w}
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler { // net/http's own way to cut a response
				panic(p)
			}
			rc.recovered(r.Context(), "http", p)
			if tw.wrote {
				panic(http.ErrAbortHandler)
			}
			w.Header().Set("content-type", "text/plain; charset=utf-8")
			w.WriteHeader(rc.Status)
			_, _ = w.Write([]byte("authorization failed\n"))
		}()
		next.ServeHTTP(tw, r)
	})
}

// trackingWriter remembers whether the status line went out.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (t *trackingWriter) WriteHeader(code int) {
	t.wrote = true
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(b)
}
