package decisionlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
)

// Results as written in Record.Result.
const (
	ResultAllow = "allow"
	ResultDeny  = "deny"
)

// Record is one decision as it reaches a sink. Field names are the stable
// contract of the stdout lines and the Redis stream entries.
type Record struct {
	DecisionID string    `json:"decision_id"`
	Time       time.Time `json:"time"`
	Actor      string    `json:"actor,omitempty"`
	Subject    string    `json:"subject,omitempty"`
	Mode       string    `json:"mode,omitempty"`
	Level      string    `json:"level,omitempty"`
	SessionID  string    `json:"session_id,omitempty"` // session or grant id
	// A refused delegation's attempt (sidecar.Attempt): whom the request
	// tried to act for, never whom it acted for, which Actor and Subject
	// say.
	AttemptedOnBehalfOf   string  `json:"attempted_on_behalf_of,omitempty"`
	AttemptedSession      string  `json:"attempted_session,omitempty"`
	AttemptedSessionActor string  `json:"attempted_session_actor,omitempty"`
	Method                string  `json:"method,omitempty"`
	Host                  string  `json:"host,omitempty"`
	Path                  string  `json:"path,omitempty"`
	Result                string  `json:"result"`
	Reason                string  `json:"reason,omitempty"`
	HTTPStatus            int     `json:"http_status,omitempty"`
	BundleRevision        string  `json:"bundle_revision,omitempty"`
	LatencyMS             float64 `json:"latency_ms"`
	TraceID               string  `json:"trace_id,omitempty"`
	DryRun                bool    `json:"dry_run,omitempty"`
	// InputDropped says why a record has no input although records keep
	// it. One byte beside DryRun: the record of every check stays the size
	// it was.
	InputDropped InputDrop `json:"input_dropped,omitempty"`
	Error        string    `json:"error,omitempty"`

	// Input is the policy input after masking; Erased and Masked list the
	// paths removed and replaced, as OPA's decision logs do.
	Input     any      `json:"input,omitempty"`
	Erased    []string `json:"erased,omitempty"`
	Masked    []string `json:"masked,omitempty"`
	MaskError string   `json:"mask_error,omitempty"`

	// unread: masking spent its work bound (maxMaskWork) on this record,
	// so some query values were masked whole without being read. Counted
	// (MaskWorkSpent), not written.
	unread bool
}

// InputDrop is why a record was written without its input; the zero value
// (omitted) is that it was not.
type InputDrop uint8

// Reasons a record's input was dropped, as InputDrop.String names them.
const (
	InputKept InputDrop = iota
	// InputOversized: the encoding passed decision_log.max_record_bytes.
	InputOversized
)

// InputDroppedOversized is how an oversized record's input_dropped reads.
const InputDroppedOversized = "oversized"

var inputDropNames = [...]string{InputKept: "", InputOversized: InputDroppedOversized}

func (d InputDrop) String() string {
	if int(d) < len(inputDropNames) {
		return inputDropNames[d]
	}
	return "unknown"
}

func (d InputDrop) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads a reason this version does not know as "unknown",
// never as kept: the record has no input either way.
func (d *InputDrop) UnmarshalText(b []byte) error {
	*d = InputDrop(len(inputDropNames))
	for i, n := range inputDropNames {
		if n == string(b) {
			*d = InputDrop(i)
		}
	}
	return nil
}

// Cut lengths of a record without its input, in encoded bytes: together
// they stay well within MinMaxRecordBytes.
const (
	// MaxDroppedPathBytes keeps enough of the path to tell the route.
	MaxDroppedPathBytes = 1024
	// maxDroppedFieldBytes is far more than any honest id, name or reason.
	maxDroppedFieldBytes = 256
)

// dropInput makes an oversized record small: the decision and who it was
// for stay, the input and the lists of its masked paths go, and every
// string is cut to a bounded encoded length, because a client chooses the
// path and host, and an identity provider the names.
func (r *Record) dropInput() {
	r.Input, r.Erased, r.Masked = nil, nil, nil
	r.InputDropped = InputOversized
	r.Path = cutEncoded(r.Path, MaxDroppedPathBytes)
	for _, f := range []*string{&r.DecisionID, &r.Actor, &r.Subject, &r.Mode, &r.Level, &r.SessionID,
		&r.AttemptedOnBehalfOf, &r.AttemptedSession, &r.AttemptedSessionActor,
		&r.Method, &r.Host, &r.Reason, &r.BundleRevision, &r.TraceID, &r.Error, &r.MaskError} {
		*f = cutEncoded(*f, maxDroppedFieldBytes)
	}
}

// cutEncoded returns the longest prefix of s, ending on a whole UTF-8
// sequence, whose JSON string (quotes aside) takes at most n bytes.
func cutEncoded(s string, n int) string {
	if len(s) <= n/6 {
		return s // even escaped sixfold it fits
	}
	s = cutRunes(s, n) // escaping never shortens: longer never fits
	var buf []byte
	for {
		buf = appendString(buf[:0], s)
		enc := len(buf) - 2
		if enc <= n {
			return s
		}
		// Shrink in proportion; each step strictly shortens s.
		s = cutRunes(s, len(s)*n/enc)
	}
}

// cutRunes cuts s to at most n bytes without splitting a UTF-8 sequence.
func cutRunes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// newRecord copies the loggable facts of d. It leaves Input to the masker.
func newRecord(d *sidecar.Decision) *Record {
	r := &Record{
		DecisionID:     d.ID,
		Time:           d.Time.UTC(),
		Method:         d.Method,
		Host:           d.Host,
		Path:           d.Path,
		Result:         ResultDeny,
		Reason:         d.Reason,
		HTTPStatus:     d.HTTPStatus,
		BundleRevision: d.Revision,
		LatencyMS:      float64(d.Latency) / float64(time.Millisecond),
		TraceID:        TraceID(d.TraceID),
		DryRun:         d.DryRun,
		Error:          d.Error,
	}
	if d.Allowed {
		r.Result = ResultAllow
	}
	if d.Identity != nil {
		r.Actor = d.Identity.Subject
		r.Subject = d.Identity.Subject
	}
	if del := d.Delegation; del != nil {
		if del.Actor != "" {
			r.Actor = del.Actor
		}
		r.Subject = del.Subject
		r.Mode = del.Mode
		r.Level = del.Level
		r.SessionID = del.ID
	}
	if at := d.Attempt; at != nil {
		r.AttemptedOnBehalfOf = at.OnBehalfOf
		r.AttemptedSession = at.Session
		r.AttemptedSessionActor = at.SessionActor
	}
	return r
}

// TraceID returns the 32-hex trace id of a W3C traceparent value, or of a
// bare trace id, in lower case; "" when v is neither or is all zeros.
func TraceID(v string) string {
	v = strings.TrimSpace(v)
	switch {
	case len(v) == 32:
	case len(v) >= 55 && v[2] == '-' && v[35] == '-' && isHex(v[:2]) && v[:2] != "ff":
		// version-traceid-parentid-flags; future versions may append fields.
		if v[:2] == "00" && len(v) != 55 {
			return ""
		}
		if v[52] != '-' || !isHex(v[36:52]) || !isHex(v[53:55]) {
			return ""
		}
		v = v[3:35]
	default:
		return ""
	}
	if !isHex(v) || strings.Trim(v, "0") == "" {
		return ""
	}
	return strings.ToLower(v)
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// plainInput turns the policy input into fresh JSON-shaped Go values that
// masking may modify without touching the caller's copy.
func plainInput(in any) (any, error) {
	switch v := in.(type) {
	case nil:
		return nil, nil
	case ast.Value:
		return plainValue(v)
	case *ast.Term:
		return plainValue(v.Value)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(b, &out)
	return out, err
}

// plainValue is ast.JSON for the input's usual shape without its cost
// per object key: ast.JSON converts each key to an interface value (an
// allocation) before it finds it is a string. Anything but objects with
// string keys, arrays and strings is left to ast.JSON.
func plainValue(v ast.Value) (any, error) {
	switch x := v.(type) {
	case ast.String:
		return string(x), nil
	case ast.Object:
		out, err := plainObject(x, nil)
		if err != nil {
			return ast.JSON(v)
		}
		return out, nil
	case *ast.Array:
		out := make([]any, x.Len())
		for i := range out {
			var err error
			if out[i], err = plainValue(x.Elem(i).Value); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return ast.JSON(v)
}

// plainObject converts an object whose keys are all strings: each value
// whole (plainValue) when sp is nil, else as spineValue does under sp. A
// key that is not a string stops it with errNotPlain.
func plainObject(x ast.Object, sp spine) (map[string]any, error) {
	out := make(map[string]any, x.Len())
	var err error
	x.Foreach(func(k, val *ast.Term) {
		ks, ok := k.Value.(ast.String)
		if err != nil || !ok {
			err = errNotPlain
			return
		}
		if sp == nil {
			out[string(ks)], err = plainValue(val.Value)
		} else {
			out[string(ks)], err = spineValue(val.Value, sp[string(ks)])
		}
	})
	return out, err
}

// errNotPlain sends an object with a key that is not a string to ast.JSON.
var errNotPlain = errors.New("object key is not a string")

// encode is the record's JSON, byte for byte what encoding/json.Marshal
// writes for it with the runes of displayEscaped escaped too (as
// escapeDisplay writes them), built by appending into a pooled buffer instead of by
// reflection: the decision log encodes one record per check.
func (r *Record) encode() ([]byte, error) {
	bp := encodeBuffers.Get().(*[]byte)
	b, err := r.appendJSON((*bp)[:0])
	var out []byte
	if err == nil {
		out = make([]byte, len(b))
		copy(out, b)
	}
	if cap(b) <= maxPooledBuffer {
		*bp = b[:0]
		encodeBuffers.Put(bp)
	}
	return out, err
}

// maxPooledBuffer keeps one huge record from pinning its buffer forever.
const maxPooledBuffer = 64 << 10

var encodeBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, 4096)
	return &b
}}

// appendJSON appends the record as encoding/json would write it: fields in
// declaration order, omitempty honoured, strings HTML-escaped.
func (r *Record) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"decision_id":`...)
	b = appendString(b, r.DecisionID)
	b = append(b, `,"time":`...)
	if y := r.Time.Year(); y < 0 || y > 9999 {
		return b, fmt.Errorf("json: error calling MarshalJSON for type time.Time: year %d outside of range [0,9999]", y)
	}
	b = append(b, '"')
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendField(b, "actor", r.Actor)
	b = appendField(b, "subject", r.Subject)
	b = appendField(b, "mode", r.Mode)
	b = appendField(b, "level", r.Level)
	b = appendField(b, "session_id", r.SessionID)
	b = appendField(b, "attempted_on_behalf_of", r.AttemptedOnBehalfOf)
	b = appendField(b, "attempted_session", r.AttemptedSession)
	b = appendField(b, "attempted_session_actor", r.AttemptedSessionActor)
	b = appendField(b, "method", r.Method)
	b = appendField(b, "host", r.Host)
	b = appendField(b, "path", r.Path)
	b = append(b, `,"result":`...)
	b = appendString(b, r.Result)
	b = appendField(b, "reason", r.Reason)
	if r.HTTPStatus != 0 {
		b = append(b, `,"http_status":`...)
		b = strconv.AppendInt(b, int64(r.HTTPStatus), 10)
	}
	b = appendField(b, "bundle_revision", r.BundleRevision)
	b = append(b, `,"latency_ms":`...)
	b, err := appendFloat(b, r.LatencyMS)
	if err != nil {
		return b, err
	}
	b = appendField(b, "trace_id", r.TraceID)
	if r.DryRun {
		b = append(b, `,"dry_run":true`...)
	}
	if r.InputDropped != InputKept {
		b = appendField(b, "input_dropped", r.InputDropped.String())
	}
	b = appendField(b, "error", r.Error)
	if r.Input != nil {
		b = append(b, `,"input":`...)
		if b, err = appendValue(b, r.Input); err != nil {
			return b, err
		}
	}
	b = appendStrings(b, "erased", r.Erased)
	b = appendStrings(b, "masked", r.Masked)
	b = appendField(b, "mask_error", r.MaskError)
	return append(b, '}'), nil
}

// appendField appends ,"name":"v" unless v is empty (omitempty).
func appendField(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

func appendStrings(b []byte, name string, vs []string) []byte {
	if len(vs) == 0 {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, `":[`...)
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, v)
	}
	return append(b, ']')
}

// appendValue appends a JSON-shaped Go value: what ast.JSON and
// json.Unmarshal produce. Anything else goes through encoding/json.
func appendValue(b []byte, v any) ([]byte, error) {
	var err error
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendString(b, x), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case json.Number:
		if x == "" {
			return append(b, '0'), nil
		}
		if !isNumber(string(x)) {
			return b, fmt.Errorf("json: invalid number literal %q", x)
		}
		return append(b, x...), nil
	case float64:
		return appendFloat(b, x)
	case map[string]any:
		if x == nil {
			return append(b, "null"...), nil
		}
		var small [16]string
		keys := small[:0]
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			if b, err = appendValue(b, x[k]); err != nil {
				return b, err
			}
		}
		return append(b, '}'), nil
	case []any:
		if x == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendValue(b, e); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	case ast.Value:
		w := newASTWriter(b)
		w.value(x)
		return w.b, w.err
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return b, err
	}
	return append(b, raw...), nil
}

// astWriter appends an input value masking left as the policy saw it,
// exactly as appendValue writes what plainValue makes of it: objects
// come with their keys in byte order (OPA's order for string keys, and
// encoding/json's), and what is not plain JSON goes through ast.JSON.
// Walking an object through the one stored method value allocates
// nothing.
type astWriter struct {
	b      []byte
	err    error
	first  bool // no member of the current object written yet
	plain  bool // every key of the current object is a string
	member func(k, v *ast.Term)
}

func newASTWriter(b []byte) *astWriter {
	w := &astWriter{b: b}
	w.member = w.writeMember
	return w
}

func (w *astWriter) value(v ast.Value) {
	switch x := v.(type) {
	case ast.String:
		w.b = appendString(w.b, string(x))
	case ast.Number:
		var err error
		if w.b, err = appendValue(w.b, json.Number(x)); err != nil {
			w.err = err
		}
	case ast.Boolean:
		w.b = strconv.AppendBool(w.b, bool(x))
	case ast.Null:
		w.b = append(w.b, "null"...)
	case *ast.Array:
		w.b = append(w.b, '[')
		for i := range x.Len() {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.value(x.Elem(i).Value)
		}
		w.b = append(w.b, ']')
	case ast.Object:
		start, first, plain := len(w.b), w.first, w.plain
		w.first, w.plain = true, true
		w.b = append(w.b, '{')
		x.Foreach(w.member)
		w.b = append(w.b, '}')
		if !w.plain {
			w.b = w.b[:start]
			w.convert(v)
		}
		w.first, w.plain = first, plain
	default:
		w.convert(v)
	}
}

func (w *astWriter) writeMember(k, v *ast.Term) {
	s, ok := k.Value.(ast.String)
	if !ok || !w.plain {
		w.plain = false
		return
	}
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.first = false
	w.b = appendString(w.b, string(s))
	w.b = append(w.b, ':')
	w.value(v.Value)
}

// convert writes sets, objects with keys that are not strings and
// anything else as ast.JSON converts them.
func (w *astWriter) convert(v ast.Value) {
	plain, err := ast.JSON(v)
	if err == nil {
		w.b, err = appendValue(w.b, plain)
	}
	if err != nil && w.err == nil {
		w.err = err
	}
}

// appendFloat writes f as encoding/json does: shortest form, exponent
// only for very small or very large magnitudes, NaN and ±Inf refused.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, fmt.Errorf("json: unsupported value: %s", strconv.FormatFloat(f, 'g', -1, 64))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

const hexDigits = "0123456789abcdef"

// appendString writes s quoted as encoding/json does by default (<, > and
// & escaped for HTML, invalid UTF-8 as U+FFFD, U+2028 and U+2029 escaped),
// and every other rune of displayEscaped as a \u escape too: the string
// reads back the same, and no viewer of the record shows it other than it
// is stored. Plain ASCII is copied as it is, with no allocation.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if plainASCII[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if displayEscaped(r) {
			b = append(b, s[start:i]...)
			b = appendEscape(b, r)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// plainASCII holds the ASCII bytes appendString copies as they are: all
// but the C0 controls, DEL, the quote, the backslash and <, > and &.
var plainASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = true
	}
	for _, c := range `"\<>&` {
		t[c] = false
	}
	return t
}()

// displayEscaped reports whether r, valid in a JSON string, is written as
// a \u escape all the same, as `deputy decisions tail --json` writes it
// (JSONLine): DEL and the C1 controls (U+009B is a terminal's CSI), the
// bidi embeddings, overrides and isolates (sidecar.IsControl's runes past
// ASCII: "/catalog/\u202egnp.exe" shows as "exe.png" and reverses the rest
// of the line), the bidi marks LRM, RLM and ALM, which reorder what is
// next to them, and the line and paragraph separators, as encoding/json
// escapes them. A client puts any of them in a path or a header.
func displayEscaped(r rune) bool {
	switch {
	case r < 0x7f:
		return false
	case r <= 0x9f:
		return true // DEL and C1
	case r < 0x061c, r > 0x2069:
		return false // most text: Latin, Greek, Cyrillic, Hebrew, CJK...
	}
	return r == 0x061c || r == 0x200e || r == 0x200f || (r >= 0x2028 && r <= 0x202e) || r >= 0x2066
}

// appendEscape appends r, at most U+FFFF, as \uXXXX.
func appendEscape(b []byte, r rune) []byte {
	return append(b, '\\', 'u', hexDigits[r>>12&0xF], hexDigits[r>>8&0xF], hexDigits[r>>4&0xF], hexDigits[r&0xF])
}

// escapeDisplay returns JSON text with each rune of displayEscaped that it
// holds raw written as a \u escape instead: such a rune can only stand
// inside a string, so the text reads back the same.
func escapeDisplay(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if displayEscaped(r) {
			out = appendEscape(out, r)
		} else {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return out
}

// isNumber reports whether s is a valid JSON number literal.
func isNumber(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '-' {
		s = s[1:]
		if s == "" {
			return false
		}
	}
	switch {
	case s[0] == '0':
		s = s[1:]
	case '1' <= s[0] && s[0] <= '9':
		s = s[1:]
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	default:
		return false
	}
	if len(s) >= 2 && s[0] == '.' && '0' <= s[1] && s[1] <= '9' {
		s = s[2:]
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	}
	if len(s) >= 2 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		if s[0] == '+' || s[0] == '-' {
			s = s[1:]
			if s == "" {
				return false
			}
		}
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	}
	return s == ""
}
