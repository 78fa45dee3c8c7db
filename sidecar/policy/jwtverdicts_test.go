package policy

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Claim times of the corpus, in seconds: valid from nbf to exp.
const (
	corpusNBF = 1_700_000_000
	corpusEXP = 1_700_003_600
)

// jwtKeys signs the corpus: one key of each family, and the public halves
// as OPA's cert constraint reads them.
type jwtKeys struct {
	rsa        *rsa.PrivateKey
	ec         *ecdsa.PrivateKey
	rsaPEM     string
	ecPEM      string
	otherRSA   string // a public key that verifies nothing here
	hmacSecret string
}

func newJWTKeys(t testing.TB) *jwtKeys {
	t.Helper()
	pemOf := func(pub any) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &jwtKeys{rsa: r, ec: ec, rsaPEM: pemOf(&r.PublicKey), ecPEM: pemOf(&ec.PublicKey), otherRSA: pemOf(&other.PublicKey), hmacSecret: "secret"}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// sign builds a compact JWS over header and claims, signed as alg says
// (signAlg may differ from the header's alg, to forge).
func (k *jwtKeys) sign(t testing.TB, signAlg string, header, claims map[string]any) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := b64(h) + "." + b64(c)
	var sig []byte
	switch signAlg {
	case "none":
	case "HS256", "HS384", "HS512":
		hash := map[string]crypto.Hash{"HS256": crypto.SHA256, "HS384": crypto.SHA384, "HS512": crypto.SHA512}[signAlg]
		m := hmac.New(hash.New, []byte(k.hmacSecret))
		m.Write([]byte(input))
		sig = m.Sum(nil)
	case "RS256", "PS256":
		d := crypto.SHA256.New()
		d.Write([]byte(input))
		if signAlg == "RS256" {
			sig, err = rsa.SignPKCS1v15(rand.Reader, k.rsa, crypto.SHA256, d.Sum(nil))
		} else {
			sig, err = rsa.SignPSS(rand.Reader, k.rsa, crypto.SHA256, d.Sum(nil), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		if err != nil {
			t.Fatal(err)
		}
	case "ES256":
		d := crypto.SHA256.New()
		d.Write([]byte(input))
		r, s, err := ecdsa.Sign(rand.Reader, k.ec, d.Sum(nil))
		if err != nil {
			t.Fatal(err)
		}
		sig = append(pad32(r), pad32(s)...)
	default:
		t.Fatalf("no signer for %s", signAlg)
	}
	return input + "." + b64(sig)
}

func pad32(n *big.Int) []byte {
	b := make([]byte, 32)
	return n.FillBytes(b)
}

type jwtCase struct {
	name        string
	token       *ast.Term
	constraints *ast.Term
}

// jwtCorpus is every kind of token and constraints the builtin meets:
// valid ones of each family, expired and not yet valid ones, wrong keys,
// algorithms and claims, forgeries and junk.
func jwtCorpus(t testing.TB, k *jwtKeys) []jwtCase {
	t.Helper()
	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{"sub": "alice", "role": "admin", "nbf": corpusNBF, "exp": corpusEXP}
		for key, v := range extra {
			if v == nil {
				delete(c, key)
			} else {
				c[key] = v
			}
		}
		return c
	}
	hdr := func(alg string) map[string]any { return map[string]any{"alg": alg, "typ": "JWT"} }
	secret := `{"secret": "secret"}`
	rsaCert := fmt.Sprintf(`{"cert": %q}`, k.rsaPEM)
	ecCert := fmt.Sprintf(`{"cert": %q}`, k.ecPEM)
	hs := k.sign(t, "HS256", hdr("HS256"), claims(nil))
	rs := k.sign(t, "RS256", hdr("RS256"), claims(nil))
	es := k.sign(t, "ES256", hdr("ES256"), claims(nil))
	inner := k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"sub": "inner"}))
	nested := func() string {
		h, _ := json.Marshal(map[string]any{"alg": "HS256", "cty": "JWT"})
		input := b64(h) + "." + b64([]byte(inner))
		m := hmac.New(crypto.SHA256.New, []byte(k.hmacSecret))
		m.Write([]byte(input))
		return input + "." + b64(m.Sum(nil))
	}()
	cases := []struct{ name, token, constraints string }{
		{"HS256 valid", hs, secret},
		{"HS384 valid", k.sign(t, "HS384", hdr("HS384"), claims(nil)), secret},
		{"HS512 valid", k.sign(t, "HS512", hdr("HS512"), claims(nil)), secret},
		{"RS256 valid", rs, rsaCert},
		{"PS256 valid", k.sign(t, "PS256", hdr("PS256"), claims(nil)), rsaCert},
		{"ES256 valid", es, ecCert},
		{"no exp", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"exp": nil})), secret},
		{"no nbf", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"nbf": nil})), secret},
		{"no times", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"exp": nil, "nbf": nil})), secret},
		{"fractional exp", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"exp": corpusEXP + 0.5})), secret},
		{"fractional nbf", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"nbf": corpusNBF + 0.25})), secret},
		{"exponent exp", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"exp": json.Number("1.7000036e9")})), secret},
		{"huge exp", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"exp": json.Number("99999999999999999999")})), secret},
		{"exp before nbf", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"exp": corpusNBF, "nbf": corpusEXP})), secret},
		{"exp a string", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"exp": "never"})), secret},
		{"nbf a string", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"nbf": "now"})), secret},
		{"long ago", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"nbf": 1, "exp": 2})), secret},
		{"wrong secret", hs, `{"secret": "guess"}`},
		{"wrong RSA key", rs, fmt.Sprintf(`{"cert": %q}`, k.otherRSA)},
		{"EC token, RSA key", es, rsaCert},
		{"HS token, RSA key", hs, rsaCert},
		{"RS token signed with the public key as HMAC secret", func() string {
			kk := *k
			kk.hmacSecret = k.rsaPEM
			return kk.sign(t, "HS256", hdr("HS256"), claims(nil))
		}(), rsaCert},
		{"alg none", k.sign(t, "none", hdr("none"), claims(nil)), secret},
		{"alg missing", k.sign(t, "HS256", map[string]any{"typ": "JWT"}, claims(nil)), secret},
		{"header says HS512, signed HS256", k.sign(t, "HS256", hdr("HS512"), claims(nil)), secret},
		{"unknown critical header", k.sign(t, "HS256", map[string]any{"alg": "HS256", "crit": []string{"x"}, "x": 1}, claims(nil)), secret},
		{"JWE header", k.sign(t, "HS256", map[string]any{"alg": "HS256", "enc": "A128GCM"}, claims(nil)), secret},
		{"nested", nested, secret},
		{"alg constraint met", hs, `{"secret": "secret", "alg": "HS256"}`},
		{"alg constraint not met", hs, `{"secret": "secret", "alg": "HS512"}`},
		{"iss constraint met", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"iss": "https://idp"})), `{"secret": "secret", "iss": "https://idp"}`},
		{"iss constraint not met", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"iss": "https://evil"})), `{"secret": "secret", "iss": "https://idp"}`},
		{"iss constraint, no iss", hs, `{"secret": "secret", "iss": "https://idp"}`},
		{"aud constraint met", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"aud": "shop"})), `{"secret": "secret", "aud": "shop"}`},
		{"aud in a list", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"aud": []string{"a", "shop"}})), `{"secret": "secret", "aud": "shop"}`},
		{"aud not met", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"aud": "other"})), `{"secret": "secret", "aud": "shop"}`},
		{"aud claim, no aud constraint", k.sign(t, "HS256", hdr("HS256"), claims(map[string]any{"aud": "shop"})), secret},
		{"time constraint inside", hs, fmt.Sprintf(`{"secret": "secret", "time": %d}`, int64(corpusNBF+10)*1e9)},
		{"time constraint after exp", hs, fmt.Sprintf(`{"secret": "secret", "time": %d}`, int64(corpusEXP+10)*1e9)},
		{"time constraint negative", hs, `{"secret": "secret", "time": -1}`},
		{"time constraint a string", hs, `{"secret": "secret", "time": "now"}`},
		{"no key constraint", hs, `{"alg": "HS256"}`},
		{"two key constraints", hs, fmt.Sprintf(`{"secret": "secret", "cert": %q}`, k.rsaPEM)},
		{"unknown constraint", hs, `{"secret": "secret", "kid": "x"}`},
		{"secret not a string", hs, `{"secret": 1}`},
		{"cert not a key", rs, `{"cert": "not a key"}`},
		{"constraints not an object", hs, `"secret"`},
		{"malformed: no dots", "abc", secret},
		{"malformed: two parts", "a.b", secret},
		{"malformed: four parts", hs + ".x", secret},
		{"malformed: bad base64", "!!.!!.!!", secret},
		{"malformed: payload not JSON", b64([]byte(`{"alg":"HS256"}`)) + "." + b64([]byte("x")) + ".sig", secret},
		{"empty token", "", secret},
	}
	out := make([]jwtCase, 0, len(cases)+1)
	for _, c := range cases {
		cons, err := ast.ParseTerm(c.constraints)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		out = append(out, jwtCase{c.name, ast.StringTerm(c.token), cons})
	}
	return append(out, jwtCase{"token not a string", ast.NumberTerm("1"), ast.MustParseTerm(secret)})
}

// corpusTimes are the evaluation times each case is checked at: around
// nbf and exp to the nanosecond, inside the window, and long after.
func corpusTimes() []int64 {
	nbf, exp := int64(corpusNBF)*1e9, int64(corpusEXP)*1e9
	return []int64{
		nbf + 10e9, // inside: remembered from here on
		nbf - 1, nbf, nbf + 1, nbf + 5e8, nbf + 1e9 - 1, nbf + 1e9, nbf + 1e9 + 1,
		(nbf + exp) / 2,
		exp - 1e9 - 1, exp - 1e9, exp - 1e9 + 1, exp - 5e8, exp - 1, exp, exp + 1,
		(nbf + exp) / 2, // back inside after leaving
		exp + 3600e9, 0, -1, nbf - 3600e9,
	}
}

func timeTerm(ns int64) *ast.Term { return ast.NumberTerm(json.Number(strconv.FormatInt(ns, 10))) }

// call runs a builtin as topdown would, returning its output and error.
func call(f func(topdown.BuiltinContext, []*ast.Term) (*ast.Term, error), now int64, c jwtCase) (*ast.Term, error) {
	bctx := topdown.BuiltinContext{Context: context.Background(), Time: timeTerm(now)}
	return f(bctx, []*ast.Term{c.token, c.constraints})
}

// opaDecodeVerify is OPA's own builtin, without any cache.
func opaDecodeVerify(bctx topdown.BuiltinContext, operands []*ast.Term) (*ast.Term, error) {
	var out *ast.Term
	err := topdown.GetBuiltin(ast.JWTDecodeVerify.Name)(bctx, operands, func(t *ast.Term) error { out = t; return nil })
	return out, err
}

// sameAnswer fails unless Deputy's builtin answered exactly as OPA's.
func sameAnswer(t *testing.T, what string, got, want *ast.Term, gotErr, wantErr error) {
	t.Helper()
	switch {
	case (gotErr == nil) != (wantErr == nil):
		t.Fatalf("%s: error %v, OPA's %v", what, gotErr, wantErr)
	case gotErr != nil && gotErr.Error() != wantErr.Error():
		t.Fatalf("%s: error %q, OPA's %q", what, gotErr, wantErr)
	case (got == nil) != (want == nil):
		t.Fatalf("%s: %v, OPA's %v", what, got, want)
	case got != nil && !got.Equal(want):
		t.Fatalf("%s: %v, OPA's %v", what, got, want)
	}
}

// Every case of the corpus, at every time, in order and shuffled, gets
// OPA's answer: the same result or the same error.
func TestDecodeVerifyAnswersAsOPA(t *testing.T) {
	k := newJWTKeys(t)
	corpus := jwtCorpus(t, k)
	verified := 0
	for _, c := range corpus {
		t.Run(c.name, func(t *testing.T) {
			times := corpusTimes()
			for round := range 3 {
				v := newJWTVerdicts(DefaultJWTVerdictEntries)
				for _, now := range times {
					got, gotErr := call(v.decodeVerify, now, c)
					want, wantErr := call(opaDecodeVerify, now, c)
					sameAnswer(t, fmt.Sprintf("round %d at %d", round, now), got, want, gotErr, wantErr)
					if round == 0 && want != nil && want.Value.(*ast.Array).Elem(0).Value.Compare(ast.Boolean(true)) == 0 {
						verified++
					}
				}
				r := mrand.New(mrand.NewPCG(uint64(round), 7))
				r.Shuffle(len(times), func(i, j int) { times[i], times[j] = times[j], times[i] })
			}
		})
	}
	// The corpus must exercise the cache, not only refusals.
	if verified < 20 {
		t.Fatalf("only %d verified answers in the corpus", verified)
	}
}

// A remembered token is refused the moment OPA refuses it: at exp, and
// before nbf, whatever was remembered earlier.
func TestDecodeVerifyRemembersOnlyInsideTheWindow(t *testing.T) {
	k := newJWTKeys(t)
	c := jwtCorpus(t, k)[0] // HS256 valid
	v := newJWTVerdicts(DefaultJWTVerdictEntries)
	valid := func(now int64) bool {
		out, err := call(v.decodeVerify, now, c)
		if err != nil {
			t.Fatal(err)
		}
		return out.Value.(*ast.Array).Elem(0).Value.Compare(ast.Boolean(true)) == 0
	}
	nbf, exp := int64(corpusNBF)*1e9, int64(corpusEXP)*1e9
	if !valid(nbf + 10e9) {
		t.Fatal("valid token refused")
	}
	if v.cache.Len() != 1 {
		t.Fatalf("%d entries remembered, want 1", v.cache.Len())
	}
	// OPA reads the time as a float in seconds: a nanosecond off either
	// end rounds to it, a millisecond does not.
	for _, now := range []int64{exp, exp + 1, nbf - 1e6, 0} {
		if valid(now) {
			t.Fatalf("token accepted at %d, outside [%d, %d)", now, nbf, exp)
		}
	}
	if !valid(exp - 1e6) {
		t.Fatal("token refused a millisecond before exp")
	}
}

// The cache stays within its bound whatever tokens arrive, and does not
// keep tokens too long to be worth it.
func TestDecodeVerifyCacheIsBounded(t *testing.T) {
	k := newJWTKeys(t)
	v := newJWTVerdicts(8)
	now := int64(corpusNBF+10) * 1e9
	for i := range 20 {
		tok := k.sign(t, "HS256", map[string]any{"alg": "HS256"}, map[string]any{"sub": strconv.Itoa(i)})
		if _, err := call(v.decodeVerify, now, jwtCase{token: ast.StringTerm(tok), constraints: ast.MustParseTerm(`{"secret": "secret"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if v.cache.Len() != 8 {
		t.Fatalf("%d entries, want the bound 8", v.cache.Len())
	}
	long := k.sign(t, "HS256", map[string]any{"alg": "HS256"}, map[string]any{"pad": string(make([]byte, maxRememberedTokenLen))})
	v.cache.Purge()
	if _, err := call(v.decodeVerify, now, jwtCase{token: ast.StringTerm(long), constraints: ast.MustParseTerm(`{"secret": "secret"}`)}); err != nil {
		t.Fatal(err)
	}
	if v.cache.Len() != 0 {
		t.Fatal("an oversized token was remembered")
	}
}

// decodeVerifyPolicy answers the corpus through a whole policy.
const decodeVerifyPolicy = `package t

out := io.jwt.decode_verify(input.token, input.constraints)
`

// Through the engine (rewritten calls, the shared cache, OPA's own JWT
// cache) every case and time decides as plain OPA does.
func TestEngineDecodeVerifyAnswersAsOPA(t *testing.T) {
	k := newJWTKeys(t)
	e := activate(t, decodeVerifyPolicy)
	mod := ast.MustParseModuleWithOpts(decodeVerifyPolicy, ast.ParserOptions{RegoVersion: ast.RegoV1})
	plain, err := rego.New(rego.Query("data.t.out"), rego.ParsedModule(mod)).PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range jwtCorpus(t, k) {
		t.Run(c.name, func(t *testing.T) {
			in := ast.NewObject(ast.Item(ast.StringTerm("token"), c.token), ast.Item(ast.StringTerm("constraints"), c.constraints))
			for _, now := range corpusTimes() {
				if now < 0 {
					continue // rego.EvalTime takes a time.Time
				}
				at := rego.EvalTime(time.Unix(0, now))
				res, err := e.Eval(context.Background(), "data.t.out", in, at)
				if err != nil {
					t.Fatal(err)
				}
				rs, err := plain.Eval(context.Background(), rego.EvalParsedInput(in), at)
				if err != nil {
					t.Fatal(err)
				}
				var want *ast.Term
				if len(rs) > 0 {
					v, err := ast.InterfaceToValue(rs[0].Expressions[0].Value)
					if err != nil {
						t.Fatal(err)
					}
					want = ast.NewTerm(v)
				}
				sameAnswer(t, fmt.Sprintf("at %d", now), res.Value, want, nil, nil)
			}
		})
	}
	if e.jwt.cache.Len() == 0 {
		t.Fatal("no call reached Deputy's builtin")
	}
}

// A policy that mocks the builtin keeps OPA's, so the mock applies; and
// no policy can call Deputy's builtin by its own name.
func TestDecodeVerifyRewriteLeavesMocksAndHidesItsName(t *testing.T) {
	e := activate(t, `package t

out := p[2].sub if {
	p := io.jwt.decode_verify("x", {"secret": "s"}) with io.jwt.decode_verify as [true, {}, {"sub": "mock"}]
}
`)
	res, err := e.Eval(context.Background(), "data.t.out", ast.NewObject())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Defined() || res.Value.Value.Compare(ast.String("mock")) != 0 {
		t.Fatalf("mocked call gave %v", res.Value)
	}
	mod := ast.MustParseModuleWithOpts(`package t

out := deputy.jwt.decode_verify("x", {"secret": "s"})
`, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err := New(WithQueries("data.t.out")).Activate(context.Background(), &Set{Modules: map[string]*ast.Module{"p.rego": mod}}); err == nil {
		t.Fatal("a policy called Deputy's internal builtin by name")
	}
}

// FuzzDecodeVerify checks any token, constraints and pair of times
// against OPA's builtin: the first call may fill the cache, the second
// must still answer as OPA does at its own time.
func FuzzDecodeVerify(f *testing.F) {
	k := newJWTKeys(f)
	for _, c := range jwtCorpus(f, k) {
		tok, _ := c.token.Value.(ast.String)
		f.Add(string(tok), c.constraints.String(), int64(corpusNBF+10)*1e9, int64(corpusEXP)*1e9)
	}
	f.Fuzz(func(t *testing.T, token, constraints string, t1, t2 int64) {
		cons, err := ast.ParseTerm(constraints)
		if err != nil {
			cons = ast.StringTerm(constraints)
		}
		c := jwtCase{token: ast.StringTerm(token), constraints: cons}
		v := newJWTVerdicts(4)
		for _, now := range []int64{t1, t2, t1} {
			got, gotErr := call(v.decodeVerify, now, c)
			want, wantErr := call(opaDecodeVerify, now, c)
			sameAnswer(t, fmt.Sprintf("at %d", now), got, want, gotErr, wantErr)
		}
	})
}
