package policy

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
)

// DenialStatus reports whether code may answer a denial (a decision with
// "allowed": false). nginx auth_request, Caddy forward_auth and Traefik
// forwardAuth let any 2xx answer through to the application, so a denial
// with a 1xx or 2xx status would be an allow behind them. 4xx and 5xx are
// denials everywhere; of 3xx only the redirects (a denial sending the
// client to a login page): no proxy lets a 3xx through, and 304 would
// have the client show a copy it kept from before.
func DenialStatus(code int) bool {
	switch code {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return code >= 400 && code <= 599 && http.StatusText(code) != ""
}

// checkDenialStatuses finds decisions written as object literals with
// "allowed": false and a constant "http_status" that DenialStatus refuses:
// a running Deputy would answer them as invalid decisions.
func checkDenialStatuses(modules map[string]*ast.Module) error {
	var bad []string
	for _, m := range modules {
		ast.WalkTerms(m, func(t *ast.Term) bool {
			obj, ok := t.Value.(ast.Object)
			if !ok {
				return false
			}
			allowed, status := obj.Get(ast.StringTerm("allowed")), obj.Get(ast.StringTerm("http_status"))
			if allowed == nil || status == nil || allowed.Value.Compare(ast.Boolean(false)) != 0 {
				return false
			}
			if n, ok := status.Value.(ast.Number); ok {
				if code, ok := n.Int(); !ok || !DenialStatus(code) {
					bad = append(bad, fmt.Sprintf("%s: http_status %v on a denial", t.Location, n))
				}
			}
			return false
		})
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	return sidecar.Invalid("policies", "a denial's http_status must be 4xx, 5xx or a redirect (a 2xx is an allow behind nginx and Caddy): %s", strings.Join(bad, "; "))
}
