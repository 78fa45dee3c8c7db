package api_test

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/api"
)

type fuzzBody struct {
	Allowed *bool    `json:"allowed"`
	Name    string   `json:"name"`
	Tags    []string `json:"tags"`
	Inner   *struct {
		A int `json:"a"`
	} `json:"inner"`
	Meta map[string]string `json:"meta"`
}

var fuzzFields = []string{"allowed", "name", "tags", "inner", "meta"}

// FuzzDecode: whatever the body, Decode never panics, and answers a
// field-named EINVALID or ETOOLARGE, or decodes one object that says one
// thing: valid UTF-8, each top-level key once, spelled as its field.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"name":"x"}`, `{"name":1}`, `{"b":1}`, `{}`, `{"name":"x"} {}`, `[`, `"`, "\x00", `{"name":"\ud800"}`,
		`{"allowed":true}`, `{"allowed":true,"allowed":false}`, `{"Allowed":true}`, `{"name":"x","NAME":"y"}`,
		`{"inner":{"a":1,"a":2}}`, `{"inner":{"A":1}}`, `{"meta":{"k":"v","K":"w"}}`, `{"tags":["a","a"]}`,
		"{\"name\":\"\xff\"}", `{"allowed":true}{}`, `{"n\u0061me":"x","name":"y"}`, `{"nam\u017f":1}`, `[]`, `null`, ``,
		`{"name":"\ud83d\ude00"}`, `{"tags":["\udfff"]}`, `{"meta":{"\ud800\u0041":"v"}}`, `{"name":"\\ud800"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest("POST", "/deputy/v1/x", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var v fuzzBody
		err := api.Decode(httptest.NewRecorder(), r, 4096, &v)
		if err != nil {
			var se *sidecar.Error
			if !errors.As(err, &se) || se.Field == "" || se.Code != sidecar.EINVALID && se.Code != sidecar.ETOOLARGE {
				t.Fatalf("Decode(%q) = %v", body, err)
			}
			return
		}
		if !utf8.ValidString(body) {
			t.Fatalf("Decode(%q) accepted invalid UTF-8", body)
		}
		// Nor did it read a stray byte or lone surrogate escape as U+FFFD:
		// a body that spells no U+FFFD decodes to none.
		if !strings.Contains(body, "\ufffd") && !strings.Contains(strings.ToLower(body), `\ufffd`) {
			texts := append([]string{v.Name}, v.Tags...)
			for k, val := range v.Meta {
				texts = append(texts, k, val)
			}
			for _, s := range texts {
				if strings.ContainsRune(s, utf8.RuneError) {
					t.Fatalf("Decode(%q) read %q", body, s)
				}
			}
		}
		// The top-level keys as sent, read by encoding/json's tokenizer.
		dec := json.NewDecoder(strings.NewReader(body))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			return // null: nothing decoded
		}
		var keys []string
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatalf("Decode(%q) accepted what the tokenizer cannot read: %v", body, err)
			}
			k := tok.(string)
			if slices.Contains(keys, k) || !slices.Contains(fuzzFields, k) {
				t.Fatalf("Decode(%q) accepted key %q (keys so far %q)", body, k, keys)
			}
			keys = append(keys, k)
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				t.Fatalf("Decode(%q): value of %q: %v", body, k, err)
			}
		}
	})
}
