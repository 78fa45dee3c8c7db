package decisionlog

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
)

// The record's own path (the request's, without its query) is masked as
// the input's copies are: a servlet session in a path parameter
// (/app;jsessionid=...) is a credential, whether or not the record keeps
// its input.
func TestRecordPathMasksPathParameters(t *testing.T) {
	p := "/app;jsessionid=SECRET-J/x;token=SECRET-T;v=2"
	input, err := ast.InterfaceToValue(map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
		"path": p + "?access_token=SECRET-Q", "headers": map[string]any{":path": p}}}}})
	if err != nil {
		t.Fatal(err)
	}
	d := &sidecar.Decision{ID: "0f8d3c2b9a1e4f5d8c7b6a5f4e3d2c1b", Time: time.Now(), Allowed: true, HTTPStatus: 200,
		Reason: "r", Method: "GET", Host: "shop.example.com", Path: p, Input: input}
	for _, include := range []bool{true, false} {
		cfg := Defaults()
		cfg.IncludeInput = &include
		l, err := New(cfg, DiscardSink{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := l.appendRecord(context.Background(), nil, d, false)
		if err != nil {
			t.Fatal(err)
		}
		if s := string(b); strings.Contains(s, "SECRET-") {
			t.Errorf("include_input %v: a credential logged in clear: %s", include, s)
		}
		if s := string(b); !strings.Contains(s, `"path":"/app;jsessionid=***/x;token=***;v=2"`) {
			t.Errorf("include_input %v: record path not masked in place: %s", include, s)
		}
	}
}

// OPA-Envoy's parsed_path keeps each segment's path parameters, decoded:
// a policy that reads it must not put a session in the log, whether the
// input comes as Go values or, as every check builds it, as the AST the
// policy read (whose arrays masking left unconverted, and so unmasked).
func TestParsedPathMasksPathParameters(t *testing.T) {
	in := map[string]any{"parsed_path": []any{"app;jsessionid=SECRET-P;v=2", "x"}}
	for name, input := range map[string]any{"go values": in, "ast": ast.MustInterfaceToValue(in)} {
		rec := &Record{}
		newMasker(Defaults()).mask(context.Background(), rec, input, nil)
		b, err := appendValue(nil, rec.Input) // as the sinks write it
		if err != nil {
			t.Fatal(err)
		}
		if s := string(b); strings.Contains(s, "SECRET-") || !strings.Contains(s, `"app;jsessionid=***;v=2"`) {
			t.Errorf("%s: parsed_path not masked in place: %s", name, s)
		}
	}
}
