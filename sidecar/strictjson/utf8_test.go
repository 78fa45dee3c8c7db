package strictjson_test

import (
	"testing"
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
