package tests

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/deputyhq/deputy/examples/envoycheck"
)

// Over gRPC, Envoy sends the body in raw_body only with pack_as_bytes;
// otherwise in body, a proto3 string, whatever its bytes: a file upload
// (an image, a PDF, a gzip) is not UTF-8. http_service sends the body's
// bytes as they are, and has no such setting.
func TestRenderedExtAuthzPacksBodyAsBytes(t *testing.T) {
	for _, tc := range []struct {
		transport string
		pack      bool
	}{
		{transport: "grpc", pack: true},
		{transport: "http", pack: false},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			m := renderInline(t, "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\nenvoy: {extAuthz: {transport: "+tc.transport+"}}\n")
			b, err := envoycheck.Bootstrap([]byte(m.get(t, "ConfigMap", "shop-deputy-envoy").(*corev1.ConfigMap).Data["envoy.yaml"]))
			if err != nil {
				t.Fatal(err)
			}
			authz, err := envoycheck.ExtAuthz(b)
			if err != nil {
				t.Fatal(err)
			}
			if (authz.GetGrpcService() != nil) != (tc.transport == "grpc") {
				t.Fatalf("transport %s rendered grpc_service %v", tc.transport, authz.GetGrpcService() != nil)
			}
			wrb := authz.GetWithRequestBody()
			if wrb.GetMaxRequestBytes() == 0 {
				t.Fatal("with_request_body is not set")
			}
			if wrb.GetPackAsBytes() != tc.pack {
				t.Errorf("pack_as_bytes %v, want %v", wrb.GetPackAsBytes(), tc.pack)
			}
		})
	}
}
