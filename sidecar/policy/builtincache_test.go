package policy

import (
	"context"
	gojson "encoding/json"
	"log/slog"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// hs256 is a token signed with HS256 and the secret "secret" (no exp).
const hs256 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.c3brGQkxoiCgrl5LGiV0go9qgN0MtrdnDBCCfJ45f_Q"

func activate(t *testing.T, src string) *Engine {
	t.Helper()
	mod, err := ast.ParseModuleWithOpts("p.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	e := New(WithQueries("data.t.out"), WithLogger(slog.New(slog.DiscardHandler)))
	if err := e.Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"p.rego": mod}}); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestJWTCacheOnlyWhereAlgCannotBeSkipped(t *testing.T) {
	cases := []struct {
		name string
		rule string
		safe bool
	}{
		{"no JWT", `out := input.x`, true},
		{"literal secret", `out := io.jwt.decode_verify(input.t, {"secret": "secret"})`, true},
		{"literal cert and time", `out := io.jwt.decode_verify(input.t, {"cert": "x", "time": 1})`, true},
		{"alg constraint", `out := io.jwt.decode_verify(input.t, {"secret": "secret", "alg": "HS512"})`, false},
		{"constraints from a variable", `c := {"secret": "secret"}
out := io.jwt.decode_verify(input.t, c)`, false},
		{"constraints from data", `out := io.jwt.decode_verify(input.t, data.c)`, false},
		{"constraints from input", `out := io.jwt.decode_verify(input.t, {"secret": "secret", "alg": input.alg})`, false},
		{"verify builtins take no alg", `out := io.jwt.verify_hs256(input.t, "secret")`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := activate(t, "package t\n\n"+tc.rule+"\n")
			a := e.Current()
			if got := a.builtins == e.builtins; got != tc.safe {
				t.Fatalf("JWT cache used = %v, want %v", got, tc.safe)
			}
			if a.builtins == nil {
				t.Fatal("no builtin cache at all")
			}
		})
	}
}

// A call without alg must not let a later call with alg accept a token of
// another algorithm from the cache: OPA's JWT cache does not key on alg.
func TestJWTWithAlgConstraintStaysRefusedAcrossChecks(t *testing.T) {
	e := activate(t, `package t

loose := io.jwt.decode_verify(input.t, {"secret": "secret"})

strict := io.jwt.decode_verify(input.t, {"secret": "secret", "alg": "HS512"})

out := {"loose": loose[0], "strict": strict[0]}
`)
	in := ast.NewObject(ast.Item(ast.StringTerm("t"), ast.StringTerm(hs256)))
	for i := range 3 {
		res, err := e.Eval(context.Background(), "data.t.out", in)
		if err != nil {
			t.Fatal(err)
		}
		want := ast.MustParseTerm(`{"loose": true, "strict": false}`)
		if !res.Defined() || res.Value.Value.Compare(want.Value) != 0 {
			t.Fatalf("check %d: %v, want %v", i, res.Value, want)
		}
	}
}

// Where the cache is on, a repeated check still sees the token's claims
// checked against the clock: a cached signature is not a cached verdict.
func TestCachedJWTStillChecksExpiry(t *testing.T) {
	e := activate(t, `package t

out := io.jwt.decode_verify(input.t, {"secret": "secret", "time": input.now})[0]
`)
	if e.Current().builtins != e.builtins {
		t.Fatal("JWT cache not in use; the test would prove nothing")
	}
	// exp 1700000000 (2023-11-14).
	tok := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDAwMDAsInN1YiI6ImFsaWNlIn0.dhzn-49rkFJN3R1yDiLSDiFoYj-rTHWsXb68eOU7XQU"
	for _, tc := range []struct {
		now  string
		want bool
	}{{"1600000000000000000", true}, {"1800000000000000000", false}, {"1600000000000000000", true}} {
		in := ast.NewObject(ast.Item(ast.StringTerm("t"), ast.StringTerm(tok)), ast.Item(ast.StringTerm("now"), ast.NumberTerm(gojson.Number(tc.now))))
		res, err := e.Eval(context.Background(), "data.t.out", in)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Defined() || res.Value.Value.Compare(ast.Boolean(tc.want)) != 0 {
			t.Fatalf("at %s: %v, want %v", tc.now, res.Value, tc.want)
		}
	}
}
