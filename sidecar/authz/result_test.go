package authz

import (
	"reflect"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Fields are looked up only until every key of the result was found: a
// field is read wherever it stands among them, and keys that are no field
// (or not strings) never make one go unread.
func TestParseResultReadsEveryField(t *testing.T) {
	every := policyResult{allowed: false, hasStatus: true, status: 401, body: "b", reason: "r",
		headers: []Header{{"h", "1"}}, responseHeadersToAdd: []Header{{"rh", "2"}}, headersToRemove: []string{"x"},
		queryToSet: []Header{{"q", "3"}}, queryToRemove: []string{"y"}, dynamicMetadata: map[string]any{"m": "4"}}
	for _, tc := range []struct {
		name, result string
		want         policyResult
	}{
		{"every field", `{"allowed": false, "http_status": 401, "body": "b", "reason": "r", "headers": {"h": "1"},
			"response_headers_to_add": {"rh": "2"}, "request_headers_to_remove": ["x"], "query_parameters_to_set": {"q": "3"},
			"query_parameters_to_remove": ["y"], "dynamic_metadata": {"m": "4"}}`, every},
		{"last field only", `{"allowed": true, "dynamic_metadata": {"m": "4"}}`, policyResult{allowed: true, dynamicMetadata: map[string]any{"m": "4"}}},
		{"other keys", `{"allowed": true, "zzz": 1, "aaa": 2, "query_parameters_to_remove": ["y"]}`, policyResult{allowed: true, queryToRemove: []string{"y"}}},
		{"a key that is not a string", `{"allowed": true, 1: "x", "dynamic_metadata": {"m": "4"}}`, policyResult{allowed: true, dynamicMetadata: map[string]any{"m": "4"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseResult(ast.MustParseTerm(tc.result))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("result %+v, want %+v", got, tc.want)
			}
		})
	}
}

// BenchmarkParseResult reads the results the shipped policies give: an
// allow with its reason, a denial with status and reason, and an
// impersonated allow with cache headers.
func BenchmarkParseResult(b *testing.B) {
	for name, result := range map[string]string{
		"allow":         `{"allowed": true, "reason": "partner_level"}`,
		"deny":          `{"allowed": false, "http_status": 403, "reason": "no_rule_matched"}`,
		"impersonation": `{"allowed": true, "reason": "impersonation", "headers": {"cache-control": "no-cache"}, "response_headers_to_add": {"cache-control": "private, no-store"}}`,
	} {
		b.Run(name, func(b *testing.B) {
			t := ast.MustParseTerm(result)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := parseResult(t); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
