package envoy_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/deputyhq/deputy/sidecar/envoy"
)

// uploadPolicy allows a multipart upload to /upload whose title field is
// "cat", and denies everything else: what the policy reads of the body
// is parsed_body, as OPA-Envoy builds it.
const uploadPolicy = `package t

default decision := {"allowed": false, "reason": "nope"}

decision := {"allowed": true, "reason": "upload"} if {
	input.attributes.request.http.path == "/upload"
	input.parsed_body.title == ["cat"]
}
`

// pngUpload is a multipart form as a browser sends it for a file input:
// a text field and a PNG, whose bytes are not UTF-8.
func pngUpload() (contentType, body string) {
	const boundary = "----deputy7MA4YWxk"
	png := "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\xc3\x28"
	body = "--" + boundary + "\r\n" +
		"Content-Disposition: form-data; name=\"title\"\r\n\r\ncat\r\n" +
		"--" + boundary + "\r\n" +
		"Content-Disposition: form-data; name=\"file\"; filename=\"cat.png\"\r\n" +
		"Content-Type: image/png\r\n\r\n" + png + "\r\n" +
		"--" + boundary + "--\r\n"
	return "multipart/form-data; boundary=" + boundary, body
}

func uploadCheck(title string) *authv3.CheckRequest {
	ct, body := pngUpload()
	if title != "cat" {
		body = strings.Replace(body, "\r\n\r\ncat\r\n", "\r\n\r\n"+title+"\r\n", 1)
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Path: "/upload", Host: "shop.example", Scheme: "https", Protocol: "HTTP/1.1",
			Size: int64(len(body)),
			Headers: map[string]string{
				":method": "POST", ":path": "/upload", ":authority": "shop.example",
				"content-type": ct, "content-length": strconv.Itoa(len(body)),
			},
			RawBody: []byte(body),
		},
	}}}
}

// httpRequestPath is where AttributeContext.HttpRequest lies in a
// CheckRequest: attributes (1), request (4), http (2).
var httpRequestPath = []protowire.Number{1, 4, 2}

// asStringBody returns the wire form of req with its raw_body (12) sent
// as body (11) instead, byte for byte: what Envoy sends without
// pack_as_bytes, which protobuf-go refuses to marshal when the body is not
// UTF-8. Both fields are length-delimited, so only the tag changes.
func asStringBody(t testing.TB, req *authv3.CheckRequest) []byte {
	t.Helper()
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var walk func(b []byte, path []protowire.Number) []byte
	walk = func(b []byte, path []protowire.Number) []byte {
		var out []byte
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			v, m := protowire.ConsumeBytes(b[n:])
			if typ != protowire.BytesType || n < 0 || m < 0 {
				m = protowire.ConsumeFieldValue(num, typ, b[n:])
				out = append(out, b[:n+m]...)
				b = b[n+m:]
				continue
			}
			switch {
			case len(path) > 0 && num == path[0]:
				inner := walk(v, path[1:])
				out = protowire.AppendTag(out, num, typ)
				out = protowire.AppendBytes(out, inner)
			case len(path) == 0 && num == 12:
				out = protowire.AppendTag(out, 11, typ)
				out = protowire.AppendBytes(out, v)
			default:
				out = append(out, b[:n+m]...)
			}
			b = b[n+m:]
		}
		return out
	}
	return walk(b, httpRequestPath)
}

// wireCodec sends []byte as the message itself, as a peer with another
// protobuf library (Envoy's C++) would.
type wireCodec struct{}

func (wireCodec) Name() string { return "proto" }

func (wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.([]byte); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return nil, fmt.Errorf("wireCodec marshals []byte, not %T", v)
}

func (wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("wireCodec unmarshals a proto.Message, not %T", v)
	}
	return proto.Unmarshal(data.Materialize(), m)
}

// checkWire sends the wire form b to the ext_authz server at addr.
func checkWire(t *testing.T, addr string, b []byte) (*authv3.CheckResponse, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(wireCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp := new(authv3.CheckResponse)
	err = conn.Invoke(context.Background(), "/envoy.service.auth.v3.Authorization/Check", b, resp)
	return resp, err
}

// TestBinaryUploadOverGRPC sends a file upload as Envoy's ext_authz
// filter does with with_request_body, in raw_body (pack_as_bytes) and in
// body (without), over a real gRPC connection: either way the upload is
// decided on its form fields, never failed for holding bytes that are not
// UTF-8.
func TestBinaryUploadOverGRPC(t *testing.T) {
	addr := serveGRPCAddr(t, policyPipeline(t, uploadPolicy), 64<<10)
	for _, tc := range []struct {
		name    string
		title   string
		field   string
		allowed bool
	}{
		{name: "raw_body allowed", title: "cat", field: "raw_body", allowed: true},
		{name: "raw_body denied", title: "dog", field: "raw_body"},
		{name: "body allowed", title: "cat", field: "body", allowed: true},
		{name: "body denied", title: "dog", field: "body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := uploadCheck(tc.title)
			b, err := proto.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			if tc.field == "body" {
				b = asStringBody(t, req)
			}
			resp, err := checkWire(t, addr, b)
			if err != nil {
				t.Fatalf("check failed: %v", err)
			}
			if got := codes.Code(resp.GetStatus().GetCode()) == codes.OK; got != tc.allowed {
				t.Errorf("allowed %v, want %v (%v)", got, tc.allowed, resp.GetStatus())
			}
		})
	}
}

// TestBinaryUploadOverHTTPService sends a file upload as Envoy's
// http_service does with with_request_body: the body's bytes as the
// check's body, whatever they are. It is decided on its form fields, and
// a policy finds the bytes where a gRPC check carries them with
// pack_as_bytes: in raw_body, as a string (body) holds only UTF-8.
func TestBinaryUploadOverHTTPService(t *testing.T) {
	ct, body := pngUpload()
	pol := uploadPolicy + fmt.Sprintf(`
decision := {"allowed": true, "reason": "raw"} if {
	input.attributes.request.http.path == "/raw"
	input.attributes.request.http.rawBody == %q
	not input.attributes.request.http.body
}
`, base64.StdEncoding.EncodeToString([]byte(body)))
	srv := httptest.NewServer(envoy.NewHTTPHandler(policyPipeline(t, pol), envoy.WithPathPrefix("/ext_authz")))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name, path, title string
		want              int
	}{
		{name: "form field allows", path: "/upload", title: "cat", want: 200},
		{name: "form field denies", path: "/upload", title: "dog", want: 403},
		{name: "bytes in raw_body", path: "/raw", title: "cat", want: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := strings.Replace(body, "\r\n\r\ncat\r\n", "\r\n\r\n"+tc.title+"\r\n", 1)
			req, err := http.NewRequest("POST", srv.URL+"/ext_authz"+tc.path, strings.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", ct)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d (%s), want %d", resp.StatusCode, msg, tc.want)
			}
		})
	}
}
