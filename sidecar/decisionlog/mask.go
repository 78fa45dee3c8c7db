package decisionlog

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/paramkey"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// MaskField is the name invalid mask rules are reported under.
const MaskField = "data.system.log.mask"

// Evaluator evaluates a prepared query: *policy.Engine (the serving set)
// or *policy.Activation (a set compiled but not yet serving, so a bad mask
// can be refused before it is activated).
type Evaluator interface {
	Eval(ctx context.Context, query string, input ast.Value, opts ...rego.EvalOption) (policy.Result, error)
}

var (
	_ Evaluator = (*policy.Engine)(nil)
	_ Evaluator = (*policy.Activation)(nil)
)

// Mask operations of OPA's data.system.log.mask convention.
const (
	OpRemove = "remove"
	OpUpsert = "upsert"
)

// MaskRule is one entry of a mask decision: erase or replace what a
// JSON pointer into the logged event names.
type MaskRule struct {
	Op    string
	Path  string
	Value any
	parts []string // unescaped pointer segments, "input" first
}

// ParseMask turns the value of data.system.log.mask (a set or array of
// "/input/..." strings and {"op", "path", "value"} objects) into rules.
// An invalid entry is an EINVALID error naming it.
func ParseMask(v ast.Value) ([]MaskRule, error) {
	var elems []*ast.Term
	switch c := v.(type) {
	case ast.Set:
		elems = c.Slice()
	case *ast.Array:
		for i := 0; i < c.Len(); i++ {
			elems = append(elems, c.Elem(i))
		}
	default:
		return nil, sidecar.Invalid(MaskField, "must be a set or array of paths and operations, got %s", ast.ValueName(v))
	}
	rules := make([]MaskRule, 0, len(elems))
	for _, t := range elems {
		r, err := parseMaskRule(t)
		if err != nil {
			return nil, sidecar.Invalid(MaskField, "rule %s: %s", t, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func parseMaskRule(t *ast.Term) (MaskRule, error) {
	var r MaskRule
	switch e := t.Value.(type) {
	case ast.String:
		r.Op, r.Path = OpRemove, string(e)
	case ast.Object:
		var ok bool
		for _, k := range e.Keys() {
			switch k.Value {
			case ast.String("op"), ast.String("path"), ast.String("value"):
			default:
				return r, fmt.Errorf("unknown field %s", k)
			}
		}
		op := e.Get(ast.StringTerm("op"))
		if op == nil {
			return r, fmt.Errorf("missing op")
		}
		var s ast.String
		if s, ok = op.Value.(ast.String); !ok || (s != OpRemove && s != OpUpsert) {
			return r, fmt.Errorf("op must be %q or %q", OpRemove, OpUpsert)
		}
		r.Op = string(s)
		p := e.Get(ast.StringTerm("path"))
		if p == nil {
			return r, fmt.Errorf("missing path")
		}
		if s, ok = p.Value.(ast.String); !ok {
			return r, fmt.Errorf("path must be a string")
		}
		r.Path = string(s)
		val := e.Get(ast.StringTerm("value"))
		if r.Op == OpUpsert {
			if val == nil {
				return r, fmt.Errorf("upsert needs a value")
			}
			jv, err := ast.JSON(val.Value)
			if err != nil {
				return r, fmt.Errorf("value: %v", err)
			}
			r.Value = jv
		}
	default:
		return r, fmt.Errorf("must be a path string or an operation object")
	}
	if r.Path != "/input" && !strings.HasPrefix(r.Path, "/input/") {
		return r, fmt.Errorf("path must start with /input")
	}
	for _, seg := range strings.Split(r.Path[1:], "/") {
		if seg == "" {
			return r, fmt.Errorf("path has an empty segment")
		}
		r.parts = append(r.parts, strings.NewReplacer("~1", "/", "~0", "~").Replace(seg))
	}
	if r.Op == OpUpsert && len(r.parts) == 1 {
		return r, fmt.Errorf("upsert cannot replace the whole input")
	}
	return r, nil
}

// ValidateMask evaluates the mask query once on an empty input so a bad
// mask policy fails at start (or activation) with the rule named, rather
// than on the first logged decision.
func ValidateMask(ctx context.Context, ev Evaluator) error {
	res, err := ev.Eval(ctx, policy.MaskQuery, ast.NewObject(ast.Item(ast.StringTerm("input"), ast.ObjectTerm())))
	if err != nil {
		return &sidecar.Error{Code: sidecar.EINVALID, Field: MaskField, Message: "evaluation failed", Err: err}
	}
	if !res.Defined() {
		return nil
	}
	_, err = ParseMask(res.Value.Value)
	return err
}

// secretHeaders are the request headers whose values are never logged,
// whatever decision_log.mask_headers adds: the credentials and session,
// API and CSRF tokens that clients commonly send.
var secretHeaders = []string{
	"authorization", "proxy-authorization", "cookie",
	"x-api-key", "x-auth-token", "x-access-token", "x-csrf-token", "x-xsrf-token",
	"x-amz-security-token",
}

// masker applies Deputy's fixed masking and the policy's mask rules.
type masker struct {
	headers     []string // lower case, "-" between words: the fixed ones, mask_headers and the header carriers
	queryParams []string // lower case: mask_query_params and the query carriers
	queryKeys   []string // their keys (paramkey.Of), as the check reads names; "" for an entry naming an array's member
	policy      bool     // apply the deciding activation's mask rules

	// verdicts remembers secretHeader's answer for header names seen,
	// up to maxHeaderVerdicts: records carry the same few names again
	// and again, and judging a name in every spelling against every
	// secret word costs thousands of instructions. Past the bound names
	// are judged afresh, so new names cost time, never memory.
	verdictsMu sync.Mutex
	verdicts   map[string]bool
}

// maxHeaderVerdicts bounds masker.verdicts.
const maxHeaderVerdicts = 1024

func newMasker(cfg Config) *masker {
	// Lower case with "-" between words, as secretHeader compares.
	hs := append(slices.Clip(secretHeaders), sidecar.HeaderName(cfg.ActorTokenHeader))
	for _, h := range cfg.MaskHeaders {
		hs = append(hs, sidecar.HeaderName(h))
	}
	m := &masker{headers: hs, verdicts: make(map[string]bool)}
	for _, q := range cfg.MaskQueryParams {
		m.addQueryParam(q, !strings.Contains(q, "["))
	}
	return m
}

// addQueryParam masks the query parameter q. keyed, q is matched under
// every spelling the check reads as its name (paramkey); else only as
// given, in any case, or as PHP names it: a mask_query_params entry such
// as "payment[card_number]" names that member, where its key would be the
// whole of "payment".
func (m *masker) addQueryParam(q string, keyed bool) {
	if q = strings.ToLower(q); !slices.Contains(m.queryParams, q) {
		key := ""
		if keyed {
			key = paramkey.Of(q)
		}
		m.queryParams, m.queryKeys = append(m.queryParams, q), append(m.queryKeys, key)
	}
}

// addCarriers adds the credential carriers' headers and query parameters
// to those masked (WithCredentialCarriers).
func (m *masker) addCarriers(headers, queryParams []string) {
	for _, h := range headers {
		if h = sidecar.HeaderName(h); !slices.Contains(m.headers, h) {
			m.headers = append(m.headers, h)
		}
	}
	for _, q := range queryParams {
		m.addQueryParam(q, true)
	}
	clear(m.verdicts)
}

// spine names objects, each with the objects under it that are on the
// spine too.
type spine map[string]spine

// maskSpine holds every object the fixed masking reads or changes (the
// headers, the http object with path, query and bodies, parsed_query,
// and input itself for parsed_body), the parsed_path array, and the
// objects above them.
var maskSpine = spine{"input": {
	"attributes":   {"request": {"http": {"headers": {}}}},
	"parsed_query": {},
	"parsed_path":  {},
	"identity":     {},
}}

// astValue returns in as an AST value, if it is one.
func astValue(in any) (ast.Value, bool) {
	switch v := in.(type) {
	case ast.Value:
		return v, v != nil
	case *ast.Term:
		return v.Value, v != nil
	}
	return nil, false
}

// spineValue converts v as plainValue does where v is an object or an
// array on the spine sp (parsed_path, whose segments masking reads), and
// leaves other objects, arrays, sets and numbers as AST values (strings
// become Go strings, as masking reads them). An object on the spine with
// a key that is not a string is converted whole.
func spineValue(v ast.Value, sp spine) (any, error) {
	switch x := v.(type) {
	case ast.String:
		return string(x), nil
	case *ast.Array:
		if sp == nil {
			return v, nil
		}
		return plainValue(v)
	case ast.Object:
		if sp == nil {
			return v, nil
		}
		out, err := plainObject(x, sp)
		if errors.Is(err, errNotPlain) {
			return plainValue(v)
		}
		return out, err
	case ast.Null:
		return nil, nil
	case ast.Boolean:
		return bool(x), nil
	}
	return v, nil
}

// bodyPaths are the places a request body can reach the input, in
// OPA-Envoy's input shape.
var bodyPaths = [][]string{
	{"input", "attributes", "request", "http", "body"},
	{"input", "attributes", "request", "http", "raw_body"},
	{"input", "attributes", "request", "http", "rawBody"},
	{"input", "parsed_body"},
}

// mask fills rec.Input with the masked copy of the decision's input. The
// mask rules of the activation that decided (deciding, the decision's
// Policy) run first; the fixed rules run last so no policy can bring a
// credential back.
func (m *masker) mask(ctx context.Context, rec *Record, in, deciding any) {
	ev, err := m.rulesOf(deciding)
	if err != nil {
		// Another revision's rules could show what this one hid: drop the
		// input, as a failing mask does.
		rec.MaskError = err.Error()
		rec.Erased = append(rec.Erased, "/input")
		return
	}
	m.maskWith(ctx, rec, in, ev, false)
}

// rulesOf returns what evaluates the mask rules of the decision deciding
// made: nil when the logger honours no mask policy or no policy was
// serving, so no rules were in force.
func (m *masker) rulesOf(deciding any) (Evaluator, error) {
	if !m.policy || deciding == nil {
		return nil, nil
	}
	act, ok := deciding.(*policy.Activation)
	if !ok {
		return nil, sidecar.Invalid(MaskField, "the deciding policy activation is not available (%T)", deciding)
	}
	if act == nil {
		return nil, nil
	}
	return act, nil
}

// maskWith masks in into rec with the mask rules ev evaluates (none when
// ev is nil). Unless full, an AST input that no policy rule masks is
// turned into Go maps only along maskSpine, the objects the fixed rules
// read and change; everything else reaches the encoder as the AST values
// the policy saw, with no copy.
func (m *masker) maskWith(ctx context.Context, rec *Record, in any, ev Evaluator, full bool) {
	var plain any
	var err error
	value, isAST := astValue(in)
	if !isAST {
		plain, err = plainInput(in)
	}
	var rules []MaskRule
	if err == nil && ev != nil {
		if rules, err = policyRules(ctx, ev, in, plain); err != nil {
			// Never log what the policy wanted hidden: drop the input.
			rec.MaskError = err.Error()
			rec.Erased = append(rec.Erased, "/input")
			return
		}
	}
	if isAST {
		if full || len(rules) > 0 {
			plain, err = plainValue(value)
		} else {
			plain, err = spineValue(value, maskSpine["input"])
		}
	}
	if err != nil {
		rec.MaskError = "input not loggable: " + err.Error()
		return
	}
	if plain == nil {
		return
	}
	event := map[string]any{"input": plain}
	for _, r := range rules {
		if applyRule(event, r.parts, r.Op, r.Value) {
			if r.Op == OpUpsert {
				rec.Masked = append(rec.Masked, r.Path)
			} else {
				rec.Erased = append(rec.Erased, r.Path)
			}
		}
	}
	w := newMaskWork()
	if h, ok := lookup(event, "input", "attributes", "request", "http", "headers").(map[string]any); ok {
		var erased []string
		for k := range h {
			if m.secretHeader(k) {
				delete(h, k)
				erased = append(erased, "/input/attributes/request/http/headers/"+escape(k))
			}
		}
		sort.Strings(erased)
		rec.Erased = append(rec.Erased, erased...)
	}
	if http, ok := lookup(event, "input", "attributes", "request", "http").(map[string]any); ok {
		erased, masked := m.maskHeaderMap(w, http)
		rec.Erased = append(rec.Erased, erased...)
		rec.Masked = append(rec.Masked, masked...)
	}
	for _, p := range bodyPaths {
		if applyRule(event, p, OpRemove, nil) {
			rec.Erased = append(rec.Erased, "/"+strings.Join(p, "/"))
		}
	}
	rec.Masked = append(rec.Masked, m.maskQueries(w, event)...)
	rec.unread = w.spent
	if id, ok := lookup(event, "input", "identity").(map[string]any); ok && id["claims"] != nil {
		if v, isAST := astValue(id["claims"]); isAST {
			// The check path's AST: claims are read whole, so turned
			// into Go values whole.
			if plain, err := plainValue(v); err == nil {
				id["claims"] = plain
			} else {
				id["claims"] = MaskedValue
			}
		}
		claimed := maskClaims(id["claims"], "/input/identity/claims", 0)
		sort.Strings(claimed)
		rec.Masked = append(rec.Masked, claimed...)
	}
	rec.Input = event["input"]
}

// MaskedValue replaces the value of a credential query parameter.
const MaskedValue = "***"

// uriHeaders are request headers that carry the request's URI (or another
// one, as referer does), query included: the URL overrides the check
// refuses (sidecar.URLOverrideHeaders), and those proxies set to pass on
// the URI the client sent.
var uriHeaders = func() []string {
	o := sidecar.URLOverrideHeaders()
	return append(o[:], ":path", "x-envoy-original-path", "x-envoy-original-url", "x-original-uri", "x-forwarded-uri",
		"x-forwarded-url", "x-request-uri", "request-uri", "referer")
}()

// secretHeader reports whether a header is one whose value is never
// logged, named as sent or in any of its other spellings (decoded, control
// characters dropped: spellings).
func (m *masker) secretHeader(name string) bool {
	m.verdictsMu.Lock()
	secret, known := m.verdicts[name]
	m.verdictsMu.Unlock()
	if known {
		return secret
	}
	secret = anySpelling(name, m.secretHeaderAsSent)
	m.verdictsMu.Lock()
	if len(m.verdicts) < maxHeaderVerdicts {
		// A copy: the name may point into a request's buffers.
		m.verdicts[strings.Clone(name)] = secret
	}
	m.verdictsMu.Unlock()
	return secret
}

// secretHeaderAsSent reports whether a header, named as sent, is one named
// so (secretName), or listed, in any case, with "_" read as "-" (CGI, PHP
// and WSGI upstreams read both as HTTP_X_NAME).
func (m *masker) secretHeaderAsSent(name string) bool {
	if secretName(name) {
		return true
	}
	for _, h := range m.headers {
		if sidecar.SameHeaderName(name, h) {
			return true
		}
	}
	return false
}

func uriHeader(name string) bool {
	for _, h := range uriHeaders {
		if sidecar.SameHeaderName(name, h) {
			return true
		}
	}
	return false
}

// headerMapFields are the names Envoy's header_map (encode_raw_headers)
// goes by in an input: protobuf JSON, and the proto name a hand-written
// input may use.
var headerMapFields = []string{"headerMap", "header_map"}

// maskHeaderMap applies the header masking to Envoy's header_map entries
// ({key, value} or {key, rawValue} with the value in base64): a secret
// header loses its value and rawValue, a URI header has its credential
// query parameters masked. It returns the pointers it erased and masked.
func (m *masker) maskHeaderMap(w *maskWork, http map[string]any) (erased, masked []string) {
	for _, f := range headerMapFields {
		hm, ok := http[f]
		if !ok {
			continue
		}
		base := "/input/attributes/request/http/" + f
		if v, isAST := hm.(ast.Value); isAST {
			// Not on the spine, so still AST: converted here, as its
			// entries are what this masks.
			var err error
			if hm, err = plainValue(v); err != nil {
				delete(http, f)
				erased = append(erased, base)
				continue
			}
			http[f] = hm
		}
		entries, _ := lookup(hm, "headers").([]any)
		for i, e := range entries {
			ent, ok := e.(map[string]any)
			if !ok {
				continue
			}
			key, _ := ent["key"].(string)
			ptr := base + "/headers/" + strconv.Itoa(i) + "/"
			secret, uri := m.secretHeader(key), uriHeader(key) && len(m.queryParams) > 0
			for _, fld := range []string{"value", "rawValue", "raw_value"} {
				v, ok := ent[fld]
				switch {
				case !ok || (!secret && !uri):
				case secret:
					delete(ent, fld)
					erased = append(erased, ptr+fld)
				case fld == "value":
					if str, isStr := v.(string); isStr {
						if out, changed := m.maskQueryAt(w, str, false, 0); changed {
							ent[fld] = out
							masked = append(masked, ptr+fld)
						}
					}
				default:
					str, _ := v.(string)
					raw, err := base64.StdEncoding.DecodeString(str)
					if err != nil {
						// Not readable, so not checkable: never logged.
						delete(ent, fld)
						erased = append(erased, ptr+fld)
					} else if out, changed := m.maskQueryAt(w, string(raw), false, 0); changed {
						ent[fld] = base64.StdEncoding.EncodeToString([]byte(out))
						masked = append(masked, ptr+fld)
					}
				}
			}
		}
	}
	return erased, masked
}

// maskQueries masks the values of credential query parameters wherever the
// input holds the query: the path, the URI headers, Envoy's query field and
// OPA-Envoy's parsed_query. It returns the pointers it changed.
func (m *masker) maskQueries(w *maskWork, event map[string]any) []string {
	if len(m.queryParams) == 0 {
		return nil
	}
	var masked []string
	http, _ := lookup(event, "input", "attributes", "request", "http").(map[string]any)
	if http != nil {
		for _, f := range []string{"path", "query"} {
			if v, ok := http[f].(string); ok {
				if out, changed := m.maskQueryAt(w, v, f == "query", 0); changed {
					http[f] = out
					masked = append(masked, "/input/attributes/request/http/"+f)
				}
			}
		}
		if h, ok := http["headers"].(map[string]any); ok {
			for k, v := range h {
				str, isStr := v.(string)
				if !isStr || !uriHeader(k) {
					continue
				}
				if out, changed := m.maskQueryAt(w, str, false, 0); changed {
					h[k] = out
					masked = append(masked, "/input/attributes/request/http/headers/"+escape(k))
				}
			}
		}
	}
	if segs, ok := lookup(event, "input", "parsed_path").([]any); ok {
		// OPA-Envoy's parsed_path keeps each segment's path parameters
		// (["app;jsessionid=..."]), decoded.
		for i, seg := range segs {
			if str, isStr := seg.(string); isStr {
				if out, changed := m.maskPathParams(str); changed {
					segs[i] = out
					masked = append(masked, "/input/parsed_path/"+strconv.Itoa(i))
				}
			}
		}
	}
	if q, ok := lookup(event, "input", "parsed_query").(map[string]any); ok {
		for k, vs := range q {
			if m.credentialParam(k) {
				q[k] = []any{MaskedValue}
				masked = append(masked, "/input/parsed_query/"+escape(k))
				continue
			}
			if list, changed := m.maskNestedValues(w, vs); changed {
				q[k] = list
				masked = append(masked, "/input/parsed_query/"+escape(k))
			}
		}
	}
	sort.Strings(masked)
	return masked
}

// maskQuery replaces the values of credential parameters in the query of
// a URI (or in a bare query), and in the URI's path parameters, leaving
// every other byte as it was. Names are decoded as the check decodes them
// (paramkey.Decode: "+" is a space, an invalid escape stays) and compare
// as it reads them (credentialParam), and pairs are split on "&" and on
// ";", as older Python and Java frameworks split them.
func (m *masker) maskQuery(uri string, bare bool) (string, bool) {
	return m.maskQueryAt(newMaskWork(), uri, bare, 0)
}

// maxNesting bounds how deep a query value is read as a URL of its own
// (nestedCredential): redirect_uri's query is read, and a URL in that
// query's values, no deeper.
const maxNesting = 2

// maskQueryAt is maskQuery for a URI nested depth query values deep, its
// reading charged to w. A value that is itself a URL or a query holding a
// credential (nestedCredential) is masked whole, and so is a value nested
// too deeply to read that may hold one (mayHoldCredential).
func (m *masker) maskQueryAt(w *maskWork, uri string, bare bool, depth int) (string, bool) {
	prefix, query := "", uri
	pathChanged := false
	if !bare {
		path, q, hasQuery := strings.Cut(uri, "?")
		prefix, pathChanged = m.maskPathParams(path)
		if !hasQuery {
			return prefix, pathChanged
		}
		if !pathChanged {
			prefix = uri[:len(path)+1] // "?" kept, no copy
		} else {
			prefix += "?"
		}
		query = q
	}
	var b strings.Builder
	changed := false
	start := 0
	for i := 0; i <= len(query); i++ {
		if i < len(query) && query[i] != '&' && query[i] != ';' {
			continue
		}
		pair := query[start:i]
		rawKey, value, hasValue := strings.Cut(pair, "=")
		if key := paramkey.Decode(rawKey); m.credentialParam(key) || m.valueCredential(w, value, depth) {
			if hasValue && plainName(key) {
				b.WriteString(rawKey + "=")
			}
			// A pair with no value, or a name that is more than a name
			// (token:..., a JSON value cut at a raw "&"), may hold the
			// credential in its name: masked whole.
			b.WriteString(MaskedValue)
			changed = true
		} else {
			b.WriteString(pair)
		}
		if i < len(query) {
			b.WriteByte(query[i])
		}
		start = i + 1
	}
	if !changed {
		if pathChanged {
			return prefix + query, true
		}
		return uri, false
	}
	return prefix + b.String(), true
}

// maskNestedValues masks the values of one parameter of parsed_query
// that hold a credential of their own (nestedCredential). The list is Go
// values, or, on the check path, the AST array the policy read, which is
// only turned into Go values when one is masked.
func (m *masker) maskNestedValues(w *maskWork, vs any) ([]any, bool) {
	if arr, ok := vs.(*ast.Array); ok {
		hit := false
		arr.Until(func(t *ast.Term) bool {
			s, isStr := t.Value.(ast.String)
			hit = isStr && m.nestedCredential(w, string(s), 1)
			return hit
		})
		if !hit {
			return nil, false
		}
		plain, err := plainValue(arr)
		if err != nil {
			return []any{MaskedValue}, true
		}
		vs = plain
	}
	list, _ := vs.([]any)
	changed := false
	for i, v := range list {
		if str, isStr := v.(string); isStr && m.nestedCredential(w, str, 1) {
			list[i], changed = MaskedValue, true
		}
	}
	return list, changed
}

// nestedCredential reports whether a query value, as sent or as parsed,
// holds a credential of its own: a URL or a query, as OAuth's
// redirect_uri and sign-in flows' next, return_to and continue carry
// (https://x/cb?code=..., /cb%3Ftoken%3D...), with a credential parameter
// in its query, its path parameters, or its fragment (where the implicit
// flow puts access_token). Each form the value takes decoded once, twice
// and three times is read, as an upstream may decode it again before it
// follows it, and so is JSON in it (jsonCredential). A value that is a
// bearer credential ("Bearer" and a token) is one too. Each form read is
// charged to w: once the record's work is spent, a value is reported as
// holding one, so masked whole, never logged unread. A value of the
// request's own query (depth 1) is read once per record, wherever the
// query appears.
func (m *masker) nestedCredential(w *maskWork, v string, depth int) bool {
	if depth == 1 {
		if found, known := w.seen[v]; known {
			return found
		}
		found := m.readNested(w, v, depth)
		if len(w.seen) < maxSeenValues {
			w.seen[v] = found
		}
		return found
	}
	return m.readNested(w, v, depth)
}

// valueCredential reports whether a query value read depth values deep
// holds a credential of its own: read (nestedCredential) below
// maxNesting, and at it, judged by its look (mayHoldCredential).
func (m *masker) valueCredential(w *maskWork, v string, depth int) bool {
	if depth < maxNesting {
		return m.nestedCredential(w, v, depth+1)
	}
	return m.mayHoldCredential(w, v)
}

func (m *masker) readNested(w *maskWork, v string, depth int) bool {
	for range 4 {
		if !w.spend(readCost+len(v)) || bearer(v) {
			return true
		}
		if m.jsonCredential(w, v, depth) {
			return true
		}
		if strings.ContainsAny(v, "?#;=@") {
			uri, frag, _ := strings.Cut(v, "#")
			if _, changed := m.maskQueryAt(w, uri, false, depth); changed {
				return true
			}
			if _, changed := m.maskQueryAt(w, uri, true, depth); changed {
				return true
			}
			if _, changed := m.maskQueryAt(w, frag, true, depth); frag != "" && changed {
				return true
			}
			if userPassword(uri) {
				return true
			}
		}
		d := queryDecode(v)
		if d == v {
			return false
		}
		v = d
	}
	return false
}

// maxMaskWork bounds the bytes masking reads in the query values of one
// record, at every place the query appears, every level of decoding and
// every level of nesting: a few times what the largest query a proxy
// passes (Envoy's 60 KiB of headers) costs to read. Past it, a value not
// yet read is masked whole.
const maxMaskWork = 1 << 20

// readCost is what reading a value costs beyond its bytes, so that many
// short values spend the work as a few long ones do.
const readCost = 256

// maxSeenValues bounds the query values whose verdict a record remembers.
const maxSeenValues = 256

// maskWork is what masking one record may still read (left, in bytes),
// and the verdicts on the request's query values it has read (seen), so
// the same query in the path, the URI headers, Envoy's query field and
// parsed_query is read once.
type maskWork struct {
	left int
	seen map[string]bool
	// spent: a read was refused for want of work left, so a value was
	// masked unread.
	spent bool
}

func newMaskWork() *maskWork {
	return &maskWork{left: maxMaskWork, seen: make(map[string]bool)}
}

// spend charges n bytes of reading and reports whether they were left.
func (w *maskWork) spend(n int) bool {
	if n > w.left {
		w.left, w.spent = 0, true
		return false
	}
	w.left -= n
	return true
}

// plainName reports whether a decoded query parameter name is a name and
// nothing more: letters (non-ASCII ones too), digits, spaces and the
// "_", "-", ".", "[" and "]" of the spellings credentialParam reads.
func plainName(key string) bool {
	for _, r := range key {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune("_-.[] ", r) {
			return false
		}
	}
	return true
}

// userPassword reports whether v is a URL with a password in its user
// information (https://admin:pw@host/).
func userPassword(v string) bool {
	_, rest, ok := strings.Cut(v, "://")
	if !ok {
		return false
	}
	authority, _, _ := strings.Cut(rest, "/")
	userinfo, _, hasAt := strings.Cut(authority, "@")
	return hasAt && strings.Contains(userinfo, ":")
}

// maskClaims masks, in a token's claims, the value of every claim named
// as a credential (secretName: api_key, refresh_token, an OIDC sid), at
// any depth of objects and lists up to maxClaimDepth, and returns the
// pointers it masked.
func maskClaims(v any, at string, depth int) []string {
	if depth > maxClaimDepth {
		return nil
	}
	var masked []string
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if secretName(k) {
				x[k] = MaskedValue
				masked = append(masked, at+"/"+escape(k))
				continue
			}
			masked = append(masked, maskClaims(c, at+"/"+escape(k), depth+1)...)
		}
	case []any:
		for i, c := range x {
			masked = append(masked, maskClaims(c, at+"/"+strconv.Itoa(i), depth+1)...)
		}
	}
	return masked
}

// maxClaimDepth bounds how deep maskClaims reads a token's claims: deeper
// than identity providers nest them.
const maxClaimDepth = 16

// maskPathParams replaces the values of credential path parameters
// (/app;jsessionid=...), which servlet containers read the session from,
// as maskQuery does for the query: each runs from a ";" to the next ";"
// or "/". A path with no credential parameter is returned as it is, with
// no copy.
func (m *masker) maskPathParams(path string) (string, bool) {
	var b strings.Builder
	done := 0 // path[:done] is in b
	for i := strings.IndexByte(path, ';'); i >= 0 && i < len(path); {
		j := i + 1
		for j < len(path) && path[j] != ';' && path[j] != '/' {
			j++
		}
		rawKey, _, hasValue := strings.Cut(path[i+1:j], "=")
		key, err := url.PathUnescape(rawKey)
		if err != nil {
			key = rawKey
		}
		if path[i] == ';' && hasValue && m.credentialParam(key) {
			b.WriteString(path[done : i+1])
			b.WriteString(rawKey + "=" + MaskedValue)
			done = j
		}
		i = j
	}
	if done == 0 {
		return path, false
	}
	b.WriteString(path[done:])
	return b.String(), true
}

// credentialParam reports whether a decoded query parameter name is named
// as a credential (secretName), or is one of the credential names under
// any spelling the check reads as that name when it looks for a
// credential carrier (paramkey.Of and paramkey.Same: any case, "." and
// " " for "_", brackets around or after it, non-ASCII letters folded, so
// "access.token", "[access_token]", "access_token[]" and "acceſs_token"
// are all access_token), or as PHP reads it ("access[token" is
// $_GET['access_token']). A name the check refuses a token in is never
// logged with that token. With mask_query_params set empty, and no query
// carrier, no parameter is masked. The name is matched as given and in
// its other spellings (decoded again, control characters dropped:
// spellings).
func (m *masker) credentialParam(key string) bool {
	return anySpelling(key, m.credentialParamAsSent)
}

func (m *masker) credentialParamAsSent(key string) bool {
	if secretName(key) {
		return true
	}
	if len(m.queryKeys) == 0 {
		return false
	}
	k, php := paramkey.Keys(key)
	for i, q := range m.queryKeys {
		if q == "" {
			if lower := strings.ToLower(key); lower == m.queryParams[i] || strings.ToLower(sidecar.PHPFieldName(key)) == m.queryParams[i] {
				return true
			}
			continue
		}
		if paramkey.Same(k, q) || php != "" && paramkey.Same(php, q) {
			return true
		}
	}
	return false
}

func policyRules(ctx context.Context, ev Evaluator, in, plain any) ([]MaskRule, error) {
	var v ast.Value
	switch x := in.(type) {
	case ast.Value:
		v = x
	case *ast.Term:
		v = x.Value
	default:
		var err error
		if v, err = ast.InterfaceToValue(plain); err != nil {
			return nil, sidecar.Invalid(MaskField, "input: %v", err)
		}
	}
	res, err := ev.Eval(ctx, policy.MaskQuery, ast.NewObject(ast.Item(ast.StringTerm("input"), ast.NewTerm(v))))
	if errors.Is(err, policy.ErrNoPolicy) {
		return nil, nil // no policy loaded yet, so no mask rules either
	}
	if err != nil {
		return nil, &sidecar.Error{Code: sidecar.EINVALID, Field: MaskField, Message: "evaluation failed", Err: err}
	}
	if !res.Defined() {
		return nil, nil
	}
	return ParseMask(res.Value.Value)
}

func lookup(node any, parts ...string) any {
	for _, p := range parts {
		obj, ok := node.(map[string]any)
		if !ok {
			return nil
		}
		node = obj[p]
	}
	return node
}

// applyRule removes or upserts the value at parts and reports whether the
// event changed. Upsert creates missing objects on the way, as OPA does;
// remove of a missing path is a no-op.
func applyRule(event map[string]any, parts []string, op string, value any) bool {
	node := event
	for i, p := range parts {
		last := i == len(parts)-1
		if last {
			if op == OpUpsert {
				node[p] = value
				return true
			}
			if _, ok := node[p]; ok {
				delete(node, p)
				return true
			}
			return false
		}
		next, ok := node[p].(map[string]any)
		if !ok {
			if op != OpUpsert {
				return false
			}
			if _, exists := node[p]; exists {
				return false // never replace a non-object on the way
			}
			next = map[string]any{}
			node[p] = next
		}
		node = next
	}
	return false
}

func escape(seg string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(seg)
}
