package authz_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// ownedPolicy allows only when no header that an upstream could read as
// owned (any case, "_" for "-") reached policy, in headers or header_map.
const ownedPolicy = `package t

default decision := {"allowed": false, "reason": "policy_saw_owned"}

decision := {"allowed": true} if not _sees_owned

_owned(name) if startswith(replace(lower(name), "_", "-"), "x-deputy-")

_owned(name) if replace(lower(name), "_", "-") == "x-actor-token"

_sees_owned if {
	some name, _ in input.attributes.request.http.headers
	_owned(name)
}

_sees_owned if {
	some h in input.attributes.request.http.headerMap.headers
	_owned(h.key)
}
`

func TestOwnedHeaderVariantsAreStripped(t *testing.T) {
	e := engineFor(t, "data.t.decision", ownedPolicy, nil)
	p := authz.New(e, authz.WithQuery("data.t.decision"), authz.WithActorTokenHeader("x-actor-token"))
	for _, name := range []string{
		"x-deputy-subject", "X-Deputy-Subject", "X-DEPUTY-LEVEL",
		"x-deputy_subject", "x_deputy_actor", "X_Deputy_Actor", "X_DEPUTY_ROLE", "x_deputy-mode", "X-Deputy_Store_View",
		"x-actor-token", "X_Actor_Token", "x_actor-token",
	} {
		for _, where := range []string{"headers", "header_map"} {
			t.Run(where+"/"+name, func(t *testing.T) {
				n, _ := json.Marshal(name)
				var req string
				if where == "headers" {
					req = `{"attributes":{"request":{"http":{"method":"GET","path":"/","headers":{` + string(n) + `:"forged","x-app":"1"}}}}}`
				} else {
					req = `{"attributes":{"request":{"http":{"method":"GET","path":"/","headerMap":{"headers":[{"key":` + string(n) + `,"value":"forged"},{"key":"x-app","value":"1"}]}}}}}`
				}
				resp := p.Check(context.Background(), checkRequest(t, req))
				if !resp.Allowed {
					t.Fatalf("denied (%s): the owned header reached policy", resp.Reason)
				}
				if !slices.Contains(resp.HeadersToRemove, lowerASCII(name)) {
					t.Errorf("%s not listed for removal upstream: %v", name, resp.HeadersToRemove)
				}
			})
		}
	}
	// Headers that only look alike stay.
	for _, name := range []string{"x-deputyx-subject", "x-app", "deputy-subject", "x-actor-tokens"} {
		t.Run("not owned/"+name, func(t *testing.T) {
			req := `{"attributes":{"request":{"http":{"method":"GET","path":"/","headers":{"` + name + `":"v"}}}}}`
			resp := p.Check(context.Background(), checkRequest(t, req))
			if !resp.Allowed || slices.Contains(resp.HeadersToRemove, name) {
				t.Errorf("%s treated as owned: %+v", name, resp)
			}
		})
	}
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
