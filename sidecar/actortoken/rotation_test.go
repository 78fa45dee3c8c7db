package actortoken_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/actortoken"
)

// writeKeyFile writes a fresh P-256 private key, as `deputy keys generate`
// does, and returns its path.
func writeKeyFile(t *testing.T, dir, name string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rotationStep is one Deputy configuration of a rotation, live from at
// (a restart onto new settings).
type rotationStep struct {
	at   time.Duration
	keys []string
	sign string // actor_token.sign_key_file
}

// TestRotationSchedule runs key rotations step by step against upstreams
// that keep the JWKS as long as its Cache-Control lets them. Whenever a
// token is signed, and at every moment of its lifetime, an upstream
// holding any JWKS it may still use must accept it. The two-step rotation
// (publish, wait out cache_max_age, sign, wait out the token lifetime,
// retire) never produces a refused token; the shortcuts do, which shows
// the check sees what it guards against.
func TestRotationSchedule(t *testing.T) {
	const (
		maxAge = time.Minute
		ttl    = 30 * time.Second
		tick   = 5 * time.Second
	)
	dir := t.TempDir()
	old, next := writeKeyFile(t, dir, "2026-08.pem"), writeKeyFile(t, dir, "2026-11.pem")
	start := 100 * time.Second
	cases := []struct {
		name    string
		steps   []rotationStep
		refused bool
	}{
		{name: "publish, wait cache_max_age, sign, wait ttl, retire", steps: []rotationStep{
			{at: 0, keys: []string{old}},
			// Newest first, as the chart lists keys: only sign_key_file
			// keeps the new key from signing.
			{at: start, keys: []string{next, old}, sign: old},
			{at: start + maxAge, keys: []string{next, old}, sign: next},
			{at: start + maxAge + ttl, keys: []string{next}},
		}},
		{name: "new key listed first signs at once", refused: true, steps: []rotationStep{
			{at: 0, keys: []string{old}},
			{at: start, keys: []string{next, old}},
			{at: start + ttl, keys: []string{next}},
		}},
		{name: "signs before cache_max_age has passed", refused: true, steps: []rotationStep{
			{at: 0, keys: []string{old}},
			{at: start, keys: []string{next, old}, sign: old},
			{at: start + maxAge - tick, keys: []string{next, old}, sign: next},
			{at: start + 2*maxAge, keys: []string{next}},
		}},
		{name: "old key retired as soon as the new one signs", refused: true, steps: []rotationStep{
			{at: 0, keys: []string{old}},
			{at: start, keys: []string{next, old}, sign: old},
			{at: start + maxAge, keys: []string{next}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var now time.Time
			clock := func() time.Time { return now }
			signers := make([]*actortoken.Signer, len(tc.steps))
			jwks := make([]jose.JSONWebKeySet, len(tc.steps))
			keep := make([]time.Duration, len(tc.steps)) // how long an upstream may keep jwks[i]
			for i, st := range tc.steps {
				signers[i] = newSigner(t, actortoken.Config{KeyFiles: st.keys, SignKeyFile: st.sign, TTL: ttl, CacheMaxAge: maxAge},
					actortoken.WithClock(clock))
				srv := httptest.NewServer(signers[i].Handler())
				jwks[i], keep[i] = fetchJWKS(t, srv.URL+actortoken.JWKSPath)
				srv.Close()
			}
			live := func(at time.Duration) int {
				i := 0
				for i+1 < len(tc.steps) && tc.steps[i+1].at <= at {
					i++
				}
				return i
			}

			// Whatever time it was fetched, an upstream holding jwks[step]
			// decides alike: verify each token once per JWKS and moment.
			type use struct {
				tok  string
				step int
				used time.Duration
			}
			verdicts := map[use]error{}
			var refusals int
			var first string
			end := tc.steps[len(tc.steps)-1].at + maxAge + ttl
			for signed := time.Duration(0); signed <= end; signed += tick {
				now = epoch.Add(signed)
				tok, err := signers[live(signed)].Sign(impersonation())
				if err != nil {
					t.Fatal(err)
				}
				exp := time.Unix(claimsOf(t, tok).Expiry, 0).Sub(epoch)
				for used := signed; used <= exp; used += tick {
					for fetched := max(0, used-maxAge); fetched <= used; fetched += tick {
						step := live(fetched)
						if used-fetched > keep[step] {
							continue // the upstream has fetched the JWKS again
						}
						u := use{tok, step, used}
						err, done := verdicts[u]
						if done {
							continue
						}
						_, _, err = verifyWithJWKS(jwks[step], tok, actortoken.DefaultIssuer, actortoken.DefaultAudience, epoch.Add(used))
						verdicts[u] = err
						if err != nil {
							if refusals == 0 {
								first = fmt.Sprintf("token signed at %v, used at %v with the JWKS fetched at %v: %v", signed, used, fetched, err)
							}
							refusals++
						}
					}
				}
			}
			switch {
			case tc.refused && refusals == 0:
				t.Fatal("no upstream refused a token: the schedule check sees nothing")
			case !tc.refused && refusals > 0:
				t.Fatalf("%d uses of a token refused upstream; the first: %s", refusals, first)
			}
		})
	}
}

// sign_key_file picks the signing key whatever its place in key_files;
// every key stays published, the signing one listed first.
func TestSignKeyFile(t *testing.T) {
	dir := t.TempDir()
	a, b := writeKeyFile(t, dir, "a.pem"), writeKeyFile(t, dir, "b.pem")
	ka, err := actortoken.LoadKeyFile(a)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := actortoken.LoadKeyFile(b)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		files []string
		sign  string
		want  string // kid of the signing key
	}{
		{name: "unset: the first signs", files: []string{a, b}, want: ka.ID},
		{name: "the first named", files: []string{a, b}, sign: a, want: ka.ID},
		{name: "a later one named", files: []string{a, b}, sign: b, want: kb.ID},
		{name: "named in another spelling of its path", files: []string{a, b}, sign: filepath.Join(dir, ".", "b.pem"), want: kb.ID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSigner(t, actortoken.Config{KeyFiles: tc.files, SignKeyFile: tc.sign})
			srv := httptest.NewServer(s.Handler())
			defer srv.Close()
			set, _ := fetchJWKS(t, srv.URL+actortoken.JWKSPath)
			if len(set.Keys) != 2 || len(set.Key(ka.ID)) != 1 || len(set.Key(kb.ID)) != 1 {
				t.Fatalf("JWKS %+v, want both keys", set.Keys)
			}
			tok, err := s.Sign(impersonation())
			if err != nil {
				t.Fatal(err)
			}
			std, _, err := verifyWithJWKS(set, tok, actortoken.DefaultIssuer, actortoken.DefaultAudience, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Keys()[0].ID; got != tc.want || set.Keys[0].KeyID != tc.want {
				t.Fatalf("signing key %q, listed first in the JWKS %q, want %q", got, set.Keys[0].KeyID, tc.want)
			}
			if kid := kidOf(t, tok); kid != tc.want {
				t.Fatalf("token signed with kid %q, want %q (sub %q)", kid, tc.want, std.Subject)
			}
		})
	}

	// A key that is not published never signs: naming a file outside
	// key_files is a start-up error, and so is naming one with keys given
	// in memory (dev mode), where no file is read.
	for _, tc := range []struct {
		name string
		cfg  actortoken.Config
		opts []actortoken.Option
	}{
		{name: "not among key_files", cfg: actortoken.Config{KeyFiles: []string{a}, SignKeyFile: b}},
		{name: "no key_files", cfg: actortoken.Config{SignKeyFile: a}},
		{name: "keys in memory", cfg: actortoken.Config{KeyFiles: []string{a}, SignKeyFile: a}, opts: []actortoken.Option{actortoken.WithKeys(genKey(t))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := actortoken.New(tc.cfg, tc.opts...)
			if sidecar.ErrorField(err) != "actor_token.sign_key_file" {
				t.Fatalf("err = %v (signer %v), want EINVALID naming actor_token.sign_key_file", err, s)
			}
		})
	}
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	parsed, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	return parsed.Signatures[0].Header.KeyID
}
