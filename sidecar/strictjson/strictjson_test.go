package strictjson_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/deputyhq/deputy/sidecar/strictjson"
)

func TestInvalidUTF8(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		field     string // "" for valid
	}{
		{name: "valid", doc: `{"name": "Chloé", "tags": ["a"]}`},
		{name: "valid U+FFFD as sent", doc: `{"name": "\ufffd ` + "\xef\xbf\xbd" + `"}`},
		{name: "top-level field", doc: "{\"name\": \"Chlo\xe9\"}", field: "name"},
		{name: "after other fields", doc: "{\"a\": 1, \"b\": [true, null], \"c\": {\"d\": \"ok\"}, \"e\": \"\xff\"}", field: "e"},
		{name: "nested object", doc: "{\"customer\": {\"name\": \"x\", \"store\": \"\xc3\"}}", field: "customer.store"},
		{name: "in an array", doc: "{\"store_views\": [\"default\", \"f\xe9r\"]}", field: "store_views"},
		{name: "array of objects", doc: "{\"rows\": [{\"a\": \"ok\"}, {\"b\": \"\x80\"}]}", field: "rows.b"},
		{name: "in a key", doc: "{\"ok\": {\"n\xe9\": 1}}", field: "ok (a key)"},
		{name: "top-level string", doc: "\"\xff\"", field: "body"},
		{name: "outside strings", doc: "{\"a\": 1}\xff", field: "body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			field, invalid := strictjson.InvalidUTF8([]byte(tc.doc))
			if invalid != (tc.field != "") || field != tc.field {
				t.Fatalf("InvalidUTF8 = %q, %v; want %q", field, invalid, tc.field)
			}
		})
	}
}

func FuzzInvalidUTF8(f *testing.F) {
	f.Add([]byte("{\"a\": [\"\xff\"]}"))
	f.Add([]byte(`{"a": {"b": "c"}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		field, invalid := strictjson.InvalidUTF8(doc)
		if invalid == utf8.Valid(doc) || invalid == (field == "") {
			t.Fatalf("InvalidUTF8(%q) = %q, %v", doc, field, invalid)
		}
	})
}

type checkInner struct {
	A int         `json:"a"`
	B *checkInner `json:"b"`
}

type CheckEmbedded struct {
	E string `json:"e"`
}

type checkTarget struct {
	CheckEmbedded
	Name  string                `json:"name"`
	Plain string                // JSON name "Plain"
	Skip  string                `json:"-"`
	Rows  []checkInner          `json:"rows"`
	Inner *checkInner           `json:"inner"`
	Meta  map[string]checkInner `json:"meta"`
	Raw   json.RawMessage       `json:"raw"`
	Any   any                   `json:"any"`
	When  time.Time             `json:"when"`
}

// Check refuses what encoding/json decodes without a word though the
// document does not say one thing: a repeated key (the last wins) and a
// key in another case than its field's (matched anyway), wherever the
// document's shape meets the target's.
func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		field     string // "" for no problem
	}{
		{name: "valid", doc: `{"name":"x","Plain":"p","e":"1","rows":[{"a":1}],"inner":{"a":1,"b":{"a":2}},` +
			`"meta":{"k":{"a":1},"K":{"a":2}},"raw":{"X":1,"x":2},"any":{"N":1,"n":2},"when":"2026-01-01T00:00:00Z"}`},
		{name: "repeated key", doc: `{"name":"a","name":"b"}`, field: "name"},
		{name: "repeated key, escaped", doc: `{"name":"a","n\u0061me":"b"}`, field: "name"},
		{name: "repeated key after others", doc: `{"name":"a","rows":[],"name":"a"}`, field: "name"},
		{name: "repeated key in an array's object", doc: `{"rows":[{"a":1},{"a":1,"a":2}]}`, field: "rows.a"},
		{name: "repeated map key", doc: `{"meta":{"k":{},"k":{}}}`, field: "meta.k"},
		{name: "repeated key in a raw value", doc: `{"raw":{"x":1,"x":2}}`, field: "raw.x"},
		{name: "repeated key at the top of a document of unknown shape", doc: `{"zzz":{"q":1,"q":1}}`, field: "zzz.q"},
		{name: "key in upper case", doc: `{"NAME":"x"}`, field: "NAME"},
		{name: "Go name in lower case", doc: `{"plain":"x"}`, field: "plain"},
		{name: "promoted field in another case", doc: `{"E":"x"}`, field: "E"},
		{name: "after the right spelling", doc: `{"name":"x","Name":"y"}`, field: "Name"},
		{name: "behind pointers", doc: `{"inner":{"b":{"A":1}}}`, field: "inner.b.A"},
		{name: "in a slice's element", doc: `{"rows":[{"a":1},{"A":1}]}`, field: "rows.A"},
		{name: "in a map's value", doc: `{"meta":{"k":{"A":1}}}`, field: "meta.k.A"},
		{name: "escaped upper case", doc: `{"n\u0041me":"x"}`, field: "nAme"},
		{name: "Unicode folding", doc: `{"row\u017f":[]}`, field: "row\u017f"},
		{name: "field left out by its tag", doc: `{"Skip":"x"}`},
		{name: "unknown key", doc: `{"zzz":1}`},
		{name: "not JSON", doc: `{"name":`},
		{name: "invalid UTF-8 in a key after another", doc: "{\"a\":1,\"b\xff\":2}", field: "body (a key)"},
		{name: "invalid UTF-8 in a nested value", doc: "{\"inner\":{\"a\":1},\"name\":\"\xff\"}", field: "name"},
		// encoding/json reads an escaped UTF-16 surrogate that is not
		// half of a pair as U+FFFD, as it reads invalid UTF-8.
		{name: "valid surrogate pair", doc: `{"name":"glob\ud83d\ude00ex","rows":[{"a":1}],"any":"\uD83D\uDE00"}`},
		{name: "escaped backslash before u", doc: `{"name":"\\ud800"}`},
		{name: "lone high surrogate", doc: `{"name":"glob\ud800ex"}`, field: "name"},
		{name: "lone low surrogate", doc: `{"name":"glob\udfffex"}`, field: "name"},
		{name: "high surrogate at the end", doc: `{"name":"glob\uDBFF"}`, field: "name"},
		{name: "high surrogate before a non-surrogate", doc: `{"name":"\ud800\u0041"}`, field: "name"},
		{name: "two high surrogates", doc: `{"name":"\ud800\ud800\udc00"}`, field: "name"},
		{name: "low before high", doc: `{"name":"\udc00\ud800"}`, field: "name"},
		{name: "high surrogate before an escaped backslash", doc: `{"name":"\ud800\\udc00"}`, field: "name"},
		{name: "lone surrogate in a nested value", doc: `{"inner":{"a":1},"rows":[{"a":1}],"any":["\udfff"]}`, field: "any"},
		{name: "lone surrogate in a key", doc: `{"inner":{"\ud800":1}}`, field: "inner (a key)"},
		{name: "lone surrogate in a top-level string", doc: `"\ud800"`, field: "body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, bad := strictjson.Check([]byte(tc.doc), &checkTarget{})
			if bad != (tc.field != "") || p.Field != tc.field {
				t.Fatalf("Check = %+v, %v; want field %q", p, bad, tc.field)
			}
		})
	}
	// Case only matters where a struct's fields are: a map's keys and an
	// untyped target take any case.
	for _, target := range []any{&map[string]int{}, new(any), nil} {
		if p, bad := strictjson.Check([]byte(`{"Name":1,"name":2}`), target); bad {
			t.Errorf("Check(%T) = %+v", target, p)
		}
	}
}

// CheckUntyped refuses, beside Check's rules, keys of one object that a
// case-insensitive struct decoder reads as one name, and keys holding
// NUL: Deputy reads such a document into a map, others into structs.
func TestCheckUntyped(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		field     string // "" for no problem
	}{
		{name: "distinct keys", doc: `{"sub":"a","subject":"b","org":{"id":"x","ids":["y"]},"n":[{"a":1},{"A":1}]}`},
		{name: "one key in another case alone", doc: `{"SUB":"a"}`},
		{name: "the same key in two objects", doc: `{"a":{"sub":1},"b":{"SUB":2}}`},
		{name: "repeated key", doc: `{"sub":"a","sub":"b"}`, field: "sub"},
		{name: "upper case after lower", doc: `{"sub":"a","SUB":"b"}`, field: "SUB"},
		{name: "lower case after mixed", doc: `{"Sub":"a","iss":"x","sub":"b"}`, field: "sub"},
		{name: "escaped", doc: `{"sub":"a","\u0053ub":"b"}`, field: "Sub"},
		{name: "long s", doc: `{"sub":"a","\u017fub":"b"}`, field: "\u017fub"},
		{name: "Kelvin sign", doc: `{"kid":"a","\u212aid":"b"}`, field: "\u212aid"},
		// Beyond Go's folding: .NET's OrdinalIgnoreCase and Java's
		// equalsIgnoreCase compare upper cases (ı is I) and lower cases
		// (İ is i) too.
		{name: "dotless i", doc: `{"admin":false,"adm\u0131n":true}`, field: "adm\u0131n"},
		{name: "dotted capital I", doc: `{"id":"a","\u0130D":"b"}`, field: "\u0130D"},
		{name: "non-ASCII in two cases", doc: `{"\u00e9t\u00e9":1,"\u00c9T\u00c9":2}`, field: "\u00c9T\u00c9"},
		{name: "nested", doc: `{"realm_access":{"roles":["a"],"ROLES":["admin"]}}`, field: "realm_access.ROLES"},
		{name: "in an array's object", doc: `{"n":[{"a":1},{"a":1,"A":2}]}`, field: "n.A"},
		{name: "NUL in a key", doc: `{"sub\u0000x":"m"}`, field: "sub\u0000x"},
		{name: "NUL ending a key in another case", doc: `{"sub":"a","SUB\u0000":"m"}`, field: "SUB\u0000"},
		{name: "NUL in a value", doc: `{"sub":"a\u0000"}`},
		{name: "lone surrogate in a key", doc: `{"\ud800":1}`, field: "body (a key)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, bad := strictjson.CheckUntyped([]byte(tc.doc))
			if bad != (tc.field != "") || p.Field != tc.field {
				t.Fatalf("CheckUntyped = %+v, %v; want field %q", p, bad, tc.field)
			}
		})
	}
}

// FuzzCheck: Check finds no problem in a JSON document only if
// encoding/json reads every string in it (keys too) as it is spelled,
// with no U+FFFD the document does not spell; and it refuses a document
// for its text only if encoding/json would read such a U+FFFD.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		`{"a": ["x"]}`, `{"a": "\ufffd` + "\xef\xbf\xbd" + `"}`, "{\"a\": \"\xff\"}", `{"a": "\ud800"}`,
		`{"\udfff": 1}`, `["\ud83d\ude00", "\uD83D\uDE00"]`, `"\ud800\u0041"`, `"\ud800\ud800\udc00"`,
		`"\\ud800"`, `"\ud800\\udc00"`, `{"a": {"b": "\udc00\ud800"}}`, `"\u0000\ufffe\uffff\ufdd0"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if !json.Valid(doc) {
			return
		}
		p, bad := strictjson.Check(doc, nil)
		rewritten := ""
		dec := json.NewDecoder(bytes.NewReader(doc))
		for {
			start := dec.InputOffset()
			tok, err := dec.Token()
			if err != nil {
				break
			}
			s, ok := tok.(string)
			if ok && strings.Count(s, "\ufffd") != spelledFFFD(doc[start:dec.InputOffset()]) {
				rewritten = s
				break
			}
		}
		// A repeated key found first hides what follows it.
		textProblem := bad && p.Message != "repeated field"
		if rewritten != "" && !bad || textProblem && rewritten == "" {
			t.Fatalf("Check(%q) = %+v, %v; encoding/json reads a string as %q", doc, p, bad, rewritten)
		}
	})
}

// spelledFFFD counts the U+FFFD a JSON string token spells: as UTF-8, or
// as the escape \ufffd (any case).
func spelledFFFD(raw []byte) int {
	n := bytes.Count(raw, []byte("\ufffd"))
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++
		if i+4 < len(raw) && raw[i] == 'u' && strings.EqualFold(string(raw[i+1:i+5]), "fffd") {
			n++
		}
	}
	return n
}
