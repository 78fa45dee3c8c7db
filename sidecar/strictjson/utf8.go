// Package strictjson holds the rules Deputy's JSON inputs (API bodies,
// JSON-lines imports) add to encoding/json: encoding/json replaces invalid
// UTF-8 in strings with U+FFFD without a word, so a name sent with a stray
// byte would be stored as another name.
package strictjson

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// InvalidUTF8 reports whether doc holds invalid UTF-8 and, if so, names
// where: the dotted path of object keys to the first string that holds it
// (array positions are not named, as encoding/json's field errors), or
// "body" when it is outside any string or the document is not JSON.
func InvalidUTF8(doc []byte) (field string, invalid bool) {
	if utf8.Valid(doc) {
		return "", false
	}
	type frame struct {
		object, wantKey bool
		key             string
	}
	var stack []*frame
	path := func(last string) string {
		var keys []string
		for _, f := range stack {
			if f.object && f.key != "" {
				keys = append(keys, f.key)
			}
		}
		if last != "" {
			keys = append(keys, last)
		}
		if len(keys) == 0 {
			return "body"
		}
		return strings.Join(keys, ".")
	}
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].wantKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	for {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return "body", true
		}
		raw := doc[start:dec.InputOffset()]
		top := (*frame)(nil)
		if n := len(stack); n > 0 {
			top = stack[n-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				stack = append(stack, &frame{object: t == '{', wantKey: t == '{'})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case string:
			if top != nil && top.object && top.wantKey {
				if !utf8.Valid(raw) {
					return path("") + " (a key)", true
				}
				top.key, top.wantKey = t, false
				continue
			}
			if !utf8.Valid(raw) {
				return path(""), true
			}
			valueDone()
		default:
			valueDone()
		}
	}
}
