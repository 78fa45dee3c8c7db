package policy

import (
	"math"
	"strings"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/types"
)

// Bounds of the verified-token cache: entries, and the longest token kept
// (a longer one is still verified, only not remembered), so that memory
// stays near a few megabytes whatever clients send.
const (
	DefaultJWTVerdictEntries = 1024
	maxRememberedTokenLen    = 4096
)

// jwtTimeMargin keeps remembered verdicts a second clear of exp and nbf:
// OPA compares those claims with the evaluation time as a float in
// seconds, and within the margin each call goes to OPA's builtin, so the
// rounding of that float can never make the two disagree.
const jwtTimeMargin = int64(1e9)

// decodeVerifyName is the builtin that Deputy's compiled policies call in
// place of io.jwt.decode_verify (see rewriteDecodeVerify). It is not
// declared to the compiler, so no policy can call it by this name.
const decodeVerifyName = "deputy.jwt.decode_verify"

var decodeVerifyRef = ast.Ref{ast.VarTerm("deputy"), ast.StringTerm("jwt"), ast.StringTerm("decode_verify")}

// jwtVerdicts puts a cache of verified tokens in front of OPA's own
// io.jwt.decode_verify. On a hit OPA would still parse the constraints,
// filter the key material out of them, and compare exp and nbf as
// arbitrary-precision numbers: about a third of a check of a policy that
// decodes a bearer token. Here a hit is one map lookup and two integer
// comparisons of the evaluation time.
//
// Every answer is OPA's: a miss calls OPA's builtin, and only its
// "verified" answers are kept, with the time window in which OPA gives
// the same answer for the same token and constraints (the signature, the
// header, iss and aud depend on nothing else; exp and nbf are checked
// against the time of every evaluation). A token that expires, or is not
// yet valid, leaves the window and goes back to OPA at once. Refusals and
// errors are never kept: junk costs what it costs in OPA, and cannot evict
// anything but other tokens.
type jwtVerdicts struct {
	opa   topdown.BuiltinFunc
	cache *lru.Cache[jwtKey, *jwtVerdict]
}

// jwtKey names a call: the token and the hash of the constraints object
// (the object itself is compared on a hit).
type jwtKey struct {
	token       string
	constraints int
}

// jwtVerdict is OPA's "verified" answer, valid while from <= now < until
// (nanoseconds since the epoch, as OPA's evaluation time).
type jwtVerdict struct {
	constraints ast.Object
	from, until int64
	result      *ast.Term
}

// newJWTVerdicts returns the cache, or nil when OPA's builtin is missing
// (then policies keep calling OPA's builtin directly).
func newJWTVerdicts(size int) *jwtVerdicts {
	opa := topdown.GetBuiltin(ast.JWTDecodeVerify.Name)
	if opa == nil || size <= 0 {
		return nil
	}
	cache, _ := lru.New[jwtKey, *jwtVerdict](size)
	return &jwtVerdicts{opa: opa, cache: cache}
}

// function is the rego option that provides decodeVerifyName.
func (c *jwtVerdicts) function() func(*rego.Rego) {
	return rego.FunctionDyn(&rego.Function{
		Name: decodeVerifyName,
		Decl: types.NewFunction(ast.JWTDecodeVerify.Decl.FuncArgs().Args, ast.JWTDecodeVerify.Decl.Result()),
	}, c.decodeVerify)
}

// builtin is the same function for evaluations run on topdown directly
// (see directQuery): errors are OPA's builtin's own, as topdown reports
// them for io.jwt.decode_verify.
func (c *jwtVerdicts) builtin() *topdown.Builtin {
	return &topdown.Builtin{
		Decl: &ast.Builtin{Name: decodeVerifyName, Decl: ast.JWTDecodeVerify.Decl},
		Func: func(bctx topdown.BuiltinContext, operands []*ast.Term, iter func(*ast.Term) error) error {
			out, err := c.decodeVerify(bctx, operands)
			if err != nil || out == nil {
				return err
			}
			return iter(out)
		},
	}
}

// decodeVerify answers io.jwt.decode_verify(token, constraints).
func (c *jwtVerdicts) decodeVerify(bctx topdown.BuiltinContext, operands []*ast.Term) (*ast.Term, error) {
	token, tokOK := operands[0].Value.(ast.String)
	constraints, consOK := operands[1].Value.(ast.Object)
	now, nowOK := evalTimeNanos(bctx)
	cacheable := tokOK && consOK && nowOK && len(token) <= maxRememberedTokenLen &&
		constraints.Get(ast.InternedTerm("time")) == nil // a fixed time: rare, left to OPA
	// The decision memo's window, when the evaluation keeps its answer:
	// every verdict used narrows it, and one not bounded spoils it.
	w := windowOf(bctx.Context)
	var key jwtKey
	if cacheable {
		key = jwtKey{token: string(token), constraints: constraints.Hash()}
		if v, ok := c.cache.Peek(key); ok && v.from <= now && now < v.until && v.constraints.Compare(constraints) == 0 {
			if w != nil {
				w.narrow(v.from, v.until)
			}
			return v.result, nil
		}
	}

	if tokOK {
		// The token is often a slice of the whole Authorization header
		// (trim_space(trim_prefix(h, "Bearer")) keeps its backing), and
		// this cache and OPA's io.jwt cache both keep it: each entry would
		// hold the whole header. They are handed a copy of the token.
		own := strings.Clone(string(token))
		key.token = own
		operands = []*ast.Term{ast.StringTerm(own), operands[1]}
	}
	bounded := false
	defer func() {
		if w != nil && !bounded {
			w.ok = false
		}
	}()
	var out *ast.Term
	if err := c.opa(bctx, operands, func(t *ast.Term) error { out = t; return nil }); err != nil {
		return nil, err
	}
	if cacheable && out != nil {
		if from, until, ok := verifiedWindow(out); ok && from <= now && now < until {
			c.cache.Add(key, &jwtVerdict{constraints: constraints, from: from, until: until, result: out})
			if w != nil {
				w.narrow(from, until)
				bounded = true
			}
		}
	}
	return out, nil
}

// verifiedWindow reads OPA's result [valid, header, payload]: when valid,
// the times at which OPA's exp and nbf checks pass for certain. ok is
// false for a refusal, and for claims that are not whole seconds (left to
// OPA on every call).
func verifiedWindow(out *ast.Term) (from, until int64, ok bool) {
	arr, isArr := out.Value.(*ast.Array)
	if !isArr || arr.Len() != 3 || !ast.Boolean(true).Equal(arr.Elem(0).Value) {
		return 0, 0, false
	}
	payload, isObj := arr.Elem(2).Value.(ast.Object)
	if !isObj {
		return 0, 0, false
	}
	from, until = math.MinInt64, math.MaxInt64
	if exp := payload.Get(ast.InternedTerm("exp")); exp != nil {
		s, ok := seconds(exp)
		if !ok {
			return 0, 0, false
		}
		until = nanosAdd(s, -jwtTimeMargin)
	}
	if nbf := payload.Get(ast.InternedTerm("nbf")); nbf != nil {
		s, ok := seconds(nbf)
		if !ok {
			return 0, 0, false
		}
		from = nanosAdd(s, jwtTimeMargin)
	}
	return from, until, from < until
}

// seconds reads a claim that is a whole number of seconds.
func seconds(t *ast.Term) (int64, bool) {
	n, ok := t.Value.(ast.Number)
	if !ok {
		return 0, false
	}
	return n.Int64()
}

// nanosAdd is s seconds plus d nanoseconds, saturated to the int64 range
// (a time that cannot be represented is never reached by the clock).
func nanosAdd(s, d int64) int64 {
	const limit = math.MaxInt64 / int64(1e9)
	switch {
	case s > limit-1:
		return math.MaxInt64
	case s < -limit+1:
		return math.MinInt64
	}
	return s*1e9 + d
}

// evalTimeNanos is the evaluation's time as OPA's JWT builtins read it
// (nanoseconds since the epoch), when it is a whole non-negative number.
func evalTimeNanos(bctx topdown.BuiltinContext) (int64, bool) {
	if bctx.Time == nil {
		return 0, false
	}
	n, ok := bctx.Time.Value.(ast.Number)
	if !ok {
		return 0, false
	}
	t, ok := n.Int64()
	return t, ok && t >= 0
}

// rewriteDecodeVerify is a compiler stage, run once type checking is done
// on OPA's own declaration, that points every io.jwt.decode_verify call at
// decodeVerifyName. Policies that name the builtin in a `with` (a mock or
// a replacement) keep OPA's builtin untouched.
func rewriteDecodeVerify(c *ast.Compiler) *ast.Error {
	target := ast.JWTDecodeVerify.Ref()
	for _, m := range c.Modules {
		mocked := false
		ast.WalkWiths(m, func(w *ast.With) bool {
			mocked = mocked || refIs(w.Target, target) || refIs(w.Value, target)
			return mocked
		})
		if mocked {
			return nil
		}
	}
	for _, m := range c.Modules {
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if refIs(t, target) {
				t.Value = decodeVerifyRef.Copy()
			}
			return false
		})
	}
	return nil
}

func refIs(t *ast.Term, ref ast.Ref) bool {
	r, ok := t.Value.(ast.Ref)
	return ok && r.Equal(ref)
}
