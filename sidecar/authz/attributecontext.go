package authz

import (
	"encoding/base64"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/proto"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// attributeContextAST converts the AttributeContext Envoy sends to the value
// protoToAST gives for it, reading the generated structs instead of going
// through protobuf reflection: reflection looks every field up by name,
// asks whether it is set and boxes its value, and was most of the cost of
// building a check's input. The rules are protoToAST's (camelCase names,
// unpopulated fields omitted, 64-bit integers as strings, enums by name,
// well-known types through protojson, lists and map values whole), and
// TestAttributesTypedMatchReflective holds the two to the same output on
// every field of every message below. Common string values (methods,
// schemes, header names) are shared terms, as input keys are: evaluation
// never changes an input term.
//
// need limits the conversion as for protoToAST.
func attributeContextAST(a *authv3.AttributeContext, need *policy.InputNeeds) (ast.Value, error) {
	return messageObject(a, need, attributeContextFields, attributeContextField)
}

// messageObject converts one message: every field (need.All) or only
// those need names. field converts the field named key (its JSON name)
// and returns nil when the message has no such field or leaves it
// unpopulated.
func messageObject[M any](m M, need *policy.InputNeeds, fields []string, field func(M, string, *policy.InputNeeds) (*ast.Term, error)) (ast.Object, error) {
	if need.All {
		obj := ast.NewObjectWithCapacity(min(len(fields), 8))
		for _, key := range fields {
			if err := insertField(obj, m, key, need, field); err != nil {
				return nil, err
			}
		}
		return obj, nil
	}
	obj := ast.NewObjectWithCapacity(len(need.Children))
	for key, child := range need.Children {
		if err := insertField(obj, m, key, child, field); err != nil {
			return nil, err
		}
	}
	return obj, nil
}

func messageTerm[M any](m M, need *policy.InputNeeds, fields []string, field func(M, string, *policy.InputNeeds) (*ast.Term, error)) (*ast.Term, error) {
	obj, err := messageObject(m, need, fields, field)
	if err != nil {
		return nil, err
	}
	return ast.NewTerm(obj), nil
}

func insertField[M any](obj ast.Object, m M, key string, need *policy.InputNeeds, field func(M, string, *policy.InputNeeds) (*ast.Term, error)) error {
	v, err := field(m, key, need)
	if err != nil || v == nil {
		return err
	}
	obj.Insert(keyTerm(key), v)
	return nil
}

// The JSON names of each message's fields, as the need.All conversion
// lists them.
var (
	attributeContextFields = []string{"source", "destination", "request", "contextExtensions", "metadataContext", "routeMetadataContext", "tlsSession"}
	peerFields             = []string{"address", "service", "labels", "principal", "certificate"}
	requestFields          = []string{"time", "http"}
	httpRequestFields      = []string{"id", "method", "headers", "headerMap", "path", "host", "scheme", "query", "fragment", "size", "protocol", "body", "rawBody"}
	tlsSessionFields       = []string{"sni"}
	addressFields          = []string{"socketAddress", "pipe", "envoyInternalAddress"}
	socketAddressFields    = []string{"protocol", "address", "portValue", "namedPort", "resolverName", "ipv4Compat", "networkNamespaceFilepath"}
	pipeFields             = []string{"path", "mode"}
	internalAddressFields  = []string{"serverListenerName", "endpointId"}
	headerMapFields        = []string{"headers"}
	headerValueFields      = []string{"key", "value", "rawValue"}
	metadataFields         = []string{"filterMetadata", "typedFilterMetadata"}
)

func attributeContextField(m *authv3.AttributeContext, key string, need *policy.InputNeeds) (*ast.Term, error) {
	switch key {
	case "source":
		return peerTerm(m.GetSource(), need)
	case "destination":
		return peerTerm(m.GetDestination(), need)
	case "request":
		if r := m.GetRequest(); r != nil {
			return messageTerm(r, need, requestFields, requestField)
		}
	case "contextExtensions":
		return stringMapTerm(m.GetContextExtensions(), need), nil
	case "metadataContext":
		return metadataTerm(m.GetMetadataContext(), need)
	case "routeMetadataContext":
		return metadataTerm(m.GetRouteMetadataContext(), need)
	case "tlsSession":
		if s := m.GetTlsSession(); s != nil {
			return messageTerm(s, need, tlsSessionFields, tlsSessionField)
		}
	}
	return nil, nil
}

func peerTerm(p *authv3.AttributeContext_Peer, need *policy.InputNeeds) (*ast.Term, error) {
	if p == nil {
		return nil, nil
	}
	return messageTerm(p, need, peerFields, peerField)
}

func peerField(m *authv3.AttributeContext_Peer, key string, need *policy.InputNeeds) (*ast.Term, error) {
	switch key {
	case "address":
		if a := m.GetAddress(); a != nil {
			return messageTerm(a, need, addressFields, addressField)
		}
	case "service":
		return stringTerm(m.GetService()), nil
	case "labels":
		return stringMapTerm(m.GetLabels(), need), nil
	case "principal":
		return stringTerm(m.GetPrincipal()), nil
	case "certificate":
		return stringTerm(m.GetCertificate()), nil
	}
	return nil, nil
}

func requestField(m *authv3.AttributeContext_Request, key string, need *policy.InputNeeds) (*ast.Term, error) {
	switch key {
	case "time":
		if t := m.GetTime(); t != nil {
			return wellKnownTerm(t)
		}
	case "http":
		if h := m.GetHttp(); h != nil {
			return messageTerm(h, need, httpRequestFields, httpRequestField)
		}
	}
	return nil, nil
}

func httpRequestField(m *authv3.AttributeContext_HttpRequest, key string, need *policy.InputNeeds) (*ast.Term, error) {
	switch key {
	case "id":
		return stringTerm(m.GetId()), nil
	case "method":
		return stringTerm(m.GetMethod()), nil
	case "headers":
		return stringMapTerm(m.GetHeaders(), need), nil
	case "headerMap":
		if hm := m.GetHeaderMap(); hm != nil {
			return messageTerm(hm, need, headerMapFields, headerMapField)
		}
	case "path":
		return stringTerm(m.GetPath()), nil
	case "host":
		return stringTerm(m.GetHost()), nil
	case "scheme":
		return stringTerm(m.GetScheme()), nil
	case "query":
		return stringTerm(m.GetQuery()), nil
	case "fragment":
		return stringTerm(m.GetFragment()), nil
	case "size":
		if n := m.GetSize(); n != 0 {
			return ast.StringTerm(strconv.FormatInt(n, 10)), nil
		}
	case "protocol":
		return stringTerm(m.GetProtocol()), nil
	case "body":
		return stringTerm(m.GetBody()), nil
	case "rawBody":
		return bytesTerm(m.GetRawBody()), nil
	}
	return nil, nil
}

func tlsSessionField(m *authv3.AttributeContext_TLSSession, key string, _ *policy.InputNeeds) (*ast.Term, error) {
	if key == "sni" {
		return stringTerm(m.GetSni()), nil
	}
	return nil, nil
}

// addressField reads Address's oneof: a member is populated when chosen,
// even holding a nil message (it then converts as an empty one), as
// protobuf reflection counts it.
func addressField(m *corev3.Address, key string, need *policy.InputNeeds) (*ast.Term, error) {
	switch key {
	case "socketAddress":
		if x, ok := m.GetAddress().(*corev3.Address_SocketAddress); ok && x != nil {
			return messageTerm(x.SocketAddress, need, socketAddressFields, socketAddressField)
		}
	case "pipe":
		if x, ok := m.GetAddress().(*corev3.Address_Pipe); ok && x != nil {
			return messageTerm(x.Pipe, need, pipeFields, pipeField)
		}
	case "envoyInternalAddress":
		if x, ok := m.GetAddress().(*corev3.Address_EnvoyInternalAddress); ok && x != nil {
			return messageTerm(x.EnvoyInternalAddress, need, internalAddressFields, internalAddressField)
		}
	}
	return nil, nil
}

// socketAddressField: the port is a oneof, populated when chosen even at
// zero.
func socketAddressField(m *corev3.SocketAddress, key string, _ *policy.InputNeeds) (*ast.Term, error) {
	switch key {
	case "protocol":
		if p := m.GetProtocol(); p != 0 {
			if name, ok := corev3.SocketAddress_Protocol_name[int32(p)]; ok {
				return keyTerm(name), nil
			}
			return ast.NewTerm(ast.Number(strconv.FormatInt(int64(p), 10))), nil
		}
	case "address":
		return stringTerm(m.GetAddress()), nil
	case "portValue":
		if x, ok := m.GetPortSpecifier().(*corev3.SocketAddress_PortValue); ok && x != nil {
			return ast.NewTerm(ast.Number(strconv.FormatUint(uint64(x.PortValue), 10))), nil
		}
	case "namedPort":
		if x, ok := m.GetPortSpecifier().(*corev3.SocketAddress_NamedPort); ok && x != nil {
			return keyTerm(x.NamedPort), nil
		}
	case "resolverName":
		return stringTerm(m.GetResolverName()), nil
	case "ipv4Compat":
		if m.GetIpv4Compat() {
			return ast.InternedTerm(true), nil
		}
	case "networkNamespaceFilepath":
		return stringTerm(m.GetNetworkNamespaceFilepath()), nil
	}
	return nil, nil
}

func pipeField(m *corev3.Pipe, key string, _ *policy.InputNeeds) (*ast.Term, error) {
	switch key {
	case "path":
		return stringTerm(m.GetPath()), nil
	case "mode":
		if n := m.GetMode(); n != 0 {
			return ast.NewTerm(ast.Number(strconv.FormatUint(uint64(n), 10))), nil
		}
	}
	return nil, nil
}

func internalAddressField(m *corev3.EnvoyInternalAddress, key string, _ *policy.InputNeeds) (*ast.Term, error) {
	switch key {
	case "serverListenerName":
		if x, ok := m.GetAddressNameSpecifier().(*corev3.EnvoyInternalAddress_ServerListenerName); ok && x != nil {
			return keyTerm(x.ServerListenerName), nil
		}
	case "endpointId":
		return stringTerm(m.GetEndpointId()), nil
	}
	return nil, nil
}

// headerMapField: a list converts whole, whatever the policy reads of it.
func headerMapField(m *corev3.HeaderMap, key string, _ *policy.InputNeeds) (*ast.Term, error) {
	if key != "headers" || len(m.GetHeaders()) == 0 {
		return nil, nil
	}
	terms := make([]*ast.Term, len(m.GetHeaders()))
	for i, h := range m.GetHeaders() {
		v, err := messageTerm(h, policy.AllInput, headerValueFields, headerValueField)
		if err != nil {
			return nil, err
		}
		terms[i] = v
	}
	return ast.ArrayTerm(terms...), nil
}

func headerValueField(m *corev3.HeaderValue, key string, _ *policy.InputNeeds) (*ast.Term, error) {
	switch key {
	case "key":
		return stringTerm(m.GetKey()), nil
	case "value":
		return stringTerm(m.GetValue()), nil
	case "rawValue":
		return bytesTerm(m.GetRawValue()), nil
	}
	return nil, nil
}

func metadataTerm(m *corev3.Metadata, need *policy.InputNeeds) (*ast.Term, error) {
	if m == nil {
		return nil, nil
	}
	return messageTerm(m, need, metadataFields, metadataField)
}

func metadataField(m *corev3.Metadata, key string, need *policy.InputNeeds) (*ast.Term, error) {
	switch key {
	case "filterMetadata":
		return wellKnownMapTerm(m.GetFilterMetadata(), need)
	case "typedFilterMetadata":
		return wellKnownMapTerm(m.GetTypedFilterMetadata(), need)
	}
	return nil, nil
}

// stringTerm is a populated string field's value, nil for the empty
// string (unpopulated in proto3).
func stringTerm(s string) *ast.Term {
	if s == "" {
		return nil
	}
	return keyTerm(s)
}

func bytesTerm(b []byte) *ast.Term {
	if len(b) == 0 {
		return nil
	}
	return ast.StringTerm(base64.StdEncoding.EncodeToString(b))
}

// wellKnownTerm converts a well-known type (Timestamp, Struct, Any)
// through protojson.
func wellKnownTerm(m proto.Message) (*ast.Term, error) {
	v, err := viaJSON(m.ProtoReflect())
	if err != nil {
		return nil, err
	}
	return ast.NewTerm(v), nil
}

// stringMapTerm converts a map<string, string> (the request's headers,
// the context extensions, a peer's labels): the entries need names, or all
// of them; nil when the map is empty. A policy reads a header or two: it
// looks them up rather than walking the map.
func stringMapTerm(sm map[string]string, need *policy.InputNeeds) *ast.Term {
	if len(sm) == 0 {
		return nil
	}
	if !need.All {
		obj := ast.NewObjectWithCapacity(len(need.Children))
		for key := range need.Children {
			if v, ok := sm[key]; ok {
				obj.Insert(keyTerm(key), keyTerm(v))
			}
		}
		return ast.NewTerm(obj)
	}
	obj := ast.NewObjectWithCapacity(len(sm))
	for k, v := range sm {
		obj.Insert(keyTerm(k), keyTerm(v))
	}
	return ast.NewTerm(obj)
}

// wellKnownMapTerm converts a map whose values are well-known types
// (Struct, Any): each through protojson, whole. A policy that names
// entries gets only those.
func wellKnownMapTerm[V proto.Message](mp map[string]V, need *policy.InputNeeds) (*ast.Term, error) {
	if len(mp) == 0 {
		return nil, nil
	}
	if !need.All {
		obj := ast.NewObjectWithCapacity(len(need.Children))
		for k := range need.Children {
			if v, ok := mp[k]; ok {
				if err := insertWellKnown(obj, k, v); err != nil {
					return nil, err
				}
			}
		}
		return ast.NewTerm(obj), nil
	}
	obj := ast.NewObjectWithCapacity(len(mp))
	for k, v := range mp {
		if err := insertWellKnown(obj, k, v); err != nil {
			return nil, err
		}
	}
	return ast.NewTerm(obj), nil
}

func insertWellKnown(obj ast.Object, k string, m proto.Message) error {
	t, err := wellKnownTerm(m)
	if err != nil {
		return err
	}
	obj.Insert(keyTerm(k), t)
	return nil
}
