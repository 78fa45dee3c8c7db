package policy

import (
	"context"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown/cache"
)

// DefaultBuiltinCacheEntries bounds each of OPA's inter-query value caches
// (compiled glob and regex patterns; verified JWTs), so request-derived
// keys cannot grow memory without end.
const DefaultBuiltinCacheEntries = 10000

// jwtCacheName is OPA's named value cache of JWT signature checks.
const jwtCacheName = "io_jwt"

// newBuiltinCache returns OPA's inter-query value cache: builtins whose
// result depends only on their arguments keep it across checks. With jwt,
// io.jwt.decode_verify and io.jwt.verify_* also keep the outcome of their
// signature check (and the decoded header and payload) per token and key;
// exp, nbf, iss and aud are still checked on every evaluation.
func newBuiltinCache(jwt bool) cache.InterQueryValueCache {
	n := DefaultBuiltinCacheEntries
	cfg := &cache.Config{InterQueryBuiltinValueCache: cache.InterQueryBuiltinValueCacheConfig{MaxNumEntries: &n}}
	if jwt {
		cfg.InterQueryBuiltinValueCache.NamedCacheConfigs = map[string]*cache.NamedValueCacheConfig{jwtCacheName: {MaxNumEntries: &n}}
	}
	return cache.NewInterQueryValueCache(context.Background(), cfg)
}

// jwtCacheSafe reports whether every io.jwt.decode_verify call in the
// compiled policies passes a literal constraints object without "alg".
// OPA keys its JWT cache on the token and the key material only and skips
// the alg constraint on a hit, so one call without alg could let another
// with alg accept a token of the wrong algorithm. Policies that may pass
// alg (or constraints that are not a literal) run without the JWT cache.
func jwtCacheSafe(c *ast.Compiler) bool {
	safe := true
	check := func(args []*ast.Term) {
		if len(args) < 2 {
			safe = false
			return
		}
		obj, ok := args[1].Value.(ast.Object)
		if !ok {
			safe = false
			return
		}
		for _, k := range obj.Keys() {
			if s, ok := k.Value.(ast.String); !ok || s == "alg" {
				safe = false
			}
		}
	}
	for _, m := range c.Modules {
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			if e.IsCall() && (e.Operator().Equal(ast.JWTDecodeVerify.Ref()) || e.Operator().Equal(decodeVerifyRef)) {
				check(e.Operands())
			}
			return !safe
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if call, ok := t.Value.(ast.Call); ok && len(call) > 0 && (call[0].Value.Compare(ast.JWTDecodeVerify.Ref()) == 0 || call[0].Value.Compare(decodeVerifyRef) == 0) {
				check(call[1:])
			}
			return !safe
		})
		if !safe {
			return false
		}
	}
	return safe
}
