// Package envoy adapts the check pipeline to Envoy's ext_authz protocols:
// the gRPC Authorization service (v3) and the HTTP service contract, which
// nginx auth_request and Caddy forward_auth speak too.
package envoy

import (
	"context"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
)

// Checker decides a CheckRequest; *authz.Pipeline is one.
type Checker interface {
	Check(ctx context.Context, req *authv3.CheckRequest) *authz.Response
}

// GRPCServer implements envoy.service.auth.v3.Authorization.
type GRPCServer struct {
	authv3.UnimplementedAuthorizationServer
	checker Checker
}

var _ authv3.AuthorizationServer = (*GRPCServer)(nil)

// NewGRPCServer returns the ext_authz gRPC service for checker.
func NewGRPCServer(checker Checker) *GRPCServer { return &GRPCServer{checker: checker} }

// Check answers one ext_authz request. Denials are answers, not errors:
// the gRPC call itself only fails when the request cannot be read.
// An allow also removes the client's headers of the families nginx and
// Caddy clear by prefix (see clientPrefixed).
func (s *GRPCServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	r := s.checker.Check(ctx, req)
	out := ToCheckResponse(r)
	if ok := out.GetOkResponse(); ok != nil {
		h := req.GetAttributes().GetRequest().GetHttp()
		c := newClientCopies(ok.HeadersToRemove, r.HeadersToRemove, r.Headers, r.Injected)
		for name := range h.GetHeaders() {
			c.add(name)
		}
		for _, hv := range h.GetHeaderMap().GetHeaders() {
			c.add(hv.GetKey())
		}
		ok.HeadersToRemove = c.removals
	}
	return out, nil
}

// ToCheckResponse renders a pipeline response as OPA-Envoy would.
func ToCheckResponse(r *authz.Response) *authv3.CheckResponse {
	out := &authv3.CheckResponse{DynamicMetadata: &structpb.Struct{}}
	if len(r.DynamicMetadata) > 0 {
		if md, err := structpb.NewStruct(r.DynamicMetadata); err == nil {
			out.DynamicMetadata = md
		}
	}
	if out.DynamicMetadata.Fields == nil {
		out.DynamicMetadata.Fields = map[string]*structpb.Value{}
	}
	out.DynamicMetadata.Fields["decision_id"] = structpb.NewStringValue(r.DecisionID)
	if r.Allowed {
		out.Status = &rpcstatus.Status{Code: int32(codes.OK)}
		ok := &authv3.OkHttpResponse{
			Headers:                 headerOptions(r.Headers, r.Injected, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
			HeadersToRemove:         r.HeadersToRemove,
			ResponseHeadersToAdd:    headerOptions(r.ResponseHeadersToAdd, nil, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
			QueryParametersToRemove: r.QueryParamsToRemove,
		}
		for _, q := range r.QueryParamsToSet {
			ok.QueryParametersToSet = append(ok.QueryParametersToSet, &corev3.QueryParameter{Key: q.Key, Value: q.Value})
		}
		out.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: ok}
		return out
	}
	// A policy's denial is PermissionDenied, as OPA-Envoy answers; the
	// pipeline's own (malformed request, state unavailable) map through
	// the error table.
	code := codes.PermissionDenied
	if r.Code != "" {
		code = sidecar.GRPCCode(r.Code)
	}
	out.Status = &rpcstatus.Status{Code: int32(code), Message: r.Reason}
	status := r.HTTPStatus
	if _, known := typev3.StatusCode_name[int32(status)]; !known {
		status = http.StatusForbidden
	}
	out.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		Headers: headerOptions(r.Headers, nil, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		Body:    r.Body,
	}}
	return out
}

// headerOptions renders policy headers with the action given and Deputy's
// injected headers with OVERWRITE, so a value a client sent under the same
// name can never survive next to Deputy's.
//
// A policy's headers for the upstream request overwrite too. Envoy once
// read a HeaderValueOption without "append" in an ext_authz answer as an
// overwrite; since append_action, its zero value appends instead, so a
// client's x-current-user: admin stayed in front of the x-current-user a
// policy set from the verified token, and an application reading the
// first value took the client's. (Envoy's http_service overwrites the
// headers it copies, and so do nginx and Caddy.) A header of several
// values overwrites with its first and appends the others. Response
// headers and a denial's keep Envoy's default: the application's own
// Set-Cookie must survive a policy's.
func headerOptions(policy, injected []authz.Header, action corev3.HeaderValueOption_HeaderAppendAction) []*corev3.HeaderValueOption {
	if len(policy)+len(injected) == 0 {
		return nil
	}
	// Three allocations for any number of headers, not two per header.
	n := len(policy) + len(injected)
	out := make([]*corev3.HeaderValueOption, n)
	opts := make([]corev3.HeaderValueOption, n)
	values := make([]corev3.HeaderValue, n)
	for i := range n {
		if i < len(policy) {
			values[i].Key, values[i].Value = policy[i].Key, policy[i].Value
			opts[i].AppendAction = action
			if action == corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD && repeated(policy[:i], policy[i].Key) {
				// A header of several values ({"x-roles": ["a", "b"]}):
				// the first entry replaces the client's, the others add
				// to it, or each would replace the one before.
				opts[i].AppendAction = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			}
		} else {
			h := injected[i-len(policy)]
			values[i].Key, values[i].Value = h.Key, h.Value
			opts[i].AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		}
		opts[i].Header = &values[i]
		out[i] = &opts[i]
	}
	return out
}

// repeated reports whether a header of name comes among before, in any
// letter case (Envoy's names are case-insensitive).
func repeated(before []authz.Header, name string) bool {
	for _, h := range before {
		if strings.EqualFold(h.Key, name) {
			return true
		}
	}
	return false
}
