package envoy

import (
	"sync"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// Codec is the gRPC codec of the ext_authz server (grpc.ForceServerCodecV2):
// protobuf, as gRPC's own, except that a CheckRequest's headers map is
// decoded by UnmarshalCheckRequest. protobuf-go decodes map entries by
// reflection, one value conversion and two string copies per header, which
// made decoding a browser's request cost as much CPU as evaluating its
// policy.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name is gRPC's proto codec name: clients need nothing of their own.
func (Codec) Name() string { return protocodec.Name }

// Marshal is gRPC's.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2(protocodec.Name).Marshal(v)
}

// Unmarshal decodes a CheckRequest with UnmarshalCheckRequest and any
// other message (health, reflection) with gRPC's codec.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*authv3.CheckRequest)
	if !ok {
		return encoding.GetCodecV2(protocodec.Name).Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return UnmarshalCheckRequest(buf.ReadOnlyData(), req)
}

// scratch is what decoding one request needs and keeps nothing of.
type scratch struct {
	entries [][]byte
	rest    []byte
}

var scratchPool = sync.Pool{New: func() any { return &scratch{entries: make([][]byte, 0, 32)} }}

// maxScratch bounds the buffers kept for the next request, so one large
// request does not pin its size.
const maxScratch = 64 << 10

// release returns sc to the pool, holding no reference to the request.
func (sc *scratch) release() {
	clear(sc.entries)
	if cap(sc.rest) > maxScratch || cap(sc.entries) > maxScratch/24 {
		return
	}
	scratchPool.Put(sc)
}

// headersPath is where the headers map lies in a CheckRequest:
// attributes (1), request (4), http (2), headers (3).
var headersPath = []protowire.Number{1, 4, 2, 3}

// UnmarshalCheckRequest decodes b into req exactly as proto.Unmarshal does,
// but for a body that is not UTF-8 (see unmarshalWhole). The headers map
// entries are cut out of b and decoded here, the rest by proto.Unmarshal.
// Anything but well-formed entries of two UTF-8 strings (an unknown field
// in an entry, another wire type, invalid UTF-8, a malformed message) is
// left to unmarshalWhole on the whole of b, so its verdict and its errors
// stay the only ones.
func UnmarshalCheckRequest(b []byte, req *authv3.CheckRequest) error {
	sc := scratchPool.Get().(*scratch)
	defer sc.release()
	entries := sc.entries[:0]
	size, ok := headerEntries(b, headersPath, &entries)
	sc.entries = entries
	if !ok || len(entries) == 0 {
		return unmarshalWhole(b, req)
	}
	headers := make(map[string]string, len(entries))
	for _, e := range entries {
		k, v, ok := mapEntry(e)
		if !ok {
			return unmarshalWhole(b, req)
		}
		headers[k] = v
	}
	// proto.Unmarshal copies what it keeps, so the buffer is reused.
	rest := appendWithout(sc.rest[:0], b, headersPath)
	sc.rest = rest
	if len(rest) != size || unmarshalWhole(rest, req) != nil || req.GetAttributes().GetRequest().GetHttp() == nil {
		// None of these can be once headerEntries accepted b; should
		// one be, the whole of b decides.
		return unmarshalWhole(b, req)
	}
	req.Attributes.Request.Http.Headers = headers
	return nil
}

// unmarshalWhole is proto.Unmarshal, except that a request whose body
// field is not UTF-8 is read with that field as raw_body. Envoy without
// pack_as_bytes sends the body, whatever its bytes, in body, a proto3
// string, which protobuf-go refuses to decode unless it is UTF-8: every
// upload of a file (an image, a PDF, a gzip) failed the Check call, and
// Envoy denied it. raw_body is what Envoy sends the same bytes in with
// pack_as_bytes, and what authz reads a body from when body is empty, so
// the request is decided on the bytes the upstream receives. Only one
// body field and no raw_body are read so: a check holding both is no
// Envoy's, and protobuf-go's error stands.
func unmarshalWhole(b []byte, req *authv3.CheckRequest) error {
	err := proto.Unmarshal(b, req)
	if err == nil {
		return nil
	}
	var f bodyFields
	if !f.find(b, 0, httpPath) || f.bodies != 1 || f.raws != 0 || utf8.Valid(f.body) {
		return err
	}
	asRaw := append([]byte(nil), b...)
	asRaw[f.tag] = rawBodyTag
	if proto.Unmarshal(asRaw, req) != nil {
		// Something else in b is malformed too: protobuf-go's first
		// verdict is the one reported.
		proto.Reset(req)
		return err
	}
	return nil
}

// httpPath is where the HttpRequest lies in a CheckRequest: attributes
// (1), request (4), http (2).
var httpPath = []protowire.Number{1, 4, 2}

// The HttpRequest's body (11, string) and raw_body (12, bytes) fields.
const (
	bodyField    protowire.Number = 11
	rawBodyField protowire.Number = 12
)

// rawBodyTag is raw_body's one-byte tag, which replaces body's (also one
// byte) in place: the lengths around it stay as they are.
var rawBodyTag = protowire.AppendTag(nil, rawBodyField, protowire.BytesType)[0]

// bodyFields is what find saw of the body fields of a CheckRequest: how
// many body and raw_body fields, and the offset of the (last) body
// field's tag when it is one byte long, with its value.
type bodyFields struct {
	bodies, raws int
	tag          int
	body         []byte
}

// find walks message b, at offset base of the whole message, down path
// to the HttpRequest messages and counts their body fields; false when b
// is malformed along the path or a body's tag is not one byte.
func (f *bodyFields) find(b []byte, base int, path []protowire.Number) bool {
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[off+n:])
		if m < 0 {
			return false
		}
		if typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[off+n:])
			start := off + n + m - len(v)
			switch {
			case len(path) > 0 && num == path[0]:
				if !f.find(v, base+start, path[1:]) {
					return false
				}
			case len(path) == 0 && num == bodyField:
				if n != 1 {
					return false
				}
				f.bodies++
				f.tag, f.body = base+off, v
			case len(path) == 0 && num == rawBodyField:
				f.raws++
			}
		}
		off += n + m
	}
	return true
}

// headerEntries returns the size of message b without the map entries at
// path, and appends those entries to *entries in wire order unless entries
// is nil; ok is false when b is not a well-formed message along the path.
func headerEntries(b []byte, path []protowire.Number, entries *[][]byte) (size int, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return 0, false
		}
		field := b[:n+m]
		b = b[n+m:]
		if num != path[0] || typ != protowire.BytesType {
			size += len(field)
			continue
		}
		v, _ := protowire.ConsumeBytes(field[n:])
		if len(path) == 1 {
			if entries != nil {
				*entries = append(*entries, v)
			}
			continue
		}
		inner, ok := headerEntries(v, path[1:], entries)
		if !ok {
			return 0, false
		}
		size += n + protowire.SizeBytes(inner)
	}
	return size, true
}

// appendWithout appends message b without the map entries at path, each
// enclosing message's length rewritten. b was checked by headerEntries.
func appendWithout(out, b []byte, path []protowire.Number) []byte {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		field := b[:n+m]
		b = b[n+m:]
		switch {
		case num != path[0] || typ != protowire.BytesType:
			out = append(out, field...)
		case len(path) > 1:
			v, _ := protowire.ConsumeBytes(field[n:])
			inner, _ := headerEntries(v, path[1:], nil)
			out = append(out, field[:n]...)
			out = protowire.AppendVarint(out, uint64(inner))
			out = appendWithout(out, v, path[1:])
		}
	}
	return out
}

// mapEntry decodes a map<string, string> entry: key (1) and value (2),
// each absent as "" and the last one read when repeated.
func mapEntry(b []byte) (k, v string, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType || num != 1 && num != 2 {
			return "", "", false
		}
		s, m := protowire.ConsumeBytes(b[n:])
		if m < 0 || !utf8.Valid(s) {
			return "", "", false
		}
		if num == 1 {
			k = headerName(s)
		} else {
			v = string(s)
		}
		b = b[n+m:]
	}
	return k, v, true
}

// headerName returns a header name as a string, without a copy for the
// names nearly every request carries.
func headerName(b []byte) string {
	if s, ok := commonHeaderNames[string(b)]; ok {
		return s
	}
	return string(b)
}

var commonHeaderNames = func() map[string]string {
	m := map[string]string{}
	for _, k := range authz.CommonHeaderNames() {
		m[k] = k
	}
	return m
}()
