package envoy_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/deputyhq/deputy/sidecar/envoy"
)

// browserCheck is what Envoy sends for a browser page view.
func browserCheck() *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.3.17", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.5", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}}},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(timestamppb.Now().AsTime()),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "8f4c1e2a-6b1d-4c3e-9a57-3f0e2d1c4b5a", Method: "GET", Path: "/catalog/shoes?size=42&color=red",
				Host: "shop.example.com", Scheme: "https", Protocol: "HTTP/2",
				Headers: map[string]string{
					":authority": "shop.example.com", ":method": "GET", ":path": "/catalog/shoes?size=42&color=red", ":scheme": "https",
					"accept": "text/html,application/xhtml+xml", "accept-encoding": "gzip, deflate, br", "accept-language": "en-GB,en;q=0.9",
					"cookie": "cart=abc123; theme=dark", "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
					"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https", "x-request-id": "8f4c1e2a-6b1d-4c3e-9a57-3f0e2d1c4b5a",
					"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "sec-fetch-mode": "navigate",
					"x-envoy-expected-rq-timeout-ms": "15000", "X-Odd-Name": "kept as sent",
				},
			},
		},
		ContextExtensions: map[string]string{"virtual_host": "shop"},
		MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			"envoy.filters.http.jwt_authn": {Fields: map[string]*structpb.Value{"sub": structpb.NewStringValue("u1")}}}},
	}}
}

// Wire forms a client may send: every one must decode as proto.Unmarshal
// decodes it, to the same message or to an error.
func codecCases(t testing.TB) map[string][]byte {
	t.Helper()
	marshal := func(m proto.Message) []byte {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	full := marshal(browserCheck())
	noHeaders := browserCheck()
	noHeaders.Attributes.Request.Http.Headers = nil
	onlyHeaders := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{"a": "1", "": "empty name", "b": ""}}}}}
	second := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Path: "/second", Headers: map[string]string{"cookie": "later wins", "x-new": "2"}}}}}

	// A headers entry written by hand: http{headers{entry}} inside
	// request inside attributes.
	wrap := func(entry []byte) []byte {
		var b []byte
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, entry)
		for _, num := range []protowire.Number{2, 4, 1} {
			var outer []byte
			outer = protowire.AppendTag(outer, num, protowire.BytesType)
			b = protowire.AppendBytes(outer, b)
		}
		return b
	}
	field := func(num protowire.Number, s string) []byte {
		b := protowire.AppendTag(nil, num, protowire.BytesType)
		return protowire.AppendBytes(b, []byte(s))
	}
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	varintField := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	return map[string][]byte{
		"browser request":          full,
		"no headers":               marshal(noHeaders),
		"only headers":             marshal(onlyHeaders),
		"empty":                    nil,
		"merged occurrences":       cat(full, marshal(second)),
		"value before key":         wrap(cat(field(2, "v"), field(1, "k"))),
		"repeated key in entry":    wrap(cat(field(1, "first"), field(1, "k"), field(2, "v"))),
		"key only":                 wrap(field(1, "k")),
		"value only":               wrap(field(2, "v")),
		"unknown field in entry":   wrap(cat(field(1, "k"), field(2, "v"), field(3, "x"))),
		"varint key":               wrap(cat(varintField(1, 7), field(2, "v"))),
		"invalid UTF-8 name":       wrap(cat(field(1, "x-\xff"), field(2, "v"))),
		"invalid UTF-8 value":      wrap(cat(field(1, "k"), field(2, "\xc3("))),
		"entry cut short":          wrap([]byte{0x0a, 0x05, 'a'}),
		"request cut short":        full[:len(full)-3],
		"http as varint":           cat(full, protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.BytesType), 200)),
		"attributes not a message": cat(field(1, "\xff\xff\xff")),
		"unknown top-level field":  cat(full, field(9, "unknown")),
		"header_map beside":        marshal(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{"a": "1"}, HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "A", Value: "2"}}}}}}}),
		"body not UTF-8":           asStringBody(t, uploadCheck("cat")),
		"body and raw body":        marshal(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{"content-type": "application/json"}, Body: `{"a":1}`, RawBody: []byte(`{"a":1}`)}}}}),
	}
}

func TestUnmarshalCheckRequestAsProto(t *testing.T) {
	for name, b := range codecCases(t) {
		t.Run(name, func(t *testing.T) {
			assertSameDecoding(t, b)
		})
	}
}

// assertSameDecoding fails unless UnmarshalCheckRequest and proto.Unmarshal
// agree on b: both refuse it, or both give equal messages; but for a body
// that is not UTF-8, which proto.Unmarshal refuses and UnmarshalCheckRequest
// reads as raw_body (see TestBodyNotUTF8ReadAsRawBody).
func assertSameDecoding(t *testing.T, b []byte) {
	t.Helper()
	var want, got authv3.CheckRequest
	wantErr := proto.Unmarshal(b, &want)
	gotErr := envoy.UnmarshalCheckRequest(b, &got)
	if wantErr != nil && gotErr == nil {
		// The one difference: a body that is not UTF-8, read as raw_body.
		h := got.GetAttributes().GetRequest().GetHttp()
		if h.GetBody() != "" || utf8.Valid(h.GetRawBody()) || !strings.Contains(wantErr.Error(), "invalid UTF-8") {
			t.Fatalf("decoded\n%v\nproto.Unmarshal refused it: %v", &got, wantErr)
		}
		return
	}
	if (wantErr == nil) != (gotErr == nil) {
		t.Fatalf("error = %v, proto.Unmarshal's = %v", gotErr, wantErr)
	}
	if wantErr == nil && !proto.Equal(&want, &got) {
		t.Fatalf("decoded\n%v\nproto.Unmarshal decoded\n%v", &got, &want)
	}
}

// TestBodyNotUTF8ReadAsRawBody: Envoy without pack_as_bytes sends a body
// that is not UTF-8 in body, which protobuf-go refuses; it is read as
// raw_body, byte for byte. A check holding a second body, or a raw_body
// beside it, is no Envoy's and stays refused.
func TestBodyNotUTF8ReadAsRawBody(t *testing.T) {
	binary := "\x89PNG\r\n\x1a\n\xff\xfe"
	req := func(raw string) *authv3.CheckRequest {
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Path: "/upload", Headers: map[string]string{"content-type": "image/png", ":path": "/upload"}, RawBody: []byte(raw),
		}}}}
	}
	// A body field appended to a CheckRequest's wire form: a second
	// attributes message, merged into the first by protobuf.
	appendBody := func(b []byte, body string) []byte {
		h := protowire.AppendBytes(protowire.AppendTag(nil, 11, protowire.BytesType), []byte(body))
		r := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), h)
		a := protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), r)
		return protowire.AppendBytes(protowire.AppendTag(b, 1, protowire.BytesType), a)
	}
	marshal := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Run("body as raw_body", func(t *testing.T) {
		var got authv3.CheckRequest
		if err := envoy.UnmarshalCheckRequest(asStringBody(t, req(binary)), &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, req(binary)) {
			t.Errorf("decoded\n%v\nwant\n%v", &got, req(binary))
		}
	})
	for name, b := range map[string][]byte{
		"body beside raw_body": appendBody(marshal(req(binary)), binary),
		"two bodies":           appendBody(asStringBody(t, req(binary)), binary),
		"UTF-8 body beside":    appendBody(asStringBody(t, req(binary)), "plain"),
	} {
		t.Run(name, func(t *testing.T) {
			var got authv3.CheckRequest
			if err := envoy.UnmarshalCheckRequest(b, &got); err == nil || !strings.Contains(err.Error(), "UTF-8") {
				t.Errorf("error %v, want protobuf's invalid UTF-8 (decoded %v)", err, &got)
			}
		})
	}
}

// FuzzUnmarshalCheckRequest mutates the wire forms above: whatever a client
// sends decodes as proto.Unmarshal decodes it.
func FuzzUnmarshalCheckRequest(f *testing.F) {
	for _, b := range codecCases(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { assertSameDecoding(t, b) })
}

// BenchmarkUnmarshalCheckRequest is what decoding a browser's CheckRequest
// costs, with gRPC's codec (proto.Unmarshal) and with Deputy's.
func BenchmarkUnmarshalCheckRequest(b *testing.B) {
	wire, err := proto.Marshal(browserCheck())
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		fn   func([]byte, *authv3.CheckRequest) error
	}{
		{"proto", func(b []byte, m *authv3.CheckRequest) error { return proto.Unmarshal(b, m) }},
		{"deputy", envoy.UnmarshalCheckRequest},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var req authv3.CheckRequest
				if err := tc.fn(wire, &req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
