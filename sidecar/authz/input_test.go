package authz

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// richRequest exercises every kind of field the conversion handles:
// nested messages, maps, int64 and uint32 numbers, enums, bytes,
// timestamps and Struct metadata.
const richRequest = `{
  "attributes": {
    "source": {"address": {"socketAddress": {"address": "10.1.2.3", "portValue": 43210, "protocol": "UDP"}}, "principal": "spiffe://a/b", "labels": {"app": "shop"}},
    "destination": {"address": {"pipe": {"path": "/run/x.sock", "mode": 420}}, "service": "storefront"},
    "request": {
      "time": "2026-03-04T05:06:07.123456Z",
      "http": {"id": "r-1", "method": "POST", "path": "/cart/add?x=1&x=2", "host": "shop.example", "scheme": "https",
        "protocol": "HTTP/2", "size": "9007199254740993", "body": "{\"sku\":1}", "rawBody": "eyJza3UiOjF9",
        "headers": {":authority": "shop.example", "content-type": "application/json", "cookie": "a=b", "X-Upper": "v"}}
    },
    "contextExtensions": {"route": "cart"},
    "metadataContext": {"filterMetadata": {"envoy.filters.http.jwt_authn": {"payload": {"sub": "u1", "n": 1.5, "ok": true, "nil": null, "l": [1, "a"]}}}},
    "routeMetadataContext": {"filterMetadata": {"x": {"y": "z"}}},
    "tlsSession": {"sni": "shop.example"}
  }
}`

// viaProtojson is OPA-Envoy's way: protojson, then JSON into AST.
func viaProtojson(t testing.TB, req *authv3.CheckRequest) ast.Value {
	bs, err := protojson.Marshal(req.GetAttributes())
	if err != nil {
		t.Fatal(err)
	}
	var x any
	if err := util.UnmarshalJSON(bs, &x); err != nil {
		t.Fatal(err)
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// attributeConverters are the typed conversion the check runs and the
// reflective one it is held to.
var attributeConverters = map[string]func(*authv3.AttributeContext, *policy.InputNeeds) (ast.Value, error){
	"typed": attributeContextAST,
	"reflective": func(a *authv3.AttributeContext, need *policy.InputNeeds) (ast.Value, error) {
		return protoToAST(a.ProtoReflect(), need)
	},
}

func TestAttributesMatchProtojson(t *testing.T) {
	cases := map[string]string{
		"rich":          richRequest,
		"empty":         `{}`,
		"http only":     `{"attributes":{"request":{"http":{"method":"GET","path":"/"}}}}`,
		"zero port":     `{"attributes":{"source":{"address":{"socketAddress":{"address":"::1"}}}}}`,
		"empty headers": `{"attributes":{"request":{"http":{"headers":{}}}}}`,
	}
	for name, js := range cases {
		t.Run(name, func(t *testing.T) {
			var req authv3.CheckRequest
			if err := protojson.Unmarshal([]byte(js), &req); err != nil {
				t.Fatal(err)
			}
			want := viaProtojson(t, &req)
			for name, convert := range attributeConverters {
				got, err := convert(req.GetAttributes(), policy.AllInput)
				if err != nil {
					t.Fatal(err)
				}
				if got.Compare(want) != 0 {
					t.Errorf("%s: attributes differ from protojson:\n got  %v\n want %v", name, got, want)
				}
			}
		})
	}
}

// A policy that reads a few headers or context extensions gets them as
// protojson spells them, read from the request's own maps.
func TestAttributesNamedEntriesMatchProtojson(t *testing.T) {
	var req authv3.CheckRequest
	if err := protojson.Unmarshal([]byte(richRequest), &req); err != nil {
		t.Fatal(err)
	}
	leaf := &policy.InputNeeds{All: true}
	need := &policy.InputNeeds{Children: map[string]*policy.InputNeeds{
		"request": {Children: map[string]*policy.InputNeeds{"http": {Children: map[string]*policy.InputNeeds{
			"headers": {Children: map[string]*policy.InputNeeds{"cookie": leaf, "X-Upper": leaf, "x-upper": leaf, "absent": leaf}},
			"method":  leaf,
		}}}},
		"contextExtensions": {Children: map[string]*policy.InputNeeds{"route": leaf, "absent": leaf}},
	}}
	// What protojson gives, less every entry the policy does not name.
	want := viaProtojson(t, &req).(ast.Object)
	keep := func(obj ast.Object, keys ...string) ast.Object {
		out := ast.NewObject()
		for _, k := range keys {
			if v := obj.Get(ast.StringTerm(k)); v != nil {
				out.Insert(ast.StringTerm(k), v)
			}
		}
		return out
	}
	get := func(obj ast.Object, k string) ast.Object { return obj.Get(ast.StringTerm(k)).Value.(ast.Object) }
	http := get(get(want, "request"), "http")
	want = ast.NewObject(
		[2]*ast.Term{ast.StringTerm("request"), ast.NewTerm(ast.NewObject([2]*ast.Term{ast.StringTerm("http"), ast.NewTerm(ast.NewObject(
			[2]*ast.Term{ast.StringTerm("headers"), ast.NewTerm(keep(get(http, "headers"), "cookie", "X-Upper", "x-upper", "absent"))},
			[2]*ast.Term{ast.StringTerm("method"), http.Get(ast.StringTerm("method"))},
		))}))},
		[2]*ast.Term{ast.StringTerm("contextExtensions"), ast.NewTerm(keep(get(want, "contextExtensions"), "route", "absent"))},
	)
	if keep(get(http, "headers"), "cookie", "X-Upper").Len() != 2 || get(want, "contextExtensions").Len() != 1 {
		t.Fatalf("the request lacks the entries the test names: %v", want)
	}
	for name, convert := range attributeConverters {
		got, err := convert(req.GetAttributes(), need)
		if err != nil {
			t.Fatal(err)
		}
		if got.Compare(want) != 0 {
			t.Errorf("%s: named entries differ from protojson's:\n got  %v\n want %v", name, got, want)
		}
	}
}

func TestInputShape(t *testing.T) {
	var req authv3.CheckRequest
	if err := protojson.Unmarshal([]byte(richRequest), &req); err != nil {
		t.Fatal(err)
	}
	r, err := buildInput(&req, &InputOptions{OwnedPrefix: "x-deputy-"}, policy.AllInput, headerForms{})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"parsed_path":    `["cart", "add"]`,
		"parsed_query":   `{"x": ["1", "2"]}`,
		"parsed_body":    `{"sku": 1}`,
		"truncated_body": `false`,
		"version":        `{"encoding": "protojson", "ext_authz": "v3"}`,
	} {
		got := r.input.Get(ast.StringTerm(path))
		if got == nil || got.Value.Compare(ast.MustParseTerm(want).Value) != 0 {
			t.Errorf("input.%s = %v, want %s", path, got, want)
		}
	}
	if r.view.Headers["x-upper"] != "v" || r.view.Path != "/cart/add" || r.view.Method != "POST" {
		t.Errorf("request view = %+v", r.view)
	}
}

func TestTraceID(t *testing.T) {
	for tp, want := range map[string]string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": "4bf92f3577b34da6a3ce929d0e0e4736",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01": "",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01": "",
		"garbage": "",
		"":        "",
	} {
		if got := traceID(tp); got != want {
			t.Errorf("traceID(%q) = %q, want %q", tp, got, want)
		}
	}
}

// The trace id is read as the upstream gets the header: from Envoy's
// header_map too (encode_raw_headers), its name in any case.
func TestTraceIDFromEitherHeaders(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for name, js := range map[string]string{
		"headers":                `{"attributes":{"request":{"http":{"method":"GET","path":"/","headers":{"traceparent":"` + tp + `"}}}}}`,
		"headers, upper case":    `{"attributes":{"request":{"http":{"method":"GET","path":"/","headers":{"Traceparent":"` + tp + `"}}}}}`,
		"header_map, raw value":  `{"attributes":{"request":{"http":{"method":"GET","path":"/","headerMap":{"headers":[{"key":"traceparent","rawValue":"` + base64.StdEncoding.EncodeToString([]byte(tp)) + `"}]}}}}}`,
		"header_map, upper case": `{"attributes":{"request":{"http":{"method":"GET","path":"/","headerMap":{"headers":[{"key":"TraceParent","value":"` + tp + `"}]}}}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			var req authv3.CheckRequest
			if err := protojson.Unmarshal([]byte(js), &req); err != nil {
				t.Fatal(err)
			}
			r, err := buildInput(&req, &InputOptions{}, policy.AllInput, headerForms{})
			if err != nil {
				t.Fatal(err)
			}
			if want := "4bf92f3577b34da6a3ce929d0e0e4736"; r.traceID != want {
				t.Errorf("trace id = %q, want %q", r.traceID, want)
			}
		})
	}
}

// FuzzBuildInput feeds arbitrary CheckRequests (binary protobuf) to the
// conversion: it must never panic, and whenever it succeeds on a request
// with no owned headers its attributes must equal what OPA-Envoy builds.
func FuzzBuildInput(f *testing.F) {
	for _, js := range []string{richRequest, `{}`, `{"attributes":{"request":{"http":{"path":"/%zz"}}}}`,
		`{"attributes":{"request":{"http":{"headers":{"content-type":"multipart/form-data; boundary=x"},"body":"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--x--\r\n"}}}}`} {
		var req authv3.CheckRequest
		if err := protojson.Unmarshal([]byte(js), &req); err != nil {
			f.Fatal(err)
		}
		bs, err := proto.Marshal(&req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(bs)
	}
	opts := &InputOptions{OwnedPrefix: "x-deputy-", ActorTokenHeader: "x-deputy-token"}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req authv3.CheckRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		stripped, owned, _, forms := stripOwned(&req, opts, new([4]string))
		r, err := buildInput(stripped, opts, policy.AllInput, forms)
		if err != nil {
			return
		}
		if len(owned) > 0 {
			for k := range r.view.Headers {
				if strings.HasPrefix(k, "x-deputy-") {
					t.Fatalf("owned header %q survived", k)
				}
			}
			return
		}
		if _, err := protojson.Marshal(req.GetAttributes()); err != nil {
			return // not representable as JSON (e.g. invalid UTF-8): nothing to compare
		}
		want := viaProtojson(t, &req)
		if got := r.input.Get(ast.StringTerm("attributes")).Value; got.Compare(want) != 0 {
			t.Fatalf("attributes differ from protojson:\n got  %v\n want %v", got, want)
		}
	})
}

// Resolvers read a header in every spelling an upstream reads as it. The
// view tells them when its names leave no other spelling to look for
// (PlainNames); that must never hide one: what they get is what
// comparing every name gives.
func TestViewHeaderValuesEverySpelling(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers map[string]string
		want    []string
		plain   bool
	}{
		{"own name", map[string]string{"x-customer": "a", "accept": "*/*"}, []string{"a"}, true},
		{"absent", map[string]string{"accept": "*/*"}, nil, true},
		{"underscores", map[string]string{"x_customer": "b"}, []string{"b"}, false},
		{"both", map[string]string{"x-customer": "a", "x_customer": "b"}, []string{"a", "b"}, false},
		{"upper case and underscores", map[string]string{"X_Customer": "b", "x-customer": "a"}, []string{"a", "b"}, false},
		{"upper case", map[string]string{"X-Customer": "a"}, []string{"a"}, true},
		{"another name with underscores", map[string]string{"x-customer": "a", "x_other": "c"}, []string{"a"}, false},
		{"owned names stripped", map[string]string{"X-Deputy-Subject": "v", "x_deputy_actor": "w", "x-customer": "a"}, []string{"a"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := &InputOptions{OwnedPrefix: "x-deputy-"}
			req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Headers: tc.headers}}}}
			stripped, _, _, forms := stripOwned(req, opts, new([4]string))
			// As the pipeline builds it, and knowing nothing of the names.
			for _, forms := range []headerForms{forms, {}} {
				r, err := buildInput(stripped, opts, policy.AllInput, forms)
				if err != nil {
					t.Fatal(err)
				}
				// Names seen before stripping may leave PlainNames false
				// where it could be true, never the other way round.
				if r.view.PlainNames != tc.plain && (r.view.PlainNames || forms == headerForms{}) {
					t.Errorf("%+v: PlainNames = %v, want %v", forms, r.view.PlainNames, tc.plain)
				}
				for k := range r.view.Headers {
					if hasUpper(k) || r.view.PlainNames && strings.Contains(k, "_") {
						t.Errorf("%+v: header %q in the view (PlainNames %v)", forms, k, r.view.PlainNames)
					}
				}
				scanned := (&sidecar.Request{Headers: r.view.Headers}).HeaderValues("x-customer")
				if got := r.view.HeaderValues("x-customer"); !slices.Equal(got, tc.want) || !slices.Equal(got, scanned) {
					t.Errorf("%+v: HeaderValues = %q, want %q (comparing every name: %q)", forms, got, tc.want, scanned)
				}
			}
		})
	}
}

// scanHeaderNameByBytes is scanHeaderName as a switch on each byte, kept as
// the oracle of its table.
func scanHeaderNameByBytes(name string) (upper, underscore, plain bool) {
	plain = name != "" && name != ":"
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c >= 'A' && c <= 'Z':
			upper = true
		case c == '_':
			underscore = true
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == ':' && i == 0:
		default:
			plain = false
		}
	}
	return upper, underscore, plain
}

func TestScanHeaderNameEveryByte(t *testing.T) {
	names := []string{"", ":", "::", ":path", "a:b", "x-deputy-subject", "X_Deputy", "x.deputy", "x deputy", "\x00", "ſ", ":A_b"}
	for a := range 256 {
		names = append(names, string([]byte{byte(a)}), string([]byte{':', byte(a)}), string([]byte{byte(a), ':'}), "x-"+string([]byte{byte(a)})+"-y")
	}
	for _, name := range names {
		u, s, p := scanHeaderName(name)
		wu, ws, wp := scanHeaderNameByBytes(name)
		if u != wu || s != ws || p != wp {
			t.Errorf("scanHeaderName(%q) = %v %v %v, want %v %v %v", name, u, s, p, wu, ws, wp)
		}
	}
}

func FuzzScanHeaderName(f *testing.F) {
	for _, s := range []string{"", ":", ":path", "X-Deputy_Subject", "x.y", "a\xffb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		u, s, p := scanHeaderName(name)
		wu, ws, wp := scanHeaderNameByBytes(name)
		if u != wu || s != ws || p != wp {
			t.Errorf("scanHeaderName(%q) = %v %v %v, want %v %v %v", name, u, s, p, wu, ws, wp)
		}
	})
}
