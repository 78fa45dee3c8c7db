// Package strictjson holds the rules Deputy's JSON inputs (API bodies,
// JSON-lines imports) add to encoding/json, which decodes without a word
// documents that do not say one thing: it replaces invalid UTF-8 in
// strings with U+FFFD (a name sent with a stray byte would be stored as
// another name), and so an escaped UTF-16 surrogate that is not half of a
// pair ("\ud800" and "\udfff" both read as U+FFFD), keeps the last of a repeated key ({"allowed":true,
// "allowed":false} is false), and matches keys to struct fields in any
// letter case ({"Allowed":true} sets allowed).
package strictjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Problem is what a document was refused for: the dotted path of object
// keys to it (array positions are not named, as encoding/json's field
// errors), or "body" when it is outside any object, and why.
type Problem struct {
	Field, Message string
}

// InvalidUTF8 reports whether doc holds invalid UTF-8 and, if so, names
// where: the dotted path of object keys to the first string that holds it,
// with " (a key)" when a key holds it, or "body" when it is outside any
// string or the document is not JSON.
func InvalidUTF8(doc []byte) (field string, invalid bool) {
	if utf8.Valid(doc) {
		return "", false
	}
	p, bad := walk(doc, nil, rules{})
	return p.Field, bad
}

// Check reports the first thing in doc that encoding/json would decode
// into v without a word but that does not say one thing: invalid UTF-8, an
// escaped lone UTF-16 surrogate, a key repeated in one object, and a key that names a field of v's type
// (through pointers, slices, maps and nested structs) in another letter
// case. A document that is not JSON has no problem here: the decoder
// names its syntax error.
func Check(doc []byte, v any) (Problem, bool) {
	return walk(doc, reflect.TypeOf(v), rules{strict: true})
}

// CheckUntyped is Check for a document that Deputy reads into maps while
// others read it into structs of their own: a bearer token's claims or
// header, which the upstream may decode itself. encoding/json (so
// golang-jwt's claims), System.Text.Json under ASP.NET Core's defaults and
// Jackson with case-insensitive properties match a struct field's name in
// any case, Go under Unicode simple folding ("ſub" is "sub"), .NET and
// Java beyond it ("ıd" is "id"): of {"sub":"alice","SUB":"mallory"}
// Deputy reads alice and those read mallory. So beside Check's rules it
// refuses, in any object, a key equal to another of the object under any
// of those foldings (FoldRune), and a key
// holding NUL, which a parser keeping names as C strings ends there
// ("sub\u0000x" reads as "sub").
func CheckUntyped(doc []byte) (Problem, bool) {
	return walk(doc, nil, rules{strict: true, untyped: true})
}

// rules says what walk looks for.
type rules struct {
	// strict: Check's rules; without it, invalid UTF-8 only (doc is
	// known to hold some).
	strict bool
	// untyped: CheckUntyped's, beside strict.
	untyped bool
}

// frame is an object or array being read.
type frame struct {
	object, wantKey bool
	key             string
	typ             reflect.Type // the Go type it decodes into; nil: unchecked
	seen            map[string]bool
	folded          map[string]string // untyped: a key's fold, to the key
}

// walk reads doc's tokens once, looking for what r says.
func walk(doc []byte, root reflect.Type, r rules) (Problem, bool) {
	strict := r.strict
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
			// The end, or not JSON: invalid UTF-8 left is outside strings.
			if !utf8.Valid(doc) {
				return Problem{"body", "invalid UTF-8"}, true
			}
			return Problem{}, false
		}
		raw := doc[start:dec.InputOffset()]
		var top *frame
		if n := len(stack); n > 0 {
			top = stack[n-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				var typ reflect.Type
				if strict {
					typ = valueType(top, root)
				}
				stack = append(stack, &frame{object: t == '{', wantKey: t == '{', typ: typ})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case string:
			if top != nil && top.object && top.wantKey {
				top.key = "" // the previous key's value is done
				if !utf8.Valid(raw) {
					return Problem{path("") + " (a key)", "invalid UTF-8"}, true
				}
				if strict {
					if loneSurrogate(raw) {
						return Problem{path("") + " (a key)", loneSurrogateMsg}, true
					}
					if top.seen[t] {
						return Problem{path(t), "repeated field"}, true
					}
					if top.seen == nil {
						top.seen = map[string]bool{}
					}
					top.seen[t] = true
					if r.untyped {
						if strings.IndexByte(t, 0) >= 0 {
							return Problem{path(t), "a key holding NUL"}, true
						}
						f := foldName(t)
						if other, ok := top.folded[f]; ok {
							return Problem{path(t), fmt.Sprintf("repeated field (as %q in another letter case)", other)}, true
						}
						if top.folded == nil {
							top.folded = map[string]string{}
						}
						top.folded[f] = t
					}
					if name, ok := otherCase(top.typ, t); ok {
						return Problem{path(t), fmt.Sprintf("unknown field (names are case-sensitive: %q)", name)}, true
					}
				}
				top.key, top.wantKey = t, false
				continue
			}
			if !utf8.Valid(raw) {
				return Problem{path(""), "invalid UTF-8"}, true
			}
			if strict && loneSurrogate(raw) {
				return Problem{path(""), loneSurrogateMsg}, true
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

// foldName is a key as decoders that match names in any letter case
// read it: each rune folded by FoldRune.
func foldName(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		b = utf8.AppendRune(b, FoldRune(r))
	}
	return string(b)
}

// FoldRune is one rune for all the runes that a decoder matching names in
// any letter case reads as one: encoding/json (bytes.EqualFold: the
// orbits of Unicode simple folding, so "ſ" is "s" and the Kelvin sign
// "k"), .NET's OrdinalIgnoreCase (equal upper cases: "ı" is "i") and
// Java's equalsIgnoreCase (equal upper or lower cases: "İ" is "i"). Two
// names whose runes fold alike are one name to some such decoder.
func FoldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'a' <= r && r <= 'z' {
			r -= 'a' - 'A'
		}
		return r
	}
	r = unicode.ToLower(unicode.ToUpper(r))
	// The smallest rune of its simple folding orbit.
	for {
		next := unicode.SimpleFold(r)
		if next <= r {
			return next
		}
		r = next
	}
}

const loneSurrogateMsg = "invalid \\u escape: a UTF-16 surrogate not paired"

// loneSurrogate reports whether raw, the bytes of one string token (with
// what separates it from the previous token, which holds no backslash),
// escapes a UTF-16 high surrogate (U+D800-U+DBFF) not followed at once by
// an escaped low one (U+DC00-U+DFFF), or a low one not preceded by a high
// one. The tokenizer already read raw, so each \u has four hex digits.
func loneSurrogate(raw []byte) bool {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++ // the escaped character: u, or one that is not an escape's start
		if raw[i] != 'u' {
			continue
		}
		r := hex4(raw[i+1:])
		i += 4
		if !utf16.IsSurrogate(r) {
			continue
		}
		if r >= 0xdc00 || i+6 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
			return true
		}
		if low := hex4(raw[i+3:]); low < 0xdc00 || low > 0xdfff {
			return true
		}
		i += 6
	}
	return false
}

// hex4 reads the four hex digits b begins with.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// valueType is the Go type the value starting inside top (at the root
// when top is nil) decodes into, pointers followed; nil when Deputy does
// not know it, or the type decodes itself (an UnmarshalJSON of its own, a
// json.RawMessage, an interface).
func valueType(top *frame, root reflect.Type) reflect.Type {
	t := root
	if top != nil {
		t = nil
		switch pt := top.typ; {
		case pt == nil:
		case top.object && pt.Kind() == reflect.Struct:
			t, _ = fieldType(pt, top.key)
		case top.object && pt.Kind() == reflect.Map:
			t = pt.Elem()
		case !top.object && (pt.Kind() == reflect.Slice || pt.Kind() == reflect.Array):
			t = pt.Elem()
		}
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() == reflect.Interface || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	return t
}

// otherCase reports whether key names none of struct t's fields exactly
// but one in another case (encoding/json's bytes.EqualFold), and which.
func otherCase(t reflect.Type, key string) (string, bool) {
	if t == nil || t.Kind() != reflect.Struct {
		return "", false
	}
	if _, ok := fieldType(t, key); ok {
		return "", false
	}
	var found string
	eachField(t, func(name string, _ reflect.Type) bool {
		if strings.EqualFold(name, key) {
			found = name
			return true
		}
		return false
	})
	return found, found != ""
}

// fieldType is the type of struct t's field named key exactly.
func fieldType(t reflect.Type, key string) (reflect.Type, bool) {
	var ft reflect.Type
	ok := eachField(t, func(name string, typ reflect.Type) bool {
		if name == key {
			ft = typ
			return true
		}
		return false
	})
	return ft, ok
}

// eachField calls visit with the JSON name and type of each field
// encoding/json decodes into t (the tag's name or the Go name, embedded
// structs' fields promoted) until visit returns true, and reports whether
// it did.
func eachField(t reflect.Type, visit func(name string, typ reflect.Type) bool) bool {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if eachField(ft, visit) {
					return true
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if visit(name, f.Type) {
			return true
		}
	}
	return false
}
