package authz

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/deputyhq/deputy/sidecar/strictjson"
)

// A JSON body Deputy parses is read by Go's decoder, which keeps the last
// value of a key an object repeats: the policy sees that one alone, while
// an upstream whose parser keeps the first (gjson, jsonparser, and others
// that stop at the first match) runs another. Nor do parsers agree on a
// key that is not text: Go reads invalid UTF-8 and an unpaired surrogate
// escape ("\ud800") as U+FFFD, others keep the bytes or the surrogate,
// drop them or fail, and a parser that keeps names as C strings ends
// "query\u0000x" at the NUL, as "query". No honest client sends any of
// these (I-JSON, RFC 7493, forbids repeated names, bytes that are not
// UTF-8 and unpaired surrogates), so checkJSONKeys finds them and the body
// is refused as malformed. Keys are compared as decoded: "query" and
// "\u0071uery" are one name to every parser. And in any letter case:
// a parser into a map keeps "Query" apart from "query", as the policy's
// does, but decoders into a struct match a field's name in any case (Go's
// encoding/json, ASP.NET's System.Text.Json, Newtonsoft, Jackson when
// asked), so of {"query":"{ a }","Query":"mutation { b }"} the policy
// reads one operation and such an upstream runs the other
// (strictjson.FoldRune says which runes they join).

// checkJSONBody reports what in a JSON body Go's decoder accepted parsers
// read differently: bytes that are not UTF-8 anywhere (Go reads them as
// U+FFFD, PHP's JSON_INVALID_UTF8_IGNORE drops them, so that
// "changeCustomer\xffPassword" names the mutation to the server alone),
// then what checkJSONKeys finds. It is strictjson.Check without the struct
// rules and without refusing unpaired surrogates in values (a JavaScript
// client that cuts a string between the halves of a pair sends one), in
// a scan that allocates nothing for an ordinary body: it runs on checks.
func checkJSONBody(body string) error {
	if !utf8.ValidString(body) {
		i := 0
		for i < len(body) {
			r, n := utf8.DecodeRuneInString(body[i:])
			if r == utf8.RuneError && n == 1 {
				break
			}
			i += n
		}
		return fmt.Errorf("not UTF-8 at byte %d: parsers differ on what it spells", i)
	}
	if f := checkJSONKeys(body); f != nil {
		return f
	}
	return nil
}

// jsonKeyFault is why a JSON body's object keys are refused.
type jsonKeyFault struct {
	path  string // the object's place in the body: "$", "$.variables", "$[1]"
	key   string // the repeated key (decoded), or the refused key as sent
	bad   string // what is wrong with the key; "" for a repeated key
	other string // the key of the object that key repeats in another letter case
}

func (f *jsonKeyFault) Error() string {
	if f.other != "" {
		return fmt.Sprintf("the object at %s has the keys %s and %s, one name to parsers that ignore letter case: they differ on which value they keep",
			f.path, quoteKey(f.other), quoteKey(f.key))
	}
	if f.bad == "" {
		return fmt.Sprintf("the object at %s repeats the key %s: parsers differ on which value they keep", f.path, quoteKey(f.key))
	}
	return fmt.Sprintf("the object at %s has a key %s, %s: parsers disagree on what name it is", f.path, f.bad, quoteKey(f.key))
}

// jsonFrame is an object or array open at a point of the body.
type jsonFrame struct {
	object bool
	// start is where the object's keys begin in checkJSONKeys's list
	// (which holds the keys of every open object, outermost first).
	start int
	// index is the array's current element.
	index int
	// seen holds the keys of an object of more than jsonLinearKeys of
	// them, by their fold (foldKey), to the key; smaller objects compare
	// in the list.
	seen map[string]string
}

// jsonLinearKeys is how many keys of one object are compared one by one
// before they go in a map: request bodies' objects seldom have more, and
// a body of many keys in one object costs linear time all the same.
const jsonLinearKeys = 16

// checkJSONKeys reports the first object key of a JSON text that its
// object repeats (as decoded), or that holds invalid UTF-8, an unpaired
// surrogate escape or NUL; nil when there is none. body must be JSON that
// Go's decoder accepted: the scan follows its structure only, and stops
// without a fault where it is not.
func checkJSONKeys(body string) *jsonKeyFault {
	var frameBuf [16]jsonFrame
	var keyBuf [32]string
	frames, keys := frameBuf[:0], keyBuf[:0]
	expectKey := false
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '{':
			frames = append(frames, jsonFrame{object: true, start: len(keys)})
			expectKey = true
		case '[':
			frames = append(frames, jsonFrame{start: len(keys)})
			expectKey = false
		case '}', ']':
			if len(frames) == 0 {
				return nil
			}
			keys = keys[:frames[len(frames)-1].start]
			frames = frames[:len(frames)-1]
			expectKey = false
		case ',':
			if len(frames) == 0 {
				return nil
			}
			top := &frames[len(frames)-1]
			expectKey = top.object
			if !top.object {
				top.index++
			}
		case '"':
			end := jsonStringEnd(body, i+1)
			if end < 0 {
				return nil
			}
			if expectKey && len(frames) > 0 {
				raw := body[i+1 : end]
				key, bad := decodeJSONKey(raw)
				if bad != "" {
					return &jsonKeyFault{path: jsonPath(frames, keys), key: raw, bad: bad}
				}
				top := &frames[len(frames)-1]
				if other, ok := top.repeats(key, keys); ok {
					f := &jsonKeyFault{path: jsonPath(frames, keys), key: key}
					if other != key {
						f.other = other
					}
					return f
				}
				keys = append(keys, key)
				expectKey = false
			}
			i = end
		}
	}
	return nil
}

// repeats reports whether an object (the innermost open one, its keys
// ending keys) already has key in any letter case (foldEqual), and which
// of its keys that is; it records key in its map once it has many.
func (f *jsonFrame) repeats(key string, keys []string) (string, bool) {
	if f.seen != nil {
		folded := foldKey(key)
		if k, ok := f.seen[folded]; ok {
			return k, true
		}
		f.seen[folded] = key
		return "", false
	}
	own := keys[f.start:]
	for _, k := range own {
		if k == key || foldEqual(k, key) {
			return k, true
		}
	}
	if len(own) >= jsonLinearKeys {
		f.seen = make(map[string]string, 2*len(own))
		for _, k := range own {
			f.seen[foldKey(k)] = k
		}
		f.seen[foldKey(key)] = key
	}
	return "", false
}

// foldKey is key with each rune folded (strictjson.FoldRune).
func foldKey(key string) string {
	b := make([]byte, 0, len(key))
	for _, r := range key {
		b = utf8.AppendRune(b, strictjson.FoldRune(r))
	}
	return string(b)
}

// foldEqual reports whether a and b fold alike rune by rune
// (strictjson.FoldRune), without allocating: most keys of an object
// differ in their first letter.
func foldEqual(a, b string) bool {
	for a != "" && b != "" {
		ra, na := rune(a[0]), 1
		if ra >= utf8.RuneSelf {
			ra, na = utf8.DecodeRuneInString(a)
		}
		rb, nb := rune(b[0]), 1
		if rb >= utf8.RuneSelf {
			rb, nb = utf8.DecodeRuneInString(b)
		}
		if ra != rb && strictjson.FoldRune(ra) != strictjson.FoldRune(rb) {
			return false
		}
		a, b = a[na:], b[nb:]
	}
	return a == "" && b == ""
}

// jsonStringEnd returns the index of the quote that ends the JSON string
// whose content starts at i (-1 if none does).
func jsonStringEnd(s string, i int) int {
	for from := i; ; {
		j := strings.IndexByte(s[from:], '"')
		if j < 0 {
			return -1
		}
		j += from
		n := 0
		for k := j - 1; k >= i && s[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return j
		}
		from = j + 1
	}
}

// decodeJSONKey decodes the content of a JSON string (its escapes valid,
// as Go's decoder accepted them) as Go does, or says what in it parsers
// read differently: bytes that are not UTF-8, a surrogate escape not part
// of a pair, NUL.
func decodeJSONKey(raw string) (key, bad string) {
	if !utf8.ValidString(raw) {
		return "", "that is not UTF-8"
	}
	if strings.IndexByte(raw, '\\') < 0 {
		return raw, ""
	}
	b := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			b = append(b, c)
			continue
		}
		if i+1 >= len(raw) {
			return "", "holding a broken escape"
		}
		i++
		switch raw[i] {
		case '"', '\\', '/':
			b = append(b, raw[i])
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := hex4(raw, i+1)
			if !ok {
				return "", "holding a broken escape"
			}
			i += 4
			switch {
			case r == 0:
				return "", "holding NUL"
			case utf16.IsSurrogate(r):
				r2, ok := rune(0), false
				if i+6 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
					r2, ok = hex4(raw, i+3)
				}
				r = utf16.DecodeRune(r, r2)
				if !ok || r == utf8.RuneError {
					return "", "holding an unpaired surrogate"
				}
				i += 6
			}
			b = utf8.AppendRune(b, r)
		default:
			return "", "holding a broken escape"
		}
	}
	return string(b), ""
}

// hex4 reads the four hex digits at s[i:].
func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	n, err := strconv.ParseUint(s[i:i+4], 16, 32)
	return rune(n), err == nil
}

// jsonPath names the innermost open object of frames: "$", then ".name"
// or `["name"]` for each object member and "[i]" for each array element
// on the way.
func jsonPath(frames []jsonFrame, keys []string) string {
	var b strings.Builder
	b.WriteByte('$')
	for k := 1; k < len(frames); k++ {
		parent := frames[k-1]
		if !parent.object {
			b.WriteString("[" + strconv.Itoa(parent.index) + "]")
			continue
		}
		if frames[k].start == parent.start {
			b.WriteString("[?]") // not JSON: an object where a key is due
			continue
		}
		name := keys[frames[k].start-1]
		if isJSONPathName(name) {
			b.WriteString("." + name)
		} else {
			b.WriteString("[" + quoteKey(name) + "]")
		}
	}
	return b.String()
}

// isJSONPathName reports whether a key may follow "." in a path.
func isJSONPathName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// quoteKey quotes a key for a message, cut after 64 bytes.
func quoteKey(s string) string {
	if len(s) <= 64 {
		return strconv.Quote(s)
	}
	cut := 64
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}
