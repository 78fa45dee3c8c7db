package decisionlog

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

// randomString mixes what string escaping must get right: quotes,
// backslashes, control characters, HTML characters, multi-byte runes,
// U+2028/2029, bidi controls and marks, C1 controls and invalid UTF-8.
func randomString(r *rand.Rand) string {
	pieces := []string{"", "a", "Zoë", "日本", "\"", "\\", "<", ">", "&", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f",
		"\u2028", "\u2029", "\u202e", "\u2066", "\u200f", "\u061c", "\u0085", "\u009b", "\u00a0", "\xff", "\xe2\x80", "\U0001F600", "/", "~", " ", "deputy_session=abc", "0"}
	var sb strings.Builder
	for range r.IntN(8) {
		sb.WriteString(pieces[r.IntN(len(pieces))])
	}
	return sb.String()
}

func randomFloat(r *rand.Rand) float64 {
	switch r.IntN(6) {
	case 0:
		return 0
	case 1:
		return r.Float64() * 1e-7
	case 2:
		return r.Float64() * 1e25
	case 3:
		return -r.Float64() * 100
	case 4:
		return float64(r.IntN(1000))
	}
	return r.NormFloat64() * math.Pow(10, float64(r.IntN(40)-20))
}

func randomValue(r *rand.Rand, depth int) any {
	n := 7
	if depth > 3 {
		n = 5 // leaves only
	}
	switch r.IntN(n) {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		return randomString(r)
	case 3:
		return json.Number([]string{"0", "-1", "42", "3.14", "1e10", "-2.5E-3", "12345678901234567890"}[r.IntN(7)])
	case 4:
		return randomFloat(r)
	case 5:
		if r.IntN(10) == 0 {
			return map[string]any(nil)
		}
		m := map[string]any{}
		for range r.IntN(5) {
			m[randomString(r)] = randomValue(r, depth+1)
		}
		return m
	}
	var a []any
	if r.IntN(10) > 0 {
		a = []any{}
	}
	for range r.IntN(4) {
		a = append(a, randomValue(r, depth+1))
	}
	return a
}

func randomRecord(r *rand.Rand) *Record {
	str := func() string {
		if r.IntN(3) == 0 {
			return ""
		}
		return randomString(r)
	}
	strs := func() []string {
		if r.IntN(2) == 0 {
			return nil
		}
		out := []string{}
		for range r.IntN(3) {
			out = append(out, randomString(r))
		}
		return out
	}
	rec := &Record{
		DecisionID: str(), Time: time.Unix(r.Int64N(1<<34), r.Int64N(1e9)).UTC(),
		Actor: str(), Subject: str(), Mode: str(), Level: str(), SessionID: str(), Method: str(), Host: str(), Path: str(),
		AttemptedOnBehalfOf: str(), AttemptedSession: str(), AttemptedSessionActor: str(),
		Result: str(), Reason: str(), BundleRevision: str(), LatencyMS: randomFloat(r), TraceID: str(),
		DryRun: r.IntN(2) == 0, InputDropped: InputDrop(r.IntN(3)), Error: str(), Erased: strs(), Masked: strs(), MaskError: str(),
	}
	if r.IntN(3) > 0 {
		rec.HTTPStatus = []int{200, 403, 503, -1}[r.IntN(4)]
	}
	if r.IntN(4) > 0 {
		rec.Input = randomValue(r, 0)
	}
	return rec
}

// The encoder writes exactly what encoding/json writes, the runes that
// make a record read other than it is stored escaped as the tail escapes
// them, so the stdout lines and stream entries keep their bytes.
func TestEncodeMatchesEncodingJSON(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 15))
	for i := range 20000 {
		rec := randomRecord(r)
		want, wantErr := json.Marshal(rec)
		want = escapeDisplay(want)
		got, err := rec.encode()
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("seed %d record %d: error %v, encoding/json %v", seed, i, err, wantErr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("seed %d record %d:\n got %s\nwant %s", seed, i, got, want)
		}
	}
}

func TestEncodeRefusesWhatEncodingJSONRefuses(t *testing.T) {
	cases := map[string]*Record{
		"NaN latency":          {LatencyMS: math.NaN()},
		"infinite latency":     {LatencyMS: math.Inf(1)},
		"bad number":           {Input: map[string]any{"n": json.Number("1.2.3")}},
		"NaN in input":         {Input: []any{math.Inf(-1)}},
		"year past 9999":       {Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		"unsupported in input": {Input: map[string]any{"f": func() {}}},
	}
	for name, rec := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := json.Marshal(rec); err == nil {
				t.Fatal("encoding/json accepts it: the case is wrong")
			}
			if b, err := rec.encode(); err == nil {
				t.Fatalf("encoded %s", b)
			}
		})
	}
}

func FuzzEncodeString(f *testing.F) {
	for _, s := range []string{"", "a<b>&c", "\u2028\xff\"\\\x00", "Zoë"} {
		f.Add(s, 1.5)
	}
	f.Fuzz(func(t *testing.T, s string, lat float64) {
		rec := &Record{DecisionID: s, Path: s, LatencyMS: lat, Input: map[string]any{s: []any{s, json.Number("1")}}, Erased: []string{s}}
		want, wantErr := json.Marshal(rec)
		want = escapeDisplay(want)
		got, err := rec.encode()
		if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("got %s (%v), want %s (%v)", got, err, want, wantErr)
		}
	})
}

// BenchmarkEncode is one record with a typical masked input.
func BenchmarkEncode(b *testing.B) {
	rec := benchRecord()
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := rec.encode(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(rec); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchRecord() *Record {
	headers := map[string]any{}
	for _, h := range []string{":authority", ":method", ":path", ":scheme", "accept", "accept-encoding", "accept-language",
		"user-agent", "x-forwarded-for", "x-forwarded-proto", "x-request-id", "traceparent", "sec-fetch-mode"} {
		headers[h] = "value of " + h + " with some length to it"
	}
	return &Record{
		DecisionID: "0f8d3c2b9a1e4f5d8c7b6a5f4e3d2c1b", Time: time.Date(2026, 11, 29, 3, 47, 44, 123456789, time.UTC),
		Actor: "staff-1", Subject: "cust-9", Mode: "impersonation", SessionID: "imp_1", Method: "GET", Host: "shop.example.com",
		Path: "/customer/account", Result: ResultAllow, Reason: "impersonation_session", HTTPStatus: 200, BundleRevision: "abc123",
		LatencyMS: 0.0423, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
		Input: map[string]any{
			"attributes": map[string]any{
				"request": map[string]any{"http": map[string]any{"method": "GET", "path": "/customer/account", "host": "shop.example.com", "headers": headers}},
				"source":  map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": "10.0.3.17", "portValue": json.Number("51234")}}},
			},
			"parsed_path": []any{"customer", "account"},
			"deputy":      map[string]any{"dry_run": false},
		},
		Erased: []string{"/input/attributes/request/http/headers/cookie"},
	}
}

// plainValue must give what ast.JSON gives, whatever the input holds.
func TestPlainValueMatchesASTJSON(t *testing.T) {
	for _, src := range []string{
		`{"attributes": {"request": {"http": {"headers": {"authorization": "Bearer x", ":path": "/a?access_token=1"}}}}, "n": 1.50, "ok": true, "nil": null}`,
		`{"list": [1, "two", {"three": [3]}, [], {}], "set": {"b", "a", 3}}`,
		`{"nested": {1: "number key", "s": "string key"}, "after": {"x": 1}}`,
		`{[1, 2]: "array key"}`,
		`[{"a": {"b": {}}}, "x", 10000000000000000000000000001]`,
		`"just a string"`,
		`{}`,
	} {
		t.Run(src, func(t *testing.T) {
			v := ast.MustParseTerm(src).Value
			want, err := ast.JSON(v)
			if err != nil {
				t.Fatal(err)
			}
			got, err := plainValue(v)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("plainValue = %#v\nast.JSON   = %#v", got, want)
			}
		})
	}
	if _, err := plainValue(ast.MustParseTerm(`{"a": x}`).Value); err == nil {
		t.Fatal("a variable in the input was converted, want an error as ast.JSON gives")
	}
}

// Any string encodes as a JSON string that encoding/json reads back to the
// same string when it is valid UTF-8, and to what encoding/json's own
// encoding reads back to when it is not (each invalid byte U+FFFD); and no
// rune that makes a record read other than it is stored (DEL, C1, bidi
// controls and marks) is written raw.
func FuzzAppendStringDecodes(f *testing.F) {
	for _, s := range []string{"", "plain", "/catalog/\u202egnp.exe", "x\u009b31m\x7f", "\u200e\u200f\u061c\u2066\u2069",
		"\xff\xfe\u2028", "\xe2\x80", "\xe2\x80\xae", "\xc2\x9b", "Zoë <&> \"\\\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendString(nil, s)
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%q encodes as %q, not JSON: %v", s, out, err)
		}
		want := s
		if !utf8.ValidString(s) {
			ref, _ := json.Marshal(s)
			if err := json.Unmarshal(ref, &want); err != nil {
				t.Fatal(err)
			}
		}
		if got != want {
			t.Fatalf("%q encodes as %q, reads back as %q", s, out, got)
		}
		for _, r := range string(out) {
			if r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0x061c || r == 0x200e || r == 0x200f ||
				(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x2028 || r == 0x2029 {
				t.Fatalf("%q encodes as %q, %U raw", s, out, r)
			}
		}
	})
}

// BenchmarkAppendString is the string encoder on what records mostly hold
// (ASCII: paths, header names and values, ids) and on text that is not.
func BenchmarkAppendString(b *testing.B) {
	for _, tc := range []struct{ name, s string }{
		{"ascii", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"},
		{"utf8", "/catalogue/chaussures-été/søknad/日本語のページ/Zoë"},
		{"bidi", "/catalog/\u202egnp.exe\u2066x\u2069\u009b31m"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			buf := make([]byte, 0, 256)
			b.SetBytes(int64(len(tc.s)))
			b.ReportAllocs()
			for b.Loop() {
				buf = appendString(buf[:0], tc.s)
			}
		})
	}
}
