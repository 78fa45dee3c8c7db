package policy

import (
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
)

// DecisionRef returns the data reference a configured query names. It
// takes Deputy's form (data.envoy.authz.allow) and OPA-Envoy's `path` form
// (envoy/authz/allow, with or without a leading slash), so a policy setup
// written for OPA-Envoy keeps its setting.
func DecisionRef(query string) (string, error) {
	q := strings.TrimSpace(query)
	if q == "data" || strings.HasPrefix(q, "data.") || strings.HasPrefix(q, "data[") {
		ref, err := ast.ParseRef(q)
		if err != nil {
			return "", sidecar.Invalid("policy.decision_query", "not a reference: %v", err)
		}
		return ref.String(), nil
	}
	if strings.Contains(q, ".") && !strings.Contains(q, "/") {
		return "", sidecar.Invalid("policy.decision_query", "%q: write data.%s, or the path form a/b/c", query, q)
	}
	path := strings.Trim(q, "/")
	if path == "" {
		return "", sidecar.Invalid("policy.decision_query", "empty query")
	}
	ref := ast.Ref{ast.DefaultRootDocument}
	for _, seg := range strings.Split(path, "/") {
		if seg == "" {
			return "", sidecar.Invalid("policy.decision_query", "%q has an empty path segment", query)
		}
		ref = append(ref, ast.StringTerm(seg))
	}
	return ref.String(), nil
}
