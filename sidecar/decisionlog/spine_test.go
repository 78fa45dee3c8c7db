package decisionlog

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
)

// publicPageInput is the input of a check on the shipped public page
// rules, pruned to what they read.
const publicPageInput = `{"deputy": {"dev": true, "dry_run": false, "owned_prefix": "x-deputy-", "parse_body": true,
	"request": {"lower_path": "/catalog/shoes", "lower_segments": ["catalog", "shoes"], "methods": ["GET"],
		"route_segments": ["catalog", "shoes"], "segments": ["catalog", "shoes"], "sole_method": "GET"},
	"revision": "local-d2f69f82d80f"}}`

// Masking converts only the spine of an input and writes the rest from
// the AST; the record must be byte for byte what converting the whole
// input gives, credentials masked alike.
func TestSpineMaskingMatchesFullConversion(t *testing.T) {
	bench, err := ast.InterfaceToValue(benchRecord().Input)
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string]ast.Value{
		"bench input":       bench,
		"public page input": ast.MustParseTerm(publicPageInput).Value,
		"credentials everywhere": ast.MustParseTerm(`{"attributes": {"request": {"http": {
			"method": "POST", "path": "/a?access_token=s3cret&x=1", "query": "access_token=s3cret&id_token=t",
			"body": "password=hunter2", "raw_body": "cGFzc3dvcmQ=", "rawBody": "x",
			"headers": {"Authorization": "Bearer abc", "cookie": "deputy_session=x", "x-deputy-token": "t",
				"Proxy-Authorization": "Basic x", ":path": "/a?access_token=s3cret", "referer": "https://x/?token=1",
				"x-original-uri": "/b?access_token=2", "accept": "*/*", "x-num": 5, "x-obj": {"authorization": "kept: not a header"}}}},
			"source": {"address": {"socketAddress": {"address": "10.0.0.1", "portValue": 1234}}}},
			"parsed_query": {"access_token": ["s3cret"], "b": ["c"]}, "parsed_body": {"password": "hunter2"},
			"parsed_path": ["a"], "identity": {"sub": "alice", "roles": ["x", "y"], "claims": {"exp": 1.7e9, "n": 10000000000000000000001}},
			"deputy": {"owned_prefix": "x-deputy-", "flags": {true, false, null}}}`).Value,
		"headers not an object":       ast.MustParseTerm(`{"attributes": {"request": {"http": {"headers": ["authorization", "Bearer x"]}}}}`).Value,
		"http not an object":          ast.MustParseTerm(`{"attributes": {"request": {"http": "GET /?access_token=1"}}}`).Value,
		"number key among headers":    ast.MustParseTerm(`{"attributes": {"request": {"http": {"headers": {1: "x", "authorization": "Bearer y"}}}}}`).Value,
		"number key off the spine":    ast.MustParseTerm(`{"source": {1: "x", "a": {2: [1, {3: 4}]}, "z": {"b": {5: 6}, "a": 1}}, "parsed_query": {"access_token": "not a list"}}`).Value,
		"set of objects":              ast.MustParseTerm(`{"s": {{"b": 1}, {"a": 2}}, "e": {}, "n": null, "t": true, "u": "Zoë <&> \u2028", "keys": {"b": 1, "a": 2, "A": 3, "é": 4, "": 5}}`).Value,
		"input is an array":           ast.MustParseTerm(`[{"authorization": "x"}, 1, "a"]`).Value,
		"input is a string":           ast.String("just this"),
		"empty object":                ast.NewObject(),
		"parsed_query not an object":  ast.MustParseTerm(`{"parsed_query": ["access_token", "x"]}`).Value,
		"headers with non-string val": ast.MustParseTerm(`{"attributes": {"request": {"http": {"headers": {"referer": ["https://x/?token=1"], "cookie": null}}}}}`).Value,
	}
	m := newMasker(Defaults())
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			var out [2][]byte
			var recs [2]*Record
			for i, full := range []bool{true, false} {
				rec := &Record{DecisionID: "d", Time: time.Unix(0, 0).UTC(), Result: ResultAllow}
				m.maskWith(context.Background(), rec, in, nil, full)
				b, err := rec.encode()
				if err != nil {
					t.Fatalf("full=%v: %v", full, err)
				}
				out[i], recs[i] = b, rec
			}
			if !bytes.Equal(out[0], out[1]) {
				t.Fatalf("spine masking differs from full conversion:\nfull  %s\nspine %s", out[0], out[1])
			}
			if !slices.Equal(recs[0].Erased, recs[1].Erased) || !slices.Equal(recs[0].Masked, recs[1].Masked) {
				t.Fatalf("erased/masked differ: %v %v vs %v %v", recs[0].Erased, recs[0].Masked, recs[1].Erased, recs[1].Masked)
			}
			for _, secret := range []string{"s3cret", "hunter2", "Bearer abc", "deputy_session"} {
				if strings.Contains(string(out[1]), secret) {
					t.Fatalf("record shows %q: %s", secret, out[1])
				}
			}
		})
	}
}

// An input that cannot be written (a variable where a value belongs)
// costs the record its input, not the record.
func TestUnwritableInputKeepsTheRecord(t *testing.T) {
	l, err := New(Defaults(), DiscardSink{})
	if err != nil {
		t.Fatal(err)
	}
	in := ast.MustParseTerm(`{"source": {"x": y}, "attributes": {"request": {"http": {"headers": {"authorization": "Bearer abc"}}}}}`).Value
	b, err := l.appendRecord(context.Background(), nil, &sidecar.Decision{ID: "d", Time: time.Unix(0, 0).UTC(), Allowed: true, Input: in}, false)
	if err != nil {
		t.Fatalf("record lost: %v", err)
	}
	if !strings.Contains(string(b), `"mask_error":"input not loggable`) || strings.Contains(string(b), `"input"`) || strings.Contains(string(b), "Bearer") {
		t.Fatalf("record = %s, want it without input and with the reason", b)
	}
}
