package envoy_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/envoy"
	"github.com/deputyhq/deputy/sidecar/logtest"
)

// panicking is a resolver with a bug: it panics on one cookie.
type panicking struct{}

func (panicking) Resolve(_ context.Context, r *sidecar.Request, _ *sidecar.Identity) (*sidecar.Delegation, error) {
	if r.Headers["cookie"] == "deputy_session=boom" {
		var d *sidecar.Delegation
		_ = d.Subject // nil dereference
	}
	return nil, nil
}

func recovery(log *logtest.Lines, counts map[string]*atomic.Int64) envoy.Recovery {
	return envoy.Recovery{Status: http.StatusServiceUnavailable, Logger: slog.New(slog.NewJSONHandler(log, nil)),
		Count: func(transport string) { counts[transport].Add(1) }}
}

// A check that panics is denied with the error status, logged with its
// stack and counted, and the server goes on answering: without recovery a
// panic in a gRPC handler ends the process.
func TestPanickingCheckIsDenied(t *testing.T) {
	var log logtest.Lines
	counts := map[string]*atomic.Int64{"grpc": {}, "http": {}}
	rc := recovery(&log, counts)
	p := pipeline(t, authz.WithResolvers(panicking{}))

	t.Run("grpc", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(grpc.ForceServerCodecV2(envoy.Codec{}), grpc.ChainUnaryInterceptor(rc.UnaryInterceptor()))
		authv3.RegisterAuthorizationServer(srv, envoy.NewGRPCServer(p))
		go func() { _ = srv.Serve(lis) }()
		defer srv.Stop()
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		client := authv3.NewAuthorizationClient(conn)
		resp, err := client.Check(context.Background(), check("/ok", map[string]string{"cookie": "deputy_session=boom"}))
		if err != nil {
			t.Fatalf("a panicking check must be answered (Envoy's failure_mode_allow lets errors through): %v", err)
		}
		if resp.GetOkResponse() != nil || codes.Code(resp.GetStatus().GetCode()) == codes.OK ||
			resp.GetDeniedResponse().GetStatus().GetCode() != http.StatusServiceUnavailable {
			t.Fatalf("answer %v, want a denial with 503", resp)
		}
		if resp, err := client.Check(context.Background(), check("/ok", nil)); err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("the next check: %v, %v; want it allowed as before", resp, err)
		}
		if counts["grpc"].Load() != 1 {
			t.Errorf("grpc panics counted %d, want 1", counts["grpc"].Load())
		}
	})

	t.Run("http", func(t *testing.T) {
		srv := httptest.NewServer(rc.Handler(envoy.NewHTTPHandler(p, envoy.WithTrustedProxy(envoy.ProxyNginx))))
		defer srv.Close()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/deputy/authz", nil)
		req.Header.Set("X-Original-URI", "/ok")
		req.Header.Set("X-Original-Method", "GET")
		req.Header.Set("Cookie", "deputy_session=boom")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", resp.StatusCode)
		}
		if counts["http"].Load() != 1 {
			t.Errorf("http panics counted %d, want 1", counts["http"].Load())
		}
	})

	recs := log.Records(t)
	if len(recs) != 2 {
		t.Fatalf("%d log records, want one per panic: %v", len(recs), recs)
	}
	for _, r := range recs {
		if stack, _ := r["stack"].(string); r["msg"] != "check panicked; denied" || !strings.Contains(stack, "recover_test.go") {
			t.Errorf("the panic was not logged with its stack: %v", r)
		}
	}
}
