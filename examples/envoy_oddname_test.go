package examples_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/examples/envoycheck"
)

// PHP, CGI and WSGI read a header named x.deputy.subject as
// X-Deputy-Subject. Deputy refuses such names over gRPC, but behind the
// shipped http_service config Envoy did not send them to Deputy
// (allowed_headers named only "-"/"_" spellings), and removes exact names
// only: Deputy allowed, and the application got a forged subject,
// customer or method. Each is now sent to Deputy, by a real deputy serve
// in envoy mode, and the request is refused, as over gRPC.
func TestEnvoyHTTPServiceRefusesOddHeaderNames(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "examples", "envoy", "envoy-http.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := envoycheck.Bootstrap(doc)
	if err != nil {
		t.Fatal(err)
	}
	ea, err := envoycheck.ExtAuthz(b)
	if err != nil {
		t.Fatal(err)
	}

	d := startDeputy(t, "envoy")
	defer d.stop(t)
	conn, err := grpc.NewClient(d.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)

	for name, value := range map[string]string{
		"x.deputy.subject":       "victim-customer",
		"x.deputy.mode":          "impersonation",
		"x.on.behalf.of":         "victim-customer",
		"x.http.method.override": "DELETE",
		"x.forwarded.host":       "evil.example",
		"remote.user":            "admin",
	} {
		t.Run(name, func(t *testing.T) {
			sent, err := envoycheck.Matches(ea.GetAllowedHeaders(), name)
			if err != nil {
				t.Fatal(err)
			}
			if !sent {
				t.Fatalf("Envoy does not send %s to Deputy, and removes exact names only: it reaches the application", name)
			}
			// What Envoy's http_service sends Deputy for a public page.
			req, err := http.NewRequest(http.MethodGet, "http://"+d.http+"/catalog/shoes", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "shop.example.com"
			req.Header[name] = []string{value}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("http_service: answered %d, want 400", resp.StatusCode)
			}
			// The same request as the gRPC config sends it.
			cr, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "shop.example.com", Path: "/catalog/shoes",
					Headers: map[string]string{":method": "GET", ":path": "/catalog/shoes", ":authority": "shop.example.com", name: value}}}}})
			if err != nil {
				t.Fatal(err)
			}
			if codes.Code(cr.GetStatus().GetCode()) != codes.InvalidArgument {
				t.Errorf("gRPC: status %v, want InvalidArgument", cr.GetStatus())
			}
		})
	}
}
