package authz

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/util"
)

func TestCheckJSONKeys(t *testing.T) {
	many := func(n int, last string) string {
		var b strings.Builder
		b.WriteString(`{"a":[`)
		for i := range n {
			fmt.Fprintf(&b, `{"k%d":%d},`, i, i)
		}
		b.WriteString(`{`)
		for i := range n {
			fmt.Fprintf(&b, `"k%d":%d,`, i, i)
		}
		b.WriteString(`"` + last + `":0}]}`)
		return b.String()
	}
	for _, tc := range []struct{ body, want string }{
		{`{}`, ""},
		{`[]`, ""},
		{`"a"`, ""},
		{`{"a":1,"b":{"A":1},"c":[{"a":1},{"A":1}]}`, ""},
		{`{"a":"\"a\":1,\"a\":2","b":"\\","c":"\\\"","d":1}`, ""},
		{`{"q\ud83d\ude00":1,"q\ud83d\ude01":1,"q😀x":1}`, ""},
		// Decoders that match names in any letter case (Go's into a
		// struct, .NET's, Jackson's when asked) read these as one name.
		{`{"query":"{ a }","Query":"mutation { b }"}`, `the object at $ has the keys "query" and "Query", one name to parsers that ignore letter case: they differ on which value they keep`},
		{`{"x":{"\u017fub":1,"sub":2}}`, `the object at $.x has the keys "ſub" and "sub", one name to parsers that ignore letter case: they differ on which value they keep`},
		{`{"adm\u0131n":false,"ADMIN":true}`, `the object at $ has the keys "admın" and "ADMIN", one name to parsers that ignore letter case: they differ on which value they keep`},
		{many(40, "K7"), `the object at $.a[40] has the keys "k7" and "K7", one name to parsers that ignore letter case: they differ on which value they keep`},
		{many(16, "K15"), `the object at $.a[16] has the keys "k15" and "K15", one name to parsers that ignore letter case: they differ on which value they keep`},
		{many(40, "K40"), ""},
		{`{"\u00e9":1,"é":2}`, `the object at $ repeats the key "é": parsers differ on which value they keep`},
		{`{"a":1,"a":2}`, `the object at $ repeats the key "a": parsers differ on which value they keep`},
		{`{"q\ud83d\ude00":1,"q😀":1}`, `the object at $ repeats the key "q😀": parsers differ on which value they keep`},
		{`{"\"\\\/\b\f\n\r\t":1,"\u0022\u005c/\u0008\u000c\u000a\u000d\u0009":2}`, `the object at $ repeats the key "\"\\/\b\f\n\r\t": parsers differ on which value they keep`},
		{`[0,{"x":{}},[1,{"a":{"b c":[{"d":1,"d":2}]}}]]`, `the object at $[2][1].a["b c"][0] repeats the key "d": parsers differ on which value they keep`},
		{`{"a":{"x":1},"b":{"x":1,"y":{},"x":2}}`, `the object at $.b repeats the key "x": parsers differ on which value they keep`},
		{many(40, "k7"), `the object at $.a[40] repeats the key "k7": parsers differ on which value they keep`},
		{many(40, "k40"), ""},
		{many(16, "k15"), `the object at $.a[16] repeats the key "k15": parsers differ on which value they keep`},
		{`{"` + strings.Repeat("x", 100) + `":1,"` + strings.Repeat("x", 100) + `":2}`,
			`the object at $ repeats the key "` + strings.Repeat("x", 64) + `"...: parsers differ on which value they keep`},
		{`{"a":{"b\ud800":1}}`, `the object at $.a has a key holding an unpaired surrogate, "b\\ud800": parsers disagree on what name it is`},
		{`{"\udc00\ud800":1}`, `the object at $ has a key holding an unpaired surrogate, "\\udc00\\ud800": parsers disagree on what name it is`},
		{`{"\ud800\u0041":1}`, `the object at $ has a key holding an unpaired surrogate, "\\ud800\\u0041": parsers disagree on what name it is`},
		{`{"x\u0000":1}`, `the object at $ has a key holding NUL, "x\\u0000": parsers disagree on what name it is`},
		{"{\"x\xff\":1}", `the object at $ has a key that is not UTF-8, "x\xff": parsers disagree on what name it is`},
		// Values are not keys.
		{`{"a":"\ud800\u0000","b":["a","a"]}`, ""},
	} {
		var x any
		if err := util.UnmarshalJSON([]byte(tc.body), &x); err != nil {
			t.Fatalf("%s: not JSON: %v", tc.body, err)
		}
		got := ""
		if f := checkJSONKeys(tc.body); f != nil {
			got = f.Error()
		}
		if got != tc.want {
			t.Errorf("%.80s:\n got  %s\n want %s", tc.body, got, tc.want)
		}
	}
}

// FuzzCheckJSONKeys holds checkJSONKeys to Go's decoder, which gives the
// policy its parsed_body: on any JSON Go accepts, a key an object repeats
// as Go decodes it is always found, and a repeated key is reported only
// when Go decodes two keys of one object alike. A key refused for what it
// holds is one Go decodes with U+FFFD (what it makes of invalid UTF-8 and
// unpaired surrogates) or NUL in it. Anything else must not panic.
func FuzzCheckJSONKeys(f *testing.F) {
	for _, s := range []string{
		`{"query":"mutation { changeCustomerPassword }","query":"{ cart { id } }"}`,
		`{"query":"a","\u0071uery":"b"}`,
		`[{"query":"a","variables":{"x":1,"x":2}},{"extensions":{"p":{"h":"1"}}}]`,
		`{"a":{"b":[1,{"c":"\"}","c\"":2}]},"d":"\\"}`,
		`{"q\ud83d\ude00":1,"q😀":2,"\ud800":3,"\udc00x":4,"\u0000":5}`,
		"{\"\xff\":1,\"\xfe\":2}",
		`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"a":18}`,
		`{"a":{"a":{"a":{"a":[[[{"a":1}]]]}}}}`,
		`{"x":"\u00e9","é":1,"\u00E9":2}`,
		`{"query":"a","QUERY":"b","\u017fub":1,"SUB":2,"\u0131d":3}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var x any
		if util.UnmarshalJSON([]byte(body), &x) != nil {
			checkJSONKeys(body) // must not panic on what Go refuses either
			return
		}
		repeated, odd := goKeys(t, body)
		fault := checkJSONKeys(body)
		switch {
		case fault == nil:
			if repeated {
				t.Fatalf("%q: a key repeated as Go decodes it (in any letter case) was not found", body)
			}
		case fault.bad == "":
			if !repeated {
				t.Fatalf("%q: %v, where Go decodes every key of each object apart in every letter case", body, fault)
			}
		default:
			if !odd {
				t.Fatalf("%q: %v, where Go decodes every key without U+FFFD or NUL", body, fault)
			}
		}
		if fault != nil && !utf8.ValidString(fault.Error()) {
			t.Fatalf("%q: message %q is not UTF-8", body, fault.Error())
		}
	})
}

// goKeys walks a JSON text with Go's decoder, reporting whether an object
// has two keys that decode alike in some letter case (foldKey, which
// strictjson's tests hold to the decoders that ignore case), and whether
// a key decodes holding U+FFFD or NUL.
func goKeys(t *testing.T, body string) (repeated, odd bool) {
	dec := json.NewDecoder(strings.NewReader(body))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]bool
		key    bool // the next string is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return repeated, odd
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{':
				if top != nil && top.object {
					top.key = true
				}
				stack = append(stack, &frame{object: true, keys: map[string]bool{}, key: true})
			case '[':
				if top != nil && top.object {
					top.key = true
				}
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if top == nil || !top.object {
			continue
		}
		if !top.key {
			top.key = true
			continue
		}
		k := tok.(string)
		repeated = repeated || top.keys[foldKey(k)]
		odd = odd || strings.ContainsRune(k, utf8.RuneError) || strings.ContainsRune(k, 0)
		top.keys[foldKey(k)] = true
		top.key = false
	}
}

// BenchmarkCheckJSONBody is what checkJSONBody adds to reading the body
// of BenchmarkCheckGraphQL (util.UnmarshalJSON, for scale, in decode).
func BenchmarkCheckJSONBody(b *testing.B) {
	const body = `{"operationName":"AddToCart","query":"mutation AddToCart($cartId: String!, $items: [CartItemInput!]!) { addProductsToCart(cartId: $cartId, cartItems: $items) { cart { id total_quantity items { uid quantity product { sku name } } } user_errors { code message } } }",` +
		`"variables":{"cartId":"x2Q9kLm4Tz8Vb1Nc","items":[{"sku":"SHOE-42-RED","quantity":1,"selected_options":["Y29uZmlndXJhYmxlLzkzLzUz"]},{"sku":"SOCK-M","quantity":3,"entered_options":[{"uid":"Y3VzdG9tLW9wdGlvbi8x","value":"Gift"}]}]},` +
		`"extensions":{"clientLibrary":{"name":"@apollo/client","version":"3.11.8"}}}`
	b.Run("check", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := checkJSONBody(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var x any
			if err := util.UnmarshalJSON([]byte(body), &x); err != nil {
				b.Fatal(err)
			}
		}
	})
}
