package authz

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// The typed conversion of what Envoy sends must give exactly what the
// reflective one gives, on every field of every message it reaches: a
// field it skipped, named differently or spelled in another type (a
// number for a string, another enum name) would change what policies
// read. Messages are filled at random, every field populated in the first
// rounds and about half, then a fifth of them after, and each converts
// under the whole input and under needs of many shapes.
func TestAttributesTypedMatchReflective(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	f := &filler{rnd: rnd, seen: map[protoreflect.FullName]bool{}}
	compared := 0
	for i := range 3000 {
		f.p = []float64{1, 0.5, 0.2}[min(i/100, 2)]
		a := &authv3.AttributeContext{}
		f.message(a.ProtoReflect(), 0)
		needs := append([]*policy.InputNeeds{policy.AllInput}, opaEnvoyStyleNeeds...)
		for range 4 {
			needs = append(needs, randomNeed(rnd, a.ProtoReflect().Descriptor(), 0))
		}
		for _, need := range needs {
			if compareConverters(t, a, need) {
				compared++
			}
		}
	}
	// Every field of every message the conversion reaches was populated
	// at least once: a field added to Envoy's messages shows up here
	// until the typed conversion handles it.
	for _, name := range attributeContextFieldNames() {
		if !f.seen[name] {
			t.Errorf("field %s never populated", name)
		}
	}
	// Ill-formed well-known types make both fail; most comparisons must
	// still compare values.
	if compared < 3000*len(opaEnvoyStyleNeeds) {
		t.Errorf("only %d conversions succeeded", compared)
	}
}

// What reflection counts as populated where a struct field does not say
// it plainly: a oneof member chosen with a nil message, nil list elements
// and map values, zero in a oneof, the empty message.
func TestAttributesTypedMatchReflectiveEdges(t *testing.T) {
	cases := map[string]*authv3.AttributeContext{
		"empty":                  {},
		"empty peer":             {Source: &authv3.AttributeContext_Peer{}},
		"oneof nil message":      {Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{}}}},
		"oneof nil pipe":         {Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_Pipe{}}}},
		"oneof nil internal":     {Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{}}}},
		"oneof nil wrapper":      {Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: (*corev3.Address_Pipe)(nil)}}},
		"oneof zero port":        {Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{PortSpecifier: &corev3.SocketAddress_PortValue{}}}}}},
		"oneof empty named port": {Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{PortSpecifier: &corev3.SocketAddress_NamedPort{}}}}}},
		"oneof nil port wrapper": {Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{PortSpecifier: (*corev3.SocketAddress_PortValue)(nil)}}}}},
		"oneof empty listener":   {Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{}}}}}},
		"unknown enum":           {Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Protocol: 7}}}}},
		"negative enum":          {Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Protocol: -1}}}}},
		"nil list element":       {Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{nil, {Key: "a"}}}}}},
		"empty list":             {Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{}}}}},
		"nil map value":          {MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"a": nil}, TypedFilterMetadata: map[string]*anypb.Any{"b": nil}}},
		"empty maps":             {ContextExtensions: map[string]string{}, Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{}, RawBody: []byte{}}}},
		"empty map key":          {ContextExtensions: map[string]string{"": ""}},
		"min int64 size":         {Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Size: math.MinInt64}}},
		"negative size":          {Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Size: -1}}},
		"time out of range":      {Request: &authv3.AttributeContext_Request{Time: &timestamppb.Timestamp{Seconds: math.MaxInt64}}},
		"empty time":             {Request: &authv3.AttributeContext_Request{Time: &timestamppb.Timestamp{}}},
		"unresolvable any":       {RouteMetadataContext: &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{"x": {TypeUrl: "type.googleapis.com/no.such.Type"}}}},
		"invalid UTF-8 header":   {Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{"\xff": "\xfe"}, Method: "\xff"}}},
	}
	for name, a := range cases {
		t.Run(name, func(t *testing.T) {
			for _, need := range append([]*policy.InputNeeds{policy.AllInput}, opaEnvoyStyleNeeds...) {
				compareConverters(t, a, need)
			}
			rnd := rand.New(rand.NewPCG(3, 4))
			for range 50 {
				compareConverters(t, a, randomNeed(rnd, a.ProtoReflect().Descriptor(), 0))
			}
		})
	}
}

// FuzzAttributeContextAST holds the typed conversion to the reflective
// one on arbitrary AttributeContexts (binary protobuf: unknown enum
// numbers, oneofs chosen at zero, any bytes) under the whole input and a
// need drawn from seed.
func FuzzAttributeContextAST(f *testing.F) {
	var req authv3.CheckRequest
	if err := protojson.Unmarshal([]byte(richRequest), &req); err != nil {
		f.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(5, 6))
	fl := &filler{rnd: rnd, p: 1, seen: map[protoreflect.FullName]bool{}}
	seeds := []proto.Message{req.GetAttributes(), &authv3.AttributeContext{}}
	for len(seeds) < 6 {
		a := &authv3.AttributeContext{}
		fl.message(a.ProtoReflect(), 0)
		seeds = append(seeds, a)
	}
	for i, m := range seeds {
		// Filled messages with invalid UTF-8 in a string cannot be
		// encoded (nor decoded by the fuzz function): left out.
		if bs, err := proto.Marshal(m); err == nil {
			f.Add(bs, uint64(i))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		a := &authv3.AttributeContext{}
		if err := proto.Unmarshal(data, a); err != nil {
			return
		}
		compareConverters(t, a, policy.AllInput)
		compareConverters(t, a, randomNeed(rand.New(rand.NewPCG(seed, seed)), a.ProtoReflect().Descriptor(), 0))
	})
}

// compareConverters fails t unless both conversions of a under need
// agree: the same value or both an error. It reports whether they gave a
// value.
func compareConverters(t *testing.T, a *authv3.AttributeContext, need *policy.InputNeeds) bool {
	t.Helper()
	want, wantErr := protoToAST(a.ProtoReflect(), need)
	got, gotErr := attributeContextAST(a, need)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("typed error %v, reflective error %v\nmessage %v\nneed %s", gotErr, wantErr, a, needString(need))
	}
	if wantErr != nil {
		return false
	}
	if d := astDiff("attributes", got, want); d != "" {
		t.Fatalf("%s\nmessage %v\nneed %s", d, a, needString(need))
	}
	return true
}

// astDiff describes the first difference between two values, "" when
// they are the same: the same types all the way down (a number is not a
// string holding it) and the same spelling of every number.
func astDiff(path string, got, want ast.Value) string {
	if reflect.TypeOf(got) != reflect.TypeOf(want) {
		return fmt.Sprintf("%s: typed %T %v, reflective %T %v", path, got, got, want, want)
	}
	switch w := want.(type) {
	case ast.Object:
		g := got.(ast.Object)
		for _, k := range w.Keys() {
			gv := g.Get(k)
			if gv == nil {
				return fmt.Sprintf("%s: typed lacks %v", path, k)
			}
			if d := astDiff(path+"."+k.String(), gv.Value, w.Get(k).Value); d != "" {
				return d
			}
		}
		for _, k := range g.Keys() {
			if w.Get(k) == nil {
				return fmt.Sprintf("%s: typed has %v, reflective does not", path, k)
			}
		}
	case *ast.Array:
		g := got.(*ast.Array)
		if g.Len() != w.Len() {
			return fmt.Sprintf("%s: typed %d elements, reflective %d", path, g.Len(), w.Len())
		}
		for i := range w.Len() {
			if d := astDiff(fmt.Sprintf("%s[%d]", path, i), g.Elem(i).Value, w.Elem(i).Value); d != "" {
				return d
			}
		}
	default:
		if got.String() != want.String() {
			return fmt.Sprintf("%s: typed %v, reflective %v", path, got, want)
		}
	}
	return ""
}

func needString(n *policy.InputNeeds) string {
	if n.All {
		return "*"
	}
	keys := make([]string, 0, len(n.Children))
	for k, c := range n.Children {
		keys = append(keys, fmt.Sprintf("%q:%s", k, needString(c)))
	}
	slices.Sort(keys)
	return "{" + strings.Join(keys, ",") + "}"
}

// opaEnvoyStyleNeeds are what the OPA-Envoy-style policies the load test
// runs read of the attributes, and a policy reading whole subtrees.
var opaEnvoyStyleNeeds = func() []*policy.InputNeeds {
	all := policy.AllInput
	node := func(kv ...any) *policy.InputNeeds {
		n := &policy.InputNeeds{Children: map[string]*policy.InputNeeds{}}
		for i := 0; i < len(kv); i += 2 {
			n.Children[kv[i].(string)] = kv[i+1].(*policy.InputNeeds)
		}
		return n
	}
	return []*policy.InputNeeds{
		node("request", node("http", node("method", all))),
		node("request", node("http", node("method", all, "path", all, "headers", node("authorization", all)))),
		node("request", node("http", node("method", all)), "source", node("principal", all)),
		node("request", node("http", all), "source", all, "destination", node("address", node("socketAddress", node("portValue", all)))),
		node("metadataContext", node("filterMetadata", node("envoy.filters.http.jwt_authn", all)), "request", node("time", node("seconds", all))),
	}
}()

// randomNeed is a need over md's fields: whole subtrees, named fields
// and map keys, names no field has (snake_case spellings among them),
// needs below scalars and into lists.
func randomNeed(rnd *rand.Rand, md protoreflect.MessageDescriptor, depth int) *policy.InputNeeds {
	if rnd.IntN(8) == 0 || depth > 6 {
		return policy.AllInput
	}
	n := &policy.InputNeeds{Children: map[string]*policy.InputNeeds{}}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if rnd.IntN(5) >= 2 {
			continue
		}
		var child *policy.InputNeeds
		switch {
		case fd.IsMap():
			child = &policy.InputNeeds{Children: map[string]*policy.InputNeeds{}}
			for range rnd.IntN(4) {
				child.Children[pick(rnd, mapKeys)] = leafNeed(rnd)
			}
			if rnd.IntN(4) == 0 {
				child = policy.AllInput
			}
		case fd.IsList():
			child = leafNeed(rnd)
		case fd.Message() != nil:
			child = randomNeed(rnd, fd.Message(), depth+1)
		default:
			child = leafNeed(rnd)
		}
		n.Children[fd.JSONName()] = child
		if rnd.IntN(6) == 0 && string(fd.Name()) != fd.JSONName() {
			n.Children[string(fd.Name())] = policy.AllInput
		}
	}
	if rnd.IntN(6) == 0 {
		n.Children["nope"] = leafNeed(rnd)
	}
	return n
}

// leafNeed is most often the whole value, sometimes a field below it
// (which a scalar or a list does not have).
func leafNeed(rnd *rand.Rand) *policy.InputNeeds {
	if rnd.IntN(4) == 0 {
		return &policy.InputNeeds{Children: map[string]*policy.InputNeeds{"x": policy.AllInput, "0": policy.AllInput}}
	}
	return policy.AllInput
}

// attributeContextFieldNames are the fields of AttributeContext and of
// every message below it, down to the well-known types.
func attributeContextFieldNames() []protoreflect.FullName {
	var names []protoreflect.FullName
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] || isWellKnown(md.FullName()) {
			return
		}
		seen[md.FullName()] = true
		for i := range md.Fields().Len() {
			fd := md.Fields().Get(i)
			names = append(names, fd.FullName())
			if fd.IsMap() {
				fd = fd.MapValue()
			}
			if fd.Message() != nil {
				walk(fd.Message())
			}
		}
	}
	walk((&authv3.AttributeContext{}).ProtoReflect().Descriptor())
	return names
}

// filler populates messages at random through protobuf reflection, so it
// reaches every field a message has, whatever the typed conversion knows.
type filler struct {
	rnd  *rand.Rand
	p    float64 // the chance of populating each field (each oneof)
	seen map[protoreflect.FullName]bool
}

var (
	mapKeys   = []string{":path", "authorization", "cookie", "x-a", "X-Upper", "", "route", "envoy.filters.http.jwt_authn", "x"}
	stringVal = []string{"", "GET", "POST", "x", "/catalog/shoes?size=42", "héllo", "\xff\xfe", "HTTP/2", "https", "spiffe://cluster.local/ns/default/sa/frontend", "0", "null", strings.Repeat("ab", 40)}
)

func pick[T any](rnd *rand.Rand, xs []T) T { return xs[rnd.IntN(len(xs))] }

func (f *filler) message(m protoreflect.Message, depth int) {
	switch m.Descriptor().FullName() {
	case "google.protobuf.Timestamp":
		f.timestamp(m.Interface().(*timestamppb.Timestamp))
		return
	case "google.protobuf.Struct":
		m.Interface().(*structpb.Struct).Fields = f.structFields(0)
		return
	case "google.protobuf.Any":
		f.any(m.Interface().(*anypb.Any))
		return
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.ContainingOneof() != nil && !fd.ContainingOneof().IsSynthetic() {
			continue
		}
		if f.rnd.Float64() < f.p {
			f.field(m, fd, depth)
		}
	}
	oneofs := m.Descriptor().Oneofs()
	for i := range oneofs.Len() {
		od := oneofs.Get(i)
		if !od.IsSynthetic() && f.rnd.Float64() < f.p {
			f.field(m, od.Fields().Get(f.rnd.IntN(od.Fields().Len())), depth)
		}
	}
}

func (f *filler) field(m protoreflect.Message, fd protoreflect.FieldDescriptor, depth int) {
	f.seen[fd.FullName()] = true
	switch {
	case fd.IsMap():
		mp := m.Mutable(fd).Map()
		for range f.rnd.IntN(4) {
			var k protoreflect.MapKey
			if fd.MapKey().Kind() == protoreflect.StringKind {
				k = protoreflect.ValueOfString(pick(f.rnd, mapKeys)).MapKey()
			} else {
				k = f.scalar(fd.MapKey()).MapKey()
			}
			mp.Set(k, f.value(mp.NewValue(), fd.MapValue(), depth))
		}
	case fd.IsList():
		l := m.Mutable(fd).List()
		for range f.rnd.IntN(4) {
			l.Append(f.value(l.NewElement(), fd, depth))
		}
	default:
		m.Set(fd, f.value(m.NewField(fd), fd, depth))
	}
}

// value fills blank (a new message) or draws a scalar of fd's kind.
func (f *filler) value(blank protoreflect.Value, fd protoreflect.FieldDescriptor, depth int) protoreflect.Value {
	if fd.Message() == nil {
		return f.scalar(fd)
	}
	if depth < 8 {
		f.message(blank.Message(), depth+1)
	}
	return blank
}

func (f *filler) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	r := f.rnd
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(pick(r, stringVal))
	case protoreflect.BytesKind:
		b := make([]byte, r.IntN(6))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return protoreflect.ValueOfBytes(b)
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(r.IntN(2) == 0)
	case protoreflect.EnumKind:
		values := fd.Enum().Values()
		if r.IntN(4) == 0 {
			return protoreflect.ValueOfEnum(pick(r, []protoreflect.EnumNumber{-1, 7, math.MaxInt32, math.MinInt32}))
		}
		return protoreflect.ValueOfEnum(values.Get(r.IntN(values.Len())).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(pick(r, []int32{0, 1, -1, math.MaxInt32, math.MinInt32, r.Int32()}))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(pick(r, []uint32{0, 1, 80, 51234, math.MaxUint32, r.Uint32()}))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(pick(r, []int64{0, 1, -1, 1<<53 + 1, math.MaxInt64, math.MinInt64, r.Int64()}))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(pick(r, []uint64{0, 1, 1<<53 + 1, math.MaxUint64, r.Uint64()}))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(pick(r, specialFloats())))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(pick(r, specialFloats()))
	}
	panic(fmt.Sprintf("no values for %v", fd.Kind()))
}

func specialFloats() []float64 {
	return []float64{0, math.Copysign(0, -1), 1.5, -2, 1e21, 1e-7, math.MaxFloat64, math.SmallestNonzeroFloat64, math.NaN(), math.Inf(1), math.Inf(-1)}
}

// timestamp is mostly valid; now and then out of protojson's range,
// which both conversions must refuse.
func (f *filler) timestamp(ts *timestamppb.Timestamp) {
	ts.Seconds, ts.Nanos = f.rnd.Int64N(4e9), f.rnd.Int32N(1e9)
	if f.rnd.IntN(40) == 0 {
		ts.Seconds = math.MaxInt64
	}
}

// structFields are JSON values of every kind; now and then a NaN or an
// infinity, which protojson refuses.
func (f *filler) structFields(depth int) map[string]*structpb.Value {
	fields := map[string]*structpb.Value{}
	for range f.rnd.IntN(4) {
		var v *structpb.Value
		switch f.rnd.IntN(6) {
		case 0:
			v = structpb.NewNullValue()
		case 1:
			n := pick(f.rnd, []float64{0, 1.5, -3, 1e21, 9007199254740993})
			if f.rnd.IntN(40) == 0 {
				n = pick(f.rnd, []float64{math.NaN(), math.Inf(1)})
			}
			v = structpb.NewNumberValue(n)
		case 2:
			v = structpb.NewStringValue(pick(f.rnd, stringVal[:6]))
		case 3:
			v = structpb.NewBoolValue(f.rnd.IntN(2) == 0)
		case 4:
			if depth < 3 {
				v = structpb.NewStructValue(&structpb.Struct{Fields: f.structFields(depth + 1)})
			} else {
				v = structpb.NewNullValue()
			}
		case 5:
			v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("a"), structpb.NewNumberValue(2)}})
		}
		fields[pick(f.rnd, mapKeys)] = v
	}
	return fields
}

// any holds a message protojson can resolve, mostly; now and then a type
// it cannot.
func (f *filler) any(a *anypb.Any) {
	var inner proto.Message = &corev3.Pipe{Path: "/run/x.sock", Mode: 420}
	if f.rnd.IntN(2) == 0 {
		inner = timestamppb.New(time.Unix(f.rnd.Int64N(4e9), 0))
	}
	packed, err := anypb.New(inner)
	if err != nil {
		panic(err)
	}
	a.TypeUrl, a.Value = packed.TypeUrl, packed.Value
	if f.rnd.IntN(40) == 0 {
		a.TypeUrl = "type.googleapis.com/no.such.Type"
	}
}

// BenchmarkAttributeContextAST converts a storefront page view's
// attributes, typed and by reflection, for a policy reading the method
// (the OPA-Envoy-style path rules), the method, path and a header (the
// JWT example), and the whole input.
func BenchmarkAttributeContextAST(b *testing.B) {
	var req authv3.CheckRequest
	if err := protojson.Unmarshal([]byte(StorefrontRequest), &req); err != nil {
		b.Fatal(err)
	}
	for _, need := range []struct {
		name string
		need *policy.InputNeeds
	}{{"method", opaEnvoyStyleNeeds[0]}, {"method_path_header", opaEnvoyStyleNeeds[1]}, {"all", policy.AllInput}} {
		for _, conv := range []string{"typed", "reflective"} {
			b.Run(need.name+"/"+conv, func(b *testing.B) {
				convert := attributeConverters[conv]
				b.ReportAllocs()
				for b.Loop() {
					if _, err := convert(req.GetAttributes(), need.need); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
