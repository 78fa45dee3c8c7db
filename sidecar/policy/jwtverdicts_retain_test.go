package policy_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar/memtest"
	"github.com/deputyhq/deputy/sidecar/policy"
)

func retainHS256(sub string, exp int64) string {
	enc := base64.RawURLEncoding
	h := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	p := enc.EncodeToString([]byte(fmt.Sprintf(`{"sub":%q,"exp":%d}`, sub, exp)))
	m := hmac.New(sha256.New, []byte("s3cret"))
	m.Write([]byte(h + "." + p))
	return h + "." + p + "." + enc.EncodeToString(m.Sum(nil))
}

// Deputy's io.jwt.decode_verify verdict cache and OPA's io.jwt cache key
// on the token. An OPA-Envoy style policy cuts the token out of the
// Authorization header (trim_space, trim_prefix, substring and split
// return slices of it), so each remembered verdict held the whole header
// alive: "Bearer" + 60 KiB of spaces + token, 67 KB a token. Both are
// handed a copy of the token alone.
func TestJWTVerdictCacheHoldsTheTokenAlone(t *testing.T) {
	const src = `package envoy.authz
token := trim_space(trim_prefix(input.attributes.request.http.headers.authorization, "Bearer"))
default allow := false
allow if {
	[valid, _, _] := io.jwt.decode_verify(token, {"secret": "s3cret"})
	valid
}
`
	mod := ast.MustParseModuleWithOpts(src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	e := policy.New(policy.WithQueries("data.envoy.authz.allow"))
	ctx := context.Background()
	if err := e.Activate(ctx, &policy.Set{Modules: map[string]*ast.Module{"a.rego": mod}, Revision: "r"}); err != nil {
		t.Fatal(err)
	}
	const n, pad = 1000, 60 << 10
	exp := time.Now().Add(time.Hour).Unix()
	before := memtest.Live()
	for i := 0; i < n; i++ {
		hdr := "Bearer" + strings.Repeat(" ", pad) + retainHS256(fmt.Sprintf("u%d", i), exp)
		in := ast.MustInterfaceToValue(map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"headers": map[string]any{"authorization": hdr}}}}})
		res, err := e.Eval(ctx, "data.envoy.authz.allow", in)
		if err != nil || res.Value == nil || !res.Value.Equal(ast.BooleanTerm(true)) {
			t.Fatalf("token %d not allowed: %v %v", i, res.Value, err)
		}
	}
	after := memtest.Live()
	runtime.KeepAlive(e)
	grown := int64(after) - int64(before)
	t.Logf("heap grew %d bytes for %d verified tokens (%d per token)", grown, n, grown/n)
	if grown > int64(n)*4096 {
		t.Errorf("the decode_verify verdict cache retains %d bytes per token (a token is ~120 bytes): %d MiB", grown/n, grown>>20)
	}
}
