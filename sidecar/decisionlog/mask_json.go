package decisionlog

import (
	"strings"
	"unicode/utf16"
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
// spellings those read, \u escapes decoded), at any depth, a credential
// name in an array followed by its value (["access_token","..."], at an
// even place, as name and value lists put it), or a string that holds a
// URL, a query, JSON or a bearer credential with one (nestedCredential).
// JSON is looked for from the first "{" or "[" on (v1.{...}), and again
// after each value read. Text from a "{" or "[" on that is not JSON (cut
// short, single quotes, names without quotes, as lenient readers and
// JavaScript take them) is read as words instead, any of them a
// credential name masking the value, and so is text around the JSON that
// holds a piece of JSON ("}", "]" or `":`: what a raw "&" or ";" in JSON
// leaves of it in the pairs after). A value too long or too deep to read
// is reported as holding one: it is masked, never logged unread. The
// value is read in one pass, each byte once, and its length is charged
// to the record's work (w).
func (m *masker) jsonCredential(w *maskWork, v string, depth int) bool {
	if !strings.ContainsAny(v, "{[]}") && !strings.Contains(v, `":`) {
		return false
	}
	if len(v) > maxJSONBytes || !w.spend(len(v)) {
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
		n, found, ok := m.readJSON(w, v[i:], depth)
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

// readJSON reads the JSON value s starts with, as encoding/json reads it,
// and returns the bytes it took, and whether it holds a credential (found;
// also when it nests past maxJSONDepth). ok is false when s does not start
// with JSON. Strings are read as they are met (a string with no escape
// with no copy); a string past the nesting of strings read
// (maxNesting) that may still hold a credential (mayHoldCredential) is
// reported as one.
func (m *masker) readJSON(w *maskWork, s string, depth int) (n int, found, ok bool) {
	// Each open object or array, and for an array the place of its next
	// element and whether the one before it was a credential name.
	type level struct {
		object bool
		index  int
		named  bool
	}
	var buf [8]level
	stack := buf[:0]
	const (
		value        = iota // a value
		valueOrClose        // an array's first element, or its "]"
		nameOrClose         // an object's first name, or its "}"
		name                // a member's name
		after               // what follows a value: ",", a close or the end
	)
	state, i := value, 0
	for {
		i = skipSpace(s, i)
		if i >= len(s) {
			return 0, false, false
		}
		c := s[i]
		switch state {
		case valueOrClose, nameOrClose:
			if c == ']' && state == valueOrClose || c == '}' && state == nameOrClose {
				stack = stack[:len(stack)-1]
				i++
				if len(stack) == 0 {
					return i, false, true
				}
				if top := &stack[len(stack)-1]; !top.object {
					if top.named {
						return 0, true, true
					}
					top.named = false
				}
				state = after
				continue
			}
			if state == valueOrClose {
				state = value
			} else {
				state = name
			}
			continue
		case name:
			str, next, good := readString(s, i)
			if !good {
				return 0, false, false
			}
			if m.credentialParam(str) {
				return 0, true, true
			}
			if i = skipSpace(s, next); i >= len(s) || s[i] != ':' {
				return 0, false, false
			}
			i++
			state = value
			continue
		case after:
			top := &stack[len(stack)-1]
			switch {
			case c == ',':
				i++
				top.index++
				if top.object {
					state = name
				} else {
					state = value
				}
			case c == '}' && top.object, c == ']' && !top.object:
				stack = stack[:len(stack)-1]
				i++
				if len(stack) == 0 {
					return i, false, true
				}
				if up := &stack[len(stack)-1]; !up.object {
					if up.named {
						return 0, true, true
					}
				}
			default:
				return 0, false, false
			}
			continue
		}
		// state == value
		if c == '{' || c == '[' {
			if len(stack) == maxJSONDepth {
				return 0, true, true
			}
			stack = append(stack, level{object: c == '{'})
			i++
			if c == '{' {
				state = nameOrClose
			} else {
				state = valueOrClose
			}
			continue
		}
		isName := false
		if c == '"' {
			str, next, good := readString(s, i)
			if !good {
				return 0, false, false
			}
			if m.stringCredential(w, str, depth) {
				return 0, true, true
			}
			if len(stack) > 0 {
				top := stack[len(stack)-1]
				isName = !top.object && top.index%2 == 0 && m.credentialParam(str)
			}
			i = next
		} else {
			next, good := readLiteral(s, i)
			if !good {
				return 0, false, false
			}
			i = next
		}
		if len(stack) == 0 {
			return i, false, true
		}
		if top := &stack[len(stack)-1]; !top.object {
			if top.named {
				// A credential name, then its value.
				return 0, true, true
			}
			top.named = isName
		}
		state = after
	}
}

// stringCredential reports whether a JSON string read at depth holds a
// credential of its own: a bearer credential, or, read as a query value
// (nestedCredential), a URL, a query or JSON with one. Past the nesting
// read (maxNesting), a string that may hold one (mayHoldCredential) is
// reported as one: too deep to read, it is masked, never logged unread.
func (m *masker) stringCredential(w *maskWork, str string, depth int) bool {
	if depth < maxNesting {
		return m.nestedCredential(w, str, depth+1)
	}
	return m.mayHoldCredential(w, str)
}

// mayHoldCredential reports whether a value too deeply nested to read may
// still hold a credential: in any of the forms it takes decoded (up to
// four times, as nestedCredential reads it), it looks like JSON, a query
// or a URL, holds a credential name among its words, or is a bearer
// credential.
func (m *masker) mayHoldCredential(w *maskWork, v string) bool {
	for range 4 {
		if !w.spend(readCost + len(v)) {
			return true
		}
		if strings.ContainsAny(v, "{[?#;=@") || strings.Contains(v, `":`) || bearer(v) || m.wordCredential(v) {
			return true
		}
		d := queryDecode(v)
		if d == v {
			return false
		}
		v = d
	}
	return false
}

// bearer reports whether v is a credential as an Authorization header
// carries it: "Bearer" or "DPoP" (in any case) and one token after it,
// with no space in it ("Bearer of bad news" is text); around it, spaces,
// quotes and the header's own name.
func bearer(v string) bool {
	// Servers trim a header value's whitespace, and a value may be quoted
	// or carry the header's name: each is read as the bare value.
	v = strings.Trim(v, " \t\r\n\"'\\")
	if hasPrefixFold(v, "authorization:") {
		v = strings.TrimLeft(v[len("authorization:"):], " \t")
	}
	for _, scheme := range []string{"bearer", "dpop"} {
		if len(v) <= len(scheme) || !hasPrefixFold(v, scheme) {
			continue
		}
		rest := v[len(scheme):]
		token := strings.TrimLeft(rest, " \t\u00a0")
		if len(token) == len(rest) {
			continue // "bearers", not the scheme
		}
		return token != "" && !strings.ContainsAny(token, " \t\r\n\u00a0")
	}
	return false
}

// hasPrefixFold reports whether s begins with prefix, in any ASCII case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// skipSpace returns the place of the first byte at or after i that is
// not JSON whitespace.
func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// readString reads the JSON string at s[i] (a '"') and returns it decoded
// and the place after it. A string with no escape is returned with no
// copy. Escapes decode as encoding/json decodes them (a lone surrogate is
// U+FFFD); a control character, an unknown escape or a string cut short is
// not JSON (ok false).
func readString(s string, i int) (str string, next int, ok bool) {
	if i >= len(s) || s[i] != '"' {
		return "", 0, false
	}
	start := i + 1
	j := start
	for j < len(s) && s[j] != '"' && s[j] != '\\' && s[j] >= 0x20 {
		j++
	}
	if j < len(s) && s[j] == '"' {
		return s[start:j], j + 1, true
	}
	var b strings.Builder
	b.WriteString(s[start:j])
	for j < len(s) {
		c := s[j]
		switch {
		case c == '"':
			return b.String(), j + 1, true
		case c < 0x20:
			return "", 0, false
		case c != '\\':
			b.WriteByte(c)
			j++
			continue
		}
		if j+1 >= len(s) {
			return "", 0, false
		}
		switch e := s[j+1]; e {
		case '"', '\\', '/':
			b.WriteByte(e)
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			r, good := hex4(s, j+2)
			if !good {
				return "", 0, false
			}
			j += 6
			if utf16.IsSurrogate(r) {
				if r2, good := hex4(s, j+2); good && j+1 < len(s) && s[j] == '\\' && s[j+1] == 'u' {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						b.WriteRune(d)
						j += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			b.WriteRune(r)
			continue
		default:
			return "", 0, false
		}
		j += 2
	}
	return "", 0, false
}

// hex4 reads the four hex digits at s[i:].
func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		if !sidecar.IsHex(c) {
			return 0, false
		}
		r = r<<4 | rune(sidecar.Unhex(c))
	}
	return r, true
}

// readLiteral reads the JSON number, true, false or null at s[i] and
// returns the place after it.
func readLiteral(s string, i int) (next int, ok bool) {
	for _, lit := range []string{"true", "false", "null"} {
		if strings.HasPrefix(s[i:], lit) {
			return i + len(lit), true
		}
	}
	j := i
	if j < len(s) && s[j] == '-' {
		j++
	}
	switch {
	case j < len(s) && s[j] == '0':
		j++
	case j < len(s) && s[j] >= '1' && s[j] <= '9':
		for j < len(s) && isDigit(s[j]) {
			j++
		}
	default:
		return 0, false
	}
	if j < len(s) && s[j] == '.' {
		j++
		if j >= len(s) || !isDigit(s[j]) {
			return 0, false
		}
		for j < len(s) && isDigit(s[j]) {
			j++
		}
	}
	if j < len(s) && (s[j] == 'e' || s[j] == 'E') {
		j++
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		if j >= len(s) || !isDigit(s[j]) {
			return 0, false
		}
		for j < len(s) && isDigit(s[j]) {
			j++
		}
	}
	return j, true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

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
