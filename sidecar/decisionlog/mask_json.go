package decisionlog

import (
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/deputyhq/deputy/sidecar"
)

// maxJSONBytes bounds the query value read as JSON: a longer one that
// holds a "{" or "[" is masked whole, unread, so a client cannot make
// masking read megabytes per value.
const maxJSONBytes = 16 << 10

// maxJSONDepth bounds how deeply nested JSON is read: a value nested
// deeper is masked whole. OAuth states and return data nest a few levels.
const maxJSONDepth = 32

// jsonCredential reports whether a query value (as sent, or decoded) holds
// JSON with a credential of its own, as OAuth's state and sign-in flows'
// return data often do (state={"access_token":...}): a member named as a
// credential (credentialParam: secretName and mask_query_params, in the
// spellings those read, \u escapes decoded by the JSON reader), at any
// depth, or a string that holds a URL, a query or JSON with one
// (nestedCredential). JSON is looked for from the first "{" or "[" on
// (v1.{...}), and again after each value read. Text from a "{" or "[" on
// that is not JSON (cut short, single quotes, names without quotes, as
// lenient readers and JavaScript take them) is read as words instead, any
// of them a credential name masking the value, and so is text around the
// JSON that holds a piece of JSON ("}", "]" or `":`: what a raw "&" or
// ";" in JSON leaves of it in the pairs after). A value too long or too
// deep to read is reported as holding one: it is masked, never logged
// unread.
func (m *masker) jsonCredential(v string, depth int) bool {
	if !strings.ContainsAny(v, "{[]}") && !strings.Contains(v, `":`) {
		return false
	}
	if len(v) > maxJSONBytes {
		return true
	}
	for {
		i := strings.IndexAny(v, "{[")
		if i < 0 {
			return m.pieceCredential(v)
		}
		if m.pieceCredential(v[:i]) {
			return true
		}
		n, found, ok := m.readJSON(v[i:], depth)
		if found {
			return true
		}
		if !ok {
			return m.wordCredential(v[i:])
		}
		v = v[i+n:]
	}
}

// pieceCredential reports whether text that holds a piece of JSON holds
// a credential name among its words.
func (m *masker) pieceCredential(s string) bool {
	return (strings.ContainsAny(s, "}]") || strings.Contains(s, `":`)) && m.wordCredential(s)
}

// readJSON reads the JSON value s starts with and returns the bytes it
// took, and whether it holds a credential (found; also when it nests past
// maxJSONDepth). ok is false when s does not start with JSON.
func (m *masker) readJSON(s string, depth int) (n int, found, ok bool) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber() // numbers are skipped: no float parsing
	// Each open object or array, and for an object whether its next
	// token is a member's name.
	type level struct{ object, name bool }
	stack := make([]level, 0, 8)
	for {
		tok, err := dec.Token()
		if err != nil {
			return 0, false, false
		}
		top := len(stack) - 1
		if top >= 0 && stack[top].object && stack[top].name {
			// Token returns names as strings, and ends an empty
			// object with "}".
			if name, isName := tok.(string); isName {
				if m.credentialParam(name) {
					return 0, true, true
				}
				stack[top].name = false
				continue
			}
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if len(stack) == maxJSONDepth {
					return 0, true, true
				}
				if top >= 0 && stack[top].object {
					stack[top].name = true // after this member's value
				}
				stack = append(stack, level{object: t == '{', name: t == '{'})
			default:
				stack = stack[:top]
			}
		default:
			if str, isStr := t.(string); isStr && depth < maxNesting && m.nestedCredential(str, depth+1) {
				return 0, true, true
			}
			if top >= 0 && stack[top].object {
				stack[top].name = true
			}
		}
		if len(stack) == 0 {
			return int(dec.InputOffset()), false, true
		}
	}
}

// wordCredential reports whether text that looks like JSON but is not
// holds a word named as a credential (credentialParam), its \u escapes
// decoded: {access_token:'...'} and a value cut short are read so.
func (m *masker) wordCredential(s string) bool {
	s = unescapeUnicode(s)
	start := -1
	for i := 0; i <= len(s); i++ {
		if i < len(s) && nameByte(s[i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 && m.credentialParam(s[start:i]) {
			return true
		}
		start = -1
	}
	return false
}

// nameByte reports whether c can be part of a name in text read as words:
// letters, digits, "_", "-", ".", "%" (an escape, which credentialParam
// decodes) and the bytes of non-ASCII letters.
func nameByte(c byte) bool {
	return alnum(c) || c == '_' || c == '-' || c == '.' || c == '%' || c >= utf8.RuneSelf
}

// unescapeUnicode decodes the \uXXXX escapes of s; s itself when it holds
// none.
func unescapeUnicode(s string) string {
	if !strings.Contains(s, `\u`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+5 < len(s) && s[i+1] == 'u' &&
			sidecar.IsHex(s[i+2]) && sidecar.IsHex(s[i+3]) && sidecar.IsHex(s[i+4]) && sidecar.IsHex(s[i+5]) {
			r := rune(sidecar.Unhex(s[i+2]))<<12 | rune(sidecar.Unhex(s[i+3]))<<8 | rune(sidecar.Unhex(s[i+4]))<<4 | rune(sidecar.Unhex(s[i+5]))
			b.WriteRune(r)
			i += 5
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// queryDecode decodes a query value as upstreams do: "+" is a space and
// each valid %XX its byte; an invalid escape stays as it is, as lenient
// decoders (PHP's among them) leave it, where a strict one would refuse
// the whole value.
func queryDecode(s string) string {
	return percentDecode(strings.ReplaceAll(s, "+", " "))
}
